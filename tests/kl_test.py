"""Tests for rewardjax.losses.kl against numpy formulas (policy.md §0.3)."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rewardjax.losses import kl


def np_kl(lp, ref, kind, clamp=None):
  lp, ref = np.asarray(lp, np.float64), np.asarray(ref, np.float64)
  d = ref - lp
  if clamp is not None and kind in ("k3", "low_var_kl", "k3+", "low_var_kl+"):
    d = np.clip(d, -20.0, 20.0)
  out = {"k1": lp - ref, "kl": lp - ref, "k2": 0.5 * (lp - ref) ** 2, "mse": 0.5 * (lp - ref) ** 2,
         "abs": np.abs(lp - ref)}.get(kind)
  if out is None:  # the k3 family
    out = np.exp(d) - d - 1.0
  return out if clamp is None else np.clip(out, -clamp, clamp)


@pytest.fixture(scope="module")
def pair():
  rng = np.random.default_rng(0)
  lp = -rng.random((3, 5)).astype(np.float32) * 3.0
  ref = lp + rng.normal(size=(3, 5)).astype(np.float32)
  return jnp.asarray(lp), jnp.asarray(ref)


def test_k3_test_vector():
  """logp = -1, ref = -1.5: k3 = e^-0.5 + 0.5 - 1 = 0.1065307 (for k3+ too)."""
  for kind in ("low_var_kl", "k3", "k3+", "low_var_kl+"):
    value = kl.kl_estimate(jnp.array([-1.0]), jnp.array([-1.5]), kind)
    np.testing.assert_allclose(value, [0.1065307], atol=1e-7)


@pytest.mark.parametrize("clamp", [None, 0.5])
def test_all_kinds_match_numpy(pair, clamp):
  lp, ref = pair
  for kind in kl.KL_ESTIMATORS:
    np.testing.assert_allclose(kl.kl_estimate(lp, ref, kind, clamp=clamp),
                               np_kl(lp, ref, kind, clamp), rtol=1e-5, atol=1e-6, err_msg=kind)


def test_k3_nonnegative_and_zero_at_equality(pair):
  lp, ref = pair
  assert bool((kl.kl_estimate(lp, ref, "k3") >= 0).all())
  assert kl.kl_estimate(lp, lp, "k3").tolist() == np.zeros((3, 5)).tolist()


def test_k3_plus_has_k3_value_and_k2_gradient(pair):
  """Straight-through: value of k3, gradient d k2 / d logp = logp - ref."""
  lp, ref = pair
  for clamp in (None, 10.0):
    value, grad = jax.jit(jax.value_and_grad(
        lambda x, clamp=clamp: kl.kl_estimate(x, ref, "k3+", clamp=clamp).sum()))(lp)
    np.testing.assert_allclose(value, np_kl(lp, ref, "k3").sum(), rtol=1e-5)
    np.testing.assert_allclose(grad, np.asarray(lp) - np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_check_grads(pair):
  lp, ref = pair

  @jax.jit
  def fn(x):
    return ([kl.kl_estimate(x, ref, kind) for kind in ("kl", "mse", "low_var_kl", "abs")]
            + [kl.kl_estimate(x, ref, "k3", clamp=10.0)])

  check_grads(fn, (lp,), order=1, modes=["rev"])


def test_clamp_keeps_extreme_inputs_finite():
  """verl's clamp: d = 1000 would overflow exp; clamped value 10, zero (finite) gradient."""
  lp, ref = jnp.array([-1000.0, -1.0]), jnp.array([0.0, -1.5])

  def f(x):
    return kl.kl_estimate(x, ref, "k3", clamp=10.0)

  value, vjp = jax.vjp(jax.jit(f), lp)
  np.testing.assert_allclose(value, [10.0, 0.1065307], atol=1e-6)
  (grad,) = vjp(jnp.ones(2))
  assert grad.tolist()[0] == 0.0 and bool(jnp.isfinite(grad).all())


def test_bad_inputs():
  with pytest.raises(ValueError, match="abs.*k1.*low_var_kl"):
    kl.kl_estimate(jnp.zeros(3), jnp.zeros(3), "k4")
  with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
    inspect.unwrap(kl.kl_estimate)(jnp.zeros(3), jnp.zeros(4))
  with pytest.raises((ValueError, TypeError)):  # jaxtyping's TypeCheckError when hooked
    kl.kl_estimate(jnp.zeros(3), jnp.zeros(4))
