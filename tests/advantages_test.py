"""Tests for rewardjax.advantages against independent numpy references (policy.md §0.4, §14.5)."""

import functools
import inspect
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rewardjax import advantages as A

# ---------------------------------------------------------------- numpy references (from formulas)


def np_group(r, g, scale, eps):
  r_pg = np.asarray(r, np.float64).reshape(-1, g)
  out = r_pg - r_pg.mean(axis=1, keepdims=True)
  if scale == "none":
    return out.reshape(-1)
  if scale == "group":
    std = r_pg.std(axis=1, ddof=1, keepdims=True) if g > 1 else np.zeros((len(r_pg), 1))
  else:
    std = np.full((len(r_pg), 1), np.asarray(r, np.float64).std(ddof=1) if r.size > 1 else 0.0)
  return (out / (std + eps)).reshape(-1)


def np_rloo(r, g):
  r_pg = np.asarray(r, np.float64).reshape(-1, g)
  out = np.zeros_like(r_pg)
  for p in range(r_pg.shape[0]):
    for i in range(g):
      others = np.delete(r_pg[p], i)
      out[p, i] = r_pg[p, i] - others.mean() if g > 1 else 0.0
  return out.reshape(-1)


def np_gae(r, v, m, gamma, lam):
  """Run the recursion on each row's valid tokens only (masked tokens do not exist)."""
  adv, ret = np.zeros(r.shape), np.zeros(r.shape)
  for b in range(r.shape[0]):
    idx = np.flatnonzero(m[b])
    next_v = next_a = 0.0
    for t in idx[::-1]:
      next_a = r[b, t] + gamma * next_v - v[b, t] + gamma * lam * next_a
      next_v = v[b, t]
      adv[b, t], ret[b, t] = next_a, next_a + v[b, t]
  return adv, ret


def np_whiten(x, m, shift_mean=True):
  vals = x[m > 0].astype(np.float64)
  mean = vals.mean() if vals.size else 0.0
  var = vals.var(ddof=1) if vals.size > 1 else 0.0
  out = (x - mean) / np.sqrt(var + 1e-8) + (0.0 if shift_mean else mean)
  return np.where(m > 0, out, 0.0)


