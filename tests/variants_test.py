"""Every registered variant of every algorithm trains for 2 steps through `launch/train.py`'s
entry function (smoke sizes): a finite loss each step, and every metric its objective defines
is logged."""

import importlib
import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from rewardjax import algorithms, train, train_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("launch_train",
                                               os.path.join(REPO, "launch", "train.py"))
launch_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch_train)

CASES = [(name, variant) for name in ("grpo", "dpo", "reward_model", "sft", "spark", "score",
                                      "sd_zero")
         for variant in importlib.import_module(f"configs.{name}").VARIANTS]
# Smoke runs without the warm start, the HF export and the mid-run evaluation (each tested in
# train_test.py): what differs between variants is the batch and the objective.
OVERRIDES = {"warmstart.steps": 0, "train.export_hf": False, "checkpoint.async_save": False,
             "train.eval_every": 100}


def _objective_metric_names(config) -> set[str]:
  """The metric names the variant's update step returns, from an abstract evaluation."""
  mesh = train.sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh):
    job = train.make_job(config, mesh)
    program = job.program
    state, _ = train_state.create_state(program.model_fn, train.make_optimizer(config.optim, 2),
                                        mesh, jax.random.key(0), with_ref=program.with_ref)
    batch, host_metrics = program.make_batch(state, 0, jax.random.key(1))
    _, metrics = jax.eval_shape(program.step, state, batch, jax.random.key(2))
  return set(metrics) | set(host_metrics)


@pytest.mark.parametrize("name,variant", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_variant_trains_two_steps(name, variant, tmp_path):
  config_arg = os.path.join(REPO, "configs", f"{name}.py") + f":variant={variant},smoke"
  config = launch_train.load_config(config_arg, OVERRIDES)
  assert config.algorithm in algorithms.ALGORITHMS
  launch_train.train_config(config, str(tmp_path))
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train_lines = [line for line in lines if "train/loss" in line]
  if config.train.steps == 0:  # training-free (the endogenous reward): the run is its evaluation
    assert not train_lines and any("eval/rb1/score" in line for line in lines)
    return
  assert [line["step"] for line in train_lines] == [1, 2]
  assert all(np.isfinite(line["train/loss"]) for line in train_lines)
  expected = {f"train/{k}" for k in _objective_metric_names(config)}
  assert expected <= set(train_lines[0]), sorted(expected - set(train_lines[0]))
