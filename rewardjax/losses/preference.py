"""DPO family: paired preference losses on policy/reference log-ratios, and their helpers.

Every loss takes per-sequence completion log-probs `[B]` (prompt excluded) and returns
`(loss, metrics)`. Names, `loss_type` strings and metric keys follow Hugging Face TRL
(`DPOTrainer`); each docstring says where rewardjax differs. The implicit reward: Lin et al.,
arXiv 2409.03650. Reference log-probs and WPO weights are constants (`stop_gradient`).
Batch-level metrics are masked means over valid pairs, guarded with `max(count, 1)`. The
reference-free and unpaired losses (SimPO, ORPO, KTO) live in `reference_free.py`, which shares
the private helpers below.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

__all__ = [
    "DPO_LOSS_TYPES", "F_DIVERGENCE_TYPES", "dpo_loss", "implicit_reward",
    "implicit_reward_accuracy", "ld_sequence_logps", "wpo_weights",
]

Scalar = Float[Array, ""]
Metrics = dict[str, Float[Array, ""]]
PairMask = Float[Array, " B"] | Bool[Array, " B"] | None
Lengths = Float[Array, " B"] | Int[Array, " B"] | None
Smoothing = float | Float[Array, ""] | Float[Array, " B"]


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _masked_mean(x, mask):
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _check_vectors(**arrays):
  """Raises ValueError unless every given array is rank 1 with one common shape."""
  shapes = {k: tuple(jnp.shape(v)) for k, v in arrays.items() if v is not None}
  if len(set(shapes.values())) > 1 or any(len(s) != 1 for s in shapes.values()):
    raise ValueError(f"expected [B] arrays of one shape, got shapes {shapes}")


def _check_name(name, valid, what):
  if name not in valid:
    raise ValueError(f"unknown {what} {name!r}; valid names: {sorted(valid)}")


def _mask_or_ones(mask, like):
  return jnp.ones_like(like) if mask is None else _f32(mask)


def _reward_metrics(r_w, r_l, logps_w, logps_l, mask):
  r_w, r_l, logps_w, logps_l = map(jax.lax.stop_gradient, (r_w, r_l, logps_w, logps_l))
  return {
      "rewards/chosen": _masked_mean(r_w, mask),
      "rewards/rejected": _masked_mean(r_l, mask),
      "rewards/accuracies": _masked_mean((r_w > r_l).astype(jnp.float32), mask),
      "rewards/margins": _masked_mean(r_w - r_l, mask),
      "logps/chosen": _masked_mean(logps_w, mask),
      "logps/rejected": _masked_mean(logps_l, mask),
  }


def _smoothed_logistic(z, eps):
  """cDPO: -(1-eps) log sigma(z) - eps log sigma(-z)."""
  return -(1.0 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)


# f-divergence scores replace the log-ratio h before the pair loss is formed (TRL
# `f_divergence_type`). Exponents are capped at 80 so exp stays finite in float32 (TRL caps the
# alpha branch at 80 for fp32/bf16; rewardjax caps forward_kl the same way).
def _alpha_score(h, alpha):
  if abs(alpha - 1.0) < 1e-6:  # the alpha -> 1 limit is reverse KL; TRL falls back the same way
    return h
  return jnp.exp(jnp.minimum((alpha - 1.0) * h, 80.0)) / (alpha - 1.0)


F_DIVERGENCE_TYPES = {
    "reverse_kl": lambda h, alpha: h,
    "forward_kl": lambda h, alpha: -jnp.exp(jnp.minimum(-h, 80.0)),
    "js_divergence": lambda h, alpha: jax.nn.log_sigmoid(h),
    "alpha_divergence": _alpha_score,
}


class _Pair(NamedTuple):
  logps_w: jax.Array  # [B] policy, chosen
  logps_l: jax.Array
  ref_w: jax.Array
  ref_l: jax.Array
  h_w: jax.Array  # log-ratios log pi/pi_ref
  h_l: jax.Array
  s_w: jax.Array  # f-divergence scores of h
  s_l: jax.Array
  len_w: jax.Array | None  # completion lengths (0 on masked pairs)
  len_l: jax.Array | None
  mask: jax.Array  # [B] 1 = pair counts
  beta: float
  eps: float | jax.Array  # label smoothing, scalar or [B]
  tau: float


def _masked_sort(x, mask):
  # Invalid pairs sort to the end of both sorted vectors (same count), so they line up and drop.
  return jnp.sort(jnp.where(mask > 0, x, jnp.finfo(jnp.float32).max))


def _aot(p):  # AOT paired: sort policy and reference log-ratios of the pair separately
  d = _masked_sort(p.logps_w - p.logps_l, p.mask) - _masked_sort(p.ref_w - p.ref_l, p.mask)
  return _smoothed_logistic(p.beta * d, p.eps)


def _aot_unpaired(p):  # AOT unpaired: sort chosen and rejected log-ratios separately
  d = _masked_sort(p.h_w, p.mask) - _masked_sort(p.h_l, p.mask)
  return _smoothed_logistic(p.beta * d, p.eps)


def _per_token(score, length):
  return score / jnp.maximum(length, 1.0)


def _ipo(p):  # TRL divides by completion length (confirmed with the IPO authors, per TRL)
  return (_per_token(p.s_w, p.len_w) - _per_token(p.s_l, p.len_l) - 1.0 / (2.0 * p.beta)) ** 2


def _exo_pair(p):  # EXO eq. 16: KL(softmax(beta h) || [1-eps, eps]) over {chosen, rejected}
  z = p.beta * (p.s_w - p.s_l)
  return (jax.nn.sigmoid(z) * (jax.nn.log_sigmoid(z) - jnp.log1p(-p.eps))
          + jax.nn.sigmoid(-z) * (jax.nn.log_sigmoid(-z) - jnp.log(p.eps)))


def _robust(p):  # rDPO: unbiased under a label-flip rate eps
  z = p.beta * (p.s_w - p.s_l)
  return (-(1.0 - p.eps) * jax.nn.log_sigmoid(z) + p.eps * jax.nn.log_sigmoid(-z)) / (
      1.0 - 2.0 * p.eps)


def _discopop(p):
  z = p.beta * (p.s_w - p.s_l)
  # sigma(z/tau) * exp(-z) written as one exp so 0 * inf never happens for very negative z.
  return (-jax.nn.log_sigmoid(z) * jax.nn.sigmoid(-z / p.tau)
          + jnp.exp(jax.nn.log_sigmoid(z / p.tau) - z))


def _sft(p):  # token-mean NLL of the chosen completions over the whole (masked) batch
  nll = -jnp.sum(p.logps_w * p.mask) / jnp.maximum(jnp.sum(p.len_w * p.mask), 1.0)
  return jnp.broadcast_to(nll, p.mask.shape)


DPO_LOSS_TYPES = {
    "sigmoid": lambda p: _smoothed_logistic(p.beta * (p.s_w - p.s_l), p.eps),
    "hinge": lambda p: jax.nn.relu(1.0 - p.beta * (p.s_w - p.s_l)),
    "ipo": _ipo,
    "exo_pair": _exo_pair,
    "nca_pair": lambda p: (-jax.nn.log_sigmoid(p.beta * p.s_w)
                           - 0.5 * jax.nn.log_sigmoid(-p.beta * p.s_w)
                           - 0.5 * jax.nn.log_sigmoid(-p.beta * p.s_l)),
    "robust": _robust,
    "bco_pair": lambda p: -jax.nn.log_sigmoid(p.beta * p.s_w) - jax.nn.log_sigmoid(-p.beta * p.s_l),
    "sppo_hard": lambda p: (p.s_w - 0.5 / p.beta) ** 2 + (p.s_l + 0.5 / p.beta) ** 2,
    "aot": _aot,
    "aot_unpaired": _aot_unpaired,
    # APO uses the raw log-ratios for the single-response terms, as TRL does.
    "apo_zero": lambda p: (1.0 - jax.nn.sigmoid(p.beta * p.h_w)) + jax.nn.sigmoid(p.beta * p.h_l),
    "apo_down": lambda p: (jax.nn.sigmoid(p.beta * p.h_w)
                           + (1.0 - jax.nn.sigmoid(p.beta * (p.s_w - p.s_l)))),
    "discopop": _discopop,
    "sft": _sft,
    "sigmoid_norm": lambda p: -jax.nn.log_sigmoid(
        p.beta * (_per_token(p.s_w, p.len_w) - _per_token(p.s_l, p.len_l))),
}
_NEEDS_LENGTHS = {"ipo": ("chosen_lengths", "rejected_lengths"), "sft": ("chosen_lengths",),
                  "sigmoid_norm": ("chosen_lengths", "rejected_lengths")}
_BATCH_SORTED = ("aot", "aot_unpaired")


def dpo_loss(
    chosen_logps: Float[Array, " B"],
    rejected_logps: Float[Array, " B"],
    ref_chosen_logps: Float[Array, " B"],
    ref_rejected_logps: Float[Array, " B"],
    *,
    beta: float = 0.1,
    loss_type: str | Sequence[str] = "sigmoid",
    loss_weights: Sequence[float] | None = None,
    label_smoothing: Smoothing = 0.0,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    discopop_tau: float = 0.05,
    chosen_lengths: Lengths = None,
    rejected_lengths: Lengths = None,
    chosen_weights: Float[Array, " B"] | None = None,
    rejected_weights: Float[Array, " B"] | None = None,
    pair_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""DPO and every TRL `DPOTrainer` loss type, on summed sequence log-probs.

  With h = log pi(y) - log pi_ref(y), score s = f(h) (`f_divergence_type`), Delta = s_w - s_l,
  z = beta Delta and eps = `label_smoothing`, the per-pair losses are

    sigmoid       -(1-eps) log sig(z) - eps log sig(-z)   (DPO; cDPO when eps > 0)
    hinge         max(0, 1 - z)
    ipo           (s_w/|y_w| - s_l/|y_l| - 1/(2 beta))^2
    exo_pair      sig(z)(log sig(z) - log(1-eps)) + sig(-z)(log sig(-z) - log eps)
    nca_pair      -log sig(beta s_w) - 1/2 log sig(-beta s_w) - 1/2 log sig(-beta s_l)
    robust        [-(1-eps) log sig(z) + eps log sig(-z)] / (1 - 2 eps)
    bco_pair      -log sig(beta s_w) - log sig(-beta s_l)
    sppo_hard     (s_w - 1/(2 beta))^2 + (s_l + 1/(2 beta))^2
    aot           cDPO form on d = sort_B(logp_w - logp_l) - sort_B(ref_w - ref_l)
    aot_unpaired  cDPO form on d = sort_B(h_w) - sort_B(h_l)
    apo_zero      1 - sig(beta h_w) + sig(beta h_l)
    apo_down      sig(beta h_w) + 1 - sig(z)
    discopop      (1 - m)(-log sig(z)) + m exp(-z),  m = sig(z / discopop_tau)
    sft           -sum_b logp_w / sum_b |y_w|  (token-mean NLL of the chosen completions)
    sigmoid_norm  -log sig(beta (s_w/|y_w| - s_l/|y_l|))

  f(h): reverse_kl h; forward_kl -exp(-h); js_divergence log sig(h); alpha_divergence
  exp((a-1) h)/(a-1) with a = `f_alpha_divergence_coef` (h when a = 1); exponents capped at 80.
  A list `loss_type` sums the types weighted by `loss_weights` (TRL's MPO combination).

  TRL convention followed (TRL >= 1.16 unless noted); rewardjax differs in:
  * `sigmoid` applies cDPO label smoothing when eps > 0 (TRL before the DPO refactor did; TRL
    1.16 ignores `label_smoothing` for `sigmoid`). eps = 0 is identical in both.
  * `robust` is the rDPO formula above, as TRL 1.16 (a TRL snapshot right after the refactor
    computed ((1-eps) L - eps L) / (1 - 2 eps) = plain DPO). `bco_pair` has no running-mean
    shift delta (as TRL 1.16; TRL before the refactor subtracted one).
  * `label_smoothing` may be a `[B]` vector of per-pair values (soft labels 1 - eps).
  * WPO (`use_weighting`) takes precomputed per-pair weights (`chosen_weights` x
    `rejected_weights`, see `wpo_weights`) instead of logits; `pair_mask` drops pairs (AOT sorts
    only the valid pairs). LD-DPO (`ld_alpha`) is applied to the inputs with `ld_sequence_logps`.
  * `forward_kl` caps its exponent at 80 (TRL does not).

  Args:
    chosen_logps: [B] summed completion log-probs of y_w under the policy.
    rejected_logps: [B] same for y_l.
    ref_chosen_logps: [B] summed log-probs of y_w under the frozen reference (constant).
    ref_rejected_logps: [B] same for y_l.
    beta: inverse temperature (tau for IPO).
    loss_type: one name of `DPO_LOSS_TYPES` or a sequence of them.
    loss_weights: one weight per `loss_type` entry; default 1.0 each.
    label_smoothing: eps in [0, 0.5) (robust), (0, 1) (exo_pair), [0, 1] otherwise; scalar or
      [B].
    f_divergence_type: one of `F_DIVERGENCE_TYPES`.
    f_alpha_divergence_coef: a for `alpha_divergence` (TRL default 0.5).
    discopop_tau: tau for `discopop` (TRL default 0.05).
    chosen_lengths: [B] completion token counts |y_w| (needed by ipo, sigmoid_norm, sft);
      per-pair divisions use max(|y|, 1), sft divides by max(sum_b |y_w|, 1).
    rejected_lengths: [B] |y_l| (needed by ipo, sigmoid_norm).
    chosen_weights: [B] optional WPO weights of y_w (constant); requires `rejected_weights`.
    rejected_weights: [B] optional WPO weights of y_l.
    pair_mask: [B] optional, 1 = pair counts. Masked pairs contribute nothing.

  Returns:
    loss: scalar, sum_k weight_k * sum_b mask_b loss_kb / max(sum_b mask_b, 1).
    metrics: TRL keys rewards/chosen (mean beta h_w), rewards/rejected, rewards/accuracies
      (mean of beta h_w > beta h_l), rewards/margins, logps/chosen, logps/rejected.

  References:
    DPO arXiv 2305.18290 eq. 7; cDPO (Mitchell 2023 note); rDPO arXiv 2403.00409; IPO arXiv
    2310.12036 eq. 17; EXO arXiv 2402.00856 eq. 16; NCA arXiv 2402.05369; BCO arXiv 2404.04656;
    SPPO arXiv 2405.00675 eq. 4.7; AOT arXiv 2406.05882; APO arXiv 2408.06266 eqs. 7-8; DiscoPOP
    arXiv 2406.08414 eq. 5; f-DPO arXiv 2309.16240; SimPO (sigmoid_norm) arXiv 2405.14734; WPO
    arXiv 2406.11827 eq. 2. Equation numbers as cited in TRL's `dpo_trainer.py`.

  >>> loss, m = dpo_loss(jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.0]),
  ...                    jnp.array([-1.0]))          # Delta = 1, beta = 0.1
  >>> print(round(float(loss), 4), round(float(m["rewards/margins"]), 4))  # -log sig(0.1)
  0.6444 0.1
  >>> z = jnp.zeros(2)
  >>> print(round(float(dpo_loss(z, z, z, z)[0]), 4))  # log 2 at zero log-ratios
  0.6931
  """
  loss_types = (loss_type,) if isinstance(loss_type, str) else tuple(loss_type)
  for name in loss_types:
    _check_name(name, DPO_LOSS_TYPES, "loss_type")
  _check_name(f_divergence_type, F_DIVERGENCE_TYPES, "f_divergence_type")
  weights = (1.0,) * len(loss_types) if loss_weights is None else tuple(loss_weights)
  if len(weights) != len(loss_types):
    raise ValueError(f"loss_weights has {len(weights)} entries for {len(loss_types)} loss types")
  _check_vectors(chosen_logps=chosen_logps, rejected_logps=rejected_logps,
                 ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps,
                 chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths,
                 chosen_weights=chosen_weights, rejected_weights=rejected_weights,
                 pair_mask=pair_mask)
  given = {"chosen_lengths": chosen_lengths, "rejected_lengths": rejected_lengths}
  for name in loss_types:
    missing = [k for k in _NEEDS_LENGTHS.get(name, ()) if given[k] is None]
    if missing:
      raise ValueError(f"loss_type {name!r} needs {missing}")
  if (chosen_weights is None) != (rejected_weights is None):
    raise ValueError("pass both chosen_weights and rejected_weights, or neither")
  if isinstance(label_smoothing, float):
    if "exo_pair" in loss_types and not 0.0 < label_smoothing < 1.0:
      raise ValueError(f"exo_pair needs 0 < label_smoothing < 1, got {label_smoothing}")
    if "robust" in loss_types and not 0.0 <= label_smoothing < 0.5:
      raise ValueError(f"robust needs 0 <= label_smoothing < 0.5, got {label_smoothing}")

  mask = _mask_or_ones(pair_mask, _f32(chosen_logps))
  # Sanitise masked pairs before any exp/log so padding garbage cannot leak NaN into gradients.
  clean = lambda x: jnp.where(mask > 0, _f32(x), 0.0)
  const = lambda x: jax.lax.stop_gradient(clean(x))
  lengths = lambda x: None if x is None else clean(x)
  logps_w, logps_l = clean(chosen_logps), clean(rejected_logps)
  ref_w, ref_l = const(ref_chosen_logps), const(ref_rejected_logps)
  h_w, h_l = logps_w - ref_w, logps_l - ref_l
  f = F_DIVERGENCE_TYPES[f_divergence_type]
  p = _Pair(logps_w, logps_l, ref_w, ref_l, h_w, h_l, f(h_w, f_alpha_divergence_coef),
            f(h_l, f_alpha_divergence_coef), lengths(chosen_lengths), lengths(rejected_lengths),
            mask, beta, label_smoothing, discopop_tau)
  pair_weight = 1.0 if chosen_weights is None else jax.lax.stop_gradient(
      clean(chosen_weights) * clean(rejected_weights))
  # AOT losses are indexed by sorted rank, so the valid ones are the first sum(mask) entries.
  sorted_mask = (jnp.arange(mask.shape[0]) < jnp.sum(mask)).astype(jnp.float32)

  loss = jnp.zeros((), jnp.float32)
  for name, weight in zip(loss_types, weights):
    row_mask = sorted_mask if name in _BATCH_SORTED else mask
    per_pair = DPO_LOSS_TYPES[name](p) * pair_weight
    loss = loss + weight * _masked_mean(jnp.where(row_mask > 0, per_pair, 0.0), row_mask)

  return loss, _reward_metrics(beta * h_w, beta * h_l, logps_w, logps_l, mask)


