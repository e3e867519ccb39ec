"""Reward-model objectives on scores: Bradley-Terry family, ties, listwise, POLAR, judges, YOJO.

Every function takes reward-head scores as arrays, never a model, and returns `(loss, metrics)`:
a float32 scalar and a flat dict of float32 scalars. Masks are dense (1 = counts); masked entries
are replaced by 0 before any log/exp/div so that value and gradient stay finite when everything is
masked (the loss is then 0). Formulas: TRL `RewardTrainer`; InstructGPT, arXiv 2203.02155;
Llama 2, arXiv 2307.09288; Secrets of RLHF II, arXiv 2401.06080; SoliReward, arXiv 2512.22170;
POLAR, arXiv 2507.05197; YOJO, arXiv 2604.10966; GenRM, arXiv 2408.15240; Master-RM, arXiv
2507.08794. The auxiliary contrastive objectives (SimCSE, MetaRM, goal-conditioned) live in
`contrastive.py`, which shares the private helpers below.
"""

import chex
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, Real

__all__ = [
  "bradley_terry_loss", "k_choose_2_loss", "plackett_luce_loss", "win_tie_bradley_terry_loss",
  "ensemble_preference_strength", "denoised_bradley_terry_loss", "polar_loss",
  "pointwise_binary_loss", "yojo_loss",
]

Scalar = Float[Array, ""]
Metrics = dict[str, Float[Array, ""]]
MaskB = Bool[Array, " B"] | Real[Array, " B"] | None  # 1 = counts; bool, int or float
MaskBK = Bool[Array, "B K"] | Real[Array, "B K"] | None


def _check(fn: str, rank: int, **arrays) -> None:
  """Raises ValueError naming every shape unless the given arrays share one shape of `rank`."""
  given = {k: v for k, v in arrays.items() if v is not None}
  try:
    chex.assert_rank(list(given.values()), rank)
    chex.assert_equal_shape(list(given.values()))
  except AssertionError:
    shapes = ", ".join(f"{k}={tuple(jnp.shape(v))}" for k, v in given.items())
    raise ValueError(
      f"{fn}: expected arrays of rank {rank} and equal shape, got {shapes}") from None


def _option(fn: str, table: dict, key: str, what: str):
  if key not in table:
    raise ValueError(f"{fn}: unknown {what} {key!r}; valid names: {sorted(table)}")
  return table[key]


def _weights(mask, like: jax.Array) -> jax.Array:
  """Binary float32 weights; None means every entry counts."""
  if mask is None:
    return jnp.ones(jnp.shape(like), jnp.float32)
  return (jnp.asarray(mask) != 0).astype(jnp.float32)


def _clean(x, w: jax.Array) -> jax.Array:
  # Sanitise masked entries *before* any math: padded scores may be -inf/NaN (YOJO pads with -inf).
  return jnp.where(w > 0, jnp.asarray(x, jnp.float32), 0.0)


def _mean(x: jax.Array, w: jax.Array) -> jax.Array:
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def _pair_metrics(chosen: jax.Array, rejected: jax.Array, w: jax.Array) -> dict:
  """TRL RewardTrainer metrics; accuracy uses a strict `>` (a tie counts as wrong)."""
  both = jnp.concatenate([chosen, rejected])
  w2 = jnp.concatenate([w, w])
  some = jnp.sum(w) > 0
  return {
    "accuracy": _mean((chosen > rejected).astype(jnp.float32), w),
    "margin": _mean(chosen - rejected, w),
    "chosen_rewards": _mean(chosen, w),
    "rejected_rewards": _mean(rejected, w),
    "mean_reward": _mean(both, w2),
    "min_reward": jnp.where(some, jnp.min(jnp.where(w2 > 0, both, jnp.inf)), 0.0),
    "max_reward": jnp.where(some, jnp.max(jnp.where(w2 > 0, both, -jnp.inf)), 0.0),
  }


