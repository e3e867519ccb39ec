"""Two processes joined by `jax.distributed.initialize` run the GRPO step of one 4-device process.

Each process (2 CPU devices, gloo collectives) feeds only its own prompts, decodes and rewards
only its own rollouts, and both write one orbax checkpoint together. The reference is the same
function in one process with 4 CPU devices. Run as a script, this file is a worker:
`python tests/multihost_test.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR [step|train]`
(NUM_PROCESSES=1: the single 4-device process; "train": the whole `train.run`).
"""

import functools
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

MESH = (1, 2, 2)  # data, fsdp, tensor: fsdp spans the two processes, tensor stays inside one
PROMPTS, GROUP, PROMPT_LEN, NEW_TOKENS = 4, 2, 16, 8
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # CPU compile budget; same semantics


def model_fn(rngs):
  from rewardjax.models import transformer  # lazily, like every rewardjax import here

  config = transformer.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8)
  return transformer.Transformer(config, rngs=rngs)


def abstract_params() -> dict:
  from flax import nnx

  _, abstract = nnx.split(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))), nnx.Param)
  return nnx.to_pure_dict(abstract)


def grpo_step(mesh, checkpoint_dir=None) -> dict:
  """One GRPO step (sample, reward on the host, score old/ref, update) on `mesh`.

  Returns host numpy copies of the new params (gathered from every process), this process's
  completions and the loss. Every process runs it with the same arguments.
  """
  # Imported here: a worker sets its devices and collectives before anything touches jax.
  from jax.experimental import multihost_utils

  from rewardjax import advantages, checkpoint, optim, rollouts, sharding, train_state, update
  from rewardjax.algorithms import grpo
  from rewardjax.types import RolloutBatch

  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.normal(0.0, 0.1, a.shape).astype(a.dtype),
                        abstract_params())
  tx = optim.make_optimizer(optim.AdamW(learning_rate=1e-2, schedule="constant", eps=1e-3),
                            total_steps=1)
  key = jax.random.key(0)
  state, state_sharding = train_state.create_state(model_fn, tx, mesh, key, params=params,
                                                   with_ref=True)

  # Every host knows the step's prompts but feeds only the rows its devices hold.
  prompts = rng.integers(1, 64, (PROMPTS, PROMPT_LEN)).astype(np.int32)
  prompt_mask = np.ones_like(prompts)
  prompt_mask[0, :5] = 0
  mine = sharding.process_rows(PROMPTS, mesh)
  prompts_d, prompt_mask_d = sharding.host_batch((prompts[mine], prompt_mask[mine]), mesh)
  with jax.set_mesh(mesh):
    out = rollouts.generate((state.graphdef, state.params), prompts_d, prompt_mask_d,
                            jax.random.key(1), max_new_tokens=NEW_TOKENS, num_samples=GROUP,
                            decoding=rollouts.Decoding(eos_token_id=None))
    # Host-side reward of this host's own rollouts (whole groups: rows p*G .. p*G+G-1).
    completions = sharding.local_rows(out.completion_tokens)
    rewards = (completions < 32).mean(axis=1).astype(np.float32)
    advantages_b = np.asarray(advantages.group_advantages(rewards, GROUP))
    completion_mask = np.ones_like(completions)
    tokens, attention_mask, completion_mask, advantages_d, sampler_logprobs = sharding.host_batch(
        (sharding.local_rows(out.tokens),
         np.concatenate([sharding.local_rows(out.prompt_mask), completion_mask], axis=1),
         completion_mask, advantages_b, sharding.local_rows(out.model_logprobs)), mesh)
    score = jax.jit(functools.partial(update.score_rollouts, graphdef=state.graphdef,
                                      completion_length=NEW_TOKENS, chunk_size=4),
                    compiler_options=FAST_COMPILE)
    old, ref = score(state.params, state.ref_params, tokens=tokens,
                     attention_mask=attention_mask)
    batch = RolloutBatch(tokens=tokens, attention_mask=attention_mask,
                         completion_mask=completion_mask, old_logprobs=old, ref_logprobs=ref,
                         advantages=advantages_d, sampler_logprobs=sampler_logprobs)
    step = jax.jit(  # the trainer's GRPO step (`algorithms.grpo.make_step`)
        grpo.make_step(dict(grpo.DEFAULTS, loss_type="grpo", beta=0.04),
                       max_completion_length=NEW_TOKENS, chunk_size=4),
        in_shardings=(state_sharding, jax.tree.map(lambda x: x.sharding, batch),
                      sharding.replicated(mesh)),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
        donate_argnames=("state",), compiler_options=FAST_COMPILE)
    state, metrics = step(state, batch, key)
  if checkpoint_dir:  # every process writes its own shards
    manager = checkpoint.make_manager(checkpoint_dir, async_save=False)
    checkpoint.save(manager, 1, {"params": state.params}, extra={"step": 1})
    checkpoint.wait(manager)
    manager.close()
  gathered = multihost_utils.process_allgather(state.params, tiled=True)
  flat = {jax.tree_util.keystr(path): np.asarray(x)
          for path, x in jax.tree_util.tree_flatten_with_path(gathered)[0]}
  return {"params": flat, "completions": completions, "first_row": mine.start * GROUP,
          "loss": np.asarray(metrics["loss"])}


