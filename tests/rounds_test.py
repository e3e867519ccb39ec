"""Training in rounds (`rewardjax.rounds`): each paper's pair rule on hand-built candidates and
judge scores, the round's state updates, and through `train.run`: the reference is the round's
starting model, a run stopped mid-round resumes bitwise, an unparsable judge stops the run."""

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import common
from rewardjax import pretrained, rounds, train
from rewardjax.rewards import composition
from rewardjax.types import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAN = float("nan")


# ---- pure rules ------------------------------------------------------------------------------
def test_best_worst_takes_first_extremes_and_drops_ties_and_unscored():
  scores = np.array([[0.2, 0.9, 0.1, 0.9], [0.5, 0.5, 0.5, 0.5], [NAN, 0.3, NAN, 0.7],
                     [NAN, NAN, NAN, NAN]])
  chosen, rejected, valid = rounds.best_worst(scores)
  assert chosen[:3].tolist() == [1, 0, 3] and rejected[:3].tolist() == [2, 0, 1]
  assert valid.tolist() == [True, False, True, False]
  assert rounds.best_worst(scores, min_gap=0.5)[2].tolist() == [True, False, False, False]


def test_cream_consistency_of_the_papers_vector():
  current = np.array([[0.1, 0.5, 0.3, 0.9, 0.2]])
  previous = np.array([[0.2, 0.4, 0.1, 0.8, 0.3]])
  np.testing.assert_allclose(rounds.cream_labels(current, previous), [0.8], rtol=1e-6)
  chosen, rejected, _ = rounds.best_worst(current)
  assert (int(chosen[0]), int(rejected[0])) == (3, 0)     # the spec's pair (4, 1), 1-based
  # Identical rankings: C = 1; reversed: C = 0.
  np.testing.assert_allclose(rounds.cream_labels(current, current), [1.0])
  np.testing.assert_allclose(rounds.cream_labels(current, -current), [0.0])


def test_temporal_anchored_rejection_and_future_chosen():
  s_i = np.array([[0.9, 0.4, 0.6], [0.8, 0.7, 0.75], [0.3, 0.3, 0.3]])
  s_0 = np.array([[0.5, 0.1, 0.2], [0.9, 0.95, 0.85], [0.3, 0.3, 0.3]])
  chosen, rejected, anchored, valid, s_c, s_r = rounds.temporal_anchored(s_i, s_0)
  assert chosen.tolist() == [0, 0, 0]
  # Row 0: M_0's worst (0.1) is below M_i's worst (0.4): anchored. Row 1: it is not (0.85 >
  # 0.7): M_i's own worst. Row 2: all equal, no pair.
  assert anchored.tolist() == [True, False, False] and rejected.tolist() == [1, 1, 0]
  assert valid.tolist() == [True, True, False]
  np.testing.assert_allclose(s_r, [0.1, 0.7, 0.3])
  use, best, valid2, s_c2 = rounds.temporal_future(
      np.array([[0.95, 0.2, 0.1], [0.5, 0.6, 0.7], [0.9, 0.2, 0.1]]), s_c, s_r)
  assert use.tolist() == [True, False, True] and best.tolist() == [0, 2, 0]
  assert valid2.tolist() == [True, True, True]      # row 2: M_f's 0.9 beats the 0.3 rejected
  np.testing.assert_allclose(s_c2, [0.95, 0.8, 0.9])


def test_dno_pairs_large_margin_rule():
  # Three students and the teacher (last), 6-point scores.
  scores = np.array([[5.0, 3.0, 4.0, 6.0], [2.0, 1.0, 2.0, 4.0]])
  pairs = rounds.dno_pairs(scores, np.array([True, True, True, False]), pos_min=5.0, margin=2.0,
                           student_margin=1.0)
  # Teacher (6) beats students scoring <= 4; student 0 (5) beats those scoring <= 4. Prompt 1:
  # nothing reaches pos_min.
  assert pairs == [(0, 0, 1), (0, 0, 2), (0, 3, 1), (0, 3, 2)]


def test_ranking_agreement_counts_only_pairs_the_verifier_separates():
  scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, NAN]])
  correct = np.array([[1, 0, 1], [1, 0, 0]])
  # Prompt 0: (0 > 1) agree, (2 > 1) agree; prompt 1: (0 vs 1) disagree, (0 vs NaN) agree.
  assert rounds.ranking_agreement(scores, correct) == 0.75
  assert np.isnan(rounds.ranking_agreement(scores, np.ones((2, 3))))


# ---- one round on hand-built candidates and judge scores -------------------------------------
QUESTIONS = [dict(prompt=f"{a}+1=", answer=str(a + 1), question=f"{a}+1") for a in (10, 20)]


def _state():
  params = {"w": jnp.array([1.0, 2.0])}     # w[1] names the model (`_ctx`)
  tx = optax.adam(1e-3)
  opt_state = tx.update(params, tx.init(params), params)[1]   # non-zero moments
  graphdef = nnx.split(nnx.Linear(1, 1, rngs=nnx.Rngs(0)))[0]   # unused; a typed field
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state,
                    rng=jax.random.key(0), ref_params={"w": jnp.array([0.0, 5.0])}, tx=tx,
                    graphdef=graphdef)


