"""Tests for rewardjax.losses.policy against independent numpy references (policy.md §0.5-§1.6)."""

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rewardjax import advantages
from rewardjax.losses import policy

# ---------------------------------------------------------------- numpy references (from formulas)

MODE_OF = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dapo": "token-mean",
           "cispo": "token-mean", "dr_grpo": "seq-mean-token-sum-norm"}


def np_reduce(loss, mask, mode, normalizer=None, c=None):
  m = np.asarray(mask, np.float64)
  x = np.where(m > 0, loss, 0.0)
  lengths = m.sum(axis=1)
  rows = max((lengths > 0).sum(), 1)
  if mode == "seq-mean-token-mean":
    total = (x.sum(axis=1) / np.maximum(lengths, 1)).sum()
  else:
    total = x.sum()
  if normalizer is not None:
    return total / normalizer
  return {"token-mean": total / max(m.sum(), 1), "seq-mean-token-mean": total / rows,
          "seq-mean-token-sum": total / rows,
          "seq-mean-token-sum-norm": total / (rows * (c or x.shape[1]))}[mode]


def np_token_mean(x, m):
  return x[m > 0].mean() if (m > 0).any() else 0.0


def np_grpo(lp, old, ref, adv, m, *, loss_type="grpo", epsilon_low=0.2, epsilon_high=0.2,
            delta=None, dual_clip=None, beta=0.04, importance_sampling_level="token",
            max_completion_length=None, entropy=None, entropy_coeff=0.0, log_ratio_clip=None,
            advantage_filter=None):
  """TRL `_compute_loss` + verl extras, written out per token in float64."""
  lp, old, ref, m = (np.asarray(x, np.float64) for x in (lp, old, ref, m))
  b, t = lp.shape
  a = np.asarray(adv, np.float64)
  a = np.repeat(a[:, None], t, axis=1) if a.ndim == 1 else a
  metrics = {}
  if advantage_filter is not None:
    keep = np.isfinite(a) & (np.abs(a) <= advantage_filter)
    metrics["adv_filter_ratio"] = np_token_mean(~keep, m)
    a = np.where(keep, a, 0.0)
  log_ratio = lp - old
  if log_ratio_clip is not None:
    log_ratio = np.clip(log_ratio, -log_ratio_clip, log_ratio_clip)
  if importance_sampling_level == "token":
    rho = np.exp(log_ratio)
  else:
    s = [np.exp(log_ratio[i][m[i] > 0].sum() / max(m[i].sum(), 1)) for i in range(b)]
    rho = np.repeat(np.array(s)[:, None], t, axis=1)
  if loss_type == "cispo":
    pg = -np.minimum(rho, epsilon_high) * a * lp
    metrics["cispo_clip_ratio"] = np_token_mean((rho > epsilon_high) & (a > 0), m)
  else:
    unclipped = rho if delta is None else np.minimum(rho, delta)
    pg = -np.minimum(unclipped * a, np.clip(rho, 1 - epsilon_low, 1 + epsilon_high) * a)
    if dual_clip is not None:
      metrics["dual_clip_ratio"] = np_token_mean((a < 0) & (-dual_clip * a < pg), m)
      pg = np.where(a < 0, np.minimum(pg, -dual_clip * a), pg)
    low, high = (rho < 1 - epsilon_low) & (a < 0), (rho > 1 + epsilon_high) & (a > 0)
    metrics.update({"clip_ratio/low": np_token_mean(low, m),
                    "clip_ratio/high": np_token_mean(high, m),
                    "clip_ratio/region": np_token_mean(low | high, m)})
  per_token = pg
  if beta:
    d = ref - lp
    per_token = per_token + beta * (np.exp(d) - d - 1)
    metrics["kl"] = np_token_mean(np.exp(d) - d - 1, m)
  if entropy is not None:
    per_token = per_token - entropy_coeff * np.asarray(entropy, np.float64)
    metrics["entropy"] = np_token_mean(np.asarray(entropy, np.float64), m)
  mode = MODE_OF[loss_type]
  metrics["pg_loss"] = np_reduce(pg, m, mode, c=max_completion_length)
  metrics["ratio_mean"] = np_token_mean(rho, m)
  metrics["ppo_kl"] = np_token_mean(-log_ratio, m)
  return np_reduce(per_token, m, mode, c=max_completion_length), metrics