def _bt_pairs(chosen, rejected, mask, fn):
  _check(fn, 1, chosen_rewards=chosen, rejected_rewards=rejected, mask=mask)
  w = _weights(mask, chosen)
  return _clean(chosen, w), _clean(rejected, w), w


def bradley_terry_loss(
    chosen_rewards: Float[Array, " B"], rejected_rewards: Float[Array, " B"], *,
    margin: Float[Array, " B"] | Float[Array, ""] | float | None = None,
    center_rewards_coefficient: float | None = None,
    mask: MaskB = None,
) -> tuple[Scalar, Metrics]:
  """Bradley-Terry pairwise loss on reward-model scores (TRL `RewardTrainer`).

  Equation:
    L = −mean_i log σ(r_c,i − r_r,i − m_i) + η · mean_i (r_c,i + r_r,i)²

  Args:
    chosen_rewards: [B] scores of the preferred responses.
    rejected_rewards: [B] scores of the dispreferred responses.
    margin: [B] or scalar margin m subtracted inside the sigmoid (Llama 2 preference-strength
      margin, TRL's `margin` column); None means 0.
    center_rewards_coefficient: η of the centering term (Eisenstein et al. 2023, eq. 2;
      recommended 0.01); None disables it.
    mask: [B] 1 = pair counts. rewardjax addition (TRL has no mask); None = all pairs count.

  Returns:
    (loss [], metrics) with accuracy (strict >), margin (mean r_c − r_r), chosen_rewards,
    rejected_rewards, mean/min/max_reward and center_penalty (mean (r_c + r_r)²).
    Normaliser: both means are over unmasked pairs, max(count, 1).

  TRL:
    RewardTrainer
    Same loss, margin and centering as `RewardTrainer.compute_loss`; rewardjax adds `mask`.

  References:
    arXiv:2203.02155 (InstructGPT) eq. 1; arXiv:2307.09288 (Llama 2) eq. 2; arXiv:2312.09244 eq. 2.

  >>> loss, m = bradley_terry_loss(jnp.array([0., 1.]), jnp.array([0., 0.]))
  >>> print(round(float(loss), 4), float(m["accuracy"]))  # (log 2 + log(1 + e^-1)) / 2
  0.5032 0.5
  """
  fn = "bradley_terry_loss"
  chosen, rejected, w = _bt_pairs(chosen_rewards, rejected_rewards, mask, fn)
  m = 0.0 if margin is None else jnp.asarray(margin, jnp.float32)
  if jnp.ndim(m) not in (0, 1) or (jnp.ndim(m) == 1 and jnp.shape(m) != chosen.shape):
    raise ValueError(f"{fn}: margin shape {jnp.shape(m)} must be () or {chosen.shape}")
  m = jnp.where(w > 0, m, 0.0)
  loss = _mean(-jax.nn.log_sigmoid(chosen - rejected - m), w)
  center = _mean(jnp.square(chosen + rejected), w)
  if center_rewards_coefficient is not None:
    loss = loss + center_rewards_coefficient * center
  return loss, {**_pair_metrics(chosen, rejected, w), "center_penalty": center}


def _list_inputs(fn, rewards, ranks, mask):
  _check(fn, 2, rewards=rewards, ranks=ranks, mask=mask)
  w_BxK = _weights(mask, rewards)
  return _clean(rewards, w_BxK), jnp.asarray(ranks, jnp.float32), w_BxK


def _list_pair_metrics(r_BxK, pairs_BxKxK) -> dict:
  delta_BxKxK = r_BxK[:, :, None] - r_BxK[:, None, :]
  return {"accuracy": _mean((delta_BxKxK > 0).astype(jnp.float32), pairs_BxKxK),
          "margin": _mean(delta_BxKxK, pairs_BxKxK),
          "num_pairs": jnp.sum(pairs_BxKxK) / r_BxK.shape[0]}