def _ctx(rule, table, samples, monkeypatch, **options):
  """A round context whose sampler returns `samples["queue"]`'s next entry, else
  `samples[model]` ([P][K] texts), and whose judge
  scores `table[model][text]` (model: "current", "reference" or "trained", from the params
  that sample or judge)."""
  def model(state):
    return {2.0: "current", 5.0: "reference", 9.0: "trained"}[float(state.params["w"][1])]

  def sample(ctx, state, questions, rng):
    del ctx, rng
    texts = samples["queue"].pop(0) if samples.get("queue") else samples[model(state)]
    return [list(t) for t in texts[:len(questions)]], {}

  def judge_fn(scored):
    samples.setdefault("judged", []).append(list(scored.texts))
    return np.array([table[model(scored.state)].get(t, NAN) for t in scored.texts])

  monkeypatch.setattr(rounds, "sample", sample)
  setup = types.SimpleNamespace(data=types.SimpleNamespace(fmt="short"),
                                sampling=types.SimpleNamespace(num_generations=3))
  opts = rounds.RoundOptions(rule=rule, steps_per_round=2, prompts_per_round=2, **options)
  source = rounds.RoundSource(QUESTIONS, options=opts, batch_size=2, seed=0)
  source.round_questions = lambda split: QUESTIONS
  judge = composition.Composition((composition.Term("judge", judge_fn),))
  return rounds.RoundContext(setup, source, judge, opts)


def test_self_rewarding_round_pairs_refresh_and_reset(monkeypatch):
  samples = {"current": [["11", "12", "13"], ["21", "21", "21"]]}
  table = {"current": {"11": 0.9, "12": 0.2, "13": 0.5, "21": 0.8}}
  ctx = _ctx("self_rewarding", table, samples, monkeypatch)
  state = _state()
  new, metrics = rounds.begin_round(state, 0, jax.random.key(1), ctx=ctx)
  # Prompt 0: best "11" vs worst "12"; prompt 1: every answer scores the same, no pair.
  assert [(r["chosen"], r["rejected"]) for r in ctx.source.records] == [("11", "12")]
  assert samples["judged"] == [["11", "12", "13", "21"]]    # each distinct answer once
  assert metrics["pairs"] == 1 and metrics["pair_label_accuracy"] == 1.0
  np.testing.assert_allclose(metrics["score_gap"], 0.7)
  np.testing.assert_array_equal(new.ref_params["w"], state.params["w"])   # refreshed
  np.testing.assert_array_equal(new.params["w"], state.params["w"])
  assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree.leaves(new.opt_state)
             if x.dtype != jnp.int32)                                     # fresh moments
  assert [r["prompt"] for r in ctx.source.prompts(0)] == ["10+1=", "10+1="]


def test_cream_round_labels_from_the_previous_iterate(monkeypatch):
  samples = {"current": [["11", "12", "13"], ["22", "21", "23"]]}
  table = {"current": {"11": 0.9, "12": 0.2, "13": 0.5, "22": 0.1, "21": 0.6, "23": 0.3},
           "reference": {"11": 0.8, "12": 0.1, "13": 0.9, "22": 0.1, "21": 0.6, "23": 0.3}}
  ctx = _ctx("cream", table, samples, monkeypatch)
  rounds.begin_round(_state(), 1, jax.random.key(1), ctx=ctx)
  # Prompt 0: ranks (3, 1, 2) vs (2, 1, 3): one of three pairs flips, tau = 1/3, C = 2/3.
  labels = [r["consistency"] for r in ctx.source.records]
  np.testing.assert_allclose(labels, [2 / 3, 1.0], rtol=1e-6)
  assert [(r["chosen"], r["rejected"]) for r in ctx.source.records] == [("11", "12"),
                                                                        ("21", "22")]


def test_temporal_phases_anchor_future_and_restart(monkeypatch):
  samples = {"current": [["11", "12", "13"], ["21", "22", "23"]]}
  table = {"current": {"11": 0.7, "12": 0.4, "13": 0.5, "21": 0.9, "22": 0.6, "23": 0.8,
                       "14": 0.1, "24": 0.7}}
  ctx = _ctx("temporal", table, samples, monkeypatch)
  # Iteration 0 draws M_i's samples, then M_0's (the same model there) for each iteration.
  samples["queue"] = [samples["current"], [["14", "14", "14"], ["24", "24", "24"]],
                      [["14"] * 3, ["24"] * 3]]
  state, metrics = rounds.begin_round(_state(), 0, jax.random.key(1), ctx=ctx)
  # Prompt 0: M_0's worst (0.1) is below M_i's worst (0.4): rejected = "14"; prompt 1: 0.7 >
  # 0.6, rejected = M_i's own worst "22".
  assert [(r["chosen"], r["rejected"]) for r in ctx.source.records] == [("11", "14"),
                                                                        ("21", "22")]
  assert metrics["anchored_rejected"] == 0.5 and metrics["phase"] == 0.0
  # Phase 2: M_f (params) samples; M_i (the reference) judges; a better future answer wins.
  trained = state.replace(params={"w": jnp.array([1.0, 9.0])})
  samples["trained"] = [["12", "15", "12"], ["23", "23", "22"]]
  table["current"]["15"] = 0.95
  new, metrics = rounds.begin_round(trained, 1, jax.random.key(2), ctx=ctx)
  # Prompt 0: M_f's "15" (0.95 by M_i) beats the chosen 0.7; prompt 1: "23" (0.8) does not.
  assert [(r["chosen"], r["rejected"]) for r in ctx.source.records] == [("15", "14"),
                                                                        ("21", "22")]
  assert metrics["future_chosen"] == 0.5
  np.testing.assert_array_equal(new.params["w"], state.ref_params["w"])   # restart from M_i


