"""Sharded update steps: an 8-device mesh gives one device's params, compiles once, and fsdp
divides the per-device state; bad mesh shapes and batch sizes raise with a valid choice."""

import jax
import numpy as np
import pytest
from flax import nnx

from rewardjax import optim, sharding, train_state
from rewardjax.algorithms import grpo, preference, reward_model
from rewardjax.models import heads, transformer
from rewardjax.types import PreferenceBatch, RolloutBatch, SequenceBatch

CONFIG = transformer.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                 num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
ROWS, PROMPT, COMPLETION = 8, 8, 8  # 8 rows: 2 per (data, fsdp) shard of the 2x2x2 mesh
# Adam's eps is large so a near-zero gradient whose rounding depends on the reduction order
# (which sharding changes) cannot turn into an lr-sized step of opposite sign.
TX = optim.make_optimizer(optim.AdamW(learning_rate=1e-2, schedule="constant", eps=1e-3),
                          total_steps=2)
# Backend optimisation level 0 halves the CPU compile time; sharding semantics are unchanged.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def lm_fn(rngs):
  return transformer.Transformer(CONFIG, rngs=rngs)


def rm_fn(rngs):
  return heads.ScalarModel(CONFIG, rngs=rngs)


def host_params(model_fn, seed=0):
  """Random numpy params of the model's shapes, without compiling an initialiser."""
  _, abstract = nnx.split(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))), nnx.Param)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: rng.normal(0.0, 0.1, a.shape).astype(a.dtype),
                      nnx.to_pure_dict(abstract))


