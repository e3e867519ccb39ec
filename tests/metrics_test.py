"""Tests for rewardjax.metrics: progress lines and rates, summary, JSONL lines, TensorBoard."""

import io
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from rewardjax import metrics


class FakeClock:
  """Monotonic seconds that move only when the test says so."""

  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


def test_format_duration_is_m_ss_below_an_hour_and_h_mm_ss_above():
  assert metrics.format_duration(0.4) == "0:00"
  assert metrics.format_duration(59.6) == "1:00"
  assert metrics.format_duration(599.0) == "9:59"
  assert metrics.format_duration(3600.0) == "1:00:00"
  assert metrics.format_duration(180000.0) == "50:00:00"  # hours are not wrapped into days
  assert metrics.format_duration(None) == "?" and metrics.format_duration(math.inf) == "?"


def test_progress_line_rate_stage_eta_and_job_eta():
  # 2.5 s/step, 3000 - 600 = 2400 steps left -> 6000 s = 1:40:00; train has no rate yet.
  line = metrics.progress_line("warmstart", 600, 3000, 2.5, [("train", 600)], {"loss": "0.5"})
  assert line == ("warmstart [####................] 600/3000  20% | 2.5 s/step | ETA 1:40:00"
                  " | job ETA 1:40:00 + train 600 steps | loss=0.5")
  # 0.25 s/step is shown as 4 steps/s; 100 steps left -> 25 s; the last stage has no job part.
  assert metrics.progress_line("train", 500, 600, 0.25) == (
      "train [################....] 500/600  83% | 4 steps/s | ETA 0:25")
  # Before the 2nd write there is no rate, and no ETA is invented.
  assert metrics.progress_line("warmstart", 50, 3000, None, [("train", 600), ("dpo", 10)]) == (
      "warmstart [....................] 50/3000   1% | ? steps/s | ETA ?"
      " | job ETA ? + train 600 steps + dpo 10 steps")
  assert metrics.progress_line("train", 700, 600, 1.0).startswith(
      "train [####################] 700/600 100% | 1 s/step | ETA 0:00")


def test_rate_from_second_write_excludes_eval_time_and_stage_end_line(tmp_path, capsys):
  clock = FakeClock()
  with metrics.MetricsWriter(str(tmp_path), stages=[("warmstart", 4), ("train", 10)],
                             tensorboard=False, clock=clock) as writer:
    writer.stage("warmstart")
    clock.now = 100.0  # the first step includes a 100 s compile
    writer.write(1, {"loss": 2.0}, prefix="warmstart")
    clock.now = 140.0
    writer.write(2, {"loss": 1.0}, prefix="warmstart")
    assert writer.eval_started() == 140.0
    clock.now = 440.0  # a 300 s eval
    writer.write(2, {"accuracy": 0.5}, prefix="eval")
    clock.now = 480.0
    writer.write(3, {"loss": 0.5}, prefix="warmstart")
    clock.now = 520.0
    writer.write(4, {"loss": 0.25}, prefix="warmstart")
    writer.stage("train", initial=0)
  captured = capsys.readouterr()
  err = captured.err.splitlines()  # stderr is not a TTY here: one line per (throttled) draw
  assert err[0] == ("warmstart [....................] 0/4   0% | ? steps/s | ETA ?"
                    " | job ETA ? + train 10 steps")
  assert err[1].startswith("warmstart [#####...............] 1/4  25% | ? steps/s | ETA ? |")
  assert err[1].endswith("| loss=2")
  # From the 2nd write: (140 - 100) / (2 - 1) = 40 s/step, 2 steps left -> 1:20.
  assert "2/4  50% | 40 s/step | ETA 1:20 | job ETA 1:20 + train 10 steps" in err[2]
  # (480 - 100 - 300 eval) / (3 - 1) = 40 s/step: the eval is not a training step.
  assert "3/4  75% | 40 s/step | ETA 0:40 |" in err[3]
  assert "4/4 100% | 40 s/step | ETA 0:00 |" in err[4]
  # Mean over the whole stage, compile included: (520 - 300) / 4 = 55 s/step.
  assert err[5] == "warmstart done: 4/4, 4 steps in 8:40, 55 s/step, evals 5:00 excluded"
  assert err[6].startswith("train [....................] 0/10   0% | ? steps/s | ETA ?")
  assert err[7] == "train stopped: 0/10, 0 steps in 0:00"
  assert len(err) == 8
  assert captured.out == "eval @ step 2 (5:00): accuracy=0.5\n"