def _strict_pairs(ranks_BxK, w_BxK):
  # P[b, i, j] = 1 iff i is ranked strictly above j (lower rank = better) and both count.
  above = (ranks_BxK[:, :, None] < ranks_BxK[:, None, :]).astype(jnp.float32)
  return above * w_BxK[:, :, None] * w_BxK[:, None, :]


def k_choose_2_loss(
    rewards: Float[Array, "B K"], ranks: Real[Array, "B K"],
    mask: MaskBK = None,
) -> tuple[Scalar, Metrics]:
  """All-pairs Bradley-Terry loss over a ranked list of K responses (InstructGPT).

  Equation:
    L = mean_b [ −Σ_{i≻j} log σ(r_bi − r_bj) / #pairs_b ]

  Pairs (i, j) are the valid entries with rank_i < rank_j (lower rank = better; equal ranks give
  no pair). Each prompt counts once: its loss is divided by its number of pairs, max(·, 1), which
  is C(K, 2) without ties or padding; the mean over prompts skips prompts with no pair.

  Args:
    rewards: [B, K] scores of K responses per prompt.
    ranks: [B, K] rank of each response, 0 = best; ties allowed.
    mask: [B, K] 1 = response exists (lists of unequal K); None = all count.

  Returns:
    (loss [], metrics) with pairwise accuracy (strict >) and margin pooled over all pairs, and
    num_pairs (pairs per prompt).

  TRL:
    none

  References:
    arXiv:2203.02155 (InstructGPT) eq. 1.

  >>> loss, m = k_choose_2_loss(jnp.array([[2., 1., 0.]]), jnp.array([[0, 1, 2]]))
  >>> print(round(float(loss), 4))  # (2 log(1 + e^-1) + log(1 + e^-2)) / 3
  0.2512
  """
  r_BxK, ranks_BxK, w_BxK = _list_inputs("k_choose_2_loss", rewards, ranks, mask)
  pairs_BxKxK = _strict_pairs(ranks_BxK, w_BxK)
  nll_BxKxK = -jax.nn.log_sigmoid(r_BxK[:, :, None] - r_BxK[:, None, :])
  count_B = jnp.sum(pairs_BxKxK, axis=(1, 2))
  loss_B = jnp.sum(nll_BxKxK * pairs_BxKxK, axis=(1, 2)) / jnp.maximum(count_B, 1.0)
  loss = _mean(loss_B, (count_B > 0).astype(jnp.float32))
  return loss, _list_pair_metrics(r_BxK, pairs_BxKxK)


def plackett_luce_loss(
    rewards: Float[Array, "B K"], ranks: Real[Array, "B K"],
    mask: MaskBK = None,
) -> tuple[Scalar, Metrics]:
  """Plackett-Luce (ListMLE) negative log-likelihood of a ranking of K responses.

  Equation:
    L = mean_b −Σ_i [ r_bi − log Σ_{j: rank_j ≥ rank_i} exp(r_bj) ]

  Without ties this is the exact Plackett-Luce likelihood of the ranking (the best item beats all
  others, the second beats the rest, ...); for K = 2 it equals the Bradley-Terry loss. Tied items
  share one risk set (Breslow's approximation), so a tie pulls scores together instead of being
  broken arbitrarily. Normaliser: the sum over positions is not divided by K; the mean is over
  prompts with at least two valid responses, max(count, 1).

  Args:
    rewards: [B, K] scores.
    ranks: [B, K] rank of each response, 0 = best; ties allowed.
    mask: [B, K] 1 = response exists; None = all count.

  Returns:
    (loss [], metrics) with pairwise accuracy and margin over strictly ordered pairs, num_pairs.

  TRL:
    none

  References:
    Plackett 1975; ListMLE (Xia et al., ICML 2008); Breslow 1974 (tied ranks).

  >>> loss, m = plackett_luce_loss(jnp.zeros((1, 3)), jnp.array([[0, 1, 2]]))
  >>> print(round(float(loss), 4))  # log 3 + log 2 + log 1 = log 6
  1.7918
  """
  r_BxK, ranks_BxK, w_BxK = _list_inputs("plackett_luce_loss", rewards, ranks, mask)
  k = r_BxK.shape[1]
  # risk[b, i, j]: j is still "in the urn" when i is drawn. The diagonal is always kept so the
  # log-sum-exp never runs over an empty set, even for masked i.
  risk_BxKxK = (ranks_BxK[:, None, :] >= ranks_BxK[:, :, None]) & (w_BxK[:, None, :] > 0)
  risk_BxKxK = risk_BxKxK | jnp.eye(k, dtype=bool)[None]
  scores_BxKxK = jnp.broadcast_to(r_BxK[:, None, :], risk_BxKxK.shape)
  lse_BxK = jax.nn.logsumexp(scores_BxKxK, axis=-1, where=risk_BxKxK)
  nll_B = -jnp.sum((r_BxK - lse_BxK) * w_BxK, axis=1)
  loss = _mean(nll_B, (jnp.sum(w_BxK, axis=1) >= 2).astype(jnp.float32))
  return loss, _list_pair_metrics(r_BxK, _strict_pairs(ranks_BxK, w_BxK))


