"""Reference-free and unpaired preference losses: SimPO, ORPO, KTO.

SimPO and ORPO score a (chosen, rejected) pair by mean completion log-probs, with no reference
model; KTO scores single desirable or undesirable completions against the reference model,
relative to a batch-KL reference point. Every loss takes per-sequence completion log-probs `[B]`
(prompt excluded) and returns `(loss, metrics)`. Names, `loss_type` strings and metric keys follow
Hugging Face TRL (`CPOTrainer`, `ORPOTrainer`, `KTOTrainer`); each docstring says where rewardjax
differs. Reference log-probs and the KTO reference point are constants (`stop_gradient`).
Batch-level metrics are masked means over valid pairs (examples for KTO), guarded with
`max(count, 1)`. Shape checks, masking and the TRL metrics are `preference.py`'s helpers.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from rewardjax.losses.preference import (
    Metrics,
    PairMask,
    Scalar,
    Smoothing,
    _check_name,
    _check_vectors,
    _f32,
    _mask_or_ones,
    _masked_mean,
    _reward_metrics,
    _smoothed_logistic,
)

__all__ = ["KTO_LOSS_TYPES", "kto_loss", "orpo_loss", "simpo_loss"]


def simpo_loss(
    chosen_avg_logps: Float[Array, " B"],
    rejected_avg_logps: Float[Array, " B"],
    *,
    beta: float = 0.1,
    simpo_gamma: float = 0.5,
    label_smoothing: Smoothing = 0.0,
    pair_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""SimPO: reference-free, length-normalised DPO with a target margin gamma.

    loss_b = -(1-eps) log sig(z_b) - eps log sig(-z_b),  z_b = beta (a_w - a_l) - gamma

  with a = (1/|y|) sum_t log pi(y_t | x, y_<t). TRL `CPOTrainer(loss_type="simpo")` with
  `cpo_alpha=0` (pure SimPO; add cpo_alpha * NLL yourself for CPO-SimPO). TRL defaults beta 0.1,
  gamma 0.5 are far from the SimPO paper's (beta ~2-2.5, gamma ~0.5-1.6).

  Args:
    chosen_avg_logps: [B] mean completion log-prob of y_w (sum / max(|y_w|, 1)).
    rejected_avg_logps: [B] same for y_l.
    beta: reward scale.
    simpo_gamma: target reward margin gamma.
    label_smoothing: eps, scalar or [B].
    pair_mask: [B] optional, 1 = pair counts.

  Returns:
    loss: scalar, masked mean over pairs (normaliser max(sum mask, 1)).
    metrics: rewards/chosen (beta a_w), rewards/rejected, rewards/accuracies, rewards/margins,
      logps/chosen (a_w), logps/rejected.

  References:
    Meng et al., arXiv 2405.14734 (SimPO objective); TRL `CPOTrainer`.

  >>> loss, _ = simpo_loss(jnp.array([-0.5]), jnp.array([-1.0]), beta=2.0, simpo_gamma=1.0)
  >>> print(round(float(loss), 4))  # z = 2 * 0.5 - 1 = 0 -> log 2
  0.6931
  """
  _check_vectors(chosen_avg_logps=chosen_avg_logps, rejected_avg_logps=rejected_avg_logps,
                 pair_mask=pair_mask)
  mask = _mask_or_ones(pair_mask, _f32(chosen_avg_logps))
  a_w = jnp.where(mask > 0, _f32(chosen_avg_logps), 0.0)
  a_l = jnp.where(mask > 0, _f32(rejected_avg_logps), 0.0)
  loss = _masked_mean(_smoothed_logistic(beta * (a_w - a_l) - simpo_gamma, label_smoothing), mask)
  return loss, _reward_metrics(beta * a_w, beta * a_l, a_w, a_l, mask)


def _log1mexp(a):
  """log(1 - exp(a)) for a < 0, stable at both ends (Maechler 2012)."""
  return jnp.where(a > -jnp.log(2.0), jnp.log(-jnp.expm1(a)), jnp.log1p(-jnp.exp(a)))