def np_grad(lp, old, ref, adv, m, mode, *, epsilon_low=0.2, epsilon_high=0.2, dual_clip=None,
            beta=0.0, c=None):
  """d loss / d logprobs of the token-level clip family, by hand, in float64.

  The clipped surrogate has slope -rho A except where a clip binds (the `low`/`high` tokens of
  the clip metrics) or the dual clip caps; the k3 KL exp(d) - d - 1, d = ref - lp, has slope
  1 - exp(d); each token is weighted by its aggregation's 1/denominator.
  """
  lp, old, ref, m = (np.asarray(x, np.float64) for x in (lp, old, ref, m))
  a = np.asarray(adv, np.float64)
  a = np.broadcast_to(a[:, None], lp.shape) if a.ndim == 1 else a
  rho = np.exp(lp - old)
  bound = ((rho < 1 - epsilon_low) & (a < 0)) | ((rho > 1 + epsilon_high) & (a > 0))
  slope = np.where(bound, 0.0, -rho * a)
  if dual_clip is not None:
    pg = -np.minimum(rho * a, np.clip(rho, 1 - epsilon_low, 1 + epsilon_high) * a)
    slope = np.where((a < 0) & (-dual_clip * a < pg), 0.0, slope)
  if beta:
    slope = slope + beta * (1.0 - np.exp(ref - lp))
  lengths = m.sum(axis=1, keepdims=True)
  rows = max((lengths > 0).sum(), 1)
  weight = {"token-mean": m / max(m.sum(), 1), "seq-mean-token-mean": m / np.maximum(lengths, 1)
            / rows, "seq-mean-token-sum": m / rows,
            "seq-mean-token-sum-norm": m / (rows * (c or m.shape[1]))}[mode]
  return slope * weight


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  b, t = 6, 5
  m = (rng.random((b, t)) < 0.75).astype(np.float32)
  m[1] = 0.0  # fully masked row
  m[4] = [0, 0, 1, 0, 0]  # single-token row
  m[0] = 1.0
  lp = (-rng.random((b, t)) * 2.0 - 0.05).astype(np.float32)
  old = (lp + rng.normal(size=(b, t)) * 0.4).astype(np.float32)
  ref = (lp + rng.normal(size=(b, t)) * 0.4).astype(np.float32)
  adv = rng.normal(size=b).astype(np.float32)
  adv[2] = 2.5  # beyond an advantage_filter of 1.0
  adv_bt = rng.normal(size=(b, t)).astype(np.float32)
  ent = rng.random((b, t)).astype(np.float32)
  return {k: jnp.asarray(v) for k, v in
          dict(lp=lp, old=old, ref=ref, adv=adv, adv_bt=adv_bt, m=m, ent=ent).items()}


CASES = {
    "grpo": dict(loss_type="grpo"),
    "bnpo_token_adv": dict(loss_type="bnpo", beta=0.0, token_adv=True),
    "dr_grpo": dict(loss_type="dr_grpo", beta=0.0, max_completion_length=16),
    "dapo_delta": dict(loss_type="dapo", epsilon_high=0.28, delta=1.4, beta=0.0),
    "dapo_dual_clip": dict(loss_type="dapo", dual_clip=1.5, beta=0.1),
    "cispo": dict(loss_type="cispo", epsilon_high=1.2, beta=0.0),
    "gspo": dict(loss_type="grpo", importance_sampling_level="sequence", epsilon_low=0.05,
                 epsilon_high=0.05),
    "gspo_token": dict(loss_type="grpo", importance_sampling_level="sequence_token"),
    "stable_reinforce": dict(loss_type="grpo", log_ratio_clip=0.3, advantage_filter=1.0,
                             entropy_coeff=0.01),
}