def _paper_win_tie(delta, margin, smoothing):
  # μ = 1 − ε for win-lose pairs (margin on the win term only), μ = 1/2 for ties.
  win = -(1.0 - smoothing) * jax.nn.log_sigmoid(delta - margin) - smoothing * jax.nn.log_sigmoid(
    -delta)
  tie_term = -0.5 * jax.nn.log_sigmoid(delta) - 0.5 * jax.nn.log_sigmoid(-delta)
  return win, tie_term


def _code_win_tie(delta, margin, smoothing):
  # lian700/SoliReward loss.py: margin inside both sigmoids, tie term not halved.
  win = -(1.0 - smoothing) * jax.nn.log_sigmoid(delta - margin) - smoothing * jax.nn.log_sigmoid(
    -delta - margin)
  tie_term = -jax.nn.log_sigmoid(delta - margin) - jax.nn.log_sigmoid(-delta - margin)
  return win, tie_term


_WIN_TIE_FORMS = {"paper": _paper_win_tie, "code": _code_win_tie}


def win_tie_bradley_terry_loss(
    chosen_rewards: Float[Array, " B"], rejected_rewards: Float[Array, " B"],
    is_tie: Bool[Array, " B"] | Real[Array, " B"],
    mask: MaskB = None, *,
    form: str = "paper", margin: float = 0.0, label_smoothing: float = 0.0,
    bt_coeff: float = 1.0, tie_coeff: float = 1.0,
) -> tuple[Scalar, Metrics]:
  """Win-tie Bradley-Terry loss (SoliReward BT-WT): win-lose pairs separate, tied pairs merge.

  Equation:
    L = mean_i [ −μ_i log σ(Δ_i − m·[μ_i=1]) − (1 − μ_i) log σ(−Δ_i) ],  μ = 1 win, 1/2 tie

  `form="paper"` is the equation above. `form="code"` reproduces the released code
  (SoliReward `loss.py`): the tie term is `−log σ(Δ − m) − log σ(−Δ − m)`, i.e. twice the paper's
  μ = 1/2 term with the margin in both sigmoids, and smoothing uses `log σ(−Δ − m)`. Both weight
  win-lose pairs by `bt_coeff` and ties by `tie_coeff`. With label smoothing ε the win-lose pairs
  use μ = 1 − ε. The released code's pointwise BCE term is `pointwise_binary_loss` on both
  columns times `bce_loss_coeff`, added outside (a scalar added inside a mean commutes).
  Normaliser: mean over unmasked pairs, max(count, 1).

  Args:
    chosen_rewards: [B] scores of the Pass ("win") sample of each pair.
    rejected_rewards: [B] scores of the other sample (Fail, or Pass for a tie).
    is_tie: [B] 1 = win-tie pair (both Pass), 0 = win-lose pair.
    mask: [B] 1 = pair counts; None = all pairs count.
    form: "paper" or "code".
    margin: m (SoliReward `reward_margin`; the released training script uses 3.0).
    label_smoothing: ε for win-lose pairs.
    bt_coeff: weight of win-lose pairs (`bt_loss_coeff`).
    tie_coeff: weight of tied pairs (`btt_loss_coeff`).

  Returns:
    (loss [], metrics) with accuracy and margin over win-lose pairs, tie_gap (mean |Δ| over
    tied pairs: compactness of the positives) and tie_fraction.

  TRL:
    none

  References:
    arXiv:2512.22170 (SoliReward) BT-WT loss, paper form; official code lian700/SoliReward
    `solireward/trainer/loss.py` (code form).

  >>> zero = jnp.zeros(1)
  >>> print(round(float(win_tie_bradley_terry_loss(zero, zero, jnp.ones(1))[0]), 4))  # log 2
  0.6931
  >>> print(round(float(win_tie_bradley_terry_loss(zero, zero, jnp.ones(1), form="code")[0]), 4))
  1.3863
  """
  fn = "win_tie_bradley_terry_loss"
  form_fn = _option(fn, _WIN_TIE_FORMS, form, "form")
  _check(fn, 1, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards, is_tie=is_tie,
         mask=mask)
  w = _weights(mask, chosen_rewards)
  delta = _clean(chosen_rewards, w) - _clean(rejected_rewards, w)
  tie = _weights(is_tie, chosen_rewards) * w
  win = (1.0 - tie) * w
  win_loss, tie_loss = form_fn(delta, margin, label_smoothing)
  loss = _mean(bt_coeff * win_loss * win + tie_coeff * tie_loss * tie, w)
  return loss, {"accuracy": _mean((delta > 0).astype(jnp.float32), win),
                "margin": _mean(delta, win), "tie_gap": _mean(jnp.abs(delta), tie),
                "tie_fraction": _mean(tie, w)}


