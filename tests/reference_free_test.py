"""Tests for rewardjax.losses.reference_free against independent float64 numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from loss_properties import TRL_METRICS, logsig, sig

from rewardjax.losses import reference_free as rf


# numpy references
@pytest.fixture(scope="module")
def batch():
  """Eight pairs of per-sequence log-probs; pairs 2 and 5 are masked."""
  rng = np.random.default_rng(0)
  f = lambda: jnp.asarray(rng.normal(size=8) * 2.0, jnp.float32)
  mask = np.ones(8, np.float32)
  mask[[2, 5]] = 0.0
  return dict(rw=f() - 10.0, rl=f() - 12.0, mask=jnp.asarray(mask))


def test_simpo_matches_reference_and_hand_value(batch):
  assert float(rf.simpo_loss(jnp.array([-0.5]), jnp.array([-1.0]), beta=2.0,
                             simpo_gamma=1.0)[0]) == pytest.approx(0.6931472, abs=1e-6)
  aw, al = batch["rw"] / 10.0, batch["rl"] / 10.0
  loss, m = rf.simpo_loss(aw, al, beta=2.0, simpo_gamma=0.7, label_smoothing=0.1,
                          pair_mask=batch["mask"])
  keep = np.asarray(batch["mask"]) > 0
  z = 2.0 * (np.asarray(aw, np.float64) - np.asarray(al))[keep] - 0.7
  want = np.mean(-0.9 * logsig(z) - 0.1 * logsig(-z))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert set(m) == TRL_METRICS
  fn = lambda w, l: rf.simpo_loss(jnp.asarray(w), jnp.asarray(l), beta=2.0)[0]
  check_grads(fn, (aw, al), order=1, modes=["rev"])


def np_log_odds(a):
  return a - np.log1p(-np.exp(a))


def test_orpo_matches_reference_and_hand_value(batch):
  _, m = rf.orpo_loss(jnp.array([-0.5]), jnp.array([-1.0]), jnp.array(0.0))
  assert float(m["log_odds_chosen"]) == pytest.approx(0.9740770, abs=1e-5)
  assert float(m["log_odds_ratio"]) == pytest.approx(-0.3202998, abs=1e-6)
  aw, al = -jnp.abs(batch["rw"]) / 10.0, -jnp.abs(batch["rl"]) / 10.0
  loss, m = rf.orpo_loss(aw, al, jnp.array(1.5), beta=0.2, pair_mask=batch["mask"])
  keep = np.asarray(batch["mask"]) > 0
  lo = np_log_odds(np.asarray(aw, np.float64)[keep]) - np_log_odds(np.asarray(al, np.float64)[keep])
  np.testing.assert_allclose(float(loss), 1.5 - 0.2 * logsig(lo).mean(), rtol=1e-5)
  assert TRL_METRICS | {"nll_loss", "log_odds_ratio", "log_odds_chosen"} == set(m)
  fn = lambda w, l: rf.orpo_loss(jnp.asarray(w), jnp.asarray(l), jnp.array(0.0))[0]
  check_grads(fn, (aw, al), order=1, modes=["rev"])
  # avg log-prob 0 (probability one) and masked pairs stay finite in value and gradient
  fn = lambda w: rf.orpo_loss(w, jnp.zeros(2), jnp.array(0.0), pair_mask=jnp.array([1, 0.]))[0]
  val, g = jax.value_and_grad(fn)(jnp.zeros(2))
  assert np.isfinite(float(val)) and np.isfinite(g).all()


def np_kto(h, labels, kl, beta, wd, wu, mask, loss_type):
  keep = mask > 0
  z0 = max(0.0, kl[keep].mean()) if loss_type == "kto" else 0.0
  if loss_type == "kto":
    per = np.where(labels, wd * (1 - sig(beta * (h - z0))), wu * (1 - sig(beta * (z0 - h))))
  else:
    per = np.where(labels, wd * (1 - sig(beta * h)), wu * sig(beta * h))
  return per[keep].mean(), z0


@pytest.mark.parametrize("loss_type", rf.KTO_LOSS_TYPES)
def test_kto_matches_reference(batch, loss_type):
  labels = jnp.array([True, False, True, True, False, False, True, False])
  lp, ref = batch["rw"] + 1.0, batch["rw"]
  kl_lp, kl_ref = batch["rl"] + 0.5, batch["rl"]
  loss, m = rf.kto_loss(lp, ref, labels, kl_lp, kl_ref, beta=0.5, loss_type=loss_type,
                        desirable_weight=1.3, undesirable_weight=0.7, sample_mask=batch["mask"])
  np_ = lambda x: np.asarray(x, np.float64)
  want, z0 = np_kto(np_(lp) - np_(ref), np.asarray(labels), np_(kl_lp) - np_(kl_ref), 0.5, 1.3,
                    0.7, np_(batch["mask"]), loss_type)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(m["kl"]), z0, rtol=1e-5, atol=1e-7)
  good = np.asarray(labels) & (np_(batch["mask"]) > 0)
  assert float(m["count/chosen"]) == good.sum()
  np.testing.assert_allclose(float(m["rewards/chosen"]), 0.5 * (np_(lp) - np_(ref))[good].mean(),
                             rtol=1e-5)
  fn = lambda x: rf.kto_loss(jnp.asarray(x), ref, labels, kl_lp, kl_ref, loss_type=loss_type)[0]
  check_grads(fn, (lp,), order=1, modes=["rev"])


def test_kto_hand_value_and_degenerate():
  """papers/policy.md §15.6: h = 2 desirable and h = -1 undesirable, z0 = 0.5 -> 0.4625702."""
  loss, _ = rf.kto_loss(jnp.array([2.0, -1.0]), jnp.zeros(2), jnp.array([True, False]),
                        jnp.full(2, 0.5), jnp.zeros(2))
  assert float(loss) == pytest.approx(0.4625702, abs=1e-6)
  z = jnp.zeros(2)
  fn = lambda x: rf.kto_loss(x, z, z > 0, z, z, sample_mask=z)[0]  # nothing counts
  val, g = jax.jit(jax.value_and_grad(fn))(jnp.array([jnp.nan, 1.0]))
  assert float(val) == 0.0 and np.isfinite(g).all()


# bad inputs
def test_kto_unknown_loss_type_lists_valid_ones(batch):
  with pytest.raises(ValueError, match="'apo_zero_unpaired'"):
    rf.kto_loss(batch["rw"], batch["rw"], batch["mask"] > 0, loss_type="bco")


def test_kto_needs_mismatched_pairs():
  z = jnp.zeros(2)
  with pytest.raises(ValueError, match="needs kl_logps"):
    rf.kto_loss(z, z, z > 0)
