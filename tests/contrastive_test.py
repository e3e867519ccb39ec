"""Tests for rewardjax.losses.contrastive.

Every objective is checked against an independent numpy reference written from the formula
(loops, not vectorised JAX), with random masked inputs including fully masked rows; gradients with
`check_grads`; finiteness of value and gradient under jit, vmap and grad when everything is masked
(masked slots hold NaN); one trace per shape; hand-computed numbers; bad inputs. The harness
mirrors tests/reward_model_test.py.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loss_properties import (
  B,
  Case,
  K,
  all_finite,
  harness,
  jit,
  jit_grad,
  list_mask,
  mean_or_zero,
  nls,
  pair_mask,
  scores,
  sig,
)

from rewardjax.losses import contrastive as cl

D, S = 3, 6


def cos(a, b):
  a, b = np.float64(a), np.float64(b)
  return float(a @ b / (max(np.linalg.norm(a), 1e-8) * max(np.linalg.norm(b), 1e-8)))


# ---------------------------------------------------------------- numpy references


def ref_simcse(h, hp, w, tau):
  terms = []
  for i in range(h.shape[0]):
    if not w[i]:
      continue
    logits = [cos(h[i], hp[k]) / tau for k in range(h.shape[0]) if w[k]]
    terms.append(np.logaddexp.reduce(np.float64(logits)) - cos(h[i], hp[i]) / tau)
  return mean_or_zero(terms)


def ref_metarm(r, w):
  js = []
  for b in range(r.shape[0]):
    items = [i for i in range(r.shape[1]) if w[b, i]]
    k = len(items)
    if k < 2:
      continue
    total = sum(sig(abs(r[b, i] - r[b, q])) for a, i in enumerate(items) for q in items[a + 1:])
    js.append(2.0 / k**2 * total)
  return -mean_or_zero(js)


def ref_goal(hc, hr, src, goal, anc, neg, w, beta, strategy):
  pos, negs = [], []
  for b in range(hc.shape[0]):
    if not w[b]:
      continue
    goals = [hc[b, g] for g in goal[b]]
    rejs = [hr[b, g] for g in neg[b]]
    if strategy == "cosine_avg":
      goals, rejs = [np.mean(goals, axis=0)], [np.mean(rejs, axis=0)]
    pos += [sig(cos(hc[b, s], g)) for s in src[b] for g in goals]
    negs += [sig(cos(hc[b, a], g)) for a in anc[b] for g in rejs]
  if not pos:
    return 0.0
  return beta * (-np.log(np.mean(pos)) - np.log(1.0 - np.mean(negs)))


# ---------------------------------------------------------------- cases


def make_simcse(rng, degenerate):
  w = pair_mask(rng, degenerate)
  shape = (B, D)
  return (scores(rng, shape, w[:, None], degenerate), scores(rng, shape, w[:, None], degenerate)), (
    w,)


def make_metarm(rng, degenerate):
  w = list_mask(rng, degenerate)
  return (scores(rng, (B, K), w, degenerate),), (w,)


def make_goal(rng, degenerate):
  w = pair_mask(rng, degenerate)
  hc = scores(rng, (B, S, D), w[:, None, None], degenerate)
  hr = scores(rng, (B, S + 1, D), w[:, None, None], degenerate)
  idx = [rng.integers(0, n, size=(B, m)).astype(np.int32)
         for n, m in ((S, 3), (S, 3), (S, 2), (S + 1, 2))]
  return (hc, hr), (*idx, w)


CASES = {
  "simcse": Case(make_simcse, lambda d, x: cl.simcse_loss(*d, *x, temperature=0.5),
                 lambda d, x: ref_simcse(*d, *x, 0.5)),
  "metarm": Case(make_metarm, lambda d, x: cl.metarm_difference_loss(d[0], *x),
                 lambda d, x: ref_metarm(d[0], *x)),
  **{f"goal_{s}": Case(
    make_goal, lambda d, x, s=s: cl.goal_contrastive_loss(*d, *x, beta=0.5, strategy=s),
    lambda d, x, s=s: ref_goal(*d, *x, 0.5, s)) for s in ("cosine", "cosine_avg")},
}


case, test_reference_and_fully_masked_finite_under_jit_vmap_grad_one_trace, test_check_grads = (
    harness(CASES))


# ---------------------------------------------------------------- hand-computed numbers


def test_unmasked_degenerate_inputs_are_finite():
  assert all_finite(jit_grad(cl.simcse_loss)(jnp.zeros((3, D)), jnp.zeros((3, D))))  # ‖0‖
  assert all_finite(jit_grad(cl.metarm_difference_loss)(jnp.zeros((2, 3))))  # |Δ| kink at 0
  hand = jit(cl.metarm_difference_loss)(jnp.array([[0.0, 1.0, 1.0]]))[0]
  np.testing.assert_allclose(float(hand), -2 / 9 * (2 * sig(1.0) + 0.5), rtol=1e-6)


def test_simcse_hand_value():
  loss, m = jit(cl.simcse_loss, temperature=1.0)(jnp.eye(2), 3.0 * jnp.eye(2))  # cos: scale-free
  np.testing.assert_allclose(float(loss), nls(1.0), rtol=1e-6)
  assert float(m["accuracy"]) == 1.0 and float(m["negative_cosine"]) == 0.0


def test_goal_positions_stay_in_the_response_and_goals_follow_sources():
  left = np.array([[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]])  # left/none/right
  right = np.array([[1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]])
  sample = jit(cl.goal_contrastive_positions, num_positive=256, num_negative=256)
  out = sample(jax.random.key(0), jnp.asarray(left), jnp.asarray(right))
  src, goal, anc, neg, valid = map(np.asarray, out)
  np.testing.assert_array_equal(valid, [1.0, 0.0, 1.0])
  for b in (0, 2):
    for idx, mask in ((src, left), (goal, left), (anc, left), (neg, right)):
      assert np.all(mask[b][idx[b]] == 1)  # every position is a response token
      assert set(idx[b].tolist()) == set(np.flatnonzero(mask[b]).tolist())  # and all are hit
    assert np.all(goal[b] >= src[b])
  src = jit(cl.goal_contrastive_positions, source_percentile=0.5)(
    jax.random.key(1), jnp.asarray(left), jnp.asarray(right))[0]
  assert np.all(np.asarray(src)[0] <= 3)  # first half of the 4-token response: positions 2, 3


# ---------------------------------------------------------------- bad inputs


def test_unknown_strategy_lists_valid_names():
  h, i = jnp.zeros((1, 2, 2)), jnp.zeros((1, 1), jnp.int32)
  with pytest.raises(ValueError, match="valid names: \\["):
    cl.goal_contrastive_loss(h, h, i, i, i, i, strategy="dot")


def test_mismatched_shapes_name_the_shapes():
  args = (jnp.zeros((2, 3)), jnp.zeros((2, 4)))
  # The runtime jaxtyping hook (tests/conftest.py) rejects these first; without it (library
  # users) our own check raises a ValueError that names both shapes.
  with pytest.raises((TypeError, ValueError)):
    cl.simcse_loss(*args)
  with pytest.raises(ValueError) as err:
    inspect.unwrap(cl.simcse_loss)(*args)
  assert "(2, 3)" in str(err.value) and "(2, 4)" in str(err.value), str(err.value)
