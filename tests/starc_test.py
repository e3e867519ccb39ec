"""STARC canonicalisations, standardisation and distances against independent numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rewardjax.evaluation import starc

GAMMA = 0.9
ATOL = 1e-5


def _mdp(seed, num_states=4, num_actions=3):
  """A numpy toy MDP with zero-probability successors, a random reward and a random policy."""
  rng = np.random.default_rng(seed)
  shape = (num_states, num_actions, num_states)
  tau = rng.random(shape) * (rng.random(shape) < 0.6)
  tau[:, :, 0] += 0.05                          # every row reaches state 0
  tau /= tau.sum(-1, keepdims=True)
  pi = rng.random((num_states, num_actions)) + 0.1
  return tau, rng.normal(size=shape), pi / pi.sum(-1, keepdims=True)


def _shaping(phi, gamma=GAMMA):
  return gamma * phi[None, None, :] - phi[:, None, None]


def _redistribution(tau, z):
  """z minus its projection on the rows of tau: zero expectation under every tau(.|s, a)."""
  return z - tau * ((tau * z).sum(-1) / (tau ** 2).sum(-1))[:, :, None]


def _np_values(r, tau, gamma, pi):
  """Value iteration as in the authors' `value_canon` (to 1e-12, float64)."""
  v = np.zeros(tau.shape[0])
  for _ in range(10_000):
    new = np.einsum("sa,sat,sat->s", pi, tau, r + gamma * v[None, None, :])
    if np.abs(new - v).max() < 1e-12:
      break
    v = new
  return new


def _np_val(r, tau, gamma, pi):
  v = _np_values(r, tau, gamma, pi)
  c = np.zeros_like(r)
  for s in range(r.shape[0]):
    for a in range(r.shape[1]):
      c[s, a, :] = (tau[s, a] * (r[s, a] + gamma * v - v[s])).sum()
  return c


def _np_epic(r, d_s, d_a, gamma):
  """R + E[gamma R(s', A, S') - R(s, A, S') - gamma R(S, A, S')], written with loops."""
  n_s, n_a, _ = r.shape
  def e_from(s):
    return sum(d_a[a] * d_s[t] * r[s, a, t] for a in range(n_a) for t in range(n_s))
  e_all = sum(d_s[s] * e_from(s) for s in range(n_s))
  c = np.empty_like(r)
  for s, a, t in np.ndindex(*r.shape):
    c[s, a, t] = r[s, a, t] + gamma * e_from(t) - e_from(s) - gamma * e_all
  return c


def _np_equivalence_basis(tau, gamma):
  """Columns spanning shaping terms and S'-redistributions of 0 (null space of R -> E_tau R)."""
  n_s, n_a, _ = tau.shape
  shaping = np.stack([np.broadcast_to(_shaping(np.eye(n_s)[k], gamma), tau.shape).ravel()
                      for k in range(n_s)], axis=1)
  expect = np.zeros((n_s * n_a, tau.size))
  for i, (s, a) in enumerate(np.ndindex(n_s, n_a)):
    expect[i].reshape(tau.shape)[s, a] = tau[s, a]
  _, sing, vt = np.linalg.svd(expect)
  null = vt[(sing > 1e-12).sum():].T
  return np.concatenate([shaping, null], axis=1)


def _np_minimal(r, tau, gamma):
  basis = np.array(_np_equivalence_basis(tau, gamma))
  coef = np.linalg.lstsq(basis, r.ravel(), rcond=None)[0]
  return (r.ravel() - basis @ coef).reshape(r.shape)


def _canon(method, r, tau, pi=None):
  if method == "val":
    return starc.val_canonicalize(r, tau, GAMMA, pi)
  if method == "minimal":
    return starc.minimal_canonicalize(r, tau, GAMMA)
  n_s, n_a = tau.shape[:2]
  return starc.epic_canonicalize(r, np.full(n_s, 1 / n_s), np.full(n_a, 1 / n_a), GAMMA)


def _dist(r1, r2, tau, method="val", **kw):
  options = starc.StarcOptions(canonicalize=method, **kw)
  return float(starc.starc_distance(r1, r2, tau, GAMMA, options=options))


