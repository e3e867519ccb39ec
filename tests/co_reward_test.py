"""Co-Reward (`data.analogies`, `rewards.votes`, `recipes.co_reward`, the EMA reference sync of
`update.py`, configs/co_reward.py).

* Rewrites keep the answer: both expressions evaluate to the label at every difficulty; a
  question with nothing to commute is dropped and counted.
* Votes against hand-built groups: ties go to the first-seen answer, empty answers never vote,
  an all-empty group has the empty label that rewards nobody.
* Cross-referred rewards: each view is rewarded by its partner's vote (co_reward), by its own
  (majority_vote); misaligned rows are refused, and so is DAPO dynamic sampling.
* The EMA update `ref <- a * params + (1 - a) * ref` every k updates matches numpy, with the
  cosine-annealed a of Co-rewarding-II; without `sync_ref_model` the step has no sync at all.
* No label is read in training: with every training answer replaced by garbage, a 2-step run
  from the shipped model ends with bitwise-equal params (and reference).
* `train.run` of every variant for 2 steps (smoke size).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import co_reward as co_reward_config
from configs import common
from rewardjax import pretrained, recipes, train, update
from rewardjax.algorithms import grpo
from rewardjax.data import analogies, tasks, tokenizers
from rewardjax.recipes import co_reward
from rewardjax.rewards import composition, votes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- rewrites --------------------------------------------------------------------------------
@pytest.mark.parametrize("difficulty", range(len(tasks.LEVELS)))
def test_rewrites_keep_the_answer(difficulty):
  records = tasks.problems(300, difficulty=difficulty, seed=3)
  pairs, dropped = analogies.pair_records(records)
  assert len(pairs) + dropped == 300 and pairs
  for x, y in pairs:
    assert y["question"] != x["question"] and y["answer"] == x["answer"]
    assert analogies.evaluate(x["question"]) == analogies.evaluate(y["question"]) == int(
        x["answer"])
    assert y["prompt"] == y["question"] + "=" and (x["view"], y["view"]) == (0, 1)
  spaced, none_dropped = analogies.pair_records(records, style="spaced")
  assert none_dropped == 0
  assert all(analogies.evaluate(y["question"]) == int(y["answer"]) for _, y in spaced)
  rebalanced, _ = analogies.pair_records(records, style="rebalance")
  for x, y in rebalanced:
    assert analogies.evaluate(y["question"]) == int(x["answer"])
    assert tasks.carry_slip(y["question"], int(y["answer"])) is None or "-" in y["question"]


def test_questions_without_a_partner_are_dropped_and_counted():
  assert analogies.rewrite("47-8") is None and analogies.rewrite("5+5") is None
  assert analogies.rewrite("3*4") == "4*3" and analogies.rewrite("12-3+4") == "4+12-3"
  records = [{"question": q, "prompt": q + "=", "answer": str(analogies.evaluate(q))}
             for q in ("47+38", "47-8", "5+5", "2*9")]
  pairs, dropped = analogies.pair_records(records)
  assert dropped == 2 and [y["question"] for _, y in pairs] == ["38+47", "9*2"]
  with pytest.raises(ValueError, match="style"):
    analogies.rewrite("1+2", "reversed")


# ---- votes -----------------------------------------------------------------------------------
def test_votes_against_hand_built_groups():
  assert votes.majority_vote(["7", "8", "8", "7"]) == "7"          # tie: first seen
  assert votes.majority_vote(["", "8", "", "", "7", "7"]) == "7"   # empties never vote
  assert votes.majority_vote(["", "", ""]) == ""
  assert votes.majority_vote(["07", "7", "7"]) == "7"              # exact strings
  answers = ["3", "", "3", "4",   "", "", "", "",   "9", "1", "1", "9"]
  labels = votes.group_votes(answers, 4)
  assert labels == ["3", "", "9"]
  np.testing.assert_array_equal(votes.agreement_rewards(answers, labels, 4),
                                [1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 1])
  with pytest.raises(ValueError, match="groups of 4"):
    votes.group_votes(answers[:5], 4)


def _scored(texts_per_prompt, heads):
  """A Scored batch of P prompts (pairs adjacent) with G texts each."""
  items, texts = [], []
  for head, group in zip(heads, texts_per_prompt):
    items += [head] * len(group)
    texts += list(group)
  return composition.Scored(items, texts, {}, None)


PAIR = [{"prompt": "47+38=", "question": "47+38", "answer": "85", "pair": 0, "view": 0},
        {"prompt": "38+47=", "question": "38+47", "answer": "85", "pair": 0, "view": 1},
        {"prompt": "19+5=", "question": "19+5", "answer": "24", "pair": 1, "view": 0},
        {"prompt": "5+19=", "question": "5+19", "answer": "24", "pair": 1, "view": 1}]
# Pair 0: x votes 75 (the carry slip), x' votes 85. Pair 1: x has no answer, x' votes 24.
GROUPS = [["75", "85", "75"], ["85", "85", "75"], ["", "", ""], ["24", "14", "24"]]


def _vote(mode):
  return co_reward.VoteReward(mode, fmt="short", batch_size=4, dropped=5,
                              tokenizer=tokenizers.char_tokenizer(), seed=0)


def test_cross_referred_and_self_majority_rewards():
  scored = _scored(GROUPS, PAIR)
  rewards, metrics = _vote("co_reward")(scored)
  np.testing.assert_array_equal(rewards, [0, 1, 0,  0, 0, 1,  0, 0, 0,  0, 0, 0])
  assert metrics["dropped_questions"] == 5.0 and metrics["view_agreement"] == 0.0
  assert metrics["empty_labels"] == 0.25
  self_vote = _vote("majority_vote")
  rewards, _ = self_vote(scored)
  np.testing.assert_array_equal(rewards, [1, 0, 1,  1, 1, 0,  0, 0, 0,  1, 0, 1])
  # pseudo-labels 75, 85, "", 24 against the truths 85, 85, 24, 24
  np.testing.assert_array_equal(self_vote.pseudo_label_accuracy(scored),
                                np.repeat([0, 1, 0, 1], 3))
  with pytest.raises(ValueError, match="aligned"):
    _vote("co_reward")(_scored(GROUPS, [PAIR[0], PAIR[2], PAIR[1], PAIR[3]]))


def _stream(difficulty=1, batch_size=4):
  return recipes.RecordStream(tasks.problems(64, difficulty=difficulty), batch_size, 0)


def test_recipe_drops_and_counts_questions_and_keeps_pairs_adjacent():
  stream = _stream(difficulty=1)
  recipe = co_reward.make_recipe({"mode": "co_reward"}, stream=stream, problems={},
                                 fmt="short", seed=0, rewards=None)
  source = recipe.source
  expected = sum(analogies.rewrite(r["question"]) is None for r in stream.records)
  assert source.dropped == expected > 0 and len(source.pairs) == 64 - expected
  items = source.prompts(3)
  assert len(items) == 4 and co_reward.check_pairs(items, 1) == 4
  assert [t.name for t in recipe.rewards.terms] == ["votes", "verifier", "pseudo_label"]
  assert [t.weight for t in recipe.rewards.terms] == [1.0, 0.0, 0.0]
  with pytest.raises(ValueError, match="resample"):
    source.prompts(0, round_index=1)
  with pytest.raises(ValueError, match="even"):
    co_reward.make_recipe({}, stream=_stream(batch_size=3), problems={}, fmt="short", seed=0,
                          rewards=None)
  with pytest.raises(ValueError, match="mode"):
    co_reward.make_recipe({"mode": "nope"}, stream=stream, problems={}, fmt="short", seed=0,
                          rewards=None)


def test_dynamic_sampling_is_refused_before_training():
  config = common.load_config(os.path.join(REPO, "configs", "co_reward.py") + ":smoke",
                              {"algo.dynamic_sampling": True})
  mesh = train.sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh), pytest.raises(ValueError, match="dynamic_sampling"):
    train.make_job(config, mesh)


# ---- EMA reference sync ----------------------------------------------------------------------
def test_ema_update_matches_numpy():
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.float32(2.0)}
  ref = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.float32(-1.0)}
  sync = update.RefSync(alpha=0.6, every=2)
  step_fn = jax.jit(lambda r, p, s: update.sync_reference(r, p, s, sync))
  for step, alpha in ((1, 0.0), (2, 0.6), (4, 0.6)):
    new, applied = step_fn(ref, params, jnp.int32(step))
    assert float(applied) == pytest.approx(alpha)
    for k in params:
      expected = (np.float32(alpha) * params[k] + (1 - np.float32(alpha)) * ref[k]).astype(
          np.float32)
      np.testing.assert_allclose(np.asarray(new[k]), expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(step_fn(ref, params, jnp.int32(3))[0]["w"], ref["w"])
  # Co-rewarding-II: a(t) = 1e-5 + (0.01 - 1e-5) (1 + cos(pi t / T)) / 2
  annealed = update.RefSync(alpha=0.01, every=1, alpha_end=1e-5, total=10)
  for t in (0, 5, 10, 12):
    expected = 1e-5 + 0.5 * (0.01 - 1e-5) * (1 + np.cos(np.pi * min(t, 10) / 10))
    assert float(annealed.alpha_at(jnp.int32(t))) == pytest.approx(expected, rel=1e-5)


def test_sync_is_off_by_default_and_validated():
  step = grpo.make_step(dict(grpo.DEFAULTS), max_completion_length=4)
  assert "ref_sync" not in step.keywords
  options = dict(grpo.DEFAULTS, sync_ref_model=True, ref_model_sync_steps=3)
  assert grpo.make_step(options, max_completion_length=4).keywords["ref_sync"] == (
      update.RefSync(alpha=0.6, every=3, alpha_end=0.0, total=0))
  with pytest.raises(ValueError, match="ref_model_sync_steps"):
    grpo.ref_sync(dict(options, ref_model_sync_steps=0), 10)


# ---- train.run -------------------------------------------------------------------------------
OVERRIDES = {"checkpoint.async_save": False, "train.eval_every": 100, "warmstart.steps": 0,
             "train.export_hf": False}


def _run(workdir, variant, **overrides):
  arg = os.path.join(REPO, "configs", "co_reward.py") + f":variant={variant},smoke"
  train.run(common.load_config(arg, {**OVERRIDES, **overrides}), workdir)
  lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  state = manager.restore(2, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return [line for line in lines if "train/loss" in line], state


def _garbage_train_answers(problems_fn):
  def problems(n, **kwargs):
    records = problems_fn(n, **kwargs)
    if kwargs.get("split") == "train":
      return [dict(r, answer="garbage") for r in records]
    return records
  return problems


@pytest.fixture(scope="module")
def label_runs(tmp_path_factory):
  """The combined variant (partner votes of the EMA teacher) from the shipped model, 2 steps,
  with the true training answers and with garbage."""
  shipped = {"model.checkpoint": pretrained.ARITH, "data.difficulty": 6}
  true = _run(str(tmp_path_factory.mktemp("true")), "combined", **shipped)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tasks, "problems", _garbage_train_answers(tasks.problems))
    garbage = _run(str(tmp_path_factory.mktemp("garbage")), "combined", **shipped)
  return true, garbage


def test_no_training_label_is_read(label_runs):
  (true_lines, true_state), (garbage_lines, garbage_state) = label_runs
  # Not vacuous: the votes reward something, and the labels really differ.
  assert sum(line["train/reward/votes"] for line in true_lines) > 0
  assert sum(line["train/reward/verifier"] for line in true_lines) > 0
  assert all(line["train/reward/verifier"] == 0.0 for line in garbage_lines)
  for name in ("params", "ref_params"):
    a, b = jax.tree.leaves(true_state[name]), jax.tree.leaves(garbage_state[name])
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert [line["train/loss"] for line in true_lines] == [
      line["train/loss"] for line in garbage_lines]


@pytest.mark.parametrize("variant", co_reward_config.VARIANTS)
def test_variant_trains_two_steps(variant, tmp_path):
  lines, state = _run(str(tmp_path), variant)
  assert [line["step"] for line in lines] == [1, 2]
  for line in lines:
    assert np.isfinite(line["train/loss"])
    assert {"train/reward/votes", "train/reward/verifier", "train/reward/pseudo_label",
            "train/reward/votes/dropped_questions"} <= set(line)
    assert line["train/reward/votes/dropped_questions"] > 0   # the smoke data subtracts too
  teacher = variant in co_reward.TEACHER_MODES
  assert ("train/ref_sync/alpha" in lines[0]) == teacher
  assert ("train/reward/votes/teacher_policy_agreement" in lines[0]) == teacher
  if teacher:  # the EMA teacher moved towards the policy
    assert lines[0]["train/ref_sync/alpha"] > 0