def ensemble_preference_strength(
    reward_margins: Float[Array, "M B"],
) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
  """Preference strength of each pair from an ensemble of M reward models (MOSS-RLHF II).

  Equation:
    μ̂_i = mean_m d_mi,  σ̂_i = sqrt(mean_m (d_mi − μ̂_i)²),  d_mi = r_m(y_c,i) − r_m(y_r,i)

  Normaliser: population std (ddof=0, divide by M), as in the paper; no eps. Not a loss: its
  output feeds `denoised_bradley_terry_loss` as data (the sqrt is guarded at 0 anyway).

  Args:
    reward_margins: [M, B] chosen-minus-rejected score of each pair under each ensemble member.

  Returns:
    (mean [B], std [B]).

  TRL:
    none

  References:
    arXiv:2401.06080 (Secrets of RLHF II) preference strength.

  >>> mu, sigma = ensemble_preference_strength(jnp.array([[1.], [3.]]))
  >>> print(float(mu[0]), float(sigma[0]))
  2.0 1.0
  """
  _check("ensemble_preference_strength", 2, reward_margins=reward_margins)
  d_MxB = jnp.asarray(reward_margins, jnp.float32)
  mu_B = jnp.mean(d_MxB, axis=0)
  var_B = jnp.mean(jnp.square(d_MxB - mu_B[None, :]), axis=0)
  # sqrt'(0) = inf; route zero variances through a dummy 1 so gradients stay finite.
  sigma_B = jnp.where(var_B > 0, jnp.sqrt(jnp.where(var_B > 0, var_B, 1.0)), 0.0)
  return mu_B, sigma_B


# recipe -> (flip noisy labels, adaptive margin on all pairs, label smoothing on noisy pairs)
_DENOISE_RECIPES = {
  "flip": (True, False, False),
  "margin": (False, True, False),
  "flip_margin": (True, True, False),
  "soft_label_margin": (False, True, True),
}


