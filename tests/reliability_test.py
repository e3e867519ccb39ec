"""Reliability of a run (`rewardjax.guards`, `checkpoint.restore_latest`'s fallback, `train.run`):
corrupted checkpoints, preemption, the workdir lock, divergence, and runs that would waste work.

Every run here is the GRPO smoke config for 4 steps with a checkpoint per step; a run that
recovers must end bitwise equal to the uninterrupted one (`straight`).
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import grpo as grpo_config
from rewardjax import guards, train
from rewardjax import metrics as metrics_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4


def _config(**train_fields):
  config = grpo_config.get_config("smoke")
  config.checkpoint.update(every=1, async_save=False, keep=STEPS + 1)
  config.train.update(steps=STEPS, eval_every=2, export_hf=False)
  config.train.update(**train_fields)
  return config


def _params(workdir, step=None):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return step, jax.tree.leaves(restored["state"]["params"])


def _assert_same_final_params(workdir, reference):
  step_a, params_a = _params(reference)
  step_b, params_b = _params(workdir)
  assert step_a == step_b == STEPS
  for a, b in zip(params_a, params_b, strict=True):
    np.testing.assert_array_equal(a, b)


def _records(workdir):
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """The uninterrupted run every recovery is compared with."""
  workdir = str(tmp_path_factory.mktemp("straight"))
  train.run(_config(), workdir)
  return workdir


def test_straight_run_logs_truncation_count_and_releases_its_lock(straight):
  train_records = [r for r in _records(straight) if "train/loss" in r]
  assert [r["step"] for r in train_records] == list(range(1, STEPS + 1))
  assert all("train/data/truncated_prompts" in r for r in train_records)
  assert "train/param_rms" in train_records[0]
  assert not os.path.exists(os.path.join(straight, guards.LOCK_FILE))


# ----- A corrupted newest checkpoint: reported, moved aside, the previous step restored -------
def _truncate_an_array_file(step_dir):
  files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
           if os.path.isfile(f)]
  assert files
  for f in files:
    with open(f, "r+b") as handle:
      handle.truncate(os.path.getsize(f) // 2)


CORRUPTIONS = {
    "truncated_array": _truncate_an_array_file,
    "missing_metadata": lambda step_dir: os.remove(os.path.join(step_dir, "state", "_METADATA")),
    "missing_extra": lambda step_dir: os.remove(os.path.join(step_dir, "extra", "metadata")),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_good_step(
    straight, tmp_path, corruption, capsys):
  workdir = str(tmp_path / "run")
  shutil.copytree(straight, workdir)
  CORRUPTIONS[corruption](os.path.join(workdir, "checkpoints", str(STEPS)))
  # eval_every=0 ("off") runs no evaluation during training (it used to divide by zero).
  train.run(_config(eval_every=0), workdir)
  out = capsys.readouterr().out
  assert f"checkpoint step {STEPS} is unreadable" in out
  assert f"resumed from step {STEPS - 1}" in out
  assert os.path.isdir(os.path.join(workdir, "checkpoints_unreadable", str(STEPS)))
  _assert_same_final_params(workdir, straight)
  train_steps = [r["step"] for r in _records(workdir) if "train/loss" in r]
  assert train_steps == list(range(1, STEPS + 1))  # the redone step is logged once


def test_no_readable_checkpoint_stops_and_says_so(straight, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(straight, workdir)
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    _truncate_an_array_file(os.path.join(workdir, "checkpoints", step))
  with pytest.raises(ValueError, match="No checkpoint in .* is readable"):
    train.run(_config(), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints_unreadable"))  # nothing moved


# ----- Preemption: SIGTERM / SIGINT save the current step; the resumed run loses nothing -------
def _signal_after(monkeypatch, step, signum):
  """Sends `signum` to this process when the metrics of train step `step` are logged (the
  loop is then inside step + 1: the signal lands in the middle of the run)."""
  write = metrics_lib.MetricsWriter.write
  sent = []

  def write_then_signal(self, at, metrics, *, prefix="train"):
    write(self, at, metrics, prefix=prefix)
    if prefix == "train" and at == step and not sent:
      sent.append(at)
      os.kill(os.getpid(), signum)

  monkeypatch.setattr(metrics_lib.MetricsWriter, "write", write_then_signal)


@pytest.mark.parametrize("trial", [0, 1, *[pytest.param(t, marks=(pytest.mark.slow,
                                                                     pytest.mark.soak))
                                           for t in range(2, 10)]])
def test_signal_at_a_random_step_saves_then_resume_is_bitwise_equal(
    straight, tmp_path, monkeypatch, capsys, trial):
  rng = np.random.default_rng()
  at = int(rng.integers(1, STEPS - 1))  # a random step in 1 .. STEPS - 2
  signum = (signal.SIGTERM, signal.SIGINT)[trial % 2]
  workdir = str(tmp_path / "run")
  with monkeypatch.context() as patch:
    _signal_after(patch, at, signum)
    with pytest.raises(guards.Preempted) as stopped:
      train.run(_config(), workdir)
  saved = stopped.value.step
  assert saved > at, (at, saved)  # the step under way when the signal came is finished
  assert _params(workdir)[0] == saved  # ... and saved: no step is lost
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
  capsys.readouterr()
  train.run(_config(), workdir)
  progress = capsys.readouterr().err
  assert f"train done: {STEPS}/{STEPS}, {STEPS - saved} steps" in progress  # counted from saved
  _assert_same_final_params(workdir, straight)
  records = _records(workdir)
  assert [r["step"] for r in records if "train/loss" in r] == list(range(1, STEPS + 1))
  eval_steps = [r["step"] for r in records if "eval/accuracy" in r]
  assert eval_steps == sorted(set(eval_steps)), "an evaluation was logged twice"
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert "initial/accuracy" in summary and "final/accuracy" in summary


# ----- The workdir lock -----------------------------------------------------------------------
def _write_lock(workdir, **holder):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, guards.LOCK_FILE), "w") as f:
    json.dump(holder, f)


def test_a_second_run_on_a_locked_workdir_is_refused_with_the_holder(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    workdir = str(tmp_path / "run")
    _write_lock(workdir, pid=holder.pid, host=socket.gethostname(), started="earlier")
    with pytest.raises(guards.WorkdirLockedError, match=f"pid {holder.pid} on "):
      train.run(_config(), workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # refused before any work
  finally:
    holder.kill()
    holder.wait()


def test_stale_and_foreign_locks(tmp_path):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  workdir = str(tmp_path / "stale")
  _write_lock(workdir, pid=dead.pid, host=socket.gethostname(), started="earlier")
  messages = []
  with guards.workdir_lock(workdir, report=messages.append):
    held = json.load(open(os.path.join(workdir, guards.LOCK_FILE)))
    assert held["pid"] == os.getpid()
  assert "stale lock" in messages[0] and str(dead.pid) in messages[0]
  assert not os.path.exists(os.path.join(workdir, guards.LOCK_FILE))  # released on exit

  foreign = str(tmp_path / "foreign")
  _write_lock(foreign, pid=1, host="another-host", started="earlier")
  with pytest.raises(guards.WorkdirLockedError, match="another host .*another-host.* delete"):
    with guards.workdir_lock(foreign):
      pass

  half_written = str(tmp_path / "half")
  os.makedirs(half_written)
  open(os.path.join(half_written, guards.LOCK_FILE), "w").close()  # killed mid-write: stale
  with guards.workdir_lock(half_written, report=messages.append):
    pass


def test_command_line_refuses_a_locked_workdir_with_a_message(tmp_path):
  workdir = str(tmp_path / "run")
  _write_lock(workdir, pid=os.getpid(), host=socket.gethostname(), started="now")
  out = subprocess.run(
      [sys.executable, "launch/train.py", "--config=configs/grpo.py:smoke",
       f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith(f"rewardjax: {workdir} is in use")


# ----- Divergence -----------------------------------------------------------------------------
def test_bad_metrics_and_patience():
  options = guards.GuardOptions(patience=2)
  assert guards.bad_metrics({"loss": 0.5, "grad_norm": 1.0, "entropy": 0.3}, options) == []
  assert guards.bad_metrics({"loss": float("nan")}, options) == ["loss=nan is not finite"]
  assert guards.bad_metrics({"grad_norm": float("inf")}, options) == [
      "grad_norm=inf is not finite"]
  assert guards.bad_metrics({"loss": -2e6}, options) == ["loss=-2e+06 > 1e+06"]
  assert guards.bad_metrics({"entropy": 0.0, "kl": 5e3}, options) == [
      "kl=5000 > 1000", "entropy=0 < 1e-06"]
  assert guards.bad_metrics({"param_rms": 2e6}, options) == ["param_rms=2e+06 > 1000"]
  history = guards.check_divergence([], 1, {"loss": float("nan")}, options)
  assert guards.check_divergence(history, 2, {"loss": 1.0}, options) == []  # not consecutive
  with pytest.raises(guards.Diverged, match="2 consecutive bad steps, 1 to 2"):
    guards.check_divergence(history, 2, {"loss": float("inf")}, options)
  off = guards.GuardOptions(patience=0)
  assert guards.check_divergence([], 1, {"loss": float("nan")}, off) == []


def test_a_diverging_run_stops_naming_step_metric_and_last_good_checkpoint(tmp_path):
  config = _config(steps=8)
  config.optim.update(learning_rate=1e6, max_grad_norm=0.0)
  config.guard.patience = 2
  with pytest.raises(guards.Diverged) as diverged:
    train.run(config, str(tmp_path / "run"))
  message = str(diverged.value)
  assert "training diverged: 2 consecutive bad steps" in message
  assert "param_rms=" in message or "entropy=" in message
  assert "the last checkpoint before it is step" in message
  assert not os.path.exists(str(tmp_path / "run" / "summary.json"))  # nothing exported


# ----- Runs that would waste work -------------------------------------------------------------
def test_fewer_steps_than_the_checkpoint_is_refused(straight, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(straight, workdir)
  with pytest.raises(ValueError, match=r"step 4, beyond --config.train.steps=2"):
    train.run(_config(steps=2), workdir)


def test_an_error_after_the_checkpoint_manager_opened_is_the_last_thing_printed(tmp_path):
  data = tmp_path / "pairs.jsonl"
  data.write_bytes(b'{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n'
                   b'{"prompt": "caf\xe9", "chosen": "2", "rejected": "3"}\n')
  out = subprocess.run(
      [sys.executable, "launch/train.py", "--config=configs/dpo.py:smoke",
       "--config.data.source=jsonl", f"--config.data.path={data}",
       "--config.warmstart.steps=0", f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("ValueError: ") and "line 2" in last and "UTF-8" in last, out.stderr
  assert not os.path.exists(tmp_path / "run" / guards.LOCK_FILE)  # released on the error


def test_an_uncreatable_workdir_is_named(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(ValueError, match="--workdir=.* cannot be created"):
    train.run(_config(), str(blocker / "run"))


def test_exported_files_are_readable_like_any_other(tmp_path):
  from flax import nnx  # noqa: PLC0415

  from rewardjax.models import hf, transformer  # noqa: PLC0415

  config = transformer.ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
                                   num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4)
  hf.save_pretrained(transformer.Transformer(config, rngs=nnx.Rngs(0)), tmp_path / "hf")
  umask = os.umask(0)
  os.umask(umask)
  mode = os.stat(tmp_path / "hf" / "model.safetensors").st_mode & 0o777
  assert mode == 0o666 & ~umask