def _run(batch, kw, fn=None):
  kw = dict(kw)
  adv = batch["adv_bt"] if kw.pop("token_adv", False) else batch["adv"]
  ent = batch["ent"] if kw.get("entropy_coeff") else None
  args = (batch["lp"], batch["old"], batch["ref"], adv, batch["m"])
  jax_out = jax.jit(functools.partial(policy.grpo_loss, entropy=ent, **kw))(*args)
  np_out = np_grpo(*args, entropy=ent, **kw)
  return jax_out, np_out


# ------------------------------------------------------------------------------------ reduce_loss


@pytest.mark.parametrize("mode", policy.AGGREGATIONS)
def test_reduce_loss_matches_numpy(batch, mode):
  loss, m = batch["adv_bt"], batch["m"]
  np.testing.assert_allclose(policy.reduce_loss(loss, m, mode), np_reduce(loss, m, mode),
                             rtol=1e-6)
  np.testing.assert_allclose(policy.reduce_loss(loss, m, mode, normalizer=7.0),
                             np_reduce(loss, m, mode, normalizer=7.0), rtol=1e-6)


def test_reduce_loss_masked_equals_dropped(batch):
  """inf/NaN padding columns and a fully masked row change no aggregation (C held fixed)."""
  loss, m = batch["adv_bt"], batch["m"]
  padded = jnp.pad(loss, ((0, 1), (0, 2)), constant_values=jnp.inf).at[0, -1].set(jnp.nan)
  padded_m = jnp.pad(m, ((0, 1), (0, 2)))
  for mode in policy.AGGREGATIONS:
    np.testing.assert_allclose(
        policy.reduce_loss(padded, padded_m, mode, max_completion_length=9),
        policy.reduce_loss(loss, m, mode, max_completion_length=9), rtol=1e-6, err_msg=mode)


# -------------------------------------------------------------------------------------- grpo_loss


@pytest.mark.parametrize("case", sorted(CASES))
def test_grpo_loss_matches_numpy(batch, case):
  (loss, metrics), (np_loss, np_metrics) = _run(batch, CASES[case])
  np.testing.assert_allclose(loss, np_loss, rtol=1e-5, atol=1e-6)
  assert set(metrics) == set(np_metrics)
  for key, value in np_metrics.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_clip_test_vectors():
  """policy.md §0.5 (eps .2/.28, c=3): rho=1.5,A=+1 -> -1.28; rho=.5,A=-1 -> .8; rho=5 -> 3."""
  lp = jnp.log(jnp.array([1.5, 0.5, 5.0]))[:, None, None]
  adv = jnp.array([1.0, -1.0, -1.0])[:, None]
  old, m = jnp.zeros((1, 1)), jnp.ones((1, 1))

  def per_row(dual_clip):
    fn = functools.partial(policy.grpo_loss, loss_type="bnpo", beta=0.0, epsilon_high=0.28,
                           dual_clip=dual_clip)
    return jax.jit(jax.vmap(lambda x, a: fn(x, old, None, a, m)[0]))(lp, adv)

  np.testing.assert_allclose(per_row(3.0), [-1.28, 0.8, 3.0], rtol=1e-6)
  np.testing.assert_allclose(per_row(None), [-1.28, 0.8, 5.0], rtol=1e-6)


def test_check_grads(batch):
  """Token and sequence ratios, k3 KL, delta and dual clip (the other options are linear)."""
  b = batch

  @jax.jit
  def fn(lp):
    return [policy.grpo_loss(lp, b["old"], b["ref"], b["adv"], b["m"], **CASES[case])[0]
            for case in ("grpo", "gspo", "dapo_dual_clip", "dapo_delta")]

  check_grads(fn, (b["lp"],), order=1, modes=["rev"])