def denoised_bradley_terry_loss(
    chosen_rewards: Float[Array, " B"], rejected_rewards: Float[Array, " B"],
    preference_strength: Float[Array, " B"],
    mask: MaskB = None, *,
    recipe: str = "flip_margin", label_smoothing: float = 0.1, noise_threshold: float = 0.0,
) -> tuple[Scalar, Metrics]:
  """Bradley-Terry with label flipping, label smoothing and adaptive margin (MOSS-RLHF II).

  Equation:
    L = −mean_i [ (1 − α_i) log σ(s_i Δ_i − s_i μ̂_i) + α_i log σ(−(s_i Δ_i − s_i μ̂_i)) ]

  Pairs with μ̂ < `noise_threshold` are "noisy". `recipe` picks one of the paper's four recipes:
  "flip" sets s_i = −1 on noisy pairs (no margin); "margin" uses the margin μ̂_i on every pair
  (s = 1); "flip_margin" does both and flips the margin with the label (s_i μ̂_i, which is |μ̂_i|
  at the default threshold 0; unflipped, a flipped pair would get a negative margin);
  "soft_label_margin" uses α_i = `label_smoothing` on noisy pairs (0 elsewhere, no flip) plus the
  margin. The printed eq. 6
  puts μ̂ outside log σ (a typo: it would not change the gradient); we put it inside. Combining
  smoothing with the margin on the same logit is our reading (the paper gives no joint formula).
  Normaliser: mean over unmasked pairs, max(count, 1).

  Args:
    chosen_rewards: [B] scores of the labelled-preferred responses.
    rejected_rewards: [B] scores of the labelled-dispreferred responses.
    preference_strength: [B] ensemble mean margin μ̂ (`ensemble_preference_strength`).
    mask: [B] 1 = pair counts; None = all pairs count.
    recipe: "flip", "margin", "flip_margin" or "soft_label_margin".
    label_smoothing: α on noisy pairs (paper gives none; 0.1 recommended).
    noise_threshold: pairs with μ̂ below it are noisy (paper: μ̂ < 0, the lowest ~20%).

  Returns:
    (loss [], metrics) with accuracy and margin w.r.t. the original labels, noisy_fraction and
    mean adaptive margin.

  TRL:
    none

  References:
    arXiv:2401.06080 (Secrets of RLHF II) eqs. 5-6, label flipping and the four recipes.

  >>> loss, m = denoised_bradley_terry_loss(jnp.zeros(1), jnp.ones(1), -jnp.ones(1))
  >>> print(round(float(loss), 4))  # flipped: Δ = 1, margin |μ̂| = 1 -> log 2
  0.6931
  """
  fn = "denoised_bradley_terry_loss"
  flip, use_margin, smooth = _option(fn, _DENOISE_RECIPES, recipe, "recipe")
  _check(fn, 1, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards,
         preference_strength=preference_strength, mask=mask)
  w = _weights(mask, chosen_rewards)
  delta = _clean(chosen_rewards, w) - _clean(rejected_rewards, w)
  mu = _clean(preference_strength, w)
  noisy = (mu < noise_threshold).astype(jnp.float32) * w
  sign = 1.0 - 2.0 * noisy if flip else jnp.ones_like(delta)
  adaptive = sign * mu if use_margin else jnp.zeros_like(delta)
  alpha = label_smoothing * noisy if smooth else jnp.zeros_like(delta)
  z = sign * delta - adaptive
  nll = -(1.0 - alpha) * jax.nn.log_sigmoid(z) - alpha * jax.nn.log_sigmoid(-z)
  return _mean(nll, w), {"accuracy": _mean((delta > 0).astype(jnp.float32), w),
                         "margin": _mean(delta, w), "noisy_fraction": _mean(noisy, w),
                         "adaptive_margin": _mean(adaptive, w)}


