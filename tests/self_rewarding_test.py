"""Tests for rewardjax.losses.self_rewarding against independent float64 numpy references."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.test_util import check_grads
from loss_properties import logsig, sig

from rewardjax.losses import preference as pref
from rewardjax.losses import self_rewarding as sr


def f64(x):
  return np.asarray(x, np.float64)


@pytest.fixture(scope="module")
def pairs():
  rng = np.random.default_rng(0)
  f = lambda: jnp.asarray(rng.normal(size=6) * 2.0 - 8.0, jnp.float32)
  return dict(cw=f(), cl=f(), rw=f(), rl=f(), labels=jnp.asarray(rng.uniform(size=6), jnp.float32),
              mask=jnp.asarray([1, 1, 0, 1, 0, 1], jnp.float32))


def np_soft(bt, labels, beta):
  keep = f64(bt["mask"]) > 0
  d = beta * ((f64(bt["cw"]) - f64(bt["rw"])) - (f64(bt["cl"]) - f64(bt["rl"])))
  p = np.broadcast_to(f64(labels), d.shape)
  return (-p * logsig(d) - (1 - p) * logsig(-d))[keep].mean()


# soft labels, CREAM
def test_soft_label_dpo_matches_reference(pairs):
  args = [pairs[k] for k in ("cw", "cl", "rw", "rl")]
  loss, m = sr.soft_label_dpo_loss(*args, pairs["labels"], beta=0.3, pair_mask=pairs["mask"])
  np.testing.assert_allclose(float(loss), np_soft(pairs, pairs["labels"], 0.3), rtol=1e-5)
  keep = f64(pairs["mask"]) > 0
  np.testing.assert_allclose(float(m["soft_labels/mean"]), f64(pairs["labels"])[keep].mean(),
                             rtol=1e-6)
  fn = lambda w, l: sr.soft_label_dpo_loss(jnp.asarray(w), jnp.asarray(l), *args[2:],
                                           pairs["labels"])[0]
  check_grads(fn, args[:2], order=1, modes=["rev"])


def test_cream_limits(pairs):
  args = [pairs[k] for k in ("cw", "cl", "rw", "rl")]
  dpo, _ = pref.dpo_loss(*args, pair_mask=pairs["mask"])
  np.testing.assert_allclose(float(sr.cream_loss(*args, 1.0, pair_mask=pairs["mask"])[0]),
                             float(dpo), rtol=1e-6)  # C = 1 is DPO
  z = jnp.zeros(3)
  g = jax.grad(lambda w: sr.cream_loss(w, z, z, z, 0.5)[0])(z)  # C = 1/2 at Delta = 0: no push
  np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-8)
  loss, m = sr.cream_loss(*args, pairs["labels"], beta=0.2, pair_mask=pairs["mask"])
  np.testing.assert_allclose(float(loss), np_soft(pairs, pairs["labels"], 0.2), rtol=1e-5)
  assert "consistency/mean" in m and "soft_labels/mean" not in m


def test_cream_paper_vector():
  """papers/policy.md §5.3: ranks [1,4,3,5,2] vs [2,4,1,5,3] -> tau 0.6, C 0.8."""
  a = jnp.array([[0.1, 0.5, 0.3, 0.9, 0.2]])
  b = jnp.array([[0.2, 0.4, 0.1, 0.8, 0.3]])
  assert float(sr.kendall_tau(a, b)[0]) == pytest.approx(0.6, abs=1e-6)
  assert float(sr.cream_consistency(a, b)[0]) == pytest.approx(0.8, abs=1e-6)


def test_kendall_tau_matches_scipy_on_ordinal_ranks():
  rng = np.random.default_rng(1)
  p, n = 7, 6
  a = rng.integers(0, 3, (p, n)).astype(np.float32)  # many ties: ordinal tie-breaking matters
  b = rng.integers(0, 4, (p, n)).astype(np.float32)
  mask = (rng.uniform(size=(p, n)) > 0.25).astype(np.float32)
  mask[0] = 1.0
  mask[1] = 0.0
  mask[2, 1:] = 0.0  # one valid response
  got = np.asarray(sr.kendall_tau(jnp.asarray(a), jnp.asarray(b), jnp.asarray(mask)))
  for i in range(p):
    keep = mask[i] > 0
    if keep.sum() < 2:
      assert got[i] == 0.0
      continue
    ra = scipy.stats.rankdata(a[i][keep], method="ordinal")
    rb = scipy.stats.rankdata(b[i][keep], method="ordinal")
    np.testing.assert_allclose(got[i], scipy.stats.kendalltau(ra, rb).statistic, atol=1e-6)


def test_kendall_tau_bad_shapes():
  with pytest.raises((ValueError, TypeError), match="5"):
    sr.kendall_tau(jnp.zeros((2, 4)), jnp.zeros((2, 5)))


# SPO, preference degree
def test_spo_ssl_loss_matches_reference():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=(5, 4)) * 3, jnp.float32)
  labels = jnp.asarray([0, 3, 2, 1, 3], jnp.int32)
  mask = jnp.asarray([1, 1, 0, 1, 1], jnp.float32)
  loss, m = sr.spo_ssl_loss(logits, labels, sample_mask=mask)
  x = f64(logits)
  logp = x - np.log(np.exp(x).sum(1, keepdims=True))
  nll = -logp[np.arange(5), np.asarray(labels)]
  keep = f64(mask) > 0
  np.testing.assert_allclose(float(loss), nll[keep].mean(), rtol=1e-5)
  acc = (x.argmax(1) == np.asarray(labels))[keep].mean()
  assert float(m["ssl/accuracy"]) == pytest.approx(acc)
  fn = lambda z: sr.spo_ssl_loss(jnp.asarray(z), labels, sample_mask=mask)[0]
  check_grads(fn, (logits,), order=1, modes=["rev"])
  val, g = jax.value_and_grad(lambda z: sr.spo_ssl_loss(z, labels, sample_mask=0 * mask)[0])(
      logits.at[0, 0].set(jnp.nan))
  assert float(val) == 0.0 and np.isfinite(g).all()


# T-REG
def test_treg_token_rewards_vector():
  r = sr.treg_token_rewards(jnp.array([[0.0, 2.0, -2.0, jnp.nan]]), jnp.zeros((1, 4)),
                            jnp.array([[1.0, 1.0, 1.0, 0.0]]))
  np.testing.assert_allclose(np.asarray(r[0]), [0.0, 0.3807971, -0.3807971, 0.0], atol=1e-6)


@pytest.fixture(scope="module")
def tokens():
  rng = np.random.default_rng(3)
  b, tc, tr = 4, 5, 3
  u = lambda *s: jnp.asarray(-rng.uniform(0.05, 3.0, s), jnp.float32)
  mw = np.ones((b, tc), np.float32)
  mw[1, 3:] = 0
  mw[3] = 0  # fully masked row
  ml = np.ones((b, tr), np.float32)
  ml[0, 2:] = 0
  ml[2] = 0
  return dict(lw=u(b, tc), ll=u(b, tr), rw=u(b, tc), rl=u(b, tr),
              hw=jnp.asarray(rng.uniform(-0.5, 0.5, (b, tc)), jnp.float32),
              hl=jnp.asarray(rng.uniform(-0.5, 0.5, (b, tr)), jnp.float32),
              mw=jnp.asarray(mw), ml=jnp.asarray(ml))


def np_treg(t, *, beta, alpha, base, gamma, reduction):
  """Per-pair T-REG loss in float64; w is the DPO/SimPO gradient weight sig(-z)."""
  lw, ll, rw, rl, hw, hl, mw, ml = (f64(t[k]) for k in ("lw", "ll", "rw", "rl", "hw", "hl", "mw",
                                                        "ml"))
  out = []
  for b in range(lw.shape[0]):
    nw, nl = max(mw[b].sum(), 1), max(ml[b].sum(), 1)
    if base == "dpo":
      z = beta * (((lw[b] - rw[b]) * mw[b]).sum() - ((ll[b] - rl[b]) * ml[b]).sum())
    else:
      z = beta * ((lw[b] * mw[b]).sum() / nw - (ll[b] * ml[b]).sum() / nl) - gamma
    reg_w = -beta * (hw[b] * lw[b] * mw[b]).sum()
    reg_l = -beta * (hl[b] * ll[b] * ml[b]).sum()
    if reduction == "mean":
      reg_w, reg_l = reg_w / nw, reg_l / nl
    out.append(-logsig(z) + alpha * sig(-z) * (reg_w + reg_l))
  return np.mean(out)


def call_treg(t, **kw):
  return sr.treg_loss(t["lw"], t["ll"], t["rw"], t["rl"], t["hw"], t["hl"], t["mw"], t["ml"], **kw)


@pytest.mark.parametrize("base", sr.TREG_BASES)
@pytest.mark.parametrize("reduction", sr.TREG_TOKEN_REDUCTIONS)
def test_treg_matches_reference(tokens, base, reduction):
  kw = dict(beta=0.7, alpha=0.5, base=base, simpo_gamma=0.3, token_reduction=reduction)
  loss, m = call_treg(tokens, **kw)
  want = np_treg(tokens, beta=0.7, alpha=0.5, base=base, gamma=0.3, reduction=reduction)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert {"treg/weight", "treg/reg_chosen", "rewards/accuracies"} <= set(m)


def test_treg_gradient_treats_weight_and_rewards_as_constants(tokens):
  """d loss / d log pi(y_w,t) = (-beta sig(-z) - alpha w beta r_t) m_t / B with w = sig(-z)."""
  beta, alpha = 0.7, 0.5
  g = jax.grad(lambda lw: call_treg(dict(tokens, lw=lw), beta=beta, alpha=alpha)[0])(tokens["lw"])
  lw, ll, rw, rl, hw, mw, ml = (f64(tokens[k]) for k in ("lw", "ll", "rw", "rl", "hw", "mw", "ml"))
  z = beta * (((lw - rw) * mw).sum(1) - ((ll - rl) * ml).sum(1))
  want = (-beta * sig(-z)[:, None] - alpha * sig(-z)[:, None] * beta * hw) * mw / lw.shape[0]
  np.testing.assert_allclose(np.asarray(g), want, rtol=1e-5, atol=1e-7)
  # With alpha = 0 there is no stop-gradient on the path, so finite differences must agree.
  args = [tokens[k] for k in ("lw", "ll")]
  fn = lambda a, b: call_treg(dict(tokens, lw=jnp.asarray(a), ll=jnp.asarray(b)), alpha=0.0)[0]
  check_grads(fn, args, order=1, modes=["rev"])


def test_treg_all_masked_is_finite(tokens):
  nan_w, nan_l = jnp.full_like(tokens["lw"], jnp.nan), jnp.full_like(tokens["ll"], jnp.nan)
  zw, zl = jnp.zeros_like(tokens["mw"]), jnp.zeros_like(tokens["ml"])
  for base in sr.TREG_BASES:
    fn = jax.jit(jax.value_and_grad(
        lambda a, b, base=base: sr.treg_loss(a, b, nan_w, nan_l, nan_w, nan_l, zw, zl,
                                             base=base)[0], argnums=(0, 1)))
    val, grads = fn(nan_w, nan_l)
    assert float(val) == pytest.approx(math.log(2.0) if base == "dpo" else
                                       -float(jax.nn.log_sigmoid(-0.5)))
    assert all(np.isfinite(x).all() for x in grads)
  vm = jax.vmap(jax.grad(lambda a: sr.treg_loss(a, nan_l, None, None, nan_w, nan_l, zw, zl,
                                                base="simpo")[0]))(jnp.stack([nan_w, nan_w]))
  assert np.isfinite(vm).all()
  # Dropping pairs with pair_mask sanitises their tokens too (masked equals dropped).
  drop = jnp.asarray([1.0, 0.0, 1.0, 1.0])
  bad = dict(tokens, lw=tokens["lw"].at[1].set(jnp.nan))
  val, g = jax.value_and_grad(lambda lw: call_treg(dict(bad, lw=lw), pair_mask=drop)[0])(bad["lw"])
  keep = np.asarray(drop) > 0
  sub = {k: v[keep] for k, v in tokens.items()}
  np.testing.assert_allclose(float(val), float(call_treg(sub)[0]), rtol=1e-6)
  assert np.isfinite(g).all()


def test_treg_one_compile_and_bad_options(tokens):
  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(lw):
    return call_treg(dict(tokens, lw=lw))

  step(tokens["lw"])
  step(tokens["lw"] - 1.0)
  chex.clear_trace_counter()
  with pytest.raises(ValueError, match="valid names: \\['dpo', 'simpo'\\]"):
    call_treg(tokens, base="ipo")
  with pytest.raises(ValueError, match="needs ref_chosen_token_logps"):
    sr.treg_loss(tokens["lw"], tokens["ll"], None, None, tokens["hw"], tokens["hl"],
                 tokens["mw"], tokens["ml"])


# DNO, self-play
def test_dno_hard_and_soft_labels(pairs):
  args = [pairs[k] for k in ("cw", "cl", "rw", "rl")]
  hard, _ = sr.dno_loss(*args, beta=0.05, pair_mask=pairs["mask"])
  dpo, _ = pref.dpo_loss(*args, beta=0.05, pair_mask=pairs["mask"])
  np.testing.assert_allclose(float(hard), float(dpo), rtol=1e-6)
  r_w, r_l = pairs["labels"], 1.0 - pairs["labels"]
  soft, m = sr.dno_loss(*args, beta=0.05, chosen_rewards=r_w, rejected_rewards=r_l,
                        pair_mask=pairs["mask"])
  p = sig(f64(r_w) - f64(r_l))
  np.testing.assert_allclose(float(soft), np_soft(pairs, p, 0.05), rtol=1e-5)
  with pytest.raises(ValueError, match="both chosen_rewards and rejected_rewards"):
    sr.dno_loss(*args, chosen_rewards=r_w)
  z = jnp.zeros(6)
  val, g = jax.jit(jax.value_and_grad(lambda w: sr.dno_loss(
      w, z, z, z, chosen_rewards=z, rejected_rewards=z, pair_mask=z)[0]))(jnp.full(6, jnp.nan))
  assert float(val) == 0.0 and np.isfinite(g).all()


def test_win_rate_rewards_reference():
  rng = np.random.default_rng(4)
  pref_ = rng.uniform(size=(3, 4, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]], np.float32)
  got = np.asarray(sr.win_rate_rewards(jnp.asarray(pref_), jnp.asarray(mask)))
  for p in range(3):
    for i in range(4):
      opp = [j for j in range(4) if j != i and mask[p, j] > 0]
      want = np.mean([pref_[p, i, j] for j in opp]) if (opp and mask[p, i] > 0) else 0.0
      np.testing.assert_allclose(got[p, i], want, rtol=1e-6, atol=1e-7)


def test_dno_pair_mask_reference():
  scores = jnp.array([[6.0, 5.0, 4.0, 3.0, 5.0], [4.0, 6.0, 6.0, 1.0, 0.0]])
  student = jnp.array([[False, True, True, True, True], [False, True, True, True, True]])
  mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], jnp.float32)
  got = np.asarray(sr.dno_pair_mask(scores, student, mask))
  s, st, m = f64(scores), np.asarray(student), f64(mask)
  for p in range(2):
    for i in range(5):
      for j in range(5):
        need = 1.0 if st[p, i] else 2.0
        want = (i != j and m[p, i] > 0 and m[p, j] > 0 and s[p, i] >= 5
                and s[p, i] - s[p, j] >= need)
        assert got[p, i, j] == want, (p, i, j)


def test_coherent_reward_reference():
  rng = np.random.default_rng(5)
  sft = jnp.asarray(-rng.uniform(0, 3, (3, 4)), jnp.float32)
  base = jnp.asarray(-rng.uniform(0, 3, (3, 4)), jnp.float32).at[2, 3].set(jnp.nan)
  mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], jnp.float32)
  got = sr.coherent_reward(sft, base, mask)
  want = ((f64(sft) - np.nan_to_num(f64(base))) * f64(mask)).sum(1)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