def host_rows(seed=1):
  """Tokens [ROWS, PROMPT + COMPLETION], left-padded prompts, right-padded completions."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, CONFIG.vocab_size, (ROWS, PROMPT + COMPLETION)).astype(np.int32)
  prompt_mask = np.ones((ROWS, PROMPT), np.int32)
  prompt_mask[:3, :rng.integers(1, PROMPT)] = 0
  completion_mask = (np.arange(COMPLETION)[None] < rng.integers(1, COMPLETION + 1, ROWS)[:, None])
  completion_mask[-1] = 0  # a row that counts for nothing
  return tokens, prompt_mask, completion_mask.astype(np.int32)


def grpo_batch():
  tokens, prompt_mask, completion_mask = host_rows()
  rng = np.random.default_rng(2)
  # Near the log-probs of a random model (log 1/64), so ratios stay inside the clip range.
  old = (-np.log(64) + 0.1 * rng.normal(size=(ROWS, COMPLETION))).astype(np.float32)
  return RolloutBatch(
      tokens=tokens, attention_mask=np.concatenate([prompt_mask, completion_mask], axis=1),
      completion_mask=completion_mask, old_logprobs=old * completion_mask,
      ref_logprobs=(old - 0.05) * completion_mask,
      advantages=rng.normal(size=ROWS).astype(np.float32),
      sampler_logprobs=old * completion_mask)  # the sampler's = the old policy's (no TIS)


def pair_rows():
  tokens, prompt_mask, completion_mask = host_rows(seed=3)
  # Right padding: real tokens first, as the preference / reward-model batches are built.
  attention_mask = np.concatenate([np.ones_like(prompt_mask), completion_mask], axis=1)
  return tokens, attention_mask


def dpo_batch():
  tokens, attention_mask = pair_rows()
  loss_mask = attention_mask[:, 1:] * (np.arange(1, tokens.shape[1]) >= PROMPT)
  ref = np.random.default_rng(4).normal(-30.0, 3.0, ROWS).astype(np.float32)
  return PreferenceBatch(tokens=tokens, attention_mask=attention_mask,
                         loss_mask=loss_mask.astype(np.int32), ref_logps=ref)


def rm_batch():
  tokens, attention_mask = pair_rows()
  return SequenceBatch(tokens=tokens, attention_mask=attention_mask,
                       loss_mask=attention_mask[:, 1:].copy())


# The trainer's own step builders (`algorithms.<name>.make_step`), from each algorithm's
# config-block defaults.
CASES = {
    "grpo": (lm_fn, True, grpo_batch, grpo.make_step(
        dict(grpo.DEFAULTS, loss_type="grpo", beta=0.04), max_completion_length=COMPLETION,
        chunk_size=4)),
    "dpo": (lm_fn, True, dpo_batch, preference.make_step(
        dict(preference.DEFAULTS, loss_type="sigmoid", beta=0.1), chunk_size=4)),
    "reward_model": (rm_fn, False, rm_batch, reward_model.make_step(
        dict(reward_model.DEFAULTS, loss_type="bt"))),
}


def two_steps(case, mesh):
  """Params and metrics after two jitted, donated steps on `mesh`, and the number of traces."""
  model_fn, with_ref, make_batch, update_fn = CASES[case]
  rng = jax.random.key(0)
  state, state_sharding = train_state.create_state(model_fn, TX, mesh, rng,
                                                   params=host_params(model_fn), with_ref=with_ref)
  batch = sharding.shard_batch(make_batch(), mesh)
  traces = []

  def counted(state, batch, rng):
    traces.append(1)
    return update_fn(state, batch, rng)

  step = jax.jit(counted, in_shardings=(state_sharding, jax.tree.map(lambda x: x.sharding, batch),
                                        sharding.replicated(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)),
                 donate_argnames=("state",), compiler_options=FAST_COMPILE)
  with jax.set_mesh(mesh):  # turns on the model's activation constraints
    state, first = step(state, batch, rng)
    state, second = step(state, batch, rng)
  for leaf, want in zip(jax.tree.leaves(state), jax.tree.leaves(state_sharding)):
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim)  # the state stays sharded
  return jax.device_get(state.params), jax.device_get((first, second)), len(traces)


@pytest.mark.parametrize("case", sorted(CASES))
def test_8_device_mesh_matches_one_device_and_compiles_once(case):
  one = sharding.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  eight = sharding.make_mesh(2, 2, 2)
  params_1, metrics_1, _ = two_steps(case, one)
  params_8, metrics_8, traces = two_steps(case, eight)
  assert traces == 1  # the second step reuses the first step's compilation
  start = host_params(CASES[case][0])
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), params_1, start)
  assert min(jax.tree.leaves(moved)) > 0  # every parameter was updated
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               params_8, params_1)
  for step_1, step_8 in zip(metrics_1, metrics_8):
    np.testing.assert_allclose(step_8["loss"], step_1["loss"], rtol=1e-5, atol=1e-6)


def device_bytes(tree, device):
  return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
             for shard in leaf.addressable_shards if shard.device == device)


def test_per_device_params_and_optimizer_bytes_fall_as_one_over_fsdp():
  params = host_params(lm_fn)
  per_device = {}
  for fsdp in (1, 2, 4, 8):
    mesh = sharding.make_mesh(-1, fsdp, 1)
    state, _ = train_state.create_state(lm_fn, TX, mesh, jax.random.key(0), params=params,
                                        with_ref=False)
    per_device[fsdp] = device_bytes((state.params, state.opt_state), jax.devices()[0])
  # Only the optimizer's few scalar counters are replicated (under 100 bytes of ~100 KB).
  for fsdp, size in per_device.items():
    assert abs(size * fsdp - per_device[1]) <= 100 * fsdp, per_device
  assert per_device[1] > 3 * 4 * transformer.count_params(params)  # params, mu, nu in f32


def test_mesh_that_does_not_divide_the_devices_names_both_and_a_valid_shape():
  with pytest.raises(ValueError, match=r"multiple of 3 devices but there are 8.*data=8, fsdp=1"):
    sharding.make_mesh(3, 1, 1)
  with pytest.raises(ValueError, match=r"multiple of 16 devices but there are 8.*data=1, fsdp=2"):
    sharding.make_mesh(2, 2, 4)
  with pytest.raises(ValueError, match=r"uses 4 devices but there are 8.*data=8, fsdp=1, tensor=1"):
    sharding.make_mesh(4, 1, 1)
  # The suggestions are themselves valid.
  assert sharding.make_mesh(8, 1, 1).size == sharding.make_mesh(1, 2, 4).size == 8


def test_batch_that_does_not_divide_the_data_axes_names_both_and_a_valid_size():
  mesh = sharding.make_mesh(2, 2, 2)
  with pytest.raises(ValueError, match=r"batch rows 6 .*data\*fsdp = 4.*multiple of 4"):
    sharding.shard_batch(np.zeros((6, 3), np.int32), mesh)
  with pytest.raises(ValueError, match=r"rows per minibatch 10 .*multiple of 4, e.g. 8"):
    sharding.check_batch(10, mesh, "rows per minibatch")
  assert sharding.shard_batch(np.zeros((8, 3)), mesh).sharding.spec == sharding.batch_sharding(
      mesh).spec


def test_host_batch_on_one_process_equals_shard_batch():
  mesh = sharding.make_mesh(2, 2, 2)
  rows = np.arange(24, dtype=np.int32).reshape(8, 3)
  assert sharding.process_rows(8, mesh) == slice(0, 8)  # one process feeds every row
  placed = sharding.host_batch(rows, mesh)
  assert placed.sharding == sharding.shard_batch(rows, mesh).sharding
  np.testing.assert_array_equal(jax.device_get(placed), rows)


def test_activation_constraints_only_under_a_mesh():
  model = nnx.eval_shape(lambda: lm_fn(nnx.Rngs(0)))
  graphdef, params = nnx.split(model, nnx.Param)
  tokens = jax.ShapeDtypeStruct((ROWS, PROMPT), np.int32)
  forward = jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))
  assert "sharding_constraint" not in forward.lower(params, tokens).as_text()
  with jax.set_mesh(sharding.make_mesh(2, 2, 2)):
    text = forward.lower(params, tokens).as_text()
  # batch in, q/k/v of each layer, logits out
  assert text.count("sharding_constraint") == 1 + 3 * CONFIG.num_layers + 1