def train_worker(process_id: int, num_processes: int, port: int, out_dir: str) -> None:
  """`train.run` of the GRPO smoke config; `config.distributed` joins the processes."""
  sys.path.insert(0, REPO)
  from configs import grpo
  from rewardjax import train

  jax.config.update("jax_num_cpu_devices", 4 // num_processes)
  config = grpo.get_config("smoke")
  config.mesh.update(data=MESH[0], fsdp=MESH[1], tensor=MESH[2])
  config.checkpoint.update(async_save=False)
  if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    config.distributed.update(initialize=True, coordinator_address=f"localhost:{port}",
                              num_processes=num_processes, process_id=process_id)
  summary = train.run(config, os.path.join(out_dir, f"train_{num_processes}"))
  with open(os.path.join(out_dir, f"summary_{process_id}_of_{num_processes}.json"), "w") as f:
    json.dump(summary, f)
  if num_processes > 1:
    jax.distributed.shutdown()


def worker(process_id: int, num_processes: int, port: int, out_dir: str) -> None:
  from rewardjax import sharding

  jax.config.update("jax_num_cpu_devices", 4 // num_processes)
  if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    sharding.initialize_distributed(f"localhost:{port}", num_processes, process_id)

  assert jax.device_count() == 4 and jax.local_device_count() == 4 // num_processes
  result = grpo_step(sharding.make_mesh(*MESH), checkpoint_dir=(
      os.path.join(out_dir, "ckpt") if num_processes > 1 else None))
  np.savez(os.path.join(out_dir, f"process_{process_id}_of_{num_processes}.npz"),
           loss=result["loss"], completions=result["completions"],
           first_row=result["first_row"], **{f"param{k}": v for k, v in result["params"].items()})
  if num_processes > 1:
    jax.distributed.shutdown()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_workers(tmp_path, mode: str) -> None:
  """Runs the two hosts and the single 4-device process of `mode`; fails with a worker's log."""
  port, env = free_port(), dict(os.environ, PYTHONPATH=REPO)
  runs = [(0, 2), (1, 2), (0, 1)]  # the two hosts, and the single 4-device process
  workers = []
  for process_id, count in runs:
    log = open(tmp_path / f"{mode}_{process_id}_of_{count}.log", "w")
    workers.append(subprocess.Popen(
        [sys.executable, __file__, str(process_id), str(count), str(port), str(tmp_path), mode],
        env=env, stdout=log, stderr=subprocess.STDOUT))
  try:
    for w in workers:
      w.wait(timeout=300)
  finally:
    for w in workers:
      w.kill()  # no-op for a worker that exited
  for (process_id, count), w in zip(runs, workers):
    log = tmp_path / f"{mode}_{process_id}_of_{count}.log"
    assert w.returncode == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(tmp_path):
  run_workers(tmp_path, "step")

  want = np.load(tmp_path / "process_0_of_1.npz")
  sides = [np.load(tmp_path / f"process_{i}_of_2.npz") for i in range(2)]
  names = [k for k in want.files if k.startswith("param")]
  for side in sides:  # both hosts hold the same updated params, equal to one process's
    np.testing.assert_allclose(side["loss"], want["loss"], rtol=1e-5)
    for name in names:
      np.testing.assert_allclose(side[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
  # Each host sampled its own half of the rollouts, the rows one process samples there.
  assert [int(s["first_row"]) for s in sides] == [0, PROMPTS * GROUP // 2]
  np.testing.assert_array_equal(np.concatenate([s["completions"] for s in sides]),
                                want["completions"])

  # The checkpoint both hosts wrote restores whole in this process.
  from rewardjax import checkpoint, sharding

  mesh = sharding.make_mesh(*MESH, devices=jax.devices()[:4])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding.replicated(mesh)),
      abstract_params())
  restored, extra = checkpoint.restore_latest(checkpoint.make_manager(str(tmp_path / "ckpt")),
                                              {"params": abstract})
  assert extra == {"step": 1}
  for path, x in jax.tree_util.tree_flatten_with_path(restored["params"])[0]:
    np.testing.assert_array_equal(np.asarray(x), sides[0][f"param{jax.tree_util.keystr(path)}"])


@pytest.mark.slow
def test_train_run_on_two_processes_matches_one_process(tmp_path):
  """The whole trainer (warm start, rollouts, rewards, update, eval, checkpoints, HF export)
  on two hosts gives the run of one 4-device process."""
  from safetensors.numpy import load_file

  run_workers(tmp_path, "train")
  summaries = [json.loads((tmp_path / f"summary_{i}_of_2.json").read_text()) for i in range(2)]
  want = json.loads((tmp_path / "summary_0_of_1.json").read_text())
  assert summaries[0] == summaries[1] and summaries[0].keys() == want.keys()
  for key, value in want.items():
    assert summaries[0][key] == pytest.approx(value, abs=1e-5), key
  exported = load_file(str(tmp_path / "train_2" / "hf" / "model.safetensors"))
  reference = load_file(str(tmp_path / "train_1" / "hf" / "model.safetensors"))
  assert exported.keys() == reference.keys()
  for name, value in reference.items():
    np.testing.assert_allclose(exported[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
  steps = sorted(os.listdir(tmp_path / "train_2" / "checkpoints"))
  assert "2" in steps  # the final checkpoint, written by both hosts


if __name__ == "__main__":
  mode = sys.argv[5] if len(sys.argv) > 5 else "step"
  (train_worker if mode == "train" else worker)(
      int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