def test_state_values_match_value_iteration():
  tau, r, pi = _mdp(0)
  np.testing.assert_allclose(starc.state_values(r, tau, GAMMA, pi), _np_values(r, tau, GAMMA, pi),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("uniform", [True, False])
def test_val_canonicalize_matches_numpy(uniform):
  tau, r, pi = _mdp(1)
  ref_pi = np.full(pi.shape, 1 / pi.shape[1]) if uniform else pi
  got = starc.val_canonicalize(r, tau, GAMMA, None if uniform else pi)
  np.testing.assert_allclose(got, _np_val(r, tau, GAMMA, ref_pi), atol=ATOL)


def test_epic_canonicalize_matches_numpy():
  tau, r, _ = _mdp(2, 3, 2)
  d_s, d_a = np.array([0.2, 0.3, 0.5]), np.array([0.7, 0.3])
  np.testing.assert_allclose(starc.epic_canonicalize(r, d_s, d_a, GAMMA),
                             _np_epic(r, d_s, d_a, GAMMA), atol=ATOL)


@pytest.mark.parametrize("seed", [3, 4])
def test_minimal_canonicalize_matches_numpy_projection(seed):
  tau, r, _ = _mdp(seed)
  got = np.asarray(starc.minimal_canonicalize(r, tau, GAMMA))
  np.testing.assert_allclose(got, _np_minimal(r, tau, GAMMA), atol=ATOL)
  assert np.all(got[tau == 0] == 0) and (tau == 0).any()


def test_single_state_test_vector():
  one = jnp.ones((1, 1, 1))
  assert float(starc.state_values(one, one, 0.9)[0]) == pytest.approx(10.0, rel=1e-6)
  c = starc.val_canonicalize(one, one, 0.9)
  assert abs(float(c[0, 0, 0])) < 1e-6
  assert float(starc.standardize(c, atol=1e-4)[0, 0, 0]) == 0.0
  d = starc.starc_distance(one, jnp.zeros((1, 1, 1)), one, 0.9)
  assert float(d) == 0.0 and not jnp.isnan(d)


@pytest.mark.parametrize("method", ["val", "minimal", "epic"])
def test_canonicalization_kernel_is_exactly_the_equivalence_class(method):
  """c(R1) = c(R2) iff R1 - R2 is shaping + S'-redistribution: ker c = W (val, minimal)."""
  tau, r, _ = _mdp(5, 3, 2)
  jac = np.asarray(jax.jacfwd(lambda x: _canon(method, x, tau))(jnp.asarray(r, jnp.float32)))
  jac = jac.reshape(r.size, r.size)
  basis = _np_equivalence_basis(tau, GAMMA)
  shaping = basis[:, :tau.shape[0]]
  np.testing.assert_allclose(jac @ shaping, 0.0, atol=ATOL)       # every method removes shaping
  kernel_dim = r.size - np.linalg.matrix_rank(jac, tol=1e-4)
  if method == "epic":
    # EPIC's kernel is the shaping terms alone (constants are shaping): S'-redistribution stays.
    assert np.abs(jac @ basis).max() > 0.1 and kernel_dim == tau.shape[0]
  else:
    np.testing.assert_allclose(jac @ basis, 0.0, atol=ATOL)
    assert kernel_dim == np.linalg.matrix_rank(basis)


def test_minimal_is_idempotent_and_no_larger_than_val():
  tau, r, _ = _mdp(6)
  m = starc.minimal_canonicalize(r, tau, GAMMA)
  np.testing.assert_allclose(starc.minimal_canonicalize(m, tau, GAMMA), m, atol=ATOL)
  assert jnp.linalg.norm(m) <= jnp.linalg.norm(starc.val_canonicalize(r, tau, GAMMA)) + ATOL
  # VAL's canonical reward is equivalent to R, so minimal maps it to the same point.
  np.testing.assert_allclose(starc.minimal_canonicalize(starc.val_canonicalize(r, tau, GAMMA), tau,
                                                        GAMMA), m, atol=ATOL)


@pytest.mark.parametrize("method", ["val", "minimal"])
@pytest.mark.parametrize("norm", [dict(norm_ord=2), dict(norm_ord=1, weighted_norm=True),
                                  dict(norm_ord=math.inf)])
def test_policy_preserving_transforms_have_distance_zero_and_negation_two(method, norm):
  tau, r, _ = _mdp(7)
  rng = np.random.default_rng(0)
  same = {"shaping": r + _shaping(rng.normal(size=4) * 5),
          "redistribution": r + _redistribution(tau, rng.normal(size=r.shape) * 5),
          "scaling": 0.3 * r, "all": 7 * (r + _shaping(rng.normal(size=4))
                                           + _redistribution(tau, rng.normal(size=r.shape)))}
  for name, r2 in same.items():
    assert _dist(r, r2, tau, method, **norm) == pytest.approx(0.0, abs=ATOL), name
  # d(R, -R) = 2 ||s(R)||_2: 2 when n is the unweighted L2 norm, larger or smaller otherwise.
  s = starc.standardize(_canon(method, r, tau), norm["norm_ord"], tau if norm.get("weighted_norm")
                        else None)
  expected = 2.0 if norm == dict(norm_ord=2) else 2 * float(jnp.linalg.norm(s))
  assert _dist(r, -r, tau, method, **norm) == pytest.approx(expected, rel=1e-5)
  only_equivalences = _shaping(rng.normal(size=4)) + _redistribution(tau, rng.normal(size=r.shape))
  assert _dist(only_equivalences, np.zeros_like(r), tau, method, **norm) == 0.0


def test_epic_removes_shaping_but_not_redistribution():
  tau, r, _ = _mdp(8)
  rng = np.random.default_rng(1)
  assert _dist(r, r + _shaping(rng.normal(size=4) * 5), tau, "epic") == pytest.approx(0, abs=ATOL)
  assert _dist(r, r + _redistribution(tau, rng.normal(size=r.shape)), tau, "epic") > 0.1


def test_standardize_zeros_and_weighted_norms_match_numpy():
  zeros = starc.standardize(jnp.zeros((2, 2, 2)))
  assert zeros.tolist() == np.zeros((2, 2, 2)).tolist()
  grad = jax.grad(lambda c: starc.standardize(c).sum())(jnp.zeros(3))
  assert jnp.all(jnp.isfinite(grad))
  tau, r, _ = _mdp(9)
  for p in (1, 2, math.inf):
    for w in (None, tau):
      ww = np.ones_like(r) if w is None else w
      n = (ww * np.abs(r)).max() if p == math.inf else (ww * np.abs(r) ** p).sum() ** (1 / p)
      np.testing.assert_allclose(starc.standardize(r, p, w), r / n, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="norm_ord"):
    starc.standardize(r, 3)


def test_distance_is_symmetric_and_in_range():
  tau, _, _ = _mdp(10)
  rng = np.random.default_rng(2)
  for method in starc.CANONICALIZATIONS:
    for _ in range(3):
      r1, r2 = rng.normal(size=(2, *tau.shape))
      d12, d21 = _dist(r1, r2, tau, method), _dist(r2, r1, tau, method)
      assert 0.0 <= d12 <= 2.0 and d12 == pytest.approx(d21, abs=1e-6)
    assert _dist(r1, r2, tau, method, scale=0.5) == pytest.approx(d12 / 2, rel=1e-6)


def test_jit_and_unknown_canonicalization():
  tau, r, _ = _mdp(11, 3, 2)
  options = starc.StarcOptions(canonicalize="minimal")
  jitted = jax.jit(starc.starc_distance, static_argnames="options")
  got = jitted(jnp.asarray(r), -jnp.asarray(r), jnp.asarray(tau), GAMMA, options=options)
  assert float(got) == pytest.approx(2.0, abs=ATOL)
  with pytest.raises(ValueError, match="valid: .*minimal"):
    _dist(r, r, tau, "dard")


def test_demonstration_zeros_and_orderings():
  results = starc.demonstration()
  assert all(np.isfinite(v) for v in results.values())
  for name in ("shaping", "redistribution", "scale_3"):
    for method in ("val", "minimal"):
      assert results[f"{method}/{name}"] == pytest.approx(0.0, abs=ATOL)
    assert results[f"kendall/{name}"] == 1.0 and results[f"regret/{name}"] == 0.0
  assert results["epic/shaping"] == pytest.approx(0.0, abs=ATOL)
  assert results["epic/redistribution"] > 0.1                      # EPIC is not STARC
  assert results["val/negation"] == pytest.approx(2.0, abs=ATOL)
  assert results["kendall/negation"] == -1.0 and results["regret/negation"] == 1.0
  assert 0 < results["val/noise_0.1"] < results["val/independent"]
  table = starc.format_table(results)
  assert table.count("\n") == 7 and "| redistribution |" in table