def np_steps(r, m, g, eps, cumulative):
  out = np.zeros(r.shape)
  for p in range(r.shape[0] // g):
    rows = slice(p * g, (p + 1) * g)
    vals = r[rows][m[rows] > 0].astype(np.float64)
    mean = vals.mean() if vals.size else 0.0
    std = vals.std(ddof=1) if vals.size > 1 else 0.0
    out[rows] = np.where(m[rows] > 0, (r[rows] - mean) / (std + eps), 0.0)
  if cumulative:
    for b in range(r.shape[0]):
      for k in range(r.shape[1]):
        out[b, k] = out[b, k:].sum() if m[b, k] else 0.0
  return out


def np_combine(ep, st, ids, m, alpha):
  out = np.zeros(ids.shape)
  for b, t in np.ndindex(*ids.shape):
    step = st[b, ids[b, t]] if 0 <= ids[b, t] < st.shape[1] else 0.0
    out[b, t] = (ep[b] + alpha * step) if m[b, t] else 0.0
  return out


@pytest.fixture(scope="module")
def tokens():
  rng = np.random.default_rng(0)
  b, t = 4, 7
  m = (rng.random((b, t)) < 0.7).astype(np.float32)
  m[1] = 0.0  # a fully masked row
  m[2, :3] = 1.0
  m[2, 3] = 0.0  # a hole mid-sequence (a tool observation)
  r = rng.normal(size=(b, t)).astype(np.float32)
  v = rng.normal(size=(b, t)).astype(np.float32)
  return jnp.asarray(r), jnp.asarray(v), jnp.asarray(m)


# ------------------------------------------------------------------------------ group estimators


def test_rloo_hand_values():
  """RLOO on [1..6], G=3: each reward minus the mean of the other two."""
  out = A.rloo_advantages(jnp.arange(1.0, 7.0), 3)
  assert out.tolist() == [-1.5, 0.0, 1.5, -1.5, 0.0, 1.5]


def test_grpo_test_vector():
  """policy.md §0.4: R = [1, 0, 0, 1], unbiased std sqrt(1/3)."""
  r = jnp.array([1.0, 0.0, 0.0, 1.0])
  np.testing.assert_allclose(A.group_advantages(r, 4, eps=1e-6),
                             [0.866024, -0.866024, -0.866024, 0.866024], atol=1e-6)
  np.testing.assert_allclose(A.group_advantages(r, 4),  # TRL eps = 1e-4
                             [0.865875, -0.865875, -0.865875, 0.865875], atol=1e-6)
  assert A.dr_grpo_advantages(r, 4).tolist() == [0.5, -0.5, -0.5, 0.5]


@pytest.mark.parametrize("name", sorted(A.ADVANTAGES))
def test_equal_groups_and_g1_are_exactly_zero(name):
  """Equal rewards in a group (values not exact in binary) and G=1 give 0.0, never NaN."""
  fn = A.get_advantage_fn(name)
  equal = jnp.array([0.1, 0.1, 0.1, 0.7, 0.7, 0.7], jnp.float32)
  assert fn(equal, 3).tolist() == [0.0] * 6
  assert fn(jnp.array([0.3, -2.0, 5.0]), 1).tolist() == [0.0] * 3
  for scale in A.SCALE_REWARDS:
    assert A.group_advantages(equal, 3, scale_rewards=scale).tolist() == [0.0] * 6


@pytest.mark.parametrize("g", [1, 3])
@pytest.mark.parametrize("scale", A.SCALE_REWARDS)
def test_group_advantages_match_numpy(g, scale):
  rng = np.random.default_rng(g)
  r = rng.normal(size=6).astype(np.float32)
  r[:3] = 0.4  # an all-equal group when g = 3
  out = A.group_advantages(jnp.asarray(r), g, scale_rewards=scale)
  np.testing.assert_allclose(out, np_group(r, g, scale, 1e-4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("g", [1, 2, 6])
def test_rloo_matches_numpy(g):
  r = np.random.default_rng(g).normal(size=6).astype(np.float32)
  np.testing.assert_allclose(A.rloo_advantages(jnp.asarray(r), g), np_rloo(r, g), atol=1e-5)


def test_bad_names_and_shapes():
  with pytest.raises(ValueError, match="dr_grpo.*grpo.*rloo"):
    A.get_advantage_fn("ppo")
  with pytest.raises(ValueError, match=r"\(6,\).*group_size=4"):
    A.group_advantages(jnp.zeros(6), 4)
  with pytest.raises(ValueError, match="group.*batch.*none"):
    A.group_advantages(jnp.zeros(6), 3, scale_rewards="std")
  raw_whiten = inspect.unwrap(A.masked_whiten)  # below the test-time jaxtyping check
  with pytest.raises(ValueError, match=r"values \(2, 3\), mask \(2, 4\)"):
    raw_whiten(jnp.zeros((2, 3)), jnp.ones((2, 4)))
  with pytest.raises((ValueError, TypeError)):  # jaxtyping's TypeCheckError when hooked
    A.masked_whiten(jnp.zeros((2, 3)), jnp.ones((2, 4)))


def test_group_keep_mask():
  """DAPO keeps groups whose rewards differ, and every group of size 1."""
  r = jnp.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.3, 0.3])
  assert A.group_keep_mask(r, 2).tolist() == [False, True, False, False]
  assert A.group_keep_mask(r, 4).tolist() == [True, True]
  assert A.group_keep_mask(r, 1).tolist() == [True] * 8


# --------------------------------------------------------------------------------- GAE, whitening


@pytest.mark.parametrize("whiten", [False, True])
def test_gae_matches_numpy(tokens, whiten):
  r, v, m = tokens
  gae = jax.jit(functools.partial(A.gae_advantages, gamma=0.9, lam=0.8, whiten=whiten))
  adv, ret = gae(r, v, m)
  adv_np, ret_np = np_gae(np.asarray(r), np.asarray(v), np.asarray(m), 0.9, 0.8)
  np.testing.assert_allclose(ret, ret_np, rtol=1e-5, atol=1e-5)
  want = np_whiten(adv_np, np.asarray(m)) if whiten else adv_np
  np.testing.assert_allclose(adv, want, rtol=1e-4, atol=1e-5)


def test_gae_lambda_one_is_return_minus_value():
  """gamma = lam = 1: A_t = sum_{t' >= t} r_t' - V_t (telescoping TD errors)."""
  r = jnp.array([[0.0, 1.0, 0.0, 2.0]])
  v = jnp.array([[0.5, -1.0, 3.0, 0.25]])
  adv, ret = A.gae_advantages(r, v, jnp.ones((1, 4)), gamma=1.0, lam=1.0, whiten=False)
  assert ret.tolist() == [[3.0, 3.0, 2.0, 2.0]]
  assert adv.tolist() == [[2.5, 4.0, -1.0, 1.75]]


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_matches_numpy(tokens, shift_mean):
  x, _, m = tokens
  out = A.masked_whiten(x, m, shift_mean=shift_mean)
  np.testing.assert_allclose(out, np_whiten(np.asarray(x), np.asarray(m), shift_mean),
                             rtol=1e-5, atol=1e-6)
  if shift_mean:  # whitened valid entries: mean 0, unbiased variance 1
    vals = np.asarray(out)[np.asarray(m) > 0]
    assert abs(vals.mean()) < 1e-6 and abs(vals.var(ddof=1) - 1.0) < 1e-5


# ------------------------------------------------------------------------- step level (OPRL)


@pytest.mark.parametrize("g", [1, 2])
@pytest.mark.parametrize("cumulative", [False, True])
def test_step_advantages_match_numpy(g, cumulative):
  rng = np.random.default_rng(3)
  r = rng.normal(size=(4, 3)).astype(np.float32)
  m = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 0]], np.float32)
  out = A.step_advantages(jnp.asarray(r), jnp.asarray(m), g, cumulative=cumulative)
  np.testing.assert_allclose(out, np_steps(r, m, g, 1e-4, cumulative), rtol=1e-5, atol=1e-5)