def test_log_file_gets_at_most_one_progress_line_per_30s(tmp_path, capsys):
  clock = FakeClock()
  with metrics.MetricsWriter(str(tmp_path), stages=[("train", 1000)], tensorboard=False,
                             clock=clock) as writer:
    writer.stage("train")
    for step in range(1, 1001):  # 0.125 s/step (exact in binary): 125 s in all
      clock.now = step * 0.125
      writer.write(step, {"loss": 1.0})
  err = capsys.readouterr().err.splitlines()
  # The stage start (t = 0), then every 30 s (t = 30, 60, 90, 120), and the end line.
  assert [line.split(" | ")[0].split("] ")[-1] for line in err[:-1]] == [
      "0/1000   0%", "240/1000  24%", "480/1000  48%", "720/1000  72%", "960/1000  96%"]
  assert err[-1] == "train done: 1000/1000, 1000 steps in 2:05, 8 steps/s"


class FakeTTY(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_terminal_line_is_redrawn_in_place_at_most_5_times_a_second(tmp_path, monkeypatch):
  clock, stderr, stdout = FakeClock(), FakeTTY(), io.StringIO()
  monkeypatch.setattr("sys.stderr", stderr)
  monkeypatch.setattr("sys.stdout", stdout)
  monkeypatch.setenv("COLUMNS", "200")
  with metrics.MetricsWriter(str(tmp_path), stages=[("train", 100)], tensorboard=False,
                             clock=clock) as writer:
    writer.stage("train")
    for step in range(1, 101):  # 100 writes in 0.78 s (steps of 1/128 s, exact in binary)
      clock.now = step / 128
      writer.write(step, {"loss": 1.0})
      if step == 50:
        writer.print("message")
  out = stderr.getvalue()
  # Draws at t = 0 (stage start) and at steps 26, 52, 78 (0.2 s apart), each after a "\r";
  # the message and the stage end each clear the line with one more "\r".
  assert out.count("\r") == 6
  assert out.count("\n") == 1 and out.endswith("\r\x1b[Ktrain done: 100/100, 100 steps in 0:01,"
                                               " 128 steps/s\n")
  assert stdout.getvalue() == "message\n"


def test_summary_table_change_column_and_flat_json(tmp_path, capsys):
  with metrics.MetricsWriter(str(tmp_path), stages=[("train", 2)], console=False,
                             tensorboard=False) as writer:
    writer.summary(initial={"accuracy": 0.73, "loss": 2.0, "note": "a"},
                   final={"accuracy": 0.87, "loss": float("nan"), "format": 0.5},
                   extra={"steps": 600, "wall_seconds": 412.0})
  out = capsys.readouterr().out.splitlines()
  assert out == [
      "metric        initial  final  change",
      "------------  -------  -----  ------",
      "accuracy         0.73   0.87   +0.14",  # 0.87 - 0.73, without float noise
      "loss                2    nan     nan",
      "note                a",  # not a number: no change
      "format                   0.5",  # only in `final`: blank initial and change
      "------------  -------  -----  ------",
      "steps         600",
      "wall_seconds  412",
  ]
  assert json.loads((tmp_path / "summary.json").read_text()) == {
      "initial/accuracy": 0.73, "initial/loss": 2.0, "initial/note": "a",
      "final/accuracy": 0.87, "final/loss": None, "final/format": 0.5,
      "steps": 600, "wall_seconds": 412.0}


def test_jsonl_lines_per_stage_prefix_and_nan_is_null(tmp_path, capsys):
  with metrics.MetricsWriter(str(tmp_path), stages=[("warmstart", 2), ("train", 3)],
                             console=True) as writer:
    writer.write(2, {"loss": 0.75}, prefix="warmstart")  # starts the stage without stage()
    writer.stage("train", initial=0)
    writer.write(1, {"loss": 0.5, "reward": np.float32(0.25), "tokens": 7})
    writer.write(2, {"loss": float("nan"), "kl": float("inf")})
    writer.write(2, {"accuracy": 0.75}, prefix="eval")
    writer.print("hello from the loop")
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]  # strict JSON: no NaN / Infinity tokens
  assert [r["step"] for r in records] == [2, 1, 2, 2]
  assert records[0] == {"step": 2, "time": records[0]["time"], "warmstart/loss": 0.75}
  assert records[1]["train/loss"] == 0.5 and records[1]["train/reward"] == 0.25
  assert records[1]["train/tokens"] == 7.0 and isinstance(records[1]["train/tokens"], float)
  assert records[2]["train/loss"] is None and records[2]["train/kl"] is None
  assert records[3] == {"step": 2, "time": records[3]["time"], "eval/accuracy": 0.75}
  assert all(math.isfinite(r["time"]) for r in records)
  captured = capsys.readouterr()
  assert captured.out == "eval @ step 2: accuracy=0.75\nhello from the loop\n"
  assert "warmstart done: 2/2, 2 steps in" in captured.err
  assert "train stopped: 2/3, 2 steps in" in captured.err


