"""Configs: every variant builds, names a known loss, and bad arguments fail with the valid set."""

import importlib

import pytest

from configs import common
from rewardjax import algorithms

# The RL-with-model-rewards configs: each is a recipe or a `rewards` block over grpo / ppo.
# The round-based configs (recipe self_rewarding over the DPO family).
ROUND_CONFIGS = ("self_rewarding", "cream", "temporal_sr", "dno", "online_dpo", "treg", "sspo")
# The process-reward configs on the multi-step task.
PROCESS_CONFIGS = ("clip_delta", "oprl", "stable_reinforce")
MODEL_REWARD_CONFIGS = ("ppo", "rlhf", "cooper", "sar", "ssr_zero", "endogenous",
                        "self_rewarding_ppo", "spo", "co_reward") + ROUND_CONFIGS + PROCESS_CONFIGS
# Two-attempt and self-distillation configs (rewardjax.turns).
TURN_CONFIGS = ("score", "sd_zero")
CONFIGS = (("grpo", "dpo", "reward_model", "sft", "spark", "pretrain", "prm")
           + MODEL_REWARD_CONFIGS + TURN_CONFIGS)


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
  for name in ("dpo", "reward_model") + MODEL_REWARD_CONFIGS + TURN_CONFIGS:
    module = importlib.import_module(f"configs.{name}")
    for variant in getattr(module, "VARIANTS", (None,)):
      c = module.get_config(f"variant={variant}" if variant else None)
      assert c.algo.loss_type in algorithms.get(c.algorithm).objectives


# (config, variant) -> (companion name or None, the reward's term names, whether a term reads
# the frozen reference), at smoke size.
PROGRAMS = {
    ("ppo", "ppo"): ("critic", ["verifier"], False),
    ("ppo", "kl_in_loss"): ("critic", ["verifier"], False),
    ("ppo", "reinforce_pp"): (None, ["verifier"], False),
    ("rlhf", "grpo"): (None, ["reward_model", "verifier"], False),
    ("rlhf", "ppo"): ("critic", ["reward_model", "verifier"], False),
    ("cooper", "cooper"): ("reward_model", ["reward_model", "verifier"], False),
    ("cooper", "frozen"): (None, ["reward_model", "verifier"], False),
    ("sar", "sar"): (None, ["verifier", "sar"], False),
    ("sar", "verifier"): (None, ["verifier", "sar"], False),
    ("ssr_zero", "ssr_zero"): (None, ["judge", "verifier"], False),
    ("ssr_zero", "verifier"): (None, ["verifier"], False),
    ("endogenous", "endogenous"): (None, ["endogenous", "verifier"], True),
    ("endogenous", "verifier"): (None, ["verifier"], False),
    ("self_rewarding_ppo", None): ("critic", ["coherent", "verifier"], True),
    ("spo", "spo"): (None, ["win_rate", "verifier"], False),
    ("spo", "verifier_comparator"): (None, ["win_rate", "verifier"], False),
    ("spo", "verifier"): (None, ["verifier"], False),
    ("co_reward", "co_reward"): (None, ["votes", "verifier", "pseudo_label"], False),
    ("co_reward", "majority_vote"): (None, ["votes", "verifier", "pseudo_label"], False),
    ("co_reward", "ema_teacher"): (None, ["votes", "verifier", "pseudo_label"], True),
    ("co_reward", "combined"): (None, ["votes", "verifier", "pseudo_label"], True),
    ("co_reward", "verifier"): (None, ["verifier", "votes", "pseudo_label"], False),
    ("self_rewarding", None): (None, ["judge", "verifier"], False),
    ("cream", None): (None, ["judge", "verifier"], False),
    ("temporal_sr", None): (None, ["judge", "verifier"], False),
    ("dno", None): (None, ["reward_model", "verifier"], False),
    ("online_dpo", None): (None, ["judge", "verifier"], False),
    ("treg", "treg"): (None, ["reward_model", "verifier"], False),
    ("treg", "dpo"): (None, ["reward_model", "verifier"], False),
    ("sspo", "sspo"): (None, ["reward_model", "verifier"], False),
    ("sspo", "dpo"): (None, ["reward_model", "verifier"], False),
    ("clip_delta", "clip_delta"): (None, ["verifier", "prm"], False),
    ("clip_delta", "sum"): (None, ["verifier", "prm"], False),
    ("clip_delta", "clip"): (None, ["verifier", "prm"], False),
    ("clip_delta", "delta"): (None, ["verifier", "prm"], False),
    ("clip_delta", "outcome"): (None, ["verifier"], False),
    ("oprl", "oprl"): ("prm", ["verifier", "implicit_prm"], False),
    ("oprl", "outcome"): (None, ["verifier"], False),
    ("stable_reinforce", "stable_reinforce"): (None, ["format", "verifier", "consistency"],
                                               False),
    ("stable_reinforce", "reinforce_pp"): (None, ["verifier"], False),
}


def test_model_reward_programs_cover_every_variant():
  for name in MODEL_REWARD_CONFIGS:
    module = importlib.import_module(f"configs.{name}")
    variants = set(getattr(module, "VARIANTS", (None,)))
    assert variants == {v for n, v in PROGRAMS if n == name}, name


@pytest.mark.parametrize("name,variant", list(PROGRAMS), ids=[f"{n}-{v}" for n, v in PROGRAMS])
def test_model_reward_smoke_variant_builds_its_program(name, variant):
  """The smoke config resolves into a job (data, reward sources and their models, recipe,
  the algorithm's program) without training: its companion and reward terms, and a state with
  a reference whenever a term reads it."""
  import jax  # noqa: PLC0415

  from rewardjax import sharding, train  # noqa: PLC0415
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config(f"variant={variant},smoke" if variant else "smoke")
  assert config.train.steps == 2
  mesh = sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh):
    job = train.make_job(config, mesh)
  companion, terms, reads_reference = PROGRAMS[(name, variant)]
  program = job.program
  assert (program.companion.name if program.companion else None) == companion
  assert [t.name for t in job.recipe.rewards.terms] == terms
  assert job.recipe.rewards.uses_reference == reads_reference
  assert program.with_ref or not reads_reference
  # Round-based configs train in rounds: one round per step at smoke size.
  assert (program.rounds is not None) == (name in ROUND_CONFIGS)
  if program.rounds is not None:
    assert program.rounds.steps_per_round == 1


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


ALL_CONFIGS = ("grpo", "dpo", "reward_model", "spark", "sft") + MODEL_REWARD_CONFIGS + TURN_CONFIGS


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
                       os.path.join(repo, "rewardjax", "checkpoint.py"),
                       os.path.join(repo, "rewardjax", "validation.py"),
                       os.path.join(repo, "rewardjax", "guards.py")]
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
                  "distributed", "model", "guard"):
      dead = [k for k in c[block] if k not in trunk]
      assert not dead, f"{name}: {block} fields the trainer never reads: {dead}"
