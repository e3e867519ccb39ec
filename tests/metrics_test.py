"""Tests for rewardjax.metrics: JSONL lines, NaN as null, TensorBoard files, one-shot fetch."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from rewardjax import metrics


def test_jsonl_lines_parse_and_nan_is_null(tmp_path, capsys):
  with metrics.MetricsWriter(str(tmp_path), total_steps=3, console=True) as writer:
    writer.write(1, {"loss": 0.5, "reward": np.float32(0.25), "tokens": 7})
    writer.write(2, {"loss": float("nan"), "kl": float("inf")})
    writer.write(2, {"accuracy": 0.75}, prefix="eval")
    writer.print("hello from the loop")
    writer.summary({"train/loss": 0.125, "steps": 3})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]  # strict JSON: no NaN / Infinity tokens
  assert [r["step"] for r in records] == [1, 2, 2]
  assert records[0]["train/loss"] == 0.5 and records[0]["train/reward"] == 0.25
  assert records[0]["train/tokens"] == 7.0 and isinstance(records[0]["train/tokens"], float)
  assert records[1]["train/loss"] is None and records[1]["train/kl"] is None
  assert records[2] == {"step": 2, "time": records[2]["time"], "eval/accuracy": 0.75}
  assert all(math.isfinite(r["time"]) for r in records)
  out = capsys.readouterr().out
  assert "hello from the loop" in out and "eval/accuracy=0.75" in out
  assert "train/loss" in out and "0.125" in out
  assert json.loads((tmp_path / "summary.json").read_text()) == {"train/loss": 0.125, "steps": 3}


def test_appends_across_writers_and_writes_tensorboard_events(tmp_path):
  for step in (1, 2):  # a resumed run appends to the same file
    with metrics.MetricsWriter(str(tmp_path), total_steps=2, initial_step=step - 1,
                               console=False) as writer:
      writer.write(step, {"loss": 1.0 / step})
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events and all(e.stat().st_size > 0 for e in events)


def test_non_main_process_writes_nothing(tmp_path):
  with metrics.MetricsWriter(str(tmp_path / "run"), total_steps=1, is_main=False) as writer:
    writer.write(1, {"loss": 1.0})
  assert not (tmp_path / "run").exists()


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