def polar_loss(
    positive_rewards: Float[Array, " B"], negative_rewards: Float[Array, " B"],
    mask: MaskB = None,
) -> tuple[Scalar, Metrics]:
  """POLAR policy-discriminative loss: same-policy candidates beat other-policy candidates.

  Equation:
    L = −mean log σ( r(p, τ_ref, τ_pos) − r(p, τ_ref, τ_neg) )

  Both scores are computed against the **same** reference trajectory τ_ref. Pre-training: τ_ref
  and τ_pos come from one policy, τ_neg from another; fine-tuning: τ_ref is the human top-ranked
  trajectory, τ_pos the second, τ_neg the third. The novelty is the data, so the loss is plain
  Bradley-Terry. Normaliser: mean over unmasked triplets, max(count, 1).

  Args:
    positive_rewards: [B] r(p, τ_ref, τ_pos).
    negative_rewards: [B] r(p, τ_ref, τ_neg).
    mask: [B] 1 = triplet counts; None = all count.

  Returns:
    (loss [], metrics) with accuracy (strict >), margin, chosen_rewards, rejected_rewards and
    mean/min/max_reward.

  TRL:
    none

  References:
    arXiv:2507.05197 (POLAR) §3.3-3.4 pre-training and fine-tuning losses.

  >>> print(round(float(polar_loss(jnp.zeros(1), jnp.zeros(1))[0]), 4))  # log 2
  0.6931
  """
  pos, neg, w = _bt_pairs(positive_rewards, negative_rewards, mask, "polar_loss")
  return _mean(-jax.nn.log_sigmoid(pos - neg), w), _pair_metrics(pos, neg, w)


_BINARY_LOSS_TYPES = ("sigmoid", "token_ce")


def pointwise_binary_loss(
    yes_scores: Float[Array, " B"], labels: Real[Array, " B"] | Bool[Array, " B"],
    mask: MaskB = None, *,
    no_scores: Float[Array, " B"] | None = None, loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Scalar, Metrics]:
  """Pointwise binary loss for verifiers and generative judges (yes/no or a logit).

  Equation:
    L = −mean_i [ y'_i log p_i + (1 − y'_i) log(1 − p_i) ],  y' = y(1 − ε) + ε/2

  `loss_type="sigmoid"`: p = σ(z) with z = yes_scores (a logit, e.g. a scalar head) or
  z = log p(yes) − log p(no) when `no_scores` is given, i.e. p = p(yes) / (p(yes) + p(no))
  renormalised over the two verdict tokens (GenRM / SoliReward BCE). `loss_type="token_ce"`:
  yes/no_scores are full-vocabulary log-probs of the verdict tokens and the loss is the SFT
  cross-entropy −[y' log p(yes) + (1 − y') log p(no)] (Master-RM). Normaliser: mean over unmasked
  examples, max(count, 1).

  Args:
    yes_scores: [B] logit, or log p("yes") at the verdict position.
    labels: [B] target in [0, 1] (1 = yes / correct / Pass); soft labels allowed.
    mask: [B] 1 = example counts; None = all count.
    no_scores: [B] log p("no"); required for "token_ce".
    loss_type: "sigmoid" or "token_ce".
    label_smoothing: ε, SoliReward's form y(1 − ε) + ε/2.

  Returns:
    (loss [], metrics) with accuracy ((z > 0) == (y > 1/2)), p_yes (mean renormalised p(yes))
    and positive_fraction.

  TRL:
    none

  References:
    arXiv:2408.15240 (GenRM); arXiv:2507.08794 (Master-RM); arXiv:2512.22170 (BCE term of
    the official code lian700/SoliReward `solireward/trainer/loss.py`).

  >>> print(round(float(pointwise_binary_loss(jnp.zeros(1), jnp.ones(1))[0]), 4))  # log 2
  0.6931
  """
  fn = "pointwise_binary_loss"
  _option(fn, dict.fromkeys(_BINARY_LOSS_TYPES), loss_type, "loss_type")
  if loss_type == "token_ce" and no_scores is None:
    raise ValueError(f"{fn}: loss_type='token_ce' needs no_scores (log p of the 'no' token)")
  _check(fn, 1, yes_scores=yes_scores, labels=labels, mask=mask, no_scores=no_scores)
  w = _weights(mask, yes_scores)
  yes = _clean(yes_scores, w)
  no = jnp.zeros_like(yes) if no_scores is None else _clean(no_scores, w)
  y = _clean(labels, w)
  y = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
  z = yes - no
  if loss_type == "sigmoid":
    nll = -y * jax.nn.log_sigmoid(z) - (1.0 - y) * jax.nn.log_sigmoid(-z)
  else:
    nll = -y * yes - (1.0 - y) * no
  return _mean(nll, w), {"accuracy": _mean(((z > 0) == (y > 0.5)).astype(jnp.float32), w),
                         "p_yes": _mean(jax.nn.sigmoid(z), w),
                         "positive_fraction": _mean((y > 0.5).astype(jnp.float32), w)}


