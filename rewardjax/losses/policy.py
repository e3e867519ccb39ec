"""Policy-gradient objectives: the GRPO family (GRPO, BNPO, Dr. GRPO, DAPO, CISPO), GSPO, PPO.

Every objective builds a per-token loss matrix and reduces it with one named aggregation,
`reduce_loss(per_token, mask, mode)` (verl's `loss_agg_mode` names):

  mode                       loss                             TRL loss_type
  "token-mean"               sum_{b,t} l m / N                "dapo", "bnpo", "cispo"
  "seq-mean-token-mean"      (1/B') sum_b (sum_t l m / L_b)   "grpo"
  "seq-mean-token-sum"       (1/B') sum_b sum_t l m           -
  "seq-mean-token-sum-norm"  (1/B') sum_b sum_t l m / C       "dr_grpo", C = max_completion_length

with m the mask, L_b = sum_t m (guarded by max(L_b, 1)), N = max(sum_{b,t} m, 1), and
B' = max(#rows with L_b > 0, 1). Fully masked rows are absent rows here (e.g. groups dropped by
DAPO filtering inside a static-shape batch); TRL divides "grpo" and "dr_grpo" by all B rows and
verl's "seq-mean-token-sum-norm" omits the 1/B'. Pass `normalizer` to replace any denominator:
the global token count for DAPO across gradient-accumulation micro-batches (TRL
`num_items_in_batch`), or TRL's row count B ("grpo") or B * C ("dr_grpo") to reproduce TRL.

Log-probs, masks and advantages are arrays; nothing here calls a model. Log-probs at masked
positions are replaced by 0 before use, so padding may hold any value (even inf).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Shaped

from rewardjax.losses.kl import kl_estimate

__all__ = [
    "AGGREGATIONS", "IMPORTANCE_SAMPLING_LEVELS", "GRPO_LOSS_TYPES", "grpo_loss", "ppo_loss",
    "ppo_value_loss", "reduce_loss",
]

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                "seq-mean-token-sum-norm")

# TRL GRPOConfig.loss_type -> aggregation (as TRL `GRPOTrainer._compute_loss`).
GRPO_LOSS_TYPES = {
    "grpo": "seq-mean-token-mean",
    "bnpo": "token-mean",
    "dr_grpo": "seq-mean-token-sum-norm",
    "dapo": "token-mean",
    "cispo": "token-mean",
}

IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence", "sequence_token")

Scalar = float | int | jax.Array


def reduce_loss(per_token: Float[Array, "B T"], mask: Shaped[Array, "B T"], mode: str, *,
                normalizer: Scalar | None = None,
                max_completion_length: int | None = None) -> Float[Array, ""]:
  """Reduce a per-token loss matrix to a scalar with a named aggregation (module table).

    token-mean:               sum_{b,t} l m / max(sum m, 1)
    seq-mean-token-mean:      sum_b (sum_t l m / max(L_b, 1)) / B'
    seq-mean-token-sum:       sum_{b,t} l m / B'
    seq-mean-token-sum-norm:  sum_{b,t} l m / (B' C)

  Args:
    per_token: [B, T] per-token loss.
    mask: [B, T] 1/True on tokens that count; masked entries may hold any value.
    mode: one of `AGGREGATIONS`.
    normalizer: if given, replaces the mode's whole denominator (e.g. the global active-token
      count for "token-mean" under gradient accumulation).
    max_completion_length: C for "seq-mean-token-sum-norm" (Dr. GRPO's constant); default T.

  Returns:
    [] float32 scalar.

  Normalisers: L_b = sum_t m; B' = max(#rows with L_b > 0, 1); C as above.

  References:
    DAPO, arXiv 2503.14476, §3.3 (token-mean); DeepSeekMath, arXiv 2402.03300, Eq. 3
    (seq-mean-token-mean); Dr. GRPO, arXiv 2503.20783, §3.2; verl `agg_loss`.

  >>> l = jnp.array([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]); m = jnp.array([[1, 1, 1], [1, 0, 0]])
  >>> [round(float(reduce_loss(l, m, k)), 4) for k in AGGREGATIONS]  # 10/4, (2+4)/2, 10/2, 10/6
  [2.5, 3.0, 5.0, 1.6667]
  """
  if mode not in AGGREGATIONS:
    raise ValueError(f"unknown aggregation mode {mode!r}; valid modes: {list(AGGREGATIONS)}")
  _check_shapes(per_token=per_token, mask=mask)
  m_BxT = mask.astype(jnp.float32)
  # Sanitise before multiplying: inf * 0 = NaN, also in the gradient.
  l_BxT = jnp.where(m_BxT > 0, per_token.astype(jnp.float32), 0.0)
  tokens_B = m_BxT.sum(axis=1)
  rows = jnp.maximum((tokens_B > 0).sum().astype(jnp.float32), 1.0)
  if mode == "seq-mean-token-mean":
    total = (l_BxT.sum(axis=1) / jnp.maximum(tokens_B, 1.0)).sum()
  else:
    total = l_BxT.sum()
  if normalizer is not None:
    return total / normalizer
  if mode == "token-mean":
    return total / jnp.maximum(tokens_B.sum(), 1.0)
  if mode == "seq-mean-token-sum-norm":
    c = per_token.shape[1] if max_completion_length is None else max_completion_length
    return total / (rows * c)
  return total / rows


def grpo_loss(
    logprobs: Float[Array, "B T"],
    old_logprobs: Float[Array, "B T"] | None,
    ref_logprobs: Float[Array, "B T"] | None,
    advantages: Float[Array, " B"] | Float[Array, "B T"],
    mask: Shaped[Array, "B T"],
    *,
    loss_type: str = "grpo",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    delta: float | None = None,
    dual_clip: float | None = None,
    beta: float = 0.04,
    kl_estimator: str = "low_var_kl",
    importance_sampling_level: str = "token",
    max_completion_length: int | None = None,
    normalizer: Scalar | None = None,
    entropy: Float[Array, "B T"] | None = None,
    entropy_coeff: float = 0.0,
    log_ratio_clip: float | None = None,
    advantage_filter: float | None = None,
    kl_weights: Float[Array, " B"] | None = None,
) -> tuple[Float[Array, ""], dict[str, jax.Array]]:
  """GRPO-family clipped policy loss with KL-in-loss, as TRL `GRPOTrainer._compute_loss`.

    rho = exp(logp - old_logp)   (or GSPO's per-sequence rho_b = exp(sum_t log rho m / L_b))
    l_t = -min(min(rho, delta) A, clip(rho, 1 - eps_low, 1 + eps_high) A)    (clip family)
    l_t = min(l_t, -c A) where A < 0                                          (dual_clip = c)
    l_t = -sg(min(rho, eps_high)) A logp                                      (loss_type "cispo")
    loss = reduce(l + beta w_b KL_t - entropy_coeff H_t, mode = GRPO_LOSS_TYPES[loss_type])

  Defaults: rewardjax uses the GRPO paper's objective (DESIGN contract): loss_type="grpo"
  (seq-mean-token-mean) and beta=0.04 with the k3 estimator. TRL 1.16 defaults to
  loss_type="dapo", beta=0.0 (no KL, no reference model); pass those to match it. Differences
  from TRL: fully masked rows are not counted in B (module docstring); `dual_clip`,
  `log_ratio_clip`, `advantage_filter` and the entropy bonus are verl/OpenRLHF extras (off by
  default); TRL's "sequence_token" level lives in `trl.experimental.gspo_token`.

  Args:
    logprobs: [B, T] log pi_theta of the completion tokens (carries the gradient).
    old_logprobs: [B, T] log pi_old from sampling time, or None for sg(logprobs) (one gradient
      step per batch, rho = 1; TRL does the same).
    ref_logprobs: [B, T] log pi_ref; may be None when beta == 0.
    advantages: [B] per-sequence or [B, T] per-token advantages (constants).
    mask: [B, T] 1/True on trained completion tokens.
    loss_type: "grpo" | "bnpo" | "dr_grpo" | "dapo" | "cispo" (TRL names; `GRPO_LOSS_TYPES`).
    epsilon_low, epsilon_high: clip range [1 - eps_low, 1 + eps_high] (TRL `epsilon`,
      `epsilon_high`; DAPO 0.2 / 0.28; GSPO 3e-4 / 4e-4). For "cispo", epsilon_high is the
      absolute cap on the IS weight (TRL; ScaleRL recommends 5.0, so the 0.2 default is wrong
      there).
    delta: TRL two-sided clipping (INTELLECT-2): the unclipped branch uses min(rho, delta);
      set delta > 1 + epsilon_high.
    dual_clip: verl's dual-clip constant c > 1 (cap -c A for A < 0), off by default.
    beta: KL coefficient (python float); 0 skips the KL term and `ref_logprobs`.
    kl_estimator: a `rewardjax.losses.KL_ESTIMATORS` name, unclamped (TRL uses k3).
    importance_sampling_level: "token"; "sequence" (GSPO: one [B, 1] weight
      exp(sum_t log rho m / max(L, 1)), TRL formula); "sequence_token" (GSPO-token: the same
      value, per-token gradient via logp - sg(logp) + sg(log rho_b)).
    max_completion_length: Dr. GRPO's constant C (default T, the padded length).
    normalizer: replaces the aggregation denominator (see `reduce_loss`).
    entropy: [B, T] per-token policy entropies; needed when entropy_coeff != 0.
    entropy_coeff: entropy bonus weight (verl `entropy_coeff`); subtracted from the loss.
    log_ratio_clip: StableReinforce pre-clip: logp - old_logp is clipped to [-c, c] before exp
      (R1-Reward uses c = ln 1e3 = 6.9078).
    advantage_filter: StableReinforce filter: advantages with |A| > value (3.0) or non-finite
      are set to 0. Apply to whitened advantages (`rewardjax.advantages.masked_whiten`); the
      R1-Reward code compares against the raw mean +- 3, we use the paper's 3-sigma rule.
    kl_weights: [B] per-row multipliers w_b of beta (None: all 1), e.g. SCoRe's stronger KL on
      first attempts (arXiv 2409.12917 §5.1, `rewardjax.turns.score_kl_weights`).

  Returns:
    (loss [], metrics) where metrics are scalar: pg_loss (the policy term alone, same
    aggregation), ratio_mean, ppo_kl (mean of -log rho), clip_ratio/low, clip_ratio/high,
    clip_ratio/region (TRL definitions) or cispo_clip_ratio, and when enabled: kl, entropy,
    dual_clip_ratio, adv_filter_ratio. Metrics are masked token means.

  Normalisers: as `reduce_loss` for the aggregation of `loss_type`; token means guarded by
  max(count, 1).

  References:
    DeepSeekMath, arXiv 2402.03300, Eq. 3; DAPO, arXiv 2503.14476, §3; Dr. GRPO,
    arXiv 2503.20783, §3.2; GSPO, arXiv 2507.18071, §4 (GSPO and GSPO-token); CISPO
    (MiniMax-M1, arXiv 2506.13585, §3); dual clip, arXiv 1912.09729; StableReinforce,
    arXiv 2505.02835, §3; verl `compute_policy_loss` (decoupled epsilons, dual clip).

  >>> lp = jnp.log(jnp.array([[1.5, 0.5]])); old = jnp.zeros((1, 2)); m = jnp.ones((1, 2))
  >>> loss, aux = grpo_loss(lp, old, None, jnp.array([1.0]), m, beta=0.0, epsilon_high=0.28)
  >>> round(float(loss), 4), float(aux["clip_ratio/high"])  # (-1.28 - 0.5) / 2
  (-0.89, 0.5)
  """
  if loss_type not in GRPO_LOSS_TYPES:
    raise ValueError(f"unknown loss_type {loss_type!r}; valid names: {sorted(GRPO_LOSS_TYPES)}")
  return _policy_loss(
      logprobs, old_logprobs, ref_logprobs, advantages, mask,
      cispo=loss_type == "cispo", mode=GRPO_LOSS_TYPES[loss_type], epsilon_low=epsilon_low,
      epsilon_high=epsilon_high, delta=delta, dual_clip=dual_clip, beta=beta,
      kl_estimator=kl_estimator, importance_sampling_level=importance_sampling_level,
      max_completion_length=max_completion_length, normalizer=normalizer, entropy=entropy,
      entropy_coeff=entropy_coeff, log_ratio_clip=log_ratio_clip,
      advantage_filter=advantage_filter, kl_weights=kl_weights)


def ppo_loss(
    logprobs: Float[Array, "B T"],
    old_logprobs: Float[Array, "B T"] | None,
    advantages: Float[Array, " B"] | Float[Array, "B T"],
    mask: Shaped[Array, "B T"],
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    dual_clip: float | None = None,
    loss_agg_mode: str = "token-mean",
    normalizer: Scalar | None = None,
    max_completion_length: int | None = None,
    entropy: Float[Array, "B T"] | None = None,
    entropy_coeff: float = 0.0,
    log_ratio_clip: float | None = None,
    advantage_filter: float | None = None,
) -> tuple[Float[Array, ""], dict[str, jax.Array]]:
  """PPO clipped surrogate with any aggregation and no KL term (KL goes in the reward).

    l_t = -min(rho A_t, clip(rho, 1 - eps_low, 1 + eps_high) A_t),   loss = reduce(l, mode)

  The same computation as `grpo_loss` with beta = 0 and token-level ratios; classic PPO puts the
  KL penalty into the token rewards before GAE ("KL-in-reward", verl `apply_kl_penalty`).

  Args:
    logprobs, old_logprobs, advantages, mask: as `grpo_loss` (advantages usually [B, T] from
      `rewardjax.advantages.gae_advantages`).
    epsilon_low, epsilon_high: clip range (TRL PPO `cliprange` 0.2).
    dual_clip: dual-clip constant c > 1 (verl uses 3.0), off by default.
    loss_agg_mode: one of `AGGREGATIONS` (verl default "token-mean").
    normalizer, max_completion_length: as `reduce_loss`.
    entropy, entropy_coeff, log_ratio_clip, advantage_filter: as `grpo_loss`.

  Returns:
    (loss [], metrics) as `grpo_loss`.

  Normalisers: those of `loss_agg_mode` (`reduce_loss`).

  References:
    Schulman et al., arXiv 1707.06347, Eq. 7; dual clip, arXiv 1912.09729; verl
    `compute_policy_loss` (decoupled epsilons, dual clip).

  >>> lp = jnp.log(jnp.array([[0.5, 5.0]])); m = jnp.ones((1, 2))
  >>> loss, _ = ppo_loss(lp, jnp.zeros((1, 2)), -jnp.ones((1, 2)), m, dual_clip=3.0)
  >>> round(float(loss), 4)  # (0.8 + min(5, 3)) / 2
  1.9
  """
  return _policy_loss(
      logprobs, old_logprobs, None, advantages, mask, cispo=False, mode=loss_agg_mode,
      epsilon_low=epsilon_low, epsilon_high=epsilon_high, delta=None, dual_clip=dual_clip,
      beta=0.0, kl_estimator="kl", importance_sampling_level="token",
      max_completion_length=max_completion_length, normalizer=normalizer, entropy=entropy,
      entropy_coeff=entropy_coeff, log_ratio_clip=log_ratio_clip,
      advantage_filter=advantage_filter)


def ppo_value_loss(
    values: Float[Array, "B T"],
    old_values: Float[Array, "B T"],
    returns: Float[Array, "B T"],
    mask: Shaped[Array, "B T"],
    *,
    clip_range_value: float | None = 0.2,
    loss_agg_mode: str = "token-mean",
    normalizer: Scalar | None = None,
) -> tuple[Float[Array, ""], dict[str, jax.Array]]:
  """Clipped value loss of PPO (TRL `PPOTrainer`, verl `compute_value_loss`).

    V_clip = old_V + clip(V - old_V, -c, c),   l_t = 1/2 max((V - G)^2, (V_clip - G)^2)

  Args:
    values: [B, T] current critic values (carry the gradient).
    old_values: [B, T] values at rollout time (constants).
    returns: [B, T] GAE returns (constants).
    mask: [B, T] 1 on response tokens.
    clip_range_value: c (TRL `cliprange_value` 0.2; verl 0.5); None disables clipping.
    loss_agg_mode: one of `AGGREGATIONS`.
    normalizer: as `reduce_loss`.

  Returns:
    (loss [], {"vf_clipfrac", "value_mean"}) scalars; vf_clipfrac is the masked fraction of
    tokens where the clipped branch is larger.

  Normalisers: those of `loss_agg_mode`; the 1/2 factor of TRL and verl.

  References:
    Schulman et al., arXiv 1707.06347, Eq. 9 (value term; the clipped form is OpenAI
    baselines').

  >>> v, old, g = jnp.array([[1.0, 0.0]]), jnp.zeros((1, 2)), jnp.array([[0.0, 1.0]])
  >>> round(float(ppo_value_loss(v, old, g, jnp.ones((1, 2)))[0]), 4)  # 0.5 * (1 + 1) / 2
  0.5
  """
  _check_shapes(values=values, old_values=old_values, returns=returns, mask=mask)
  m_BxT = mask.astype(jnp.float32)
  valid = m_BxT > 0
  v_BxT = jnp.where(valid, values.astype(jnp.float32), 0.0)
  old_BxT = jax.lax.stop_gradient(jnp.where(valid, old_values.astype(jnp.float32), 0.0))
  ret_BxT = jax.lax.stop_gradient(jnp.where(valid, returns.astype(jnp.float32), 0.0))
  loss1_BxT = (v_BxT - ret_BxT) ** 2
  if clip_range_value is None:
    loss2_BxT = loss1_BxT
  else:
    v_clip_BxT = old_BxT + jnp.clip(v_BxT - old_BxT, -clip_range_value, clip_range_value)
    loss2_BxT = (v_clip_BxT - ret_BxT) ** 2
  loss = 0.5 * reduce_loss(jnp.maximum(loss1_BxT, loss2_BxT), m_BxT, loss_agg_mode,
                           normalizer=normalizer)
  metrics = {"vf_clipfrac": _token_mean(loss2_BxT > loss1_BxT, m_BxT),
             "value_mean": _token_mean(v_BxT, m_BxT)}
  return loss, jax.lax.stop_gradient(metrics)


def _policy_loss(logprobs, old_logprobs, ref_logprobs, advantages, mask, *, cispo, mode,
                 epsilon_low, epsilon_high, delta, dual_clip, beta, kl_estimator,
                 importance_sampling_level, max_completion_length, normalizer, entropy,
                 entropy_coeff, log_ratio_clip, advantage_filter, kl_weights=None):
  """The per-token loss shared by `grpo_loss` and `ppo_loss`; arguments as `grpo_loss`."""
  if mode not in AGGREGATIONS:
    raise ValueError(f"unknown aggregation mode {mode!r}; valid modes: {list(AGGREGATIONS)}")
  if importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS:
    raise ValueError(f"unknown importance_sampling_level {importance_sampling_level!r}; "
                     f"valid: {list(IMPORTANCE_SAMPLING_LEVELS)}")
  if cispo and (delta is not None or dual_clip is not None):
    raise ValueError("delta and dual_clip are not defined for loss_type='cispo'")
  if dual_clip is not None and dual_clip <= 1.0:
    raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
  use_kl = not (isinstance(beta, (int, float)) and beta == 0)
  if use_kl and ref_logprobs is None:
    raise ValueError(f"ref_logprobs is required when beta != 0 (beta={beta})")
  if entropy_coeff != 0 and entropy is None:
    raise ValueError(f"entropy is required when entropy_coeff != 0 ({entropy_coeff})")
  _check_shapes(logprobs=logprobs, old_logprobs=old_logprobs,
                ref_logprobs=ref_logprobs if use_kl else None, mask=mask, entropy=entropy)
  b, t = logprobs.shape
  if advantages.shape not in ((b,), (b, t)):
    raise ValueError(f"advantages {advantages.shape} must be [B] = ({b},) or [B, T] = {(b, t)}")
  if kl_weights is not None and kl_weights.shape != (b,):
    raise ValueError(f"kl_weights {kl_weights.shape} must be [B] = ({b},)")

  m_BxT = mask.astype(jnp.float32)
  valid = m_BxT > 0
  # Padding may hold anything: zero it before exp/log so neither value nor gradient is NaN.
  logp_BxT = jnp.where(valid, logprobs.astype(jnp.float32), 0.0)
  if old_logprobs is None:
    old_BxT = jax.lax.stop_gradient(logp_BxT)
  else:
    old_BxT = jax.lax.stop_gradient(jnp.where(valid, old_logprobs.astype(jnp.float32), 0.0))
  adv = jax.lax.stop_gradient(advantages.astype(jnp.float32))
  if adv.ndim == 1:  # a NaN advantage of an empty row would still reach the gradient
    adv_Bx1orT = jnp.where(m_BxT.sum(axis=1, keepdims=True) > 0, adv[:, None], 0.0)
  else:
    adv_Bx1orT = jnp.where(valid, adv, 0.0)
  metrics = {}
  if advantage_filter is not None:
    keep = jnp.isfinite(adv_Bx1orT) & (jnp.abs(adv_Bx1orT) <= advantage_filter)
    metrics["adv_filter_ratio"] = _token_mean(~keep, m_BxT)
    adv_Bx1orT = jnp.where(keep, adv_Bx1orT, 0.0)

  log_ratio_BxT = logp_BxT - old_BxT
  if log_ratio_clip is not None:
    log_ratio_BxT = jnp.clip(log_ratio_BxT, -log_ratio_clip, log_ratio_clip)
  if importance_sampling_level == "token":
    log_w = log_ratio_BxT
  else:
    # GSPO: length-normalised sequence log-ratio, shape [B, 1].
    log_w = ((log_ratio_BxT * m_BxT).sum(axis=1, keepdims=True)
             / jnp.maximum(m_BxT.sum(axis=1, keepdims=True), 1.0))
    if importance_sampling_level == "sequence_token":
      log_w = logp_BxT - jax.lax.stop_gradient(logp_BxT) + jax.lax.stop_gradient(log_w)
  ratio = jnp.exp(log_w)

  if cispo:
    # CISPO clips the (stop-gradient) IS weight, never the token's gradient.
    pg = -jax.lax.stop_gradient(jnp.minimum(ratio, epsilon_high)) * adv_Bx1orT * logp_BxT
    metrics["cispo_clip_ratio"] = _token_mean((ratio > epsilon_high) & (adv_Bx1orT > 0), m_BxT)
  else:
    clipped = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    unclipped = ratio if delta is None else jnp.minimum(ratio, delta)
    pg = jnp.maximum(-unclipped * adv_Bx1orT, -clipped * adv_Bx1orT)
    if dual_clip is not None:
      capped = jnp.minimum(pg, -dual_clip * adv_Bx1orT)
      metrics["dual_clip_ratio"] = _token_mean((adv_Bx1orT < 0) & (capped < pg), m_BxT)
      pg = jnp.where(adv_Bx1orT < 0, capped, pg)
    low = (ratio < 1.0 - epsilon_low) & (adv_Bx1orT < 0)
    high = (ratio > 1.0 + epsilon_high) & (adv_Bx1orT > 0)
    metrics["clip_ratio/low"] = _token_mean(low, m_BxT)
    metrics["clip_ratio/high"] = _token_mean(high, m_BxT)
    metrics["clip_ratio/region"] = _token_mean(low | high, m_BxT)
  pg_BxT = jnp.broadcast_to(pg, (b, t))
  per_token_BxT = pg_BxT
  reduce = dict(normalizer=normalizer, max_completion_length=max_completion_length)

  if use_kl:
    ref_BxT = jax.lax.stop_gradient(jnp.where(valid, ref_logprobs.astype(jnp.float32), 0.0))
    kl_BxT = kl_estimate(logp_BxT, ref_BxT, kl_estimator)
    if kl_weights is None:
      per_token_BxT = per_token_BxT + beta * kl_BxT
    else:  # a per-row coefficient beta w_b (constants)
      w_Bx1 = jax.lax.stop_gradient(kl_weights.astype(jnp.float32))[:, None]
      per_token_BxT = per_token_BxT + beta * w_Bx1 * kl_BxT
    metrics["kl"] = _token_mean(kl_BxT, m_BxT)
  if entropy is not None:
    ent_BxT = jnp.where(valid, entropy.astype(jnp.float32), 0.0)
    per_token_BxT = per_token_BxT - entropy_coeff * ent_BxT
    metrics["entropy"] = _token_mean(ent_BxT, m_BxT)

  loss = reduce_loss(per_token_BxT, m_BxT, mode, **reduce)
  metrics["pg_loss"] = reduce_loss(pg_BxT, m_BxT, mode, **reduce)
  metrics["ratio_mean"] = _token_mean(ratio, m_BxT)
  metrics["ppo_kl"] = _token_mean(-log_ratio_BxT, m_BxT)
  return loss, jax.lax.stop_gradient(metrics)


def _token_mean(x: jax.Array, m_BxT: jax.Array) -> jax.Array:
  """Masked mean over tokens of x ([B, T], [B, 1] or bool), guarded by max(count, 1)."""
  x_BxT = jnp.broadcast_to(x.astype(jnp.float32), m_BxT.shape)
  return jnp.where(m_BxT > 0, x_BxT, 0.0).sum() / jnp.maximum(m_BxT.sum(), 1.0)


def _check_shapes(**arrays: jax.Array | None) -> None:
  shapes = {name: tuple(x.shape) for name, x in arrays.items() if x is not None}
  if len(shapes) and (len(set(shapes.values())) > 1 or len(next(iter(shapes.values()))) != 2):
    raise ValueError("expected equal [B, T] shapes, got "
                     + ", ".join(f"{n} {s}" for n, s in shapes.items()))
