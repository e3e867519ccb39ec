"""End-to-end: `train.run` on the smoke configs, resume, and bad input that must lose nothing."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import dpo as dpo_config
from configs import grpo as grpo_config
from configs import reward_model as reward_model_config
from rewardjax import algorithms, train, train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke(module, arg="smoke"):
  config = module.get_config(arg)
  config.checkpoint.async_save = False
  return config


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("grpo"))
  config = _smoke(grpo_config)
  return config, workdir, train.run(config, workdir)


def test_grpo_smoke_run_writes_metrics_checkpoints_and_hf_export(grpo_run):
  _, workdir, summary = grpo_run
  assert {"initial/accuracy", "final/accuracy"} <= set(summary)
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train_lines = [line for line in lines if "train/loss" in line]
  assert [line["step"] for line in train_lines] == [1, 2]
  assert all(np.isfinite(line["train/loss"]) for line in train_lines)
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-1] == "2"
  from rewardjax.models import hf  # noqa: PLC0415
  model = hf.from_pretrained(os.path.join(workdir, "hf"))
  assert model.config.num_layers == 2


def test_resume_continues_from_last_checkpoint(grpo_run, capsys):
  config, workdir, _ = grpo_run
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.train.steps = 3
  train.run(config, workdir)
  assert "resumed" in capsys.readouterr().out
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [line["step"] for line in lines if "train/loss" in line] == [1, 2, 3]


def test_workdir_of_another_config_is_refused_not_overwritten(grpo_run):
  config, workdir, _ = grpo_run
  config = config.copy_and_resolve_references()
  config.algo.beta = 0.5
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  with pytest.raises(ValueError, match="workdir"):
    train.run(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_dpo_and_reward_model_smoke_runs(tmp_path):
  dpo = train.run(_smoke(dpo_config), str(tmp_path / "dpo"))
  # At step 0 the policy is its reference: every implicit reward margin is exactly 0, so no
  # pair counts as won, and the first update's loss is -log sig(0) = log 2.
  assert dpo["initial/implicit_reward_margin"] == 0.0
  assert dpo["initial/preference_accuracy"] == 0.0
  assert dpo["final/implicit_reward_margin"] != 0.0
  lines = [json.loads(line) for line in open(tmp_path / "dpo" / "metrics.jsonl")]
  first = [line for line in lines if line["step"] == 1 and "train/loss" in line][0]
  np.testing.assert_allclose(first["train/loss"], np.log(2.0), rtol=1e-5)
  # The workdir holds the run's picture (one panel per curve of metrics.jsonl).
  assert (tmp_path / "dpo" / "curves.png").read_bytes().startswith(b"\x89PNG")
  rm = train.run(_smoke(reward_model_config), str(tmp_path / "rm"))
  assert 0.0 <= rm["final/pair_accuracy"] <= 1.0
  assert rm["final/reward_margin"] != rm["initial/reward_margin"]  # the head was trained


def test_nonfinite_rewards_drop_their_group_and_are_counted(grpo_run):
  import dataclasses  # noqa: PLC0415

  from rewardjax import sharding  # noqa: PLC0415
  from rewardjax.rewards import composition  # noqa: PLC0415
  config = grpo_run[0].copy_and_resolve_references()
  config.train.batch_size = 2
  config.rollout.num_generations = 2
  nan_for_first_prompt = composition.Composition((composition.Term(
      "scripted", lambda s: np.array([np.nan if i < 2 else 1.0 for i in range(len(s.texts))])),))
  mesh = sharding.make_mesh(-1, 1, 1, devices=jax.devices()[:1])
  with jax.set_mesh(mesh):
    job = train.make_job(config, mesh)
    setup = dataclasses.replace(job.setup, recipe=dataclasses.replace(
        job.recipe, rewards=nan_for_first_prompt))
    program = algorithms.get("grpo").build(config.algo, setup)
    state, _ = train_state.create_state(program.model_fn, train.make_optimizer(config.optim, 2),
                                        mesh, jax.random.key(0), with_ref=program.with_ref)
    batch, metrics = program.make_batch(state, 0, jax.random.key(1))
  assert metrics["nonfinite_reward_groups"] == 1.0
  mask = np.asarray(batch.completion_mask)
  assert mask[:2].sum() == 0 and mask[2:].sum() > 0
  assert np.all(np.isfinite(np.asarray(batch.advantages)))


def test_unknown_config_key_fails_with_its_name():
  out = subprocess.run(
      [sys.executable, "launch/train.py", "--config=configs/grpo.py:smoke",
       "--config.train.stepz=3", "--workdir=/tmp/never_created_rewardjax"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "stepz" in out.stderr
  assert not os.path.exists("/tmp/never_created_rewardjax")


_KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from configs import grpo
    from rewardjax import train, train_state
    config = grpo.get_config("smoke")
    config.train.steps = 4
    config.checkpoint.update(every=1, async_save=False, keep=5)
    config.train.update(eval_every=100, export_hf=False)
    train.run(config, sys.argv[1])
""")


def _final_params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, jax.tree.leaves(restored["state"]["params"])


@pytest.mark.slow
def test_sigkill_at_random_step_then_resume_is_bitwise_equal(tmp_path):
  script = tmp_path / "run.py"
  script.write_text(_KILL_SCRIPT.format(repo=REPO))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  subprocess.run([sys.executable, str(script), straight], check=True, env=env, timeout=600)
  kill_after = int(np.random.default_rng().integers(1, 4))  # a random step in 1..3
  proc = subprocess.Popen([sys.executable, str(script), killed], env=env)
  metrics = os.path.join(killed, "metrics.jsonl")
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(metrics) and sum(
        '"train/loss"' in line for line in open(metrics)) >= kill_after:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  subprocess.run([sys.executable, str(script), killed], check=True, env=env, timeout=600)
  step_a, params_a = _final_params(straight)
  step_b, params_b = _final_params(killed)
  assert step_a == step_b == 4
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)