def yojo_loss(
    scores: Float[Array, "B K"], labels: Int[Array, " B"],
    mask: MaskBK = None,
) -> tuple[Scalar, Metrics]:
  """YOJO N-way softmax cross-entropy: the best of N jointly scored responses is the class.

  Equation:
    L = mean_b −log [ exp(s_b,label_b) / Σ_{n valid} exp(s_bn) ]

  Invalid responses are excluded from the softmax (YOJO gives them −inf) but never the label
  column: a row whose label is out of range or masked is dropped. Ties at rank 1 are broken by
  the caller (YOJO picks one best index at random). Normaliser: mean over rows with a valid
  label, max(count, 1).

  Args:
    scores: [B, N] score of each response read in one forward pass.
    labels: [B] index of the best response.
    mask: [B, N] 1 = response exists; None = all exist.

  Returns:
    (loss [], metrics) with accuracy (argmax == label), chosen_rewards (mean label score) and
    rejected_rewards (mean score of the other valid responses).

  TRL:
    none

  References:
    arXiv:2604.10966 (YOJO) N-way CE; official code yinuoyang01/multi-response-rm.

  >>> print(round(float(yojo_loss(jnp.zeros((1, 4)), jnp.array([0]))[0]), 4))  # log 4
  1.3863
  """
  _check("yojo_loss", 2, scores=scores, mask=mask)
  _check("yojo_loss", 1, labels=labels, scores_rows=scores[:, 0])
  w_BxN = _weights(mask, scores)
  s_BxN = _clean(scores, w_BxN)
  n = s_BxN.shape[1]
  label_B = jnp.clip(labels, 0, n - 1)
  onehot_BxN = jax.nn.one_hot(label_B, n, dtype=jnp.float32)
  row_B = ((labels >= 0) & (labels < n)).astype(jnp.float32) * jnp.sum(onehot_BxN * w_BxN, axis=1)
  # A dropped row softmaxes over everything (all zeros after cleaning) so its lse stays finite.
  allowed_BxN = (w_BxN > 0) | (row_B[:, None] == 0)
  lse_B = jax.nn.logsumexp(s_BxN, axis=-1, where=allowed_BxN)
  label_score_B = jnp.sum(s_BxN * onehot_BxN, axis=1)
  best_B = jnp.argmax(jnp.where(allowed_BxN, s_BxN, -jnp.inf), axis=-1)
  others_BxN = w_BxN * (1.0 - onehot_BxN) * row_B[:, None]
  return _mean(lse_B - label_score_B, row_B), {
    "accuracy": _mean((best_B == label_B).astype(jnp.float32), row_B),
    "chosen_rewards": _mean(label_score_B, row_B), "rejected_rewards": _mean(s_BxN, others_BxN)}