def test_stop_gradient_tricks(batch):
  """CISPO: grad = -min(rho, eps_high) A m / N. GSPO-token: GSPO's value and gradient."""
  b = batch
  m = np.asarray(b["m"], np.float64)

  def cispo(lp):
    return policy.grpo_loss(lp, b["old"], None, b["adv"], b["m"], loss_type="cispo",
                            epsilon_high=1.2, beta=0.0)[0]

  rho = np.exp(np.asarray(b["lp"], np.float64) - np.asarray(b["old"]))
  want = -np.minimum(rho, 1.2) * np.asarray(b["adv"])[:, None] * m / m.sum()
  np.testing.assert_allclose(jax.jit(jax.grad(cispo))(b["lp"]), want, rtol=1e-5, atol=1e-7)

  def gspo(lp, level):
    return policy.grpo_loss(lp, b["old"], b["ref"], b["adv"], b["m"],
                            importance_sampling_level=level)[0]

  seq = jax.jit(jax.value_and_grad(functools.partial(gspo, level="sequence")))(b["lp"])
  tok = jax.jit(jax.value_and_grad(functools.partial(gspo, level="sequence_token")))(b["lp"])
  np.testing.assert_allclose(seq[0], tok[0], rtol=1e-6)
  np.testing.assert_allclose(seq[1], tok[1], rtol=1e-5, atol=1e-7)


def test_on_policy_is_reinforce(batch):
  """old_logprobs=None: rho = 1, nothing clips, grad = -A / (L_b B') on valid tokens."""
  b = batch
  m = np.asarray(b["m"], np.float64)
  fn = jax.jit(jax.value_and_grad(
      lambda lp: policy.grpo_loss(lp, None, None, b["adv"], b["m"], beta=0.0), has_aux=True))
  (loss, metrics), grad = fn(b["lp"])
  lengths, adv = m.sum(1), np.asarray(b["adv"], np.float64)
  rows = (lengths > 0).sum()
  np.testing.assert_allclose(loss, -(adv * (lengths > 0)).sum() / rows, rtol=1e-6)
  assert float(metrics["clip_ratio/region"]) == 0.0 and float(metrics["ratio_mean"]) == 1.0
  want = -adv[:, None] * m / np.maximum(lengths, 1)[:, None] / rows
  np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-8)


def test_equal_groups_give_zero_policy_gradient(batch):
  b = batch
  adv = advantages.group_advantages(jnp.full(6, 0.1), 3)
  grad = jax.jit(jax.grad(lambda lp: policy.grpo_loss(
      lp, b["old"], None, adv, b["m"], loss_type="dapo", beta=0.0)[0]))(b["lp"])
  assert grad.tolist() == np.zeros((6, 5)).tolist()


def test_all_zero_masks_finite_under_jit_vmap_grad(batch):
  """Padding with inf/NaN log-probs and an all-zero mask: loss 0, finite gradients."""
  b = batch
  lp = b["lp"].at[0, 0].set(jnp.inf).at[2, 3].set(jnp.nan).at[3, 1].set(-jnp.inf)
  ref = b["ref"].at[0, 1].set(-jnp.inf)
  adv = b["adv"].at[1].set(jnp.nan)  # e.g. TRL's ddof=1 std of a G=1 group
  zero = jnp.zeros_like(b["m"])

  def total(lp, values, m):
    out = 0.0
    for case in ("grpo", "gspo", "cispo", "dapo_dual_clip", "bnpo_token_adv"):
      kw = dict(CASES[case])
      a = b["adv_bt"] if kw.pop("token_adv", False) else adv
      out += policy.grpo_loss(lp, b["old"], ref, a, m, **kw)[0]
    out += policy.ppo_value_loss(values, b["old"], lp, m)[0]
    return out

  # One compilation covers jit, vmap and grad.
  fn = jax.jit(jax.vmap(jax.value_and_grad(total, argnums=(0, 1))))
  value, grads = fn(lp[None], lp[None], zero[None])
  assert value.tolist() == [0.0]
  assert all(bool(jnp.isfinite(g).all()) for g in grads)


