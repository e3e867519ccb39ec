"""Validate before work: a bad config field is named, as the flag that sets it, with a valid
value, before any data, model or compilation; every shipped config passes; empty splits fail.

No model is built and nothing is jitted: each case is a config and a message.
"""

import glob
import importlib
import json
import os
import re

import ml_collections
import pytest

from configs import common
from rewardjax import algorithms, sharding, train, validation
from rewardjax.algorithms import base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "base.py", "common.py"))


def _config(arg: str, overrides: dict) -> ml_collections.ConfigDict:
  name, _, variant = arg.partition(":")
  return common.load_config(os.path.join(REPO, "configs", f"{name}.py") + ":" + variant,
                            overrides)


def _fail(config, mesh=None) -> str:
  with pytest.raises(base.ConfigError) as err:
    validation.validate_config(config, mesh)
  return str(err.value)


# (config "name:arg", overrides ("{tmp}" = a temporary directory), substrings of the message:
# the field as its flag, and the fix or a valid value). Smoke configs: 4 prompts x G = 2.
BAD = {
    "grpo_loss_type": ("grpo:smoke", {"algo.loss_type": "nope"},
                       ["--config.algo.loss_type='nope'", "valid for grpo: ['bnpo'"]),
    "grpo_advantage": ("grpo:smoke", {"algo.advantage": "nope"},
                       ["--config.algo.advantage='nope'", "'rloo', 'reinforce_pp'"]),
    "grpo_kl_estimator": ("grpo:smoke", {"algo.kl_estimator": "k9"},
                          ["--config.algo.kl_estimator='k9'", "'low_var_kl'"]),
    "grpo_minibatches": ("grpo:smoke", {"algo.num_minibatches": 3},
                         ["--config.algo.num_minibatches=3", "8 rows", "e.g. 2",
                          "--config.train.batch_size=6"]),
    "grpo_iterations": ("grpo:smoke", {"algo.num_iterations": 0},
                        ["--config.algo.num_iterations=0", ">= 1"]),
    "grpo_one_sample": ("grpo:smoke", {"rollout.num_generations": 1},
                        ["--config.rollout.num_generations=1", "every advantage is 0",
                         "num_generations=2", "--config.algo.advantage='reinforce_pp'"]),
    "rloo_one_sample": ("grpo:variant=rloo,smoke", {"rollout.num_generations": 1},
                        ["--config.rollout.num_generations=1", "advantage='rloo'"]),
    "grpo_turns": ("grpo:smoke", {"algo.turns": 3}, ["--config.algo.turns=3", "valid: 1"]),
    "score_dynamic_sampling": ("score:smoke", {"algo.dynamic_sampling": True},
                               ["--config.algo.dynamic_sampling=True",
                                "--config.algo.dynamic_sampling=False"]),
    "grpo_ref_sync": ("grpo:smoke", {"algo.sync_ref_model": True,
                                     "algo.ref_model_sync_steps": 0},
                      ["--config.algo.ref_model_sync_steps=0", ">= 1"]),
    "grpo_greedy": ("grpo:smoke", {"rollout.temperature": 0.0},
                    ["--config.rollout.temperature=0.0", "e.g. 1.0"]),
    "ppo_kl_in": ("ppo:smoke", {"algo.kl_in": "nowhere"},
                  ["--config.algo.kl_in='nowhere'", "['reward', 'loss']"]),
    "dpo_loss_type": ("dpo:smoke", {"algo.loss_type": "nope"},
                      ["--config.algo.loss_type='nope'", "valid for dpo: ['aot'"]),
    "kto_one_pair": ("dpo:smoke", {"algo.loss_type": "kto", "train.batch_size": 1},
                     ["--config.train.batch_size=1", ">= 2 pairs"]),
    "rm_records": ("reward_model:smoke", {"algo.records": "nope"},
                   ["--config.algo.records='nope'", "is not a records kind", "'pairs'"]),
    "rm_pretrain": ("reward_model:smoke", {"algo.pretrain_steps": 2},
                    ["--config.algo.pretrain_steps=2", "kinds that do: ['polar']"]),
    "sd_revise_prompt": ("sd_zero:smoke", {"algo.revise_prompt": "nope"},
                         ["--config.algo.revise_prompt='nope'", "'reflection'"]),
    "sd_teacher_sync": ("sd_zero:smoke", {"algo.teacher_sync_steps": -1},
                        ["--config.algo.teacher_sync_steps=-1", "0: never"]),
    "dtype": ("grpo:smoke", {"model.dtype": "float77"},
              ["--config.model.dtype='float77'", "'bfloat16'"]),
    "param_dtype": ("sft:smoke", {"model.param_dtype": "int8"},
                    ["--config.model.param_dtype='int8'", "'float32'"]),
    "attention_impl": ("grpo:smoke", {"model.attention_impl": "flash"},
                       ["--config.model.attention_impl='flash'", "'pallas'"]),
    "remat": ("grpo:smoke", {"model.remat": "all"}, ["--config.model.remat='all'", "'block'"]),
    "kv_heads": ("grpo:smoke", {"model.num_kv_heads": 3},
                 ["--config.model.num_kv_heads=3", "must divide model.num_heads=2", "e.g. 2"]),
    "eval_every": ("grpo:smoke", {"train.eval_every": -1},
                   ["--config.train.eval_every=-1", "0 = off"]),
    "batch_size": ("dpo:smoke", {"train.batch_size": 0}, ["--config.train.batch_size=0", ">= 1"]),
    "checkpoint_every": ("grpo:smoke", {"checkpoint.every": 0},
                         ["--config.checkpoint.every=0", ">= 1"]),
    "max_new_tokens": ("grpo:smoke", {"rollout.max_new_tokens": 0},
                       ["--config.rollout.max_new_tokens=0", ">= 1"]),
    "top_p": ("grpo:smoke", {"rollout.top_p": 0.0}, ["--config.rollout.top_p=0.0", "(0, 1]"]),
    "data_source": ("grpo:smoke", {"data.source": "csv"},
                    ["--config.data.source='csv'", "'jsonl'"]),
    "data_path": ("grpo:smoke", {"data.source": "jsonl", "warmstart.steps": 0},
                  ["--config.data.path=''", "--config.data.path=/path/to/train.jsonl"]),
    "data_missing": ("grpo:smoke", {"data.source": "jsonl", "data.path": "{tmp}/gone.jsonl",
                                    "warmstart.steps": 0},
                     ["--config.data.path='{tmp}/gone.jsonl'", "no such file"]),
    "file_warmstart": ("grpo:smoke", {"data.source": "jsonl", "data.path": "{tmp}/train.jsonl"},
                       ["--config.warmstart.steps=2", "built-in task's questions only",
                        "--config.warmstart.steps=0", "--config.model.checkpoint="]),
    "checkpoint_missing": ("grpo:smoke", {"model.checkpoint": "{tmp}/gone"},
                           ["--config.model.checkpoint='{tmp}/gone'", "no such directory",
                            "--config.model.checkpoint=''"]),
    "checkpoint_not_hf": ("grpo:smoke", {"model.checkpoint": "{tmp}"},
                          ["--config.model.checkpoint='{tmp}'", "has no config.json"]),
    "algorithm": ("grpo:smoke", {"algorithm": "a2c"},
                  ["--config.algorithm='a2c'", "'grpo', 'ppo'"]),
    "switched_algorithm": ("grpo:smoke", {"algorithm": "dpo"},
                           ["--config.algo.advantage='grpo'", "does not read this field",
                            "lacks the fields", "configs/dpo.py"]),
    "recipe": ("grpo:smoke", {"recipe": "nope"}, ["--config.recipe='nope'", "'spark'"]),
    "reward_terms": ("grpo:smoke", {"rewards.terms": "verifier,nope"},
                     ["--config.rewards.terms='verifier,nope'", "unknown reward source 'nope'"]),
    "difficulty": ("grpo:smoke", {"data.difficulty": 99}, ["--config.data.difficulty=99"]),
    "schedule": ("grpo:smoke", {"optim.schedule": "nope"},
                 ["--config.optim.schedule='nope'", "'cosine'"]),
    "mesh_shards": ("grpo:smoke", {"mesh.data": 3},
                    ["--config.train.batch_size=4", "3 batch shards",
                     "--config.train.batch_size=6"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_field_is_named_with_a_valid_value(case, tmp_path):
  arg, overrides, expected = BAD[case]
  with open(tmp_path / "train.jsonl", "w", encoding="utf-8") as f:
    f.write(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
  fill = lambda v: v.format(tmp=tmp_path) if isinstance(v, str) else v  # noqa: E731
  message = _fail(_config(arg, {k: fill(v) for k, v in overrides.items()}))
  for text in expected:
    assert fill(text) in message, message


def test_every_problem_is_listed_once_in_one_error():
  config = _config("grpo:smoke", {"model.dtype": "float77", "algo.loss_type": "nope",
                                  "algo.num_minibatches": 3, "train.eval_every": -1})
  message = _fail(config)
  lines = [line.strip() for line in message.splitlines()[1:]]
  assert message.startswith("config: 4 invalid config field(s)")
  assert [line.split("=")[0] for line in lines] == [
      "--config.train.eval_every", "--config.model.dtype", "--config.algo.loss_type",
      "--config.algo.num_minibatches"]


def test_mesh_that_does_not_fit_the_devices_is_named():
  mesh = sharding.make_mesh(-1, 1, 1)   # the 8 test devices
  message = _fail(_config("grpo:smoke", {"mesh.data": 3}), mesh)
  assert "--config.mesh.data=3: the mesh" in message and "8 devices" in message
  assert "e.g. data=8, fsdp=1, tensor=1" in message


def _shipped_args(name: str) -> list[str]:
  module = importlib.import_module(f"configs.{name}")
  variants = [f"variant={v}" for v in getattr(module, "VARIANTS", ())] or [""]
  return [",".join(filter(None, (v, s))) for v in variants for s in ("", "smoke")]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_and_variant_passes(name):
  mesh = sharding.make_mesh(-1, 1, 1)
  module = importlib.import_module(f"configs.{name}")
  for arg in _shipped_args(name):
    config = module.get_config(arg or None)
    validation.validate_config(config)
    validation.validate_config(config, mesh)   # and its rows split over 8 devices


def test_a_hugging_face_preset_passes_with_its_checkpoint_and_data(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
  config = _config("grpo:qwen2_5_0_5b", {"model.checkpoint": str(tmp_path), "data.source":
                                         "jsonl", "data.path": str(tmp_path / "train.jsonl")})
  validation.validate_config(config)
  assert "--config.data.path=''" in _fail(_config("grpo:qwen2_5_0_5b", {
      "model.checkpoint": str(tmp_path), "data.source": "jsonl"}))


def test_every_algorithm_validates_its_block_and_build_calls_it():
  setup = base.Setup(tokenizer=None, mesh=None, model=None, data=base.DataOptions(),
                     sampling=base.SamplingOptions(), problems={}, records={}, recipe=None,
                     batch_size=4, eval_batch_size=4, seed=0)
  for name, algorithm in algorithms.ALGORITHMS.items():
    assert algorithm.validate is not base.no_validation, name
    algorithm.validate(ml_collections.ConfigDict(dict(algorithm.defaults)),
                       base.sizes_of(setup))
    bad = ml_collections.ConfigDict(dict(algorithm.defaults, loss_type="nope"))
    with pytest.raises(base.ConfigError, match="--config.algo.loss_type='nope'"):
      algorithm.build(bad, setup)   # before it reads the (empty) setup


# ---- check_splits: after the data is loaded -------------------------------------------------
def _problems(train=1, warmstart=1, heldout=1):
  rows = lambda n: [{"prompt": "1+1=", "answer": "2"}] * n  # noqa: E731
  return {"train": rows(train), "warmstart": rows(warmstart), "heldout": rows(heldout)}


def test_check_splits_of_the_built_in_task():
  config = _config("grpo:smoke", {})   # warm start on: it needs its half too
  validation.check_splits(_problems(), {}, config)
  with pytest.raises(base.ConfigError) as err:
    validation.check_splits(_problems(train=0, warmstart=0, heldout=0), {}, config)
  message = str(err.value)
  assert "the training split is empty" in message and "warm-start split is empty" in message
  assert "--config.data.num_eval=8: the held-out split is empty, so every evaluation" in message


def test_check_splits_of_a_file(tmp_path):
  path = str(tmp_path / "train.jsonl")
  config = _config("grpo:smoke", {"data.source": "jsonl", "data.path": path,
                                  "warmstart.steps": 0})
  record = {"prompt": "1+1=", "answer": "2"}
  validation.check_splits({}, {"train": [record], "heldout": [record]}, config)
  with pytest.raises(base.ConfigError) as err:
    validation.check_splits({}, {"train": [record] * 3, "heldout": []}, config)
  assert all(text in str(err.value) for text in (
      "--config.data.heldout_fraction=0.1", path, "--config.data.eval_path=",
      "raise --config.data.heldout_fraction"))
  with pytest.raises(base.ConfigError, match="fell into the held-out split"):
    validation.check_splits({}, {"train": [], "heldout": [record]}, config)
  eval_path = str(tmp_path / "heldout.jsonl")
  with_eval = _config("grpo:smoke", {"data.source": "jsonl", "data.path": path,
                                     "data.eval_path": eval_path, "warmstart.steps": 0})
  with pytest.raises(base.ConfigError, match=re.escape(f"--config.data.eval_path='{eval_path}'")):
    validation.check_splits({}, {"train": [record], "heldout": []}, with_eval)


def test_duplicate_records_leave_a_split_empty_and_are_named(tmp_path):
  """Identical records share a hash, so the hashed split puts them all on one side."""
  path = tmp_path / "train.jsonl"
  path.write_text((json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n") * 20)
  config = _config("grpo:smoke", {"data.source": "jsonl", "data.path": str(path),
                                  "warmstart.steps": 0})
  validation.validate_config(config)   # the config itself is fine
  problems, records = train.load_data(config, None, "answer")
  assert min(len(records["train"]), len(records["heldout"])) == 0
  with pytest.raises(base.ConfigError, match=re.escape(str(path))):
    validation.check_splits(problems, records, config)
