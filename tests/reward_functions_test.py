"""Tests for rewardjax.rewards.logprob and judge_scores against float64 numpy loop references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewardjax.losses import self_rewarding
from rewardjax.rewards import judge_scores as js
from rewardjax.rewards import logprob as lp


def f64(x):
  return np.asarray(x, np.float64)


def np_logsumexp(row):
  row = f64(row)
  top = row.max()
  return top + math.log(sum(math.exp(v - top) for v in row))


# Independent references: plain Python loops over rows and tokens, float64.
def np_sar(a_logps, a_mask, qa_logps, qa_mask, use_log, use_denominator, clip_min):
  out = []
  for b in range(len(a_logps)):
    a_tok = [float(x) for x, m in zip(a_logps[b], a_mask[b]) if m]
    qa_tok = [float(x) for x, m in zip(qa_logps[b], qa_mask[b]) if m]
    if not a_tok or not qa_tok:
      out.append(0.0)
      continue
    nll_a, nll_qa = -sum(a_tok) / len(a_tok), -sum(qa_tok) / len(qa_tok)
    big_a, big_qa = (nll_a, nll_qa) if use_log else (math.exp(nll_a), math.exp(nll_qa))
    if use_denominator:
      r = (big_a - big_qa) / (big_a + 1e-9)
      out.append(r if clip_min is None else max(r, clip_min))
    else:
      out.append(big_a - big_qa)
  return np.array(out)


def np_token_rewards(logits, targets, mask, alpha):
  """r_t = Q[t, y_t] - V[t+1] with V = alpha logsumexp(logits / alpha), V = 0 off the mask."""
  n_b, n_t, _ = logits.shape
  out = np.zeros((n_b, n_t))
  for b in range(n_b):
    for t in range(n_t):
      if not mask[b, t]:
        continue
      q = float(logits[b, t, targets[b, t]])
      v_next = 0.0
      if t + 1 < n_t and mask[b, t + 1]:
        v_next = alpha * np_logsumexp(f64(logits[b, t + 1]) / alpha)
      out[b, t] = q - v_next
  return out


def np_yes(logits, i, j):
  out = []
  for row in f64(logits):
    top = max(row[i], row[j])
    pi, pj = math.exp(row[i] - top), math.exp(row[j] - top)
    out.append(pi / (pi + pj))
  return np.array(out)


def np_expected(logits, ids, values):
  out = []
  for row in f64(logits):
    sub = [row[k] for k in ids]
    top = max(sub)
    w = [math.exp(v - top) for v in sub]
    out.append(sum(wk * vk for wk, vk in zip(w, values)) / sum(w))
  return np.array(out)


@pytest.fixture(scope="module")
def sar_batch():
  """Completion log-probs in two contexts, at different offsets; row 3 is fully masked."""
  rng = np.random.default_rng(0)
  n_b, t_a, t_q = 4, 9, 7
  a_logps = -rng.gamma(2.0, 0.7, size=(n_b, t_a))
  qa_logps = -rng.gamma(2.0, 0.5, size=(n_b, t_q))
  lengths = [5, 3, 7, 0]
  a_mask = np.zeros((n_b, t_a), bool)
  qa_mask = np.zeros((n_b, t_q), bool)
  for b, n in enumerate(lengths):
    a_mask[b, 2:2 + n] = True     # answer-only context: a longer stand-in prompt before it
    qa_mask[b, :n] = True
  # Garbage where masked: must not leak into the reward.
  a_logps[~a_mask] = -np.inf
  qa_logps[~qa_mask] = np.nan
  return a_logps, a_mask, qa_logps, qa_mask


# SAR
@pytest.mark.parametrize("use_log", [False, True])
@pytest.mark.parametrize("use_denominator", [True, False])
@pytest.mark.parametrize("clip_min", [-1.0, None])
def test_sar_matches_loop_reference(sar_batch, use_log, use_denominator, clip_min):
  a, am, qa, qm = sar_batch
  got = lp.self_aligned_reward(jnp.asarray(a, jnp.float32), jnp.asarray(am),
                               jnp.asarray(qa, jnp.float32), jnp.asarray(qm), use_log=use_log,
                               use_denominator=use_denominator, clip_min=clip_min)
  want = np_sar(a, am, qa, qm, use_log, use_denominator, clip_min)
  assert got.shape == (4,) and np.all(np.isfinite(np.asarray(got)))
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=1e-6)
  assert float(got[3]) == 0.0   # empty row


def test_sar_spec_vectors():
  ones = jnp.ones((2, 4))
  a = jnp.full((2, 4), -math.log(4.0))                      # ppl(a) = 4
  qa = -jnp.log(jnp.array([[2.0], [10.0]])) * ones           # ppl(a|q) = 2, 10
  np.testing.assert_allclose(np.asarray(lp.self_aligned_reward(a, ones, qa, ones)), [0.5, -1.0],
                             rtol=1e-6)
  np.testing.assert_allclose(
      np.asarray(lp.self_aligned_reward(a, ones, qa, ones, clip_min=None)), [0.5, -1.5], rtol=1e-6)
  np.testing.assert_allclose(  # A - QA = 4 - 2, 4 - 10
      np.asarray(lp.self_aligned_reward(a, ones, qa, ones, use_denominator=False)), [2.0, -6.0],
      rtol=1e-6)
  np.testing.assert_allclose(  # (log 4 - log 2) / log 4 = 1/2
      float(lp.self_aligned_reward(a, ones, qa, ones, use_log=True)[0]), 0.5, rtol=1e-6)


def test_sar_each_row_uses_its_own_mask():
  # Same completion tokens, different alignment in the two contexts: the reward depends only on
  # which entries are valid, not on where they sit.
  a = jnp.array([[9.0, -1.0, -2.0, 9.0]])
  qa = jnp.array([[-0.5, -1.0, 9.0]])
  # int32 masks, as the rollouts' completion_mask
  r1 = lp.self_aligned_reward(a, jnp.array([[0, 1, 1, 0]], jnp.int32), qa,
                              jnp.array([[1, 1, 0]], jnp.int32))
  r2 = lp.self_aligned_reward(a[:, 1:3], jnp.ones((1, 2)), qa[:, :2], jnp.ones((1, 2)))
  np.testing.assert_allclose(np.asarray(r1), np.asarray(r2), rtol=1e-6)
  np.testing.assert_allclose(float(r1[0]), 1 - math.exp(0.75 - 1.5), rtol=1e-6)


def test_sar_one_empty_context_gives_zero():
  r = lp.self_aligned_reward(-jnp.ones((1, 3)), jnp.ones((1, 3)), -jnp.ones((1, 3)),
                             jnp.zeros((1, 3)))
  assert float(r[0]) == 0.0


# Endogenous reward
@pytest.fixture(scope="module")
def endo_batch():
  """Random logits, contiguous completion masks (one starts late, one is empty)."""
  rng = np.random.default_rng(1)
  n_b, n_t, n_v = 5, 8, 11
  logits = rng.normal(size=(n_b, n_t, n_v)) * 3.0
  targets = rng.integers(0, n_v, size=(n_b, n_t))
  mask = np.zeros((n_b, n_t), bool)
  for b, (start, stop) in enumerate([(0, 8), (0, 5), (2, 6), (0, 1), (0, 0)]):
    mask[b, start:stop] = True
  targets[~mask] = -100   # padding ids, out of the vocabulary
  return logits, targets, mask


@pytest.mark.parametrize("alpha", [1.0, 0.7])
def test_endogenous_token_rewards_match_loop(endo_batch, alpha):
  logits, targets, mask = endo_batch
  got = lp.endogenous_token_rewards(jnp.asarray(logits, jnp.float32), jnp.asarray(targets),
                                    jnp.asarray(mask), alpha=alpha)
  np.testing.assert_allclose(np.asarray(got), np_token_rewards(logits, targets, mask, alpha),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 0.7])
def test_sum_of_token_rewards_is_the_sequence_reward(endo_batch, alpha):
  logits, targets, mask = endo_batch
  logits32 = jnp.asarray(logits, jnp.float32)
  token_logps = jnp.take_along_axis(
      jax.nn.log_softmax(logits32 / alpha, axis=-1),
      jnp.asarray(np.where(mask, targets, 0))[..., None], axis=-1)[..., 0]
  first = np.argmax(mask, axis=1)   # the position predicting the first completion token
  first_value = lp.value_at(logits32[jnp.arange(len(first)), jnp.asarray(first)], alpha)
  seq = lp.endogenous_reward(token_logps, jnp.asarray(mask), first_value, alpha=alpha)
  tok = lp.endogenous_token_rewards(logits32, jnp.asarray(targets), jnp.asarray(mask), alpha=alpha)
  np.testing.assert_allclose(np.asarray(seq), np.asarray(tok).sum(axis=1), rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(np.asarray(seq),
                             np_token_rewards(logits, targets, mask, alpha).sum(axis=1),
                             rtol=1e-5, atol=1e-4)
  assert float(seq[4]) == 0.0   # empty row, as the sum of its token rewards


def test_endogenous_reward_loop_reference():
  logps = np.array([[-0.5, -1.5, -2.0], [-1.0, 0.0, 0.0]])
  mask = np.array([[1, 1, 1], [1, 0, 0]], bool)
  v1 = np.array([3.0, -1.0])
  want = [0.7 * sum(x for x, m in zip(logps[b], mask[b]) if m) + v1[b] for b in range(2)]
  got = lp.endogenous_reward(jnp.asarray(logps, jnp.float32), jnp.asarray(mask, jnp.int32),
                             jnp.asarray(v1, jnp.float32), alpha=0.7)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_endogenous_reward_ignores_masked_garbage_and_empty_rows():
  logps = jnp.array([[-1.0, jnp.nan], [jnp.nan, -jnp.inf]])
  mask = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  got = lp.endogenous_reward(logps, mask, jnp.array([2.0, jnp.nan]))
  np.testing.assert_allclose(np.asarray(got), [1.0, 0.0])


def test_value_at_matches_loop_and_is_stable():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 6)) * 4.0
  for alpha in (1.0, 0.3, 2.5):
    want = [alpha * np_logsumexp(row / alpha) for row in logits]
    np.testing.assert_allclose(np.asarray(lp.value_at(jnp.asarray(logits, jnp.float32), alpha)),
                               want, rtol=1e-5)
  huge = jnp.array([[1e4, 1e4 - 1.0]], jnp.bfloat16)   # naive exp would overflow
  v = lp.value_at(huge, 0.5)
  assert v.dtype == jnp.float32 and np.isfinite(float(v[0]))
  np.testing.assert_allclose(lp.value_at(jnp.zeros((2, 3, 4))), np.full((2, 3), math.log(4)),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="alpha"):
    lp.value_at(jnp.zeros((1, 2)), 0.0)


def test_coherent_reward_is_reexported_not_copied():
  assert lp.coherent_reward is self_rewarding.coherent_reward


# Judge scores
@pytest.fixture(scope="module")
def judge_logits():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(6, 12)) * 5.0
  logits[0, [3, 7]] = [40.0, 38.0]      # large logits
  logits[1, [3, 7]] = [-30.0, 10.0]     # very confident "no"
  return logits


def test_yes_and_pairwise_probability_match_reference(judge_logits):
  x = jnp.asarray(judge_logits, jnp.float32)
  np.testing.assert_allclose(np.asarray(js.yes_probability(x, 3, 7)), np_yes(judge_logits, 3, 7),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(js.pairwise_probability(x, 5, 0)),
                             np_yes(judge_logits, 5, 0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(float(js.yes_probability(jnp.array([[0.0, 2.0]]), 1, 0)[0]),
                             1 / (1 + math.exp(-2)), rtol=1e-6)


def test_expected_score_matches_reference(judge_logits):
  x = jnp.asarray(judge_logits, jnp.float32)
  ids, values = [2, 9, 4, 11, 0], [1.0, 2.0, 3.0, 4.0, 5.0]
  np.testing.assert_allclose(np.asarray(js.expected_score(x, ids, values)),
                             np_expected(judge_logits, ids, values), rtol=1e-5)
  np.testing.assert_allclose(  # numpy ids and jax values are accepted too
      np.asarray(js.expected_score(x, np.array(ids), jnp.asarray(values))),
      np_expected(judge_logits, ids, values), rtol=1e-5)


def test_expected_score_hand_number():
  # p over candidates = (0.2, 0.3, 0.5): 0.2 * 1 + 0.3 * 2 + 0.5 * 3 = 2.3
  logits = jnp.log(jnp.array([[0.9, 0.2, 0.3, 0.5]]))
  np.testing.assert_allclose(float(js.expected_score(logits, [1, 2, 3], [1, 2, 3])[0]), 2.3,
                             rtol=1e-6)


@pytest.mark.parametrize("shift", [-50.0, 7.0, 1000.0])
def test_judge_scores_invariant_to_logit_shift(judge_logits, shift):
  x = jnp.asarray(judge_logits, jnp.float32)
  ids, values = [2, 9, 4], [0.0, 5.0, 10.0]
  for fn in (lambda z: js.yes_probability(z, 3, 7),
             lambda z: js.expected_score(z, ids, values)):
    # float32 keeps ~1e-4 absolute precision on logits near 1000, hence atol
    np.testing.assert_allclose(np.asarray(fn(x + shift)), np.asarray(fn(x)), rtol=1e-4,
                               atol=1e-3)


def test_expected_score_rejects_bad_ids():
  x = jnp.zeros((2, 5))
  with pytest.raises(ValueError, match="distinct"):
    js.expected_score(x, [1, 2, 1], [1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="vocabulary"):
    js.expected_score(x, [1, 5], [1.0, 2.0])
  with pytest.raises(ValueError, match="shape"):
    js.expected_score(x, [1, 2], [1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="static"):   # traced ids cannot be checked
    jax.jit(js.expected_score)(x, jnp.array([1, 2]), jnp.array([1.0, 2.0]))
  with pytest.raises(ValueError, match="distinct"):   # caught at trace time under jit too
    jax.jit(lambda z: js.expected_score(z, [3, 3], [0.0, 1.0]))(x)
  with pytest.raises(ValueError, match="same token"):
    js.yes_probability(x, 2, 2)
  with pytest.raises(ValueError, match="vocabulary"):
    js.pairwise_probability(x, 0, 9)


def test_debiased_pairwise():
  # position-only judge -> 1/2; consistent judge -> unchanged; reference loop otherwise
  p_ab = np.array([0.7, 0.8, 0.9, 0.3])
  p_ba = np.array([0.7, 0.2, 0.6, 0.1])
  want = [0.5 * (p_ab[b] + (1.0 - p_ba[b])) for b in range(4)]
  got = js.debiased_pairwise(jnp.asarray(p_ab, jnp.float32), jnp.asarray(p_ba, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(got[:2]), [0.5, 0.8], rtol=1e-6)
  # From logits: the same a_id/b_id in both orders; swapping the responses swaps the answer.
  a_id, b_id = 4, 1
  logits_ab = jnp.zeros((1, 6)).at[0, a_id].set(2.0)    # order (1, 2): judge says A = response 1
  logits_ba = jnp.zeros((1, 6)).at[0, b_id].set(2.0)    # order (2, 1): judge says B = response 1
  p = js.debiased_pairwise(js.pairwise_probability(logits_ab, a_id, b_id),
                           js.pairwise_probability(logits_ba, a_id, b_id))
  np.testing.assert_allclose(float(p[0]), 1 / (1 + math.exp(-2)), rtol=1e-6)


# jit, finiteness, constants
def test_everything_jits_and_is_finite_on_fully_masked_rows():
  z2, z3 = jnp.zeros((2, 4)), jnp.zeros((2, 4, 5))
  outs = jax.jit(lambda lg, lg3: (
      lp.self_aligned_reward(lg, z2, lg, z2),
      lp.self_aligned_reward(lg, z2, lg, z2, use_log=True),
      lp.endogenous_reward(lg, z2, lg[:, 0]),
      lp.endogenous_token_rewards(lg3, jnp.zeros((2, 4), jnp.int32), z2, alpha=0.5),
      lp.value_at(lg3, 0.5),
      js.yes_probability(lg, 0, 1),
      js.pairwise_probability(lg, 2, 3),
      js.expected_score(lg, [0, 1, 2], jnp.array([1.0, 2.0, 3.0])),
      js.debiased_pairwise(lg[:, 0], lg[:, 1]),
  ))(z2 - 3.0, z3 + 1.0)
  for out in outs:
    assert np.all(np.isfinite(np.asarray(out)))
  assert np.all(np.asarray(outs[0]) == 0) and np.all(np.asarray(outs[3]) == 0)


def test_rewards_are_constants():
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 4, 5)), jnp.float32)
  m = jnp.ones((2, 4))
  grads = [
      jax.grad(lambda v: lp.self_aligned_reward(v, m, v * 0.5, m).sum())(x[:, :, 0]),
      jax.grad(lambda v: lp.endogenous_reward(v[:, :, 0], m, v[:, 0, 1]).sum())(x),
      jax.grad(lambda v: lp.endogenous_token_rewards(v, jnp.zeros((2, 4), int), m).sum())(x),
      jax.grad(lambda v: js.yes_probability(v[:, 0], 1, 2).sum())(x),
      jax.grad(lambda v: js.expected_score(v[:, 0], [0, 3], [1.0, 2.0]).sum())(x),
  ]
  for g in grads:
    assert not np.any(np.asarray(g))


# parse_score
@pytest.mark.parametrize("text, kwargs, expected", [
    ("Final score: 85", {}, 85.0),
    ("I'd give 40 at first, but on reflection: 72.", {}, 72.0),     # last integer wins
    ("Score: 85/100", {}, 85.0),                                     # denominator skipped
    ("85 out of 100 points", {}, 85.0),
    ("Score: 90 (the text has 1203 words)", {}, 90.0),               # out of range skipped
    ("Rating 7.5", {"high": 10}, None),                             # decimals are not read as 5
    ("Qwen2 scores 3", {"high": 10}, 3.0),                           # digits inside words skipped
    ("score: -5", {}, None),                                         # negative, below low
    ("70-80, final 75", {}, 75.0),
    ("翻译质量: 88分", {}, 88.0),                                     # CJK unit right after
    ("no number here", {}, None),
    ("", {}, None),
    ("9" * 100_000, {}, None),                                       # absurd digit run: capped
    ("score " + "1" * 7 + " then 42", {}, 42.0),
    ("**100**", {}, 100.0),
    ("\\boxed{0}", {}, 0.0),
    ("value 3", {"low": 4, "high": 5}, None),
])
def test_parse_score(text, kwargs, expected):
  assert js.parse_score(text, **kwargs) == expected


def test_parse_score_rejects_empty_range():
  with pytest.raises(ValueError):
    js.parse_score("5", low=10, high=1)
