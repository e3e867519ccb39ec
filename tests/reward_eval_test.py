"""The RewardBench-style benchmark, its scoring rules, the scorers and best-of-N."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rewardjax.algorithms import base
from rewardjax.data import tasks, tokenizers
from rewardjax.evaluation import reward_bench, reward_eval, scorers
from rewardjax.models import heads, transformer
from rewardjax.rewards import verifiers

CONFIG = transformer.ModelConfig(vocab_size=128, hidden_size=16, intermediate_size=32,
                                 num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8)


@pytest.fixture(scope="module")
def setup():
  return types.SimpleNamespace(tokenizer=tokenizers.char_tokenizer(), data=base.DataOptions())


@pytest.fixture(scope="module")
def lm():
  return nnx.split(transformer.Transformer(CONFIG, rngs=nnx.Rngs(0)), nnx.Param)


# ------------------------------------------------------------------------- benchmark data


def test_build_subsets_on_hand_built_questions():
  items = [dict(question="18+7", answer="25"), dict(question="12+3", answer="15"),
           dict(question="42-7", answer="35")]
  records = reward_bench.build(items)
  by = {}
  for r in records:
    by.setdefault(r["subset"], []).append(r)
    for w in r["rejected"]:  # every rejected response fails the verifier, every chosen passes
      assert not verifiers.math_verify(w, r["answer"], "short")
    for c in r["chosen"]:
      assert verifiers.math_verify(c, r["answer"], "short")
    assert len(r["rejected"]) == reward_bench.NUM_WRONG == len(set(r["rejected"]))
  # No carry in 12+3: two carry records; 42-7 borrows: its slip is 45.
  assert [r["prompt"] for r in by["carry_slips"]] == ["18+7=", "42-7="]
  assert by["carry_slips"][1]["rejected"][0] == "45"
  assert by["sign_errors"][0]["rejected"] == ["-25", "11", "-11"]      # −v, 18−7, −(18−7)
  assert sorted(by["off_by_one"][0]["rejected"][:2]) == ["24", "26"]
  assert by["format"][0]["rejected"] == ["=25", "25=", "18+7"]
  assert all(len(w) > len(r["chosen"][0]) for r in by["length_traps"] for w in r["rejected"])
  ties = by["ties"]
  assert [r["id"] for r in ties] == ["ref:0", "tied:0", "ref:1", "tied:1", "ref:2", "tied:2"]
  assert ties[1]["chosen"] == ["25", "+25", "025", "25.0"] and ties[0]["chosen"] == ["25"]
  assert ties[0]["rejected"] == ties[1]["rejected"]


def test_build_caps_each_subset():
  items = tasks.problems(40, difficulty=1, split="heldout", seed=0, unique=True)
  records = reward_bench.build(items, per_subset=5)
  counts = {s: sum(r["subset"] == s for r in records) for s in (*reward_bench.SUBSETS, "ties")}
  assert all(v <= 5 for k, v in counts.items() if k != "ties") and counts["ties"] == 10


# ------------------------------------------------------------------------- scoring rules


def test_best_of_k_credits_ties_at_the_top():
  assert reward_bench.best_of_k([3, 1, 2, 0]) == 1.0
  assert reward_bench.best_of_k([3, 3, 2, 3]) == pytest.approx(1 / 3)   # three-way tie at max
  assert reward_bench.best_of_k([1, 3, 2, 0]) == 0.0
  assert reward_bench.best_of_k([2, 2, 2, 2]) == 0.25                   # constant scorer: chance


def _ties_reference(rows):
  """RewardBench 2's Ties formula, written out per prompt id."""
  ref, tied = {}, {}
  for rid, s, k in rows:
    s = np.asarray(s, float)
    stats = (s[:k].min() > s[k:].max(), s[:k].max() - s[:k].min() if k > 1 else 0.0,
             s[:k].min() - s[k:].max())
    (ref if rid.startswith("ref") else tied)[rid.split(":")[1]] = stats
  ids = sorted(set(ref) & set(tied))
  cp = np.mean([tied[i][2] > tied[i][1] for i in ids])
  cph = np.mean([min(ref[i][2], tied[i][2]) > tied[i][1] for i in ids])
  margin = np.mean([np.nan_to_num(np.tanh(min(ref[i][2], tied[i][2]) / (tied[i][1] + 1e-10) - 1))
                    for i in ids])
  return (0.3 * np.mean([v[0] for v in tied.values()]) + 0.3 * np.mean([v[0] for v in ref.values()])
          + 0.2 * cp + 0.2 * cph + 0.01 * margin)