def implicit_reward(
    logps: Float[Array, "*batch"],
    ref_logps: Float[Array, "*batch"],
    *,
    beta: float = 0.1,
) -> Float[Array, "*batch"]:
  r"""Implicit DPO reward r(x, y) = beta [log pi(y|x) - log pi_ref(y|x)].

  Args:
    logps: [...] summed completion log-probs under the policy (prompt excluded).
    ref_logps: [...] same under the reference.
    beta: the DPO beta (rankings do not depend on it).

  Returns:
    [...] rewards (no normaliser).

  References:
    Rafailov et al., arXiv 2305.18290, eq. 5; Lin et al., arXiv 2409.03650 (DPORM).

  >>> print(implicit_reward(jnp.array([-3.0]), jnp.array([-5.0]), beta=0.5))
  [1.]
  """
  return beta * (_f32(logps) - _f32(ref_logps))


def implicit_reward_accuracy(
    chosen_logps: Float[Array, " B"],
    rejected_logps: Float[Array, " B"],
    ref_chosen_logps: Float[Array, " B"] | None = None,
    ref_rejected_logps: Float[Array, " B"] | None = None,
    *,
    pair_mask: PairMask = None,
) -> Scalar:
  r"""Pairwise accuracy of the implicit reward: mean_b 1[r(x, y_w) > r(x, y_l)].

  Ties count as wrong (RewardBench). beta > 0 does not change the result, so it is omitted.
  Without reference log-probs this is RewardBench's reference-free score: pass summed (`sum`) or
  mean (`avg`) completion log-probs.

  Args:
    chosen_logps: [B] summed completion log-probs of y_w under the policy.
    rejected_logps: [B] same for y_l.
    ref_chosen_logps: [B] optional reference log-probs of y_w.
    ref_rejected_logps: [B] optional reference log-probs of y_l.
    pair_mask: [B] optional, 1 = pair counts.

  Returns:
    scalar accuracy in [0, 1], masked mean (normaliser max(sum mask, 1)).

  References:
    Lin et al., arXiv 2409.03650 (DPORM accuracy); allenai/reward-bench `rewardbench/dpo.py`.

  >>> print(float(implicit_reward_accuracy(jnp.array([-1.0, -3.0]), jnp.array([-2.0, -2.0]))))
  0.5
  """
  if (ref_chosen_logps is None) != (ref_rejected_logps is None):
    raise ValueError("pass both reference log-probs or neither")
  _check_vectors(chosen_logps=chosen_logps, rejected_logps=rejected_logps,
                 ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps,
                 pair_mask=pair_mask)
  margin = _f32(chosen_logps) - _f32(rejected_logps)
  if ref_chosen_logps is not None:
    margin = margin - (_f32(ref_chosen_logps) - _f32(ref_rejected_logps))
  mask = _mask_or_ones(pair_mask, margin)
  return _masked_mean((margin > 0).astype(jnp.float32), mask)