def orpo_loss(
    chosen_avg_logps: Float[Array, " B"],
    rejected_avg_logps: Float[Array, " B"],
    chosen_nll: Float[Array, ""],
    *,
    beta: float = 0.1,
    pair_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""ORPO: NLL on the chosen response plus an odds-ratio preference term.

    log_odds(y) = a - log(1 - exp(a)),  a = mean_t log pi(y_t | x, y_<t)
    loss = chosen_nll - beta * mean_b log sig(log_odds(y_w) - log_odds(y_l))

  TRL `ORPOTrainer` convention (lambda = `beta` = 0.1). TRL's NLL is the token-mean
  cross-entropy over all non-padding tokens of prompt + chosen completion; rewardjax takes it as
  the scalar `chosen_nll` so the caller picks that or the completion-only mean. a is clamped to
  <= -1e-6 before log(1 - exp(a)) so a = 0 (probability one, or a masked pair) stays finite.

  Args:
    chosen_avg_logps: [B] mean completion log-prob of y_w (sum / max(|y_w|, 1)).
    rejected_avg_logps: [B] same for y_l.
    chosen_nll: scalar SFT loss on the chosen responses (positive).
    beta: weight lambda of the odds-ratio term.
    pair_mask: [B] optional, 1 = pair counts.

  Returns:
    loss: scalar; the odds-ratio term is a masked mean over pairs (normaliser max(sum mask, 1)).
    metrics: rewards/chosen (beta a_w), rewards/rejected, rewards/accuracies, rewards/margins,
      logps/chosen (a_w), logps/rejected, nll_loss, log_odds_ratio (mean log sig),
      log_odds_chosen (mean log-odds difference).

  References:
    Hong et al., arXiv 2403.07691 (ORPO objective); TRL `ORPOTrainer.odds_ratio_loss`.

  >>> loss, m = orpo_loss(jnp.array([-0.5]), jnp.array([-1.0]), jnp.array(0.0), beta=1.0)
  >>> print(round(float(m["log_odds_chosen"]), 4), round(float(loss), 4))
  0.9741 0.3203
  """
  _check_vectors(chosen_avg_logps=chosen_avg_logps, rejected_avg_logps=rejected_avg_logps,
                 pair_mask=pair_mask)
  mask = _mask_or_ones(pair_mask, _f32(chosen_avg_logps))
  a_w = jnp.minimum(jnp.where(mask > 0, _f32(chosen_avg_logps), -1.0), -1e-6)
  a_l = jnp.minimum(jnp.where(mask > 0, _f32(rejected_avg_logps), -1.0), -1e-6)
  log_odds = (a_w - a_l) - (_log1mexp(a_w) - _log1mexp(a_l))
  ratio = jax.nn.log_sigmoid(log_odds)
  nll = _f32(chosen_nll)
  loss = nll - beta * _masked_mean(ratio, mask)
  metrics = _reward_metrics(beta * a_w, beta * a_l, a_w, a_l, mask)
  metrics.update({
      "nll_loss": jax.lax.stop_gradient(nll),
      "log_odds_ratio": jax.lax.stop_gradient(_masked_mean(ratio, mask)),
      "log_odds_chosen": jax.lax.stop_gradient(_masked_mean(log_odds, mask)),
  })
  return loss, metrics


KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")


def kto_loss(
    logps: Float[Array, " B"],
    ref_logps: Float[Array, " B"],
    labels: Bool[Array, " B"],
    kl_logps: Float[Array, " B"] | None = None,
    ref_kl_logps: Float[Array, " B"] | None = None,
    *,
    beta: float = 0.1,
    loss_type: str = "kto",
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    sample_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""KTO: unpaired prospect-theoretic loss against a batch KL reference point.

    h = log pi(y|x) - log pi_ref(y|x)   (summed over completion tokens)
    z0 = max(0, mean_b [log pi(y'_b|x_b) - log pi_ref(y'_b|x_b)])   (constant)
    desirable:   lambda_D (1 - sig(beta (h - z0)))
    undesirable: lambda_U (1 - sig(beta (z0 - h)))

  `apo_zero_unpaired`: desirable 1 - sig(beta h), undesirable sig(beta h), no z0. TRL
  `KTOTrainer` convention: y' are mismatched completions (TRL shifts completions by one within
  the batch; the caller builds them), the loss is the mean over all examples of the weighted
  per-example losses. rewardjax's z0 is the local masked mean (TRL also averages across
  devices).

  Args:
    logps: [B] summed completion log-probs under the policy.
    ref_logps: [B] same under the frozen reference (constant).
    labels: [B] True = desirable.
    kl_logps: [B] policy log-probs of mismatched (x, y') pairs; needed by `kto`.
    ref_kl_logps: [B] reference log-probs of the same mismatched pairs.
    beta: inverse temperature.
    loss_type: one of `KTO_LOSS_TYPES`.
    desirable_weight: lambda_D.
    undesirable_weight: lambda_U (TRL warns unless lambda_D n_D / (lambda_U n_U) in [1, 4/3]).
    sample_mask: [B] optional, 1 = example counts.

  Returns:
    loss: scalar, masked mean over examples (normaliser max(sum mask, 1)).
    metrics: kl (z0), rewards/chosen (mean beta h over desirable, 0 if none), rewards/rejected,
      rewards/margins (difference of those means), logps/chosen, logps/rejected, count/chosen,
      count/rejected.

  References:
    Ethayarajh et al., arXiv 2402.01306, eq. 7; APO arXiv 2408.06266.

  >>> loss, m = kto_loss(jnp.array([2.0, -1.0]), jnp.zeros(2), jnp.array([True, False]),
  ...                    jnp.array([0.5, 0.5]), jnp.zeros(2))   # z0 = 0.5
  >>> print(round(float(loss), 4))   # both terms 1 - sig(0.15)
  0.4626
  """
  _check_name(loss_type, KTO_LOSS_TYPES, "loss_type")
  _check_vectors(logps=logps, ref_logps=ref_logps, labels=labels, kl_logps=kl_logps,
                 ref_kl_logps=ref_kl_logps, sample_mask=sample_mask)
  if loss_type == "kto" and (kl_logps is None or ref_kl_logps is None):
    raise ValueError("loss_type 'kto' needs kl_logps and ref_kl_logps (mismatched pairs)")
  mask = _mask_or_ones(sample_mask, _f32(logps))
  clean = lambda x: jnp.where(mask > 0, _f32(x), 0.0)
  h = clean(logps) - jax.lax.stop_gradient(clean(ref_logps))
  if loss_type == "kto":
    kl = _masked_mean(clean(kl_logps) - clean(ref_kl_logps), mask)
    z0 = jax.lax.stop_gradient(jnp.maximum(kl, 0.0))
    good = 1.0 - jax.nn.sigmoid(beta * (h - z0))
    bad = 1.0 - jax.nn.sigmoid(beta * (z0 - h))
  else:
    z0 = jnp.zeros((), jnp.float32)
    good, bad = 1.0 - jax.nn.sigmoid(beta * h), jax.nn.sigmoid(beta * h)
  per_example = jnp.where(labels, desirable_weight * good, undesirable_weight * bad)
  loss = _masked_mean(per_example, mask)

  m_good, m_bad = mask * labels, mask * (1.0 - labels)
  r = jax.lax.stop_gradient(beta * h)
  lp = jax.lax.stop_gradient(clean(logps))
  metrics = {
      "kl": z0,
      "rewards/chosen": _masked_mean(r, m_good),
      "rewards/rejected": _masked_mean(r, m_bad),
      "rewards/margins": _masked_mean(r, m_good) - _masked_mean(r, m_bad),
      "logps/chosen": _masked_mean(lp, m_good),
      "logps/rejected": _masked_mean(lp, m_bad),
      "count/chosen": jnp.sum(m_good),
      "count/rejected": jnp.sum(m_bad),
  }
  return loss, metrics