def test_one_compile_per_shape(batch):
  """New values of one shape reuse the trace; each call's loss and gradient match numpy."""
  b = batch
  chex.clear_trace_counter()  # the counter is keyed by source, so reruns would count twice

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(lp, old, ref, adv, m):
    return jax.value_and_grad(lambda x: policy.grpo_loss(x, old, ref, adv, m)[0])(lp)

  # The second call swaps policy and old log-probs and flips the advantages: a stale or
  # input-ignoring step would return the first call's numbers.
  for lp, old, adv in ((b["lp"], b["old"], b["adv"]), (b["old"], b["lp"], -b["adv"])):
    loss, grad = step(lp, old, b["ref"], adv, b["m"])
    np.testing.assert_allclose(loss, np_grpo(lp, old, b["ref"], adv, b["m"])[0], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(grad, np_grad(lp, old, b["ref"], adv, b["m"],
                                             "seq-mean-token-mean", beta=0.04),
                               rtol=1e-5, atol=1e-7)
  with pytest.raises(AssertionError, match="traced > 1 times"):  # the guard is live
    step(*(b[k][:, :4] for k in ("lp", "old", "ref")), b["adv"], b["m"][:, :4])


def test_bad_inputs(batch):
  b = batch
  args = (b["lp"], b["old"], b["ref"], b["adv"], b["m"])
  with pytest.raises(ValueError, match="bnpo.*cispo.*dapo.*dr_grpo.*grpo"):
    policy.grpo_loss(*args, loss_type="ppo")
  with pytest.raises(ValueError, match="token-mean.*seq-mean-token-mean"):
    policy.reduce_loss(b["lp"], b["m"], "mean")
  with pytest.raises(ValueError, match="token.*sequence"):
    policy.grpo_loss(*args, importance_sampling_level="seq")
  with pytest.raises(ValueError, match="ref_logprobs"):
    policy.grpo_loss(b["lp"], b["old"], None, b["adv"], b["m"], beta=0.04)
  with pytest.raises(ValueError, match="cispo"):
    policy.grpo_loss(*args, loss_type="cispo", dual_clip=3.0)
  with pytest.raises(ValueError, match="dual_clip"):
    policy.grpo_loss(*args, dual_clip=0.5)
  with pytest.raises(ValueError, match="entropy"):
    policy.grpo_loss(*args, entropy_coeff=0.1)
  raw = inspect.unwrap(policy.grpo_loss)  # below the test-time jaxtyping check
  with pytest.raises(ValueError, match=r"logprobs \(6, 5\), old_logprobs \(6, 4\)"):
    raw(b["lp"], b["old"][:, :4], b["ref"], b["adv"], b["m"])
  with pytest.raises(ValueError, match=r"advantages \(5,\)"):
    raw(b["lp"], b["old"], b["ref"], b["adv"][:5], b["m"])
  with pytest.raises((ValueError, TypeError)):  # jaxtyping's TypeCheckError when hooked
    policy.grpo_loss(b["lp"], b["old"][:, :4], b["ref"], b["adv"], b["m"])


# ------------------------------------------------------------------------------------------- PPO


def test_ppo_loss_is_grpo_loss_without_kl(batch):
  """ppo_loss = grpo_loss(beta=0) in value and gradient for each shared aggregation, with [B]
  and [B, T] advantages; with beta > 0 GRPO adds exactly beta * reduce(k3 KL)."""
  b = batch
  opts = dict(epsilon_low=0.2, epsilon_high=0.28, dual_clip=2.0, max_completion_length=16)
  paired = {"bnpo": "token-mean", "grpo": "seq-mean-token-mean",
            "dr_grpo": "seq-mean-token-sum-norm"}  # GRPO loss_type -> PPO loss_agg_mode
  # Each aggregation once; [B, T] advantages (PPO's GAE) and [B] ones (GRPO's).
  combos = [("bnpo", "adv_bt"), ("grpo", "adv"), ("dr_grpo", "adv_bt")]

  def losses(loss_type, adv):  # (ppo, grpo with beta = 0, grpo with beta = 0.1)
    return (lambda x: policy.ppo_loss(x, b["old"], b[adv], b["m"],
                                      loss_agg_mode=paired[loss_type], **opts),
            lambda x: policy.grpo_loss(x, b["old"], None, b[adv], b["m"], loss_type=loss_type,
                                       beta=0.0, **opts),
            lambda x: policy.grpo_loss(x, b["old"], b["ref"], b[adv], b["m"],
                                       loss_type=loss_type, beta=0.1, **opts))

  @jax.jit
  def run(lp):
    grads = {c: [jax.value_and_grad(lambda x, f=f: f(x)[0])(lp) for f in losses(*c)]
             for c in combos}
    # Metrics of one combination only: the unused ones are dropped, halving the compile.
    return grads, [f(lp)[1] for f in losses(*combos[0])]

  results, (ppo_metrics, grpo_metrics, kl_metrics) = run(b["lp"])
  assert set(ppo_metrics) == set(grpo_metrics)
  for key in ppo_metrics:
    np.testing.assert_allclose(ppo_metrics[key], grpo_metrics[key], rtol=1e-6, err_msg=key)

  lp, ref, m = (np.asarray(b[k], np.float64) for k in ("lp", "ref", "m"))
  d = np.where(m > 0, ref - lp, 0.0)
  kl = np.exp(d) - d - 1.0  # k3 per token
  for (loss_type, adv), ((ppo, ppo_grad), (grpo, grpo_grad), (kl_loss, kl_grad)) in (
      results.items()):
    mode, where = paired[loss_type], f"{loss_type}, {adv}"
    args = (b["lp"], b["old"], b["ref"], b[adv], b["m"])
    # beta = 0: the same objective ...
    np.testing.assert_allclose(ppo, grpo, rtol=1e-6, err_msg=where)
    np.testing.assert_allclose(ppo_grad, grpo_grad, rtol=1e-6, atol=1e-9, err_msg=where)
    # ... and it is the clipped surrogate of the numpy references.
    np.testing.assert_allclose(ppo, np_grpo(*args, loss_type=loss_type, beta=0.0, dual_clip=2.0,
                                            epsilon_high=0.28, max_completion_length=16)[0],
                               rtol=1e-5, atol=1e-6, err_msg=where)
    want_grad = np_grad(*args, mode, epsilon_high=0.28, dual_clip=2.0, c=16)
    np.testing.assert_allclose(ppo_grad, want_grad, rtol=1e-5, atol=1e-8, err_msg=where)
    assert np.abs(want_grad).max() > 1e-2, where  # not trivially equal zero gradients
    # beta = 0.1: they differ by exactly the KL term, in value and in gradient.
    kl_term = 0.1 * np_reduce(kl, m, mode, c=16)
    assert kl_term > 1e-3, where
    # rtol 1e-4: the difference of two float32 losses up to 100x larger than the KL term.
    np.testing.assert_allclose(kl_loss - ppo, kl_term, rtol=1e-4, atol=1e-7, err_msg=where)
    np.testing.assert_allclose(
        kl_grad - ppo_grad,
        np_grad(*args, mode, epsilon_high=0.28, dual_clip=2.0, c=16, beta=0.1) - want_grad,
        rtol=1e-4, atol=1e-8, err_msg=where)
  # Token-mean: the kl metric is the same token mean, and pg_loss is the PPO loss.
  (ppo, _), _, (kl_loss, _) = results[combos[0]]
  np.testing.assert_allclose(kl_loss - ppo, 0.1 * kl_metrics["kl"], rtol=1e-5)
  np.testing.assert_allclose(kl_metrics["pg_loss"], ppo, rtol=1e-6)


@pytest.mark.parametrize("clip", [None, 0.2])
def test_ppo_value_loss_matches_numpy(batch, clip):
  b = batch
  v, old, ret, m = (np.asarray(b[k], np.float64) for k in ("lp", "old", "ref", "m"))
  loss, metrics = jax.jit(functools.partial(policy.ppo_value_loss, clip_range_value=clip))(
      b["lp"], b["old"], b["ref"], b["m"])
  l1 = (v - ret) ** 2
  l2 = l1 if clip is None else (old + np.clip(v - old, -clip, clip) - ret) ** 2
  np.testing.assert_allclose(loss, 0.5 * np_reduce(np.maximum(l1, l2), m, "token-mean"),
                             rtol=1e-5)
  np.testing.assert_allclose(metrics["vf_clipfrac"], np_token_mean(l2 > l1, m), rtol=1e-6)
  fn = jax.jit(lambda x: policy.ppo_value_loss(x, b["old"], b["ref"], b["m"],
                                               clip_range_value=clip)[0])
  check_grads(fn, (b["lp"],), order=1, modes=["rev"])
