"""Cooper (`rewardjax.recipes.cooper`, configs/cooper.py): the policy and its reward model
trained together.

* `pairs`: the first verified rollout is the positive, the first rejected one the negative; when
  every rollout is right, the answer with one digit slipped (which the verifier rejects); a
  prompt without a verified rollout gives an invalid pair.
* The companion's batch stacks positives then negatives with `valid` on both halves, and its
  loss is the masked mean of -log sigma(s+ - s-) of a direct forward.
* `train.run` of configs/cooper.py:smoke with `reward_model=<a directory built here>`, 2 steps:
  - from the shipped policy (verified rollouts exist): "train/reward_model/loss" is logged, the
    reward model starts as the directory's, bit for bit, and ends different; its export
    `hf_reward_model/` holds the final companion;
  - from scratch without a warm start (1 step): the companion still starts from the directory
    (it used to start random), and with no verified rollout no pair is valid and it does not
    move;
  - variant=frozen: no companion in the state, no reward-model loss, the frozen score logged.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import common
from rewardjax import pretrained, train
from rewardjax.data import tokenizers
from rewardjax.models import heads, hf_reward, transformer
from rewardjax.recipes import cooper
from rewardjax.rewards import verifiers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITEM = {"prompt": "12+7=", "answer": "19", "question": "12+7"}


def _group(texts, item=ITEM):
  return {"items": [item] * len(texts), "texts": list(texts)}


def test_pairs_positive_negative_slip_and_invalid():
  rng = np.random.default_rng(0)
  mixed, all_right, none_right = cooper.pairs(
      [_group(["18", "19", "20", "19\nagain"]), _group(["19", "19"]), _group(["18", ""])],
      fmt="short", rng=rng)
  assert mixed == ("12+7=", "19", "18", 1.0)
  prompt, positive, negative, valid = all_right
  assert (prompt, positive, valid) == ("12+7=", "19", 1.0)
  assert len(negative) == 2 and negative[0] == "1" and negative[1] != "9"
  assert verifiers.math_verify(negative, "19", "short") == 0.0
  assert none_right[0] == "12+7=" and none_right[3] == 0.0
  # A slip is never the answer itself, whatever the draw.
  for seed in range(50):
    (_, _, slip, ok), = cooper.pairs([_group(["-40"], {**ITEM, "answer": "-40"})], fmt="short",
                                     rng=np.random.default_rng(seed))
    assert ok == 1.0 and slip[:-1] == "-4" and slip != "-40"


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory):
  """A smoke-size reward model (no head bias) with the char tokenizer, as save_reward_model
  writes it."""
  config = transformer.ModelConfig(**common.MODELS["smoke"], bos_token_id=1, eos_token_id=2,
                                   pad_token_id=0)
  model = heads.ScalarModel(config, bias=False, rngs=nnx.Rngs(3))
  directory = str(tmp_path_factory.mktemp("rm") / "reward_model")
  hf_reward.save_reward_model(model, directory)
  tokenizers.char_tokenizer().save_pretrained(directory)
  return directory


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _initial_params(directory):
  return _leaves(nnx.split(hf_reward.load_reward_model(directory), nnx.Param)[1])


def test_companion_batch_and_bradley_terry_loss(reward_model_dir):
  tokenizer = tokenizers.char_tokenizer()
  companion = cooper.make_companion(
      {"reward_model": reward_model_dir, "learning_rate": 1e-3, "max_length": 32},
      tokenizer=tokenizer, fmt="short", seed=0)
  assert companion.name == "reward_model"
  groups = [_group(["18", "19"]), _group(["18", "17"]), _group(["19", "19"])]
  batch = companion.make_batch(groups, 0)
  np.testing.assert_array_equal(batch["valid"], [1, 0, 1] * 2)
  first = tokenizer("12+7=19")["input_ids"] + [tokenizer.eos_token_id]
  second = tokenizer("12+7=18")["input_ids"] + [tokenizer.eos_token_id]
  np.testing.assert_array_equal(batch["tokens"][0, :len(first)], first)   # positive of pair 0
  np.testing.assert_array_equal(batch["tokens"][3, :len(second)], second)  # its negative
  model = nnx.merge(*nnx.split(hf_reward.load_reward_model(reward_model_dir)))
  loss, metrics = cooper.reward_model_loss(model, {k: jnp.asarray(v) for k, v in batch.items()})
  scores = np.asarray(model(jnp.asarray(batch["tokens"]),
                            attention_mask=jnp.asarray(batch["attention_mask"])), np.float64)
  margins = scores[:3] - scores[3:]
  expected = np.mean([np.log1p(np.exp(-margins[i])) for i in (0, 2)])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert float(metrics["valid_pairs"]) == 2.0


# ---- train.run ------------------------------------------------------------------------------
OVERRIDES = {"checkpoint.async_save": False, "checkpoint.keep": 3, "train.eval_every": 100,
             "warmstart.steps": 0, "train.export_hf": False}


def _run(workdir, directory, variant="cooper", **overrides):
  arg = os.path.join(REPO, "configs", "cooper.py") + (
      f":variant={variant},smoke,reward_model={directory}")
  config = common.load_config(arg, {**OVERRIDES, **overrides})
  train.run(config, workdir)
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))

  def state(step):
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]

  return [line for line in lines if "train/loss" in line], state


def test_cooper_trains_its_reward_model_from_the_directory(reward_model_dir, tmp_path):
  # The shipped policy answers most smoke prompts right, so pairs are valid.
  workdir = str(tmp_path / "cooper")
  lines, state = _run(workdir, reward_model_dir,
                      **{"model.checkpoint": pretrained.ARITH, "train.export_hf": True})
  assert [line["step"] for line in lines] == [1, 2]
  for line in lines:
    assert np.isfinite(line["train/reward_model/loss"]) and np.isfinite(line["train/loss"])
    assert 0.0 <= line["train/reward/reward_model"] <= 1.0     # sigma(score)
  assert sum(line["train/reward_model/valid_pairs"] for line in lines) > 0
  initial = _initial_params(reward_model_dir)
  start, final = _leaves(state(0)["companion"]["params"]), _leaves(state(2)["companion"]["params"])
  assert len(start) == len(initial) == len(final)
  for a, b in zip(start, initial):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(final, initial))
  # The co-trained reward model is exported next to the policy, as the final companion.
  exported = _initial_params(os.path.join(workdir, "hf_reward_model"))
  for a, b in zip(exported, final):
    np.testing.assert_array_equal(a, b)


def test_from_scratch_companion_starts_from_the_directory(reward_model_dir, tmp_path):
  lines, state = _run(str(tmp_path / "scratch"), reward_model_dir, **{"train.steps": 1})
  assert [line["train/reward_model/valid_pairs"] for line in lines] == [0.0]
  initial = _initial_params(reward_model_dir)
  for step in (0, 1):  # no valid pair: zero gradient, an unchanged reward model
    for a, b in zip(_leaves(state(step)["companion"]["params"]), initial):
      np.testing.assert_array_equal(a, b)


def test_frozen_variant_has_no_companion(reward_model_dir, tmp_path):
  lines, state = _run(str(tmp_path / "frozen"), reward_model_dir, variant="frozen",
                      **{"checkpoint.every": 2})
  assert [line["step"] for line in lines] == [1, 2]
  assert "companion" not in state(2)
  for line in lines:
    assert not any(k.startswith("train/reward_model/") for k in line)
    assert np.isfinite(line["train/reward/reward_model"])
