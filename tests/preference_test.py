"""Tests for rewardjax.losses.preference against independent float64 numpy references.

SimPO, ORPO and KTO (rewardjax.losses.reference_free) are tested in reference_free_test.py.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from loss_properties import TRL_METRICS, logsig, sig

from rewardjax.losses import preference as pref

ALL_TYPES = tuple(pref.DPO_LOSS_TYPES)
PAIRWISE = tuple(t for t in ALL_TYPES if t not in ("aot", "aot_unpaired", "sft"))


# numpy references
def np_score(h, f, a):
  if f == "reverse_kl":
    return h
  if f == "forward_kl":
    return -np.exp(-h)
  if f == "js_divergence":
    return logsig(h)
  return h if a == 1.0 else np.exp((a - 1.0) * h) / (a - 1.0)


def np_dpo(cw, cl, rw, rl, *, loss_type, beta=0.1, eps=0.0, f="reverse_kl", a=0.5, tau=0.05,
           len_w=None, len_l=None, mask=None, ww=None, wl=None):
  """Per-pair DPO losses written from the papers/policy.md §15 table; mean over valid pairs."""
  keep = np.ones(len(cw), bool) if mask is None else np.asarray(mask) > 0
  cw, cl, rw, rl = (np.asarray(x, np.float64)[keep] for x in (cw, cl, rw, rl))
  eps = np.broadcast_to(np.asarray(eps, np.float64), keep.shape)[keep]
  raw_lw = None if len_w is None else np.asarray(len_w, np.float64)[keep]
  lw = None if len_w is None else np.maximum(raw_lw, 1)
  ll = None if len_l is None else np.maximum(np.asarray(len_l, np.float64)[keep], 1)
  hw, hl = cw - rw, cl - rl
  sw, sl = np_score(hw, f, a), np_score(hl, f, a)
  z = beta * (sw - sl)
  cdpo = lambda d: -(1 - eps) * logsig(beta * d) - eps * logsig(-beta * d)
  out = {
      "sigmoid": lambda: cdpo(sw - sl),
      "hinge": lambda: np.maximum(0.0, 1 - z),
      "ipo": lambda: (sw / lw - sl / ll - 1 / (2 * beta)) ** 2,
      "exo_pair": lambda: sig(z) * (logsig(z) - np.log(1 - eps)) + sig(-z) * (logsig(-z)
                                                                              - np.log(eps)),
      "nca_pair": lambda: -logsig(beta * sw) - 0.5 * logsig(-beta * sw) - 0.5 * logsig(-beta * sl),
      "robust": lambda: (-(1 - eps) * logsig(z) + eps * logsig(-z)) / (1 - 2 * eps),
      "bco_pair": lambda: -logsig(beta * sw) - logsig(-beta * sl),
      "sppo_hard": lambda: (sw - 1 / (2 * beta)) ** 2 + (sl + 1 / (2 * beta)) ** 2,
      "aot": lambda: cdpo(np.sort(cw - cl) - np.sort(rw - rl)),
      "aot_unpaired": lambda: cdpo(np.sort(hw) - np.sort(hl)),
      "apo_zero": lambda: 1 - sig(beta * hw) + sig(beta * hl),
      "apo_down": lambda: sig(beta * hw) + 1 - sig(z),
      "discopop": lambda: (1 - sig(z / tau)) * -logsig(z) + sig(z / tau) * np.exp(-z),
      "sft": lambda: np.full_like(cw, -cw.sum() / max(raw_lw.sum(), 1)),
      "sigmoid_norm": lambda: -logsig(beta * (sw / lw - sl / ll)),
  }[loss_type]()
  if ww is not None:
    out = out * np.asarray(ww)[keep] * np.asarray(wl)[keep]
  return out.mean() if out.size else 0.0


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  b = 8
  f = lambda *s: jnp.asarray(rng.normal(size=s) * 2.0, jnp.float32)
  mask = np.ones(b, np.float32)
  mask[[2, 5]] = 0.0
  cw, cl = f(b) - 10.0, f(b) - 12.0
  # Garbage in masked pairs must not leak into the loss or its gradient.
  cw = cw.at[2].set(jnp.nan)
  cl = cl.at[5].set(jnp.inf)
  return dict(cw=cw, cl=cl, rw=f(b) - 10.0, rl=f(b) - 12.0, mask=jnp.asarray(mask),
              # a valid pair with an empty chosen completion exercises the max(len, 1) guards
              len_w=jnp.asarray(rng.integers(1, 9, b), jnp.int32).at[0].set(0),
              len_l=jnp.asarray(rng.integers(1, 9, b), jnp.int32),
              ww=jnp.asarray(rng.uniform(0.2, 1.0, b), jnp.float32),
              wl=jnp.asarray(rng.uniform(0.2, 1.0, b), jnp.float32))


def call_dpo(bt, loss_type, **kw):
  return pref.dpo_loss(bt["cw"], bt["cl"], bt["rw"], bt["rl"], loss_type=loss_type,
                       chosen_lengths=bt["len_w"], rejected_lengths=bt["len_l"],
                       pair_mask=bt["mask"], **kw)


# dpo_loss values
@pytest.mark.parametrize("loss_type", ALL_TYPES)
@pytest.mark.parametrize("f_div", ["reverse_kl", "forward_kl", "js_divergence",
                                   "alpha_divergence"])
def test_dpo_matches_numpy_reference(batch, loss_type, f_div):
  kw = dict(beta=0.3, label_smoothing=0.1, f_divergence_type=f_div, f_alpha_divergence_coef=0.7)
  loss, metrics = call_dpo(batch, loss_type, **kw)
  np_bt = {k: np.asarray(v, np.float64) for k, v in batch.items()}
  want = np_dpo(np_bt["cw"], np_bt["cl"], np_bt["rw"], np_bt["rl"], loss_type=loss_type,
                beta=0.3, eps=0.1, f=f_div, a=0.7, len_w=np_bt["len_w"], len_l=np_bt["len_l"],
                mask=np_bt["mask"])
  np.testing.assert_allclose(float(loss), want, rtol=2e-5, atol=1e-6)
  assert set(metrics) == TRL_METRICS


def test_dpo_metrics_match_trl_definitions(batch):
  _, m = call_dpo(batch, "sigmoid", beta=0.5)
  keep = np.asarray(batch["mask"]) > 0
  hw = (np.asarray(batch["cw"], np.float64) - np.asarray(batch["rw"]))[keep]
  hl = (np.asarray(batch["cl"], np.float64) - np.asarray(batch["rl"]))[keep]
  want = {"rewards/chosen": 0.5 * hw.mean(), "rewards/rejected": 0.5 * hl.mean(),
          "rewards/accuracies": (hw > hl).mean(), "rewards/margins": 0.5 * (hw - hl).mean(),
          "logps/chosen": np.asarray(batch["cw"], np.float64)[keep].mean(),
          "logps/rejected": np.asarray(batch["cl"], np.float64)[keep].mean()}
  for k, v in want.items():
    np.testing.assert_allclose(float(m[k]), v, rtol=1e-5, err_msg=k)


def test_alpha_divergence_at_one_is_reverse_kl(batch):
  """alpha = 1 is reverse KL exactly; alpha -> 1 converges to it where the scores enter as Delta.

  TRL and policy.md §15.1 use the score f'(u) = (u^(a-1) - 1)/(a-1) -> log u = h, with the
  constant -1/(a-1) dropped and a fallback to h at a = 1. The constant cancels in
  Delta = s_w - s_l, and |(e^(ch) - 1)/c - h| <= |c| h^2 e^|ch| / 2 (c = a - 1, Taylor), so a loss
  L(beta Delta) with |L'| <= K moves from reverse KL by at most
  K beta mean_b |c|/2 (h_w^2 e^|c h_w| + h_l^2 e^|c h_l|). Types that see a single score (ipo,
  nca_pair, bco_pair, sppo_hard, sigmoid_norm) keep the 1/(a-1) and have no such limit.
  """
  kw = dict(beta=0.3, label_smoothing=0.1)
  for loss_type in ALL_TYPES:  # the fallback: same values, bit for bit
    at_one, m1 = call_dpo(batch, loss_type, f_divergence_type="alpha_divergence",
                          f_alpha_divergence_coef=1.0, **kw)
    reverse, m2 = call_dpo(batch, loss_type, **kw)
    assert float(at_one) == float(reverse), loss_type
    assert {k: float(v) for k, v in m1.items()} == {k: float(v) for k, v in m2.items()}

  np_bt = {k: np.asarray(v, np.float64) for k, v in batch.items()}
  keep = np_bt["mask"] > 0
  h_w, h_l = ((np_bt[p] - np_bt[r])[keep] for p, r in (("cw", "rw"), ("cl", "rl")))
  lipschitz = {"sigmoid": 1.0, "hinge": 1.0, "robust": 1 / (1 - 2 * 0.1), "exo_pair": None,
               "discopop": None, "apo_down": None}  # |dL/dz|, z = beta Delta, where bounded
  for loss_type, k in lipschitz.items():
    reverse = float(call_dpo(batch, loss_type, **kw)[0])
    for a in (0.9, 0.99, 0.999, 1.001, 1.01, 1.1):
      loss = float(call_dpo(batch, loss_type, f_divergence_type="alpha_divergence",
                            f_alpha_divergence_coef=a, **kw)[0])
      want = np_dpo(np_bt["cw"], np_bt["cl"], np_bt["rw"], np_bt["rl"], loss_type=loss_type,
                    beta=0.3, eps=0.1, f="alpha_divergence", a=a, mask=np_bt["mask"])
      # float32 scores are ~1/(a-1), so Delta carries a few ulps of 1/|a-1| of rounding.
      atol = 0.3 * 4 * np.finfo(np.float32).eps / abs(a - 1.0)
      np.testing.assert_allclose(loss, want, rtol=1e-5, atol=atol, err_msg=f"{loss_type}, a={a}")
      assert loss != reverse, (loss_type, a)  # no fallback away from a = 1
      if k is not None:
        c = abs(a - 1.0)
        bound = k * 0.3 * np.mean(c / 2 * (h_w**2 * np.exp(c * np.abs(h_w))
                                           + h_l**2 * np.exp(c * np.abs(h_l))))
        assert abs(loss - reverse) <= bound, (loss_type, a, loss - reverse, bound)


def test_wpo_weights_multiply_each_pair(batch):
  loss, _ = call_dpo(batch, "sigmoid", chosen_weights=batch["ww"], rejected_weights=batch["wl"])
  np_bt = {k: np.asarray(v, np.float64) for k, v in batch.items()}
  want = np_dpo(np_bt["cw"], np_bt["cl"], np_bt["rw"], np_bt["rl"], loss_type="sigmoid",
                mask=np_bt["mask"], ww=np_bt["ww"], wl=np_bt["wl"])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_loss_type_list_is_weighted_sum(batch):
  mixed, _ = call_dpo(batch, ["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])
  parts = [float(call_dpo(batch, t)[0]) for t in ("sigmoid", "bco_pair", "sft")]
  np.testing.assert_allclose(float(mixed), 0.8 * parts[0] + 0.2 * parts[1] + parts[2], rtol=1e-6)


def test_per_pair_label_smoothing_vector(batch):
  eps = jnp.linspace(0.0, 0.4, 8)
  loss, _ = call_dpo(batch, "robust", label_smoothing=eps)
  np_bt = {k: np.asarray(v, np.float64) for k, v in batch.items()}
  want = np_dpo(np_bt["cw"], np_bt["cl"], np_bt["rw"], np_bt["rl"], loss_type="robust",
                eps=np.asarray(eps, np.float64), mask=np_bt["mask"])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["sigmoid", "aot", "aot_unpaired", "ipo"])
def test_masked_equals_dropped(batch, loss_type):
  keep = np.asarray(batch["mask"]) > 0
  masked, m1 = call_dpo(batch, loss_type, label_smoothing=0.05)
  sub = {k: (v[keep] if k != "mask" else None) for k, v in batch.items()}
  dropped, m2 = pref.dpo_loss(sub["cw"], sub["cl"], sub["rw"], sub["rl"], loss_type=loss_type,
                              label_smoothing=0.05, chosen_lengths=sub["len_w"],
                              rejected_lengths=sub["len_l"])
  np.testing.assert_allclose(float(masked), float(dropped), rtol=1e-6)
  np.testing.assert_allclose(float(m1["rewards/margins"]), float(m2["rewards/margins"]),
                             rtol=1e-6)


def test_hand_computed_vectors():
  """papers/policy.md §15.6, beta = 0.1, Delta = 1."""
  one, zero = jnp.array([1.0]), jnp.array([0.0])
  dpo = lambda t, **kw: float(pref.dpo_loss(one, zero, zero, zero, loss_type=t, **kw)[0])
  assert dpo("sigmoid") == pytest.approx(0.6443967, abs=1e-6)
  assert dpo("sigmoid", label_smoothing=0.1) == pytest.approx(0.6543967, abs=1e-6)  # cDPO
  assert dpo("robust", label_smoothing=0.1) == pytest.approx(0.6318967, abs=1e-6)
  assert dpo("hinge") == pytest.approx(0.9, abs=1e-6)
  assert dpo("ipo", chosen_lengths=one, rejected_lengths=one) == pytest.approx(16.0, abs=1e-4)


@pytest.mark.parametrize("loss_type", ALL_TYPES)
def test_check_grads(loss_type):
  # Distinct values: AOT's sort is differentiable away from ties.
  args = (jnp.array([-3.0, -5.0, -4.1, -7.0, -2.2]), jnp.array([-4.0, -4.5, -6.0, -3.3, -5.1]))
  ref = (jnp.array([-3.5, -4.4, -5.0, -6.0, -2.0]), jnp.array([-4.2, -4.0, -5.5, -3.0, -5.0]))
  lens = jnp.arange(1, 6)
  # check_grads feeds numpy arrays to its finite differences; the jaxtyping hook wants jax ones.
  fn = lambda w, l: pref.dpo_loss(jnp.asarray(w), jnp.asarray(l), *ref, beta=0.2,
                                  loss_type=loss_type, label_smoothing=0.1, chosen_lengths=lens,
                                  rejected_lengths=lens)[0]
  check_grads(fn, args, order=1, modes=["rev"])


def _degenerate_step(loss_types, f_div):
  """One jit for all types: value and grad of one batch plus vmap(grad) over two batches."""
  zeros = jnp.zeros(4)

  def fn(w, l, mask, loss_type):
    return pref.dpo_loss(w, l, zeros, zeros, loss_type=loss_type, label_smoothing=0.1,
                         f_divergence_type=f_div, chosen_lengths=zeros, rejected_lengths=zeros,
                         pair_mask=mask)[0]

  def all_types(w, l, m):
    return {t: (jax.value_and_grad(fn, argnums=(0, 1))(w[0], l[0], m[0], t),
                jax.vmap(jax.grad(fn), in_axes=(0, 0, 0, None))(w, l, m, t)) for t in loss_types}

  return jax.jit(all_types)


@pytest.fixture(scope="module")
def degenerate_results():
  """Fully masked NaN pairs, log-ratios of +-1e4 and zero lengths, for every loss type."""
  step = _degenerate_step(ALL_TYPES, "reverse_kl")
  nan, zeros, ones = jnp.full(4, jnp.nan), jnp.zeros(4), jnp.ones(4)
  huge = jnp.array([1e4, -1e4, 0.0, 30.0])
  cases = ((nan, nan, zeros), (huge, -huge, ones), (zeros, zeros, ones))
  return [step(jnp.stack([w, huge]), jnp.stack([l, zeros]), jnp.stack([m, ones]))
          for w, l, m in cases]


@pytest.mark.parametrize("loss_type", ALL_TYPES)
def test_finite_value_and_grad_for_degenerate_inputs(degenerate_results, loss_type):
  for case in degenerate_results:
    (val, grads), vm = case[loss_type]
    assert np.isfinite(float(val)) and all(np.isfinite(g).all() for g in grads)
    assert np.isfinite(vm).all()
  assert float(degenerate_results[0][loss_type][0][0]) == 0.0  # nothing counts


def test_finite_for_masked_garbage_under_every_f_divergence():
  # Exponential scores are capped at exp(80); squared losses of those overflow by design, so
  # only masked garbage and moderate log-ratios are checked here.
  w = jnp.stack([jnp.full(4, jnp.nan), jnp.array([30.0, -30.0, 0.0, 5.0])])
  m = jnp.stack([jnp.zeros(4), jnp.ones(4)])
  for f_div in ("forward_kl", "js_divergence", "alpha_divergence"):
    (val, grads), vm = _degenerate_step(("sigmoid",), f_div)(w, -w, m)["sigmoid"]
    assert float(val) == 0.0 and all(np.isfinite(g).all() for g in grads)
    assert np.isfinite(vm).all()


def test_sigmoid_is_log2_at_zero_log_ratios():
  z = jnp.zeros(3)
  loss, m = jax.jit(pref.dpo_loss)(z, z, z, z)
  assert float(loss) == pytest.approx(math.log(2.0), abs=1e-7)
  assert float(m["rewards/accuracies"]) == 0.0  # ties are not correct (TRL uses >)


def test_one_compile_per_shape():
  """New values of one shape reuse the trace and give fresh values equal to the numpy reference."""
  chex.clear_trace_counter()  # the counter is keyed by source, so reruns would count twice

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(w, l, rw, rl):
    return pref.dpo_loss(w, l, rw, rl, beta=0.5, loss_type=("sigmoid", "aot"))

  rng = np.random.default_rng(1)
  for _ in range(2):  # distinct draws: a stale or input-ignoring step returns the first loss
    x = rng.normal(size=(4, 4)) * 2.0
    loss, metrics = step(*jnp.asarray(x, jnp.float32))
    want = sum(np_dpo(*x, loss_type=t, beta=0.5) for t in ("sigmoid", "aot"))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["rewards/margins"]),
                               0.5 * ((x[0] - x[2]) - (x[1] - x[3])).mean(), rtol=1e-5, atol=1e-6)
  with pytest.raises(AssertionError, match="traced > 1 times"):  # the guard is live
    step(*jnp.zeros((4, 5)))
  chex.clear_trace_counter()


# bad inputs
def test_unknown_names_list_valid_ones(batch):
  with pytest.raises(ValueError, match="valid names: .*'sigmoid'.*'sppo_hard'"):
    call_dpo(batch, "kto_pair")
  with pytest.raises(ValueError, match="f_divergence_type .*'js_divergence'"):
    call_dpo(batch, "sigmoid", f_divergence_type="chi2")


def test_bad_options_raise(batch):
  z = jnp.zeros(2)
  with pytest.raises(ValueError, match="needs \\['chosen_lengths', 'rejected_lengths'\\]"):
    pref.dpo_loss(z, z, z, z, loss_type="ipo")
  with pytest.raises(ValueError, match="exo_pair needs 0 < label_smoothing"):
    pref.dpo_loss(z, z, z, z, loss_type="exo_pair")
  with pytest.raises(ValueError, match="robust needs"):
    pref.dpo_loss(z, z, z, z, loss_type="robust", label_smoothing=0.5)
  with pytest.raises(ValueError, match="loss_weights has 1 entries for 2"):
    pref.dpo_loss(z, z, z, z, loss_type=["sigmoid", "hinge"], loss_weights=[1.0])


def test_mismatched_shapes_name_the_shapes():
  a, b = jnp.zeros(3), jnp.zeros(4)
  raw = getattr(pref.dpo_loss, "__wrapped__", pref.dpo_loss)  # past the jaxtyping hook
  with pytest.raises(ValueError, match=r"'rejected_logps': \(4,\)"):
    raw(a, b, a, a)
  with pytest.raises((ValueError, TypeError), match="4"):  # hooked: jaxtyping reports B
    pref.dpo_loss(a, b, a, a)


# helpers
def test_implicit_reward_and_accuracy(batch):
  r = pref.implicit_reward(batch["rw"], batch["rl"], beta=0.3)
  np.testing.assert_allclose(np.asarray(r), 0.3 * (np.asarray(batch["rw"], np.float64)
                                                   - np.asarray(batch["rl"])), rtol=1e-5)
  acc = pref.implicit_reward_accuracy(batch["rw"], batch["rl"], batch["rl"], batch["rw"],
                                      pair_mask=batch["mask"])
  keep = np.asarray(batch["mask"]) > 0
  d = 2 * (np.asarray(batch["rw"], np.float64) - np.asarray(batch["rl"]))[keep]
  assert float(acc) == pytest.approx((d > 0).mean())
  ref_free = pref.implicit_reward_accuracy(jnp.array([-1.0, -2.0]), jnp.array([-1.0, -3.0]))
  assert float(ref_free) == 0.5  # the tie counts as wrong


def test_wpo_weights_reference():
  rng = np.random.default_rng(3)
  lp = jnp.asarray(-rng.uniform(0.1, 3, (3, 5)), jnp.float32)
  l2 = jnp.asarray(-rng.uniform(0.1, 3, (3, 5)), jnp.float32)
  mask = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], jnp.float32)
  w = pref.wpo_weights(lp, l2, mask)
  m = np.asarray(mask)
  x = (np.asarray(lp, np.float64) - np.asarray(l2)) * m
  want = np.exp(x.sum(1) / np.maximum(m.sum(1), 1))
  np.testing.assert_allclose(np.asarray(w), want, rtol=1e-5)
  assert float(w[2]) == 1.0  # fully masked row: exp(0)


def test_ld_sequence_logps_reference():
  rng = np.random.default_rng(4)
  lw = jnp.asarray(-rng.uniform(0, 2, (3, 6)), jnp.float32)
  ll = jnp.asarray(-rng.uniform(0, 2, (3, 4)), jnp.float32)
  mw = jnp.asarray([[0, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0], [0] * 6], jnp.float32)  # left pad
  ml = jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]], jnp.float32)
  got_w, got_l = pref.ld_sequence_logps(lw, ll, mw, ml, ld_alpha=0.3)
  for b in range(3):
    tw = np.asarray(lw, np.float64)[b][np.asarray(mw)[b] > 0]
    tl = np.asarray(ll, np.float64)[b][np.asarray(ml)[b] > 0]
    k = min(len(tw), len(tl))
    np.testing.assert_allclose(float(got_w[b]), tw[:k].sum() + 0.3 * tw[k:].sum(), rtol=1e-5)
    np.testing.assert_allclose(float(got_l[b]), tl[:k].sum() + 0.3 * tl[k:].sum(), rtol=1e-5)
  plain_w, _ = pref.ld_sequence_logps(lw, ll, mw, ml, ld_alpha=1.0)
  np.testing.assert_allclose(np.asarray(plain_w), np.asarray((lw * mw).sum(1)), rtol=1e-6)
