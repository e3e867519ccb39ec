"""Configs: every variant builds, names a known loss, and bad arguments fail with the valid set."""

import importlib

import pytest

from configs import common
from rewardjax import advantages, losses

CONFIGS = ("grpo", "dpo", "reward_model")


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
    assert c.algo.loss_type in losses.GRPO_LOSS_TYPES
    assert c.algo.advantage in advantages.ADVANTAGES


def test_every_dpo_variant_names_a_trl_loss_type():
  dpo = importlib.import_module("configs.dpo")
  for variant in dpo.VARIANTS:
    assert dpo.get_config(variant).algo.loss_type in losses.DPO_LOSS_TYPES


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