def test_ties_score_on_a_hand_built_table():
  rows = [("ref:0", [5, 1, 0], 1), ("tied:0", [5, 4.5, 1, 0], 2),   # accurate, spread 0.5 < gap
          ("ref:1", [1, 2, 0], 1), ("tied:1", [3, 0, 2, 1], 2),       # both inaccurate
          ("ref:2", [4, 0], 1), ("tied:2", [4, 4, 1], 2)]             # tied forms equal: d = 0
  out = reward_bench.ties_score(rows)
  assert out["ref_accuracy"] == pytest.approx(2 / 3)
  assert out["tied_accuracy"] == pytest.approx(2 / 3)
  # pid 0: g_t = 3.5 > d = 0.5 (and g_r = 4); pid 1: g_t = -2 < 3; pid 2: g_t = 3 > 0.
  assert out["correctness_preferred"] == pytest.approx(2 / 3)
  assert out["score"] == pytest.approx(_ties_reference(rows))


def test_rewardbench1_weights_subsets_by_example_count_and_a_tie_is_wrong():
  records = [dict(id="a", subset="carry_slips", chosen=["1"], rejected=["2", "3", "4"]),
             dict(id="b", subset="carry_slips", chosen=["1"], rejected=["2", "3", "4"]),
             dict(id="c", subset="off_by_one", chosen=["1"], rejected=["2", "3", "4"]),
             dict(id="d", subset="format", chosen=["1"], rejected=["2", "3", "4"])]
  scores = reward_bench.Scores(
      chosen=[np.array([1.0]), np.array([0.0]), np.array([2.0]), np.array([5.0])],
      rejected=[np.array([0.0, 2, 0]), np.array([0.0, -1, -1]), np.array([1.0, 3, 0]),
                np.array([4.0, 4, 4])])
  out = reward_bench.report(records, scores)
  assert out["rb1/carry_slips"] == 0.5          # b: chosen ties the first rejected: wrong
  assert out["rb1/slips"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3, weighted by counts
  assert out["rb1/score"] == pytest.approx((2 / 3 + 1.0) / 2)  # unweighted mean of sections
  # best-of-4: a loses to the 2; b's max 0 is shared by chosen and one rejected: 1/2.
  assert out["rb2/carry_slips"] == pytest.approx((0.0 + 0.5) / 2)
  assert out["rb2/off_by_one"] == 0.0 and out["rb2/format"] == 1.0


# ------------------------------------------------------------------------- scorers


def test_pointwise_scorer_chunks_and_splits(monkeypatch):
  monkeypatch.setattr(scorers, "CHUNK", 3)
  calls = []

  def rows(prompts, responses):
    calls.append(len(prompts))
    return np.array([float(len(p) + len(r)) for p, r in zip(prompts, responses)])

  out = scorers.pointwise(rows)(["ab", "c"], [["1", "22", "333"], ["4444"]], ["", ""])
  assert calls == [3, 3]  # 4 rows in chunks of 3, the last padded
  np.testing.assert_array_equal(out[0], [3, 4, 5])
  np.testing.assert_array_equal(out[1], [5])


def test_reward_model_scorer_equals_the_model_on_its_rows(setup):
  model = heads.ScalarModel(CONFIG, rngs=nnx.Rngs(1), bias=False)
  graphdef, params = nnx.split(model, nnx.Param)
  scorer = scorers.reward_model(graphdef, params, setup, records="pairs")
  out = scorer(["8+6="], [["14", "12"]], ["14"])[0]
  from rewardjax.algorithms import reward_model_records as rmr  # noqa: PLC0415
  rows = rmr.response_rows(setup, ["8+6=", "8+6="], ["14", "12"])
  direct = model(jnp.asarray(rows["tokens"]), attention_mask=jnp.asarray(rows["attention_mask"]))
  np.testing.assert_allclose(out, np.asarray(direct), rtol=1e-5, atol=1e-6)
  polar = scorers.reward_model(graphdef, params, setup, records="polar")
  rows = rmr.response_rows(setup, [rmr.polar_prompt("8+6=", "14")] * 2, ["14", "12"])
  direct = model(jnp.asarray(rows["tokens"]), attention_mask=jnp.asarray(rows["attention_mask"]))
  np.testing.assert_allclose(polar(["8+6="], [["14", "12"]], ["14"])[0], np.asarray(direct),
                             rtol=1e-5, atol=1e-6)
  yojo = scorers.reward_model(graphdef, params, setup, records="packed")(
      ["8+6="], [["14", "12", "4"]], ["14"])[0]
  assert yojo.shape == (3,) and np.all(np.isfinite(yojo))


def _sequence_logps(graphdef, params, prompt, response, tokenizer):
  """Σ log π(y_t | x, y<t) over the response and its EOS, from full logits (numpy)."""
  ids = tokenizer([prompt])["input_ids"][0]
  target = tokenizer([response], add_special_tokens=False)["input_ids"][0] + [
      tokenizer.eos_token_id]
  tokens = jnp.asarray([ids + target])
  logits = np.asarray(nnx.merge(graphdef, params)(tokens), np.float64)[0]
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  first = len(ids) - 1
  v1 = np.log(np.exp(logits[first] - logits[first].max()).sum()) + logits[first].max()
  return sum(logp[first + t, tok] for t, tok in enumerate(target)), v1


def test_implicit_and_endogenous_rewards_match_full_logits(setup, lm):
  graphdef, params = lm
  _, ref_params = nnx.split(transformer.Transformer(CONFIG, rngs=nnx.Rngs(5)), nnx.Param)
  prompts, lists = ["8+6=", "12-3="], [["14", "1"], ["9"]]
  implicit = scorers.implicit_reward(graphdef, params, ref_params, setup, beta=0.1)(
      prompts, lists, ["14", "9"])
  endogenous = scorers.endogenous(graphdef, params, setup)(prompts, lists, ["14", "9"])
  free = scorers.implicit_reward(graphdef, params, None, setup, beta=0.1)(
      prompts, lists, ["14", "9"])
  for i, (p, xs) in enumerate(zip(prompts, lists)):
    for k, x in enumerate(xs):
      policy, v1 = _sequence_logps(graphdef, params, p, x, setup.tokenizer)
      ref, _ = _sequence_logps(graphdef, ref_params, p, x, setup.tokenizer)
      np.testing.assert_allclose(implicit[i][k], 0.1 * (policy - ref), rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(endogenous[i][k], policy + v1, rtol=1e-4, atol=1e-4)
      n = len(x) + 1  # characters + EOS: RewardBench's reference-free "avg"
      np.testing.assert_allclose(free[i][k], policy / n, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------- best-of-N


def test_best_of_n_picks_the_top_sample_and_splits_ties():
  items = [dict(prompt="1+1=", answer="2"), dict(prompt="2+2=", answer="4")]
  candidates = {"texts": [["2", "3", "2"], ["5", "4", "6"]],
                "correct": np.array([[1.0, 0, 1], [0, 1, 0]])}
  scores = {"2": 1.0, "3": 1.0, "5": 0.0, "4": 2.0, "6": 2.0}
  scorer = lambda p, lists, refs: [np.array([scores[x] for x in xs]) for xs in lists]
  out = reward_eval.best_of_n(scorer, items, candidates)
  # Question 1: "2", "3", "2" tie at the top: 2/3 correct; question 2: "4" and "6" tie: 1/2.
  assert out["bon/accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
  assert out["bon/sample_accuracy"] == pytest.approx(0.5) and out["bon/oracle"] == 1.0


def test_sample_candidates_shapes_and_verifier(setup, lm):
  from rewardjax.evaluation import accuracy  # noqa: PLC0415

  items = reward_eval.unique_questions(tasks.problems(3, difficulty=1, seed=0), 3)
  out = reward_eval.sample_candidates(lm, setup.tokenizer, items, jax.random.key(0), n=2,
                                      sizes=accuracy.EvalSizes(max_new_tokens=3, batch_size=4))
  assert [len(x) for x in out["texts"]] == [2, 2, 2] and out["correct"].shape == (3, 2)
  expect = [[verifiers.math_verify(t, it["answer"], "short") for t in xs]
            for xs, it in zip(out["texts"], items)]
  np.testing.assert_array_equal(out["correct"], expect)


def test_a_workdir_of_another_algorithm_names_its_evaluations():
  with pytest.raises(ValueError, match="holds a 'dpo' run.*implicit reward"):
    reward_eval.check_workdir_algorithm({"algorithm": "dpo"}, "reward_model", "/tmp/x")
  reward_eval.check_workdir_algorithm({"algorithm": "dpo"}, "dpo", "/tmp/x")


# ------------------------------------------------------------------------- goal states


def test_goal_state_q_values_and_probe(setup):
  from rewardjax.evaluation import goal_states  # noqa: PLC0415

  rng = np.random.default_rng(0)
  hidden = rng.normal(size=(3, 4, 5)).astype(np.float32)
  mask = np.array([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]], np.int32)
  g = np.asarray(goal_states.goal_state(jnp.asarray(hidden), jnp.asarray(mask)))
  np.testing.assert_allclose(g, hidden[:, 3].mean(0), rtol=1e-5)  # left-padded: last = 3
  q = np.asarray(goal_states.q_values(jnp.asarray(hidden), jnp.asarray(g)))
  expect = hidden @ g / (np.linalg.norm(hidden, axis=-1) * np.linalg.norm(g))
  np.testing.assert_allclose(q, expect, rtol=1e-4, atol=1e-6)
  assert goal_states.auroc(np.array([1.0]), np.array([1.0])) == 0.5
  model = heads.ScalarModel(CONFIG, rngs=nnx.Rngs(1), bias=False)
  graphdef, params = nnx.split(model, nnx.Param)
  pairs = tasks.preference_pairs(tasks.problems(8, difficulty=1, seed=0))
  out = goal_states.probe(graphdef, params, setup, pairs)
  assert set(out) == {"goal/auroc_min", "goal/auroc_last"}
  assert all(0.0 <= v <= 1.0 for v in out.values())