def test_dno_round_adds_the_gold_response(monkeypatch):
  samples = {"current": [["11", "12", "13"], ["21", "22", "23"]]}
  table = {"current": {"11": 0.9, "12": 0.2, "13": 0.6, "21": 0.3, "22": 0.2, "23": 0.1}}
  ctx = _ctx("dno", table, samples, monkeypatch, dno_pos_min=0.8, dno_margin=0.5,
             dno_student_margin=0.25)
  table["current"].update({"11": 0.9, "21": 0.3})   # the gold answers: "11" and "21"
  rounds.begin_round(_state(), 0, jax.random.key(1), ctx=ctx)
  pairs = [(r["chosen"], r["rejected"]) for r in ctx.source.records]
  # Prompt 0: "11" (a student and the gold, 0.9) beats "12" (gap 0.7) and "13" (0.3 >= the 0.25
  # student margin; the gold needs 0.5); prompt 1: no positive reaches 0.8.
  assert pairs == [("11", "12"), ("11", "13"), ("11", "12")]


def test_a_round_without_any_score_stops_with_examples(monkeypatch):
  samples = {"current": [["11", "12", "13"], ["21", "22", "23"]]}
  ctx = _ctx("self_rewarding", {"current": {}}, samples, monkeypatch)
  with pytest.raises(ValueError, match=r"no usable score.*'10\+1=' -> '11'"):
    rounds.begin_round(_state(), 0, jax.random.key(1), ctx=ctx)


# ---- through train.run -------------------------------------------------------------------------
OVERRIDES = {"checkpoint.async_save": False, "checkpoint.keep": 6, "checkpoint.every": 1,
             "train.eval_every": 100, "warmstart.steps": 0, "train.export_hf": False,
             "recipe_args.steps_per_round": 2, "train.steps": 4}


def _config(**overrides):
  return common.load_config(os.path.join(REPO, "configs", "self_rewarding.py") + ":smoke",
                            {**OVERRIDES, **overrides})


def _checkpoint(workdir, step):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))["state"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rounds") / "straight")
  train.run(_config(), workdir)
  return workdir


def test_reference_is_the_rounds_starting_model(straight_run):
  lines = [json.loads(line) for line in open(os.path.join(straight_run, "metrics.jsonl"))]
  indices = {line["step"]: line["train/round/index"] for line in lines
             if "train/round/index" in line}
  assert indices == {1: 0.0, 3: 1.0}       # rounds begin before steps 0 and 2
  end_of_round_0, final = _checkpoint(straight_run, 2), _checkpoint(straight_run, 4)
  for a, b in zip(jax.tree.leaves(final["ref_params"]),
                  jax.tree.leaves(end_of_round_0["params"])):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(final["params"]),
                                                      jax.tree.leaves(final["ref_params"])))


def test_stopped_mid_round_resumes_bitwise(straight_run, tmp_path):
  workdir = str(tmp_path / "resumed")
  train.run(_config(**{"train.steps": 3}), workdir)     # stops after step 3, inside round 1
  train.run(_config(), workdir)
  straight, resumed = _checkpoint(straight_run, 4), _checkpoint(workdir, 4)
  for name in ("params", "ref_params", "opt_state"):
    a, b = jax.tree.leaves(straight[name]), jax.tree.leaves(resumed[name])
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)


def test_unparsable_judge_stops_with_raw_outputs(tmp_path):
  # The shipped model answers, but a 1-token judge budget leaves no room for a verdict.
  config = _config(**{"model.checkpoint": pretrained.ARITH, "rewards.judge_read": "parsed",
                      "rewards.judge_max_new_tokens": 1, "train.steps": 2})
  with pytest.raises(ValueError, match="could not be parsed in any of the .* raw judge outputs"):
    train.run(config, str(tmp_path / "unparsable"))


def test_rounds_recipe_with_an_algorithm_that_has_no_rounds_is_refused():
  from rewardjax import sharding  # noqa: PLC0415
  config = common.load_config(os.path.join(REPO, "configs", "grpo.py") + ":smoke",
                              {"recipe": "self_rewarding"})
  mesh = sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh), pytest.raises(ValueError, match="algorithm='dpo'"):
    train.make_job(config, mesh)