def test_step_advantages_equal_steps_are_zero():
  r = jnp.full((2, 3), 0.1)
  assert A.step_advantages(r, jnp.ones((2, 3)), 2).tolist() == [[0.0] * 3] * 2


def test_combine_step_advantages_matches_numpy():
  rng = np.random.default_rng(4)
  ep = rng.normal(size=3).astype(np.float32)
  st = rng.normal(size=(3, 2)).astype(np.float32)
  ids = np.array([[0, 0, -1, 1, 1], [1, -1, 0, 0, 2], [-1, -1, -1, -1, -1]], np.int32)
  m = np.array([[1, 1, 0, 1, 1], [1, 0, 1, 1, 0], [0, 0, 0, 0, 0]], np.float32)
  out = A.combine_step_advantages(jnp.asarray(ep), jnp.asarray(st), jnp.asarray(ids),
                                  jnp.asarray(m), alpha=0.3)
  np.testing.assert_allclose(out, np_combine(ep, st, ids, m, 0.3), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------- gradients, zero masks, tracing


def test_check_grads(tokens):
  r, v, m = tokens
  distinct = jnp.array([0.3, -1.2, 2.0, 0.7, 1.5, -0.4])

  # jit: check_grads feeds numpy arrays, which the test-time jaxtyping hook rejects.
  group = jax.jit(lambda x: (A.group_advantages(x, 3), A.rloo_advantages(x, 3),
                             A.group_advantages(x, 3, scale_rewards="batch")))
  check_grads(group, (distinct,), order=1, modes=["rev"])
  gae = jax.jit(lambda r, v: A.gae_advantages(r, v, m, gamma=0.9, lam=0.8))
  check_grads(gae, (r, v), order=1, modes=["rev"])
  steps = jax.jit(lambda x: A.step_advantages(x, m[:, :6], 2, cumulative=True))
  check_grads(steps, (r[:, :6],), order=1, modes=["rev"])


def test_zero_masks_finite_under_jit_vmap_grad(tokens):
  """All-masked inputs (holding inf/NaN padding) give finite values and gradients."""
  r, v, _ = tokens
  r = r.at[0, 0].set(jnp.inf).at[1, 1].set(jnp.nan)
  zero = jnp.zeros(r.shape)

  def total(r, v, m):
    adv, ret = A.gae_advantages(r, v, m)
    steps = A.step_advantages(r, m, 2)
    comb = A.combine_step_advantages(r[:, 0], steps, jnp.zeros(r.shape, jnp.int32), m)
    return adv.sum() + ret.sum() + steps.sum() + comb.sum() + A.masked_whiten(r, m).sum()

  # One compilation covers jit, vmap and grad.
  fn = jax.jit(jax.vmap(jax.value_and_grad(total, argnums=(0, 1))))
  value, grads = fn(r[None], v[None], zero[None])
  assert value.tolist() == [0.0]
  assert all(bool(jnp.isfinite(g).all()) for g in grads)


def test_one_compile_per_shape():
  """New values of one shape reuse the trace and give fresh, correct results; a new shape retraces.

  Hand values: [1, 0, 0, 1] has std sqrt(1/3) (GRPO 0.5 / (0.57735 + 1e-4) = 0.865875) and RLOO
  4/3 * (R - mean); [0, 1, 2, 3] has std sqrt(5/3) = 1.290994 and centred values +-0.5, +-1.5;
  a group of 2s gives exactly 0.
  """
  chex.clear_trace_counter()  # the counter is keyed by source, so reruns would count twice

  @jax.jit
  @chex.assert_max_traces(n=1)
  def fn(rewards):
    return A.group_advantages(rewards, 4), A.rloo_advantages(rewards, 4)

  g1, g2 = 0.5 / (math.sqrt(1 / 3) + 1e-4), 0.5 / (math.sqrt(5 / 3) + 1e-4)
  cases = [
      ([1, 0, 0, 1, 2, 2, 2, 2], [g1, -g1, -g1, g1, 0, 0, 0, 0],
       [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0]),
      ([0, 1, 2, 3, 3, 2, 1, 0], [-3 * g2, -g2, g2, 3 * g2, 3 * g2, g2, -g2, -3 * g2],
       [-2, -2 / 3, 2 / 3, 2, 2, 2 / 3, -2 / 3, -2]),
  ]
  for rewards, want_grpo, want_rloo in cases:  # the second call must not return the first's
    grpo, rloo = fn(jnp.asarray(rewards, jnp.float32))
    np.testing.assert_allclose(grpo, want_grpo, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rloo, want_rloo, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grpo, np_group(np.asarray(rewards), 4, "group", 1e-4), rtol=1e-6)
  with pytest.raises(AssertionError, match="traced > 1 times"):  # the guard is live
    fn(jnp.zeros(12))
