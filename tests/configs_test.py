"""Configs: every variant builds, names a known loss, and bad arguments fail with the valid set."""

import importlib

import pytest

from configs import common
from rewardjax import algorithms

CONFIGS = ("grpo", "dpo", "reward_model", "sft", "spark", "pretrain")


@pytest.mark.parametrize("name", CONFIGS)
def test_default_and_smoke_build(name):
  module = importlib.import_module(f"configs.{name}")
  full, smoke = module.get_config(), module.get_config("smoke")
  assert smoke.train.steps == 2 and smoke.model.num_layers == 2
  assert full.train.steps > smoke.train.steps


def test_every_grpo_variant_names_real_loss_and_advantage():
  grpo = importlib.import_module("configs.grpo")
  for variant in grpo.VARIANTS:
    c = grpo.get_config(f"variant={variant}")
    assert c.algo.loss_type in algorithms.grpo.OBJECTIVES
    assert c.algo.advantage in algorithms.grpo.ADVANTAGES


def test_every_variant_names_an_objective_of_its_algorithm():
  for name in ("dpo", "reward_model"):
    module = importlib.import_module(f"configs.{name}")
    for variant in module.VARIANTS:
      c = module.get_config(variant)
      assert c.algo.loss_type in algorithms.get(c.algorithm).objectives


def test_unknown_variant_and_objective_list_the_valid_names():
  from rewardjax.algorithms import base  # noqa: PLC0415
  with pytest.raises(ValueError, match="sigmoid"):
    importlib.import_module("configs.dpo").get_config("variant=nope")
  with pytest.raises(ValueError, match=r"valid for dpo: \['aot'"):
    base.objective(algorithms.get("dpo").objectives, "nope", "dpo")


def test_parse_arg_bare_words_and_errors():
  arg = common.parse_arg("dapo,smoke", choices={"variant": ("grpo", "dapo")}, variant="grpo",
                         smoke=False)
  assert arg.variant == "dapo" and arg.smoke is True
  with pytest.raises(ValueError, match="variant"):
    common.parse_arg("variant=nope", choices={"variant": ("grpo",)}, variant="grpo")
  with pytest.raises(ValueError, match="neither a flag"):
    common.parse_arg("typo", choices={"variant": ("grpo",)}, variant="grpo", smoke=False)
  with pytest.raises(ValueError, match="not one of"):
    common.parse_arg("colour=red", variant="grpo")


def _read_names(paths) -> set[str]:
  """Attribute names and string subscripts read anywhere in `paths` (python sources)."""
  import ast  # noqa: PLC0415
  import pathlib  # noqa: PLC0415
  names = set()
  for path in paths:
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
      if isinstance(node, ast.Attribute):
        names.add(node.attr)
      elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        names.add(node.slice.value)
      elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        names.add(node.value)  # hparams tuples name the fields they bind
  return names


ALL_CONFIGS = ("grpo", "dpo", "reward_model", "spark", "sft")


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_no_config_field_is_dead(name):
  """Every field of every variant's config is read: `algo` fields by the algorithm's own
  module(s) (its block), the other blocks by the trainer / launch code."""
  import glob  # noqa: PLC0415
  import os  # noqa: PLC0415

  from rewardjax import algorithms  # noqa: PLC0415
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  module = importlib.import_module(f"configs.{name}")
  variants = getattr(module, "VARIANTS", {"": None})
  trunk = _read_names([os.path.join(repo, "rewardjax", "train.py"),
                       os.path.join(repo, "launch", "train.py"),
                       os.path.join(repo, "rewardjax", "checkpoint.py")]
                      + glob.glob(os.path.join(repo, "rewardjax", "recipes", "*.py")))
  for variant in variants:
    c = module.get_config(f"variant={variant}" if variant else None)
    algorithm = algorithms.get(c.algorithm)
    assert set(c.algo) <= set(algorithm.defaults), (variant, set(c.algo) - set(
        algorithm.defaults))
    sources = glob.glob(os.path.join(repo, "rewardjax", "algorithms", "*.py"))
    read = _read_names(sources)
    dead = [k for k in c.algo if k not in read]
    assert not dead, f"{name}:{variant}: algo fields nothing reads: {dead}"
    for block in ("data", "rollout", "train", "warmstart", "optim", "checkpoint", "mesh",
                  "distributed", "model"):
      dead = [k for k in c[block] if k not in trunk]
      assert not dead, f"{name}: {block} fields the trainer never reads: {dead}"