def test_unknown_or_duplicate_stage_raises(tmp_path):
  with pytest.raises(ValueError, match="unique"):
    metrics.MetricsWriter(str(tmp_path), stages=[("train", 1), ("train", 2)])
  with metrics.MetricsWriter(str(tmp_path), stages=[("train", 1)], tensorboard=False) as writer:
    with pytest.raises(ValueError, match=r"'warmup'.*\['train'\]"):
      writer.stage("warmup")


def test_appends_across_writers_and_writes_tensorboard_events(tmp_path):
  for step in (1, 2):  # a resumed run appends to the same file
    with metrics.MetricsWriter(str(tmp_path), stages=[("train", 2)], console=False) as writer:
      writer.stage("train", initial=step - 1)
      writer.write(step, {"loss": 1.0 / step})
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events and all(e.stat().st_size > 0 for e in events)


def test_non_main_process_writes_and_prints_nothing(tmp_path, capsys):
  with metrics.MetricsWriter(str(tmp_path / "run"), stages=[("train", 1)],
                             is_main=False) as writer:
    writer.stage("train")
    writer.write(1, {"loss": 1.0})
    writer.eval_started()
    writer.write(1, {"accuracy": 1.0}, prefix="eval")
    writer.summary(initial={"accuracy": 0.0}, final={"accuracy": 1.0})
  assert not (tmp_path / "run").exists()
  assert capsys.readouterr() == ("", "")


def test_postfix_picks_key_metrics_in_order():
  postfix = metrics._postfix({"policy/entropy": 1.5, "loss": 0.25, "reward_mean": 0.5,
                              "grad_norm": 3.0})
  assert postfix == {"loss": "0.25", "reward": "0.5", "entropy": "1.5"}


def test_fetch_flattens_and_converts_to_python_floats():
  out = metrics.fetch({"loss": jnp.float32(0.5), "kl": {"k3": jnp.int32(2)}, "n": 3})
  assert out == {"loss": 0.5, "kl/k3": 2.0, "n": 3.0}
  assert all(type(v) is float for v in out.values())
  with pytest.raises(ValueError, match=r"'vec'.*\(2,\)"):
    metrics.fetch({"vec": jnp.zeros(2)})
