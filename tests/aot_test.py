"""Ahead-of-time compilation for TPU topologies on the CPU host (`rewardjax.aot`, libtpu).

libtpu comes with the `aot` extra, which CI installs: these tests run, never skip. Imports of
`rewardjax.aot` stay inside the tests so the rest of the suite does not load the libtpu client.
"""

import os

import pytest

from configs import common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, **overrides):
  return common.load_config(os.path.join(REPO, "configs", name), overrides)


# The smoke GRPO model as the pods run it: bf16, Pallas flash attention, rematerialised Blocks.
POD_SMOKE = {"model.param_dtype": "bfloat16", "model.dtype": "bfloat16",
             "model.attention_impl": "pallas", "model.remat": "block"}


def test_tiny_grpo_step_compiles_for_v5e_with_memory_and_flops():
  from rewardjax import aot  # noqa: PLC0415

  config = _config("grpo.py:smoke", **POD_SMOKE)
  reports = aot.compile_config(config, aot.AotOptions(topology="v5e:2x2",
                                                      stages=("update",)))
  assert [r.stage for r in reports] == ["update"]
  update = reports[0]
  assert update.mesh == {"data": 1, "fsdp": 4, "tensor": 1}   # FSDP over the 4 chips
  assert update.argument_gib > 0 and update.temp_gib > 0 and update.total_gib > 0
  assert update.model_tflops > 0 and update.compiler_tflops > 0 and update.roofline_seconds > 0
  assert update.fits and update.hbm_gib == 16 and update.advice() == ""
  # 4 prompts x G = 2 rows over 4 data shards.
  assert update.rows_per_chip == 2
  assert "| update | v5e:2x2 | 1x4x1 |" in aot.table_row(update)


def test_flash_attention_lowers_to_a_mosaic_kernel_not_interpret_mode():
  import jax  # noqa: PLC0415

  from rewardjax import aot, sharding  # noqa: PLC0415

  config = _config("grpo.py:smoke", **POD_SMOKE)
  _, devices = aot.topology_devices("v5e:2x2")
  mesh = aot.make_mesh({"fsdp": 4}, devices, "v5e:2x2")
  with jax.set_mesh(mesh):
    program, _ = aot.build_program(config, mesh)
    state, shardings = aot.abstract_state(config, program, mesh)
    text = aot.lower_update(config, program, mesh, state, shardings).as_text()
  assert "tpu_custom_call" in text        # Mosaic; interpret mode would leave no custom call
  assert sharding.AXES == ("data", "fsdp", "tensor")


def test_unknown_topology_lists_the_known_ones():
  from rewardjax import aot  # noqa: PLC0415

  for name in ("v9x:2x2", "v5p:3x3"):   # unknown generation; a layout libtpu rejects
    with pytest.raises(ValueError, match="known: v4:.*v5e:.*v5p:4x4x4.*v6e:8x8"):
      aot.topology_devices(name)


def test_mesh_that_does_not_divide_the_chips_names_both_numbers():
  from rewardjax import aot  # noqa: PLC0415

  with pytest.raises(ValueError, match=r"uses 128 chips.*the 4 chips of v5e:2x2"):
    aot.compile_config(_config("grpo.py:smoke"),
                       aot.AotOptions(topology="v5e:2x2", mesh="fsdp:16,tensor:8"))
  with pytest.raises(ValueError, match="axis:size"):
    aot.parse_mesh("fsdp=16")


def test_huge_model_on_a_tiny_topology_says_how_far_over_and_what_to_grow():
  from rewardjax import aot  # noqa: PLC0415

  # 6 MLP-heavy layers: 4.8B float32 parameters, with reference and Adam moments ~19 GiB a chip
  # on 4 chips; the sequence stays tiny so the compile is quick.
  config = _config("grpo.py:smoke", **{"model.hidden_size": 8192,
                                       "model.intermediate_size": 32768, "model.num_layers": 6})
  [report] = aot.compile_config(config, aot.AotOptions(topology="v5e:2x2", stages=("update",)))
  assert report.compiler_tflops == 0   # refused by the TPU compiler (RESOURCE_EXHAUSTED)
  assert not report.fits and report.total_gib > 16
  advice = report.advice()
  assert f"{report.total_gib - 16:.1f} GiB over the 16 GiB HBM" in advice
  assert "grow fsdp" in advice and "now 1x4" in advice   # temporaries dominate here


def test_pod_presets_parse_without_a_checkpoint():
  config = _config("grpo.py:qwen2_5_7b")
  assert (config.model.hidden_size, config.model.num_kv_heads, config.model.checkpoint) == (
      3584, 4, "")
  assert (config.model.param_dtype, config.model.attention_impl, config.model.remat) == (
      "bfloat16", "pallas", "block")
  assert (config.data.max_prompt_length, config.rollout.max_new_tokens,
          config.rollout.num_generations) == (1024, 4096, 8)
  dpo = _config("dpo.py:llama3_1_70b")
  assert (dpo.model.num_layers, dpo.model.rope_type, dpo.train.batch_size) == (80, "llama3", 128)