def wpo_weights(
    token_logps: Float[Array, "B T"],
    token_log_sum_sq_probs: Float[Array, "B T"],
    mask: Float[Array, "B T"] | Bool[Array, "B T"],
) -> Float[Array, " B"]:
  r"""WPO per-sequence weight w = exp(mean_t [log p(y_t) - log sum_v p_v^2]) (constant).

  `token_log_sum_sq_probs` is log sum_v p_v^2 = logsumexp(2 logits) - 2 logsumexp(logits) at each
  position (TRL `use_weighting`). Pass `chosen_weights=w_w, rejected_weights=w_l` to `dpo_loss`.

  Args:
    token_logps: [B, T] log-prob of the sampled token.
    token_log_sum_sq_probs: [B, T] log sum_v p_v^2 of the same distribution.
    mask: [B, T] 1 = completion token.

  Returns:
    [B] weights in (0, 1]; token mean with normaliser max(sum_t mask, 1).

  References:
    Zhou et al., arXiv 2406.11827, eq. 2.

  >>> lp = jnp.log(jnp.array([[0.5, 0.5]]))   # uniform over two tokens: p = sum p^2 = 0.5
  >>> print(wpo_weights(lp, lp, jnp.ones((1, 2))))
  [1.]
  """
  m = _f32(mask)
  x = jnp.where(m > 0, _f32(token_logps) - _f32(token_log_sum_sq_probs), 0.0)
  return jax.lax.stop_gradient(jnp.exp(jnp.sum(x, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)))


def ld_sequence_logps(
    chosen_token_logps: Float[Array, "B Tc"],
    rejected_token_logps: Float[Array, "B Tr"],
    chosen_mask: Float[Array, "B Tc"] | Bool[Array, "B Tc"],
    rejected_mask: Float[Array, "B Tr"] | Bool[Array, "B Tr"],
    *,
    ld_alpha: float,
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
  r"""LD-DPO sequence log-probs: tokens past the shorter response are down-weighted by alpha.

    log pi(y) = sum_{k <= l_p} log p_k + alpha sum_{k > l_p} log p_k,  l_p = min(|y_w|, |y_l|)

  k counts completion tokens (positions with mask 1). Apply to the policy and to the reference,
  then pass the results to `dpo_loss` (TRL `ld_alpha`).

  Args:
    chosen_token_logps: [B, Tc] per-token log-probs of y_w.
    rejected_token_logps: [B, Tr] per-token log-probs of y_l.
    chosen_mask: [B, Tc] 1 = completion token of y_w.
    rejected_mask: [B, Tr] 1 = completion token of y_l.
    ld_alpha: weight of the tail tokens in [0, 1]; 1 recovers plain sums.

  Returns:
    ([B], [B]) weighted summed log-probs of y_w and y_l.

  References:
    Liu et al., arXiv 2409.06411 (LD-DPO); TRL `DPOConfig.ld_alpha`.

  >>> w, l = ld_sequence_logps(-jnp.ones((1, 3)), -jnp.ones((1, 2)), jnp.ones((1, 3)),
  ...                          jnp.ones((1, 2)), ld_alpha=0.5)
  >>> print(w, l)   # -(1 + 1 + 0.5), -(1 + 1)
  [-2.5] [-2.]
  """
  m_w, m_l = _f32(chosen_mask), _f32(rejected_mask)
  shared_B1 = jnp.minimum(m_w.sum(1), m_l.sum(1))[:, None]

  def weighted(logps_BxT, m_BxT):
    pos_BxT = jnp.cumsum(m_BxT, axis=1)
    weight_BxT = jnp.where(pos_BxT <= shared_B1, 1.0, ld_alpha) * m_BxT
    return jnp.sum(jnp.where(m_BxT > 0, _f32(logps_BxT), 0.0) * weight_BxT, axis=1)

  return weighted(chosen_token_logps, m_w), weighted(rejected_token_logps, m_l)
