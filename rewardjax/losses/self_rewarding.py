"""Seed-paper objectives for self-rewarding and self-play preference training.

CREAM (consistency-weighted soft-label DPO, arXiv 2410.12735), SPO preference-degree
classification (arXiv 2409.17791), T-REG token-level regularisation (arXiv 2412.02685), DNO
(soft/hard-label DPO against the previous iterate, arXiv 2404.03715) and the self-play rewards
of DNO, SPO (minimax, arXiv 2401.04056) and Self-Rewarding PPO (arXiv 2510.21090). Temporal
Self-Rewarding (arXiv 2508.06026) trains with the plain `dpo_loss`. Soft labels, token rewards
and sequence weights are constants (`stop_gradient`); every mean is guarded with
`max(count, 1)`.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from rewardjax.losses.preference import _check_name, _masked_mean, _reward_metrics, dpo_loss

__all__ = [
    "TREG_BASES", "TREG_TOKEN_REDUCTIONS", "coherent_reward", "cream_consistency", "cream_loss",
    "dno_loss", "dno_pair_mask", "kendall_tau", "soft_label_dpo_loss", "spo_ssl_loss",
    "treg_loss", "treg_token_rewards", "win_rate_rewards",
]

Scalar = Float[Array, ""]
Metrics = dict[str, Float[Array, ""]]
PairMask = Float[Array, " B"] | Bool[Array, " B"] | None
Labels = float | Float[Array, ""] | Float[Array, " B"]


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def soft_label_dpo_loss(
    chosen_logps: Float[Array, " B"],
    rejected_logps: Float[Array, " B"],
    ref_chosen_logps: Float[Array, " B"],
    ref_rejected_logps: Float[Array, " B"],
    labels: Labels,
    *,
    beta: float = 0.1,
    pair_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""DPO with a soft preference label p = P(y_w > y_l).

    loss_b = -p_b log sig(beta Delta_b) - (1 - p_b) log sig(-beta Delta_b),
    Delta = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]

  Identical to cDPO with label_smoothing = 1 - p (`dpo_loss(loss_type="sigmoid")`); p = 1 is DPO,
  p = 1/2 has zero expected gradient. Labels are constants.

  Args:
    chosen_logps: [B] summed completion log-probs of y_w under the policy.
    rejected_logps: [B] same for y_l.
    ref_chosen_logps: [B] reference log-probs of y_w (constant).
    ref_rejected_logps: [B] reference log-probs of y_l.
    labels: p in [0, 1], scalar or [B].
    beta: inverse temperature.
    pair_mask: [B] optional, 1 = pair counts.

  Returns:
    loss: scalar, masked mean over pairs (normaliser max(sum mask, 1)).
    metrics: the `dpo_loss` metrics plus soft_labels/mean.

  References:
    DNO arXiv 2404.03715, Algorithm 1 (eq. 8); CREAM arXiv 2410.12735 (Raibows/CREAM
    `sft_dpo_trainer.py`).

  >>> loss, _ = soft_label_dpo_loss(jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.0]),
  ...                               jnp.array([-1.0]), 0.9)   # beta Delta = 0.1
  >>> print(round(float(loss), 4))   # 0.9 * 0.6444 + 0.1 * 0.7444
  0.6544
  """
  p = jax.lax.stop_gradient(_f32(labels))
  loss, metrics = dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
                           beta=beta, loss_type="sigmoid", label_smoothing=1.0 - p,
                           pair_mask=pair_mask)
  mask = jnp.ones_like(_f32(chosen_logps)) if pair_mask is None else _f32(pair_mask)
  metrics["soft_labels/mean"] = _masked_mean(jnp.broadcast_to(p, mask.shape), mask)
  return loss, metrics


def cream_loss(
    chosen_logps: Float[Array, " B"],
    rejected_logps: Float[Array, " B"],
    ref_chosen_logps: Float[Array, " B"],
    ref_rejected_logps: Float[Array, " B"],
    consistency: Labels,
    *,
    beta: float = 0.1,
    pair_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""CREAM consistency-regularised DPO: the rank consistency C is the soft label.

    loss_b = C_b (-log sig(beta Delta_b)) + (1 - C_b)(-log sig(-beta Delta_b))

  C = (tau + 1)/2 from `cream_consistency` between this and the previous iteration's rankings:
  per prompt (`consistency_dyn`, a [B] vector) or its dataset mean (`consistency_avg`, a scalar).
  The reference is the model this iteration starts from (Raibows/CREAM `sft_dpo_trainer.py`).

  Args:
    chosen_logps: [B] summed completion log-probs of y_w (arg max of the current rewards).
    rejected_logps: [B] same for y_l (arg min).
    ref_chosen_logps: [B] reference log-probs of y_w (constant).
    ref_rejected_logps: [B] reference log-probs of y_l.
    consistency: C in [0, 1], scalar or [B].
    beta: inverse temperature (CREAM default 0.1).
    pair_mask: [B] optional, 1 = pair counts (0 where chosen = rejected).

  Returns:
    loss: scalar, masked mean over pairs (normaliser max(sum mask, 1)).
    metrics: the `dpo_loss` metrics plus consistency/mean.

  References:
    Wang et al., arXiv 2410.12735 (Raibows/CREAM `sft_dpo_trainer.py`, `data.py`).

  >>> z = jnp.zeros(1)
  >>> print(round(float(cream_loss(z, z - 1.0, z, z, 0.8)[0]), 4))  # 0.8*0.6444 + 0.2*0.7444
  0.6644
  """
  loss, metrics = soft_label_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps,
                                      ref_rejected_logps, consistency, beta=beta,
                                      pair_mask=pair_mask)
  metrics["consistency/mean"] = metrics.pop("soft_labels/mean")
  return loss, metrics


def _ordinal_sign(scores_PxN):
  """sign(rank_i - rank_j) under ordinal ranks (ties: the later position ranks higher)."""
  n = scores_PxN.shape[1]
  diff_PxNxN = scores_PxN[:, :, None] - scores_PxN[:, None, :]
  later_1xNxN = (jnp.arange(n)[:, None] > jnp.arange(n)[None, :])[None]
  tie_1xNxN = jnp.where(later_1xNxN, 1.0, -1.0)
  return jnp.where(diff_PxNxN > 0, 1.0, jnp.where(diff_PxNxN < 0, -1.0, tie_1xNxN))


def kendall_tau(
    scores_a: Float[Array, "P N"],
    scores_b: Float[Array, "P N"],
    mask: Float[Array, "P N"] | Bool[Array, "P N"] | None = None,
) -> Float[Array, " P"]:
  r"""Kendall's tau between two scorings of the same N responses, after ordinal ranking.

    tau = sum_{i<j} sign(ra_i - ra_j) sign(rb_i - rb_j) / (n (n - 1) / 2)

  Scores become ordinal ranks first (`scipy.stats.rankdata(method="ordinal")`: ties broken by
  position), as CREAM's `cal_consistency.py` does; ordinal ranks have no ties, so tau-b = tau-a.
  Masked responses are left out; prompts with fewer than 2 valid responses get 0.

  Args:
    scores_a: [P, N] scores of N responses per prompt (e.g. the current model's rewards).
    scores_b: [P, N] scores of the same responses by another scorer (the previous model).
    mask: [P, N] optional, 1 = valid response.

  Returns:
    [P] tau in [-1, 1]; normaliser max(n_valid (n_valid - 1) / 2, 1).

  References:
    Kendall, Biometrika 1938; CREAM arXiv 2410.12735 (`cal_consistency.py`).

  >>> a = jnp.array([[0.1, 0.5, 0.3, 0.9, 0.2]])
  >>> b = jnp.array([[0.2, 0.4, 0.1, 0.8, 0.3]])
  >>> print(round(float(kendall_tau(a, b)[0]), 4))   # ranks [1,4,3,5,2] vs [2,4,1,5,3]
  0.6
  """
  if jnp.shape(scores_a) != jnp.shape(scores_b):
    raise ValueError(f"scores_a {jnp.shape(scores_a)} and scores_b {jnp.shape(scores_b)} differ")
  a, b = _f32(scores_a), _f32(scores_b)
  m = jnp.ones_like(a) if mask is None else _f32(mask)
  n = a.shape[1]
  upper_1xNxN = (jnp.arange(n)[:, None] < jnp.arange(n)[None, :])[None].astype(jnp.float32)
  pairs_PxNxN = m[:, :, None] * m[:, None, :] * upper_1xNxN
  agree_PxNxN = _ordinal_sign(a) * _ordinal_sign(b)
  return jnp.sum(agree_PxNxN * pairs_PxNxN, (1, 2)) / jnp.maximum(jnp.sum(pairs_PxNxN, (1, 2)), 1.0)


def cream_consistency(
    scores_current: Float[Array, "P N"],
    scores_previous: Float[Array, "P N"],
    mask: Float[Array, "P N"] | Bool[Array, "P N"] | None = None,
) -> Float[Array, " P"]:
  r"""CREAM consistency rate C = (tau + 1) / 2 between two iterations' rankings.

  Both scorings must be of the same responses: the current model's implicit reward
  log pi_t - log pi_ref,t (no beta) and the previous model's (or, for M0, the length-normalised
  log-likelihood). `consistency_avg` is the mean of C over the data set.

  Args:
    scores_current: [P, N] current model's scores of N responses per prompt.
    scores_previous: [P, N] previous model's scores of the same responses.
    mask: [P, N] optional, 1 = valid response.

  Returns:
    [P] C in [0, 1] (0.5 for prompts with fewer than 2 valid responses).

  References:
    Wang et al., arXiv 2410.12735 (Raibows/CREAM `cal_consistency.py`).

  >>> a = jnp.array([[0.1, 0.5, 0.3, 0.9, 0.2]])
  >>> b = jnp.array([[0.2, 0.4, 0.1, 0.8, 0.3]])
  >>> print(round(float(cream_consistency(a, b)[0]), 4))
  0.8
  """
  return (kendall_tau(scores_current, scores_previous, mask) + 1.0) / 2.0


def spo_ssl_loss(
    class_logits: Float[Array, "B C"],
    labels: Int[Array, " B"],
    *,
    sample_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""SPO auxiliary loss: classify how much key content was removed from a response.

    L_SSL = -mean_b log softmax(W h_b)[k_b],  k_b in {0..K} = number of key units removed

  Added to any alignment loss as L_align + lambda L_SSL. Reconstructed from the abstract (the
  paper's method section and code were not available): the classifier head, K and lambda are
  the caller's.

  Args:
    class_logits: [B, K+1] logits of the preference-degree head on the degraded responses.
    labels: [B] integer class k in [0, K].
    sample_mask: [B] optional, 1 = example counts.

  Returns:
    loss: scalar, masked mean cross-entropy (normaliser max(sum mask, 1)).
    metrics: ssl/loss, ssl/accuracy (arg max = label).

  References:
    Li et al., arXiv 2409.17791 (abstract; the rest is recalled from the paper, unverified).

  >>> loss, m = spo_ssl_loss(jnp.zeros((2, 4)), jnp.array([0, 3]))
  >>> print(round(float(loss), 4))   # log 4
  1.3863
  """
  if jnp.shape(class_logits)[:1] != jnp.shape(labels):
    raise ValueError(f"class_logits {jnp.shape(class_logits)} and labels {jnp.shape(labels)} "
                     "disagree on B")
  mask = jnp.ones(jnp.shape(labels), jnp.float32) if sample_mask is None else _f32(sample_mask)
  # Sanitise masked rows before log_softmax so their garbage cannot reach the gradient.
  logits_BxC = jnp.where(mask[:, None] > 0, _f32(class_logits), 0.0)
  logp_BxC = jax.nn.log_softmax(logits_BxC, axis=-1)
  nll_B = -jnp.take_along_axis(logp_BxC, labels[:, None], axis=-1)[:, 0]
  loss = _masked_mean(jnp.where(mask > 0, nll_B, 0.0), mask)
  correct = (jnp.argmax(logp_BxC, axis=-1) == labels).astype(jnp.float32)
  return loss, {"ssl/loss": jax.lax.stop_gradient(loss),
                "ssl/accuracy": _masked_mean(correct, mask)}


def treg_token_rewards(
    better_token_logps: Float[Array, "B T"],
    worse_token_logps: Float[Array, "B T"],
    mask: Float[Array, "B T"] | Bool[Array, "B T"],
) -> Float[Array, "B T"]:
  r"""T-REG self-generated token rewards from contrastive (revise-better / revise-worse) prompts.

    r_t = sig(log pi_eval(y_t | x_better, y_<t) - log pi_eval(y_t | x_worse, y_<t)) - 1/2

  Both log-prob sets score the same response tokens under the frozen evaluator (the reference
  model) with the two wrapped prompts; masked tokens get 0. Constant (computed offline).

  Args:
    better_token_logps: [B, T] token log-probs under the "make it better" prompt.
    worse_token_logps: [B, T] token log-probs under the "make it worse" prompt.
    mask: [B, T] 1 = response token.

  Returns:
    [B, T] rewards in (-1/2, 1/2).

  References:
    Zhou et al., arXiv 2412.02685 (T-REG), self-generated token reward.

  >>> r = treg_token_rewards(jnp.array([[0.0, 2.0, -2.0]]), jnp.zeros((1, 3)), jnp.ones((1, 3)))
  >>> print([round(float(v), 4) for v in r[0]])   # sig(2) - 1/2 = 0.3808
  [0.0, 0.3808, -0.3808]
  """
  m = _f32(mask)
  gap = jnp.where(m > 0, _f32(better_token_logps) - _f32(worse_token_logps), 0.0)
  return jax.lax.stop_gradient((jax.nn.sigmoid(gap) - 0.5) * m)


TREG_BASES = ("dpo", "simpo")
TREG_TOKEN_REDUCTIONS = ("sum", "mean")


def treg_loss(
    chosen_token_logps: Float[Array, "B Tc"],
    rejected_token_logps: Float[Array, "B Tr"],
    ref_chosen_token_logps: Float[Array, "B Tc"] | None,
    ref_rejected_token_logps: Float[Array, "B Tr"] | None,
    chosen_token_rewards: Float[Array, "B Tc"],
    rejected_token_rewards: Float[Array, "B Tr"],
    chosen_mask: Float[Array, "B Tc"] | Bool[Array, "B Tc"],
    rejected_mask: Float[Array, "B Tr"] | Bool[Array, "B Tr"],
    *,
    beta: float = 0.1,
    alpha: float = 0.25,
    base: str = "dpo",
    simpo_gamma: float = 0.5,
    token_reduction: str = "sum",
    pair_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""T-REG: pair loss plus a token-reward regulariser weighted by the pair's DPO gradient.

    L = L_pair(z) + alpha * w * (L_REG(y_w) + L_REG(y_l)),   w = sg(sig(-z))
    L_REG(y) = -beta sum_t r_t log pi(y_t | x, y_<t)         (token_reduction="sum")
    dpo:   z = beta [(log pi - log pi_ref)(y_w) - (log pi - log pi_ref)(y_l)]  (summed)
    simpo: z = beta (a_w - a_l) - gamma,  a = mean_t log pi   (reference log-probs unused)
    L_pair = -log sig(z)

  w is the DPO (SimPO) gradient weight sig(r(y_l) - r(y_w)), a constant (inferred: the paper
  calls it a weight taken from the DPO gradient). The regulariser raises tokens with r_t > 0 and
  lowers r_t < 0 on both responses. "mean" divides L_REG by max(|y|, 1). Per-token rewards come
  from `treg_token_rewards`.

  Args:
    chosen_token_logps: [B, Tc] policy token log-probs of y_w.
    rejected_token_logps: [B, Tr] policy token log-probs of y_l.
    ref_chosen_token_logps: [B, Tc] reference token log-probs of y_w (None for simpo).
    ref_rejected_token_logps: [B, Tr] reference token log-probs of y_l (None for simpo).
    chosen_token_rewards: [B, Tc] r_t of y_w (constant).
    rejected_token_rewards: [B, Tr] r_t of y_l (constant).
    chosen_mask: [B, Tc] 1 = response token of y_w.
    rejected_mask: [B, Tr] 1 = response token of y_l.
    beta: DPO / SimPO beta, also scales L_REG.
    alpha: regulariser weight (the paper searches {0.1, 0.25, 0.5}).
    base: one of `TREG_BASES`.
    simpo_gamma: SimPO margin gamma (base="simpo").
    token_reduction: one of `TREG_TOKEN_REDUCTIONS`.
    pair_mask: [B] optional, 1 = pair counts.

  Returns:
    loss: scalar, masked mean over pairs (normaliser max(sum mask, 1)).
    metrics: rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins,
      logps/chosen, logps/rejected, treg/pair_loss, treg/weight, treg/reg_chosen,
      treg/reg_rejected.

  References:
    Zhou et al., arXiv 2412.02685 (T-REG), DPO-REG / SimPO-REG objective.

  >>> one = jnp.ones((1, 2))
  >>> loss, m = treg_loss(-one, -one, -one, -one, 0.5 * one, 0 * one, one, one, beta=1.0,
  ...                     alpha=1.0)   # z = 0: log 2 + 1/2 * (-1 * 0.5 * -2)
  >>> print(round(float(loss), 4), float(m["treg/weight"]))
  1.1931 0.5
  """
  _check_name(base, TREG_BASES, "base")
  _check_name(token_reduction, TREG_TOKEN_REDUCTIONS, "token_reduction")
  if base == "dpo" and (ref_chosen_token_logps is None or ref_rejected_token_logps is None):
    raise ValueError("base 'dpo' needs ref_chosen_token_logps and ref_rejected_token_logps")
  for name, x, m in (("chosen", chosen_token_logps, chosen_mask),
                     ("rejected", rejected_token_logps, rejected_mask)):
    if jnp.ndim(x) != 2 or jnp.shape(x) != jnp.shape(m):
      raise ValueError(f"{name}_token_logps {jnp.shape(x)} and {name}_mask {jnp.shape(m)} must be "
                       "one [B, T] shape")
  mask = (jnp.ones(jnp.shape(chosen_mask)[:1], jnp.float32) if pair_mask is None
          else _f32(pair_mask))
  # Dropping a pair masks all its tokens, so its garbage is sanitised before any log/exp.
  m_w, m_l = _f32(chosen_mask) * mask[:, None], _f32(rejected_mask) * mask[:, None]
  clean = lambda x, m: jnp.where(m > 0, _f32(x), 0.0)
  lp_w, lp_l = clean(chosen_token_logps, m_w), clean(rejected_token_logps, m_l)
  len_w, len_l = jnp.maximum(m_w.sum(1), 1.0), jnp.maximum(m_l.sum(1), 1.0)
  if base == "dpo":
    ref_w = jax.lax.stop_gradient(clean(ref_chosen_token_logps, m_w))
    ref_l = jax.lax.stop_gradient(clean(ref_rejected_token_logps, m_l))
    r_w, r_l = beta * (lp_w - ref_w).sum(1), beta * (lp_l - ref_l).sum(1)
    z = r_w - r_l
  else:
    r_w, r_l = beta * lp_w.sum(1) / len_w, beta * lp_l.sum(1) / len_l
    z = r_w - r_l - simpo_gamma
  pair = -jax.nn.log_sigmoid(z)
  weight = jax.lax.stop_gradient(jax.nn.sigmoid(-z))

  def reg(lp, rewards, m, length):
    total = -beta * jnp.sum(jax.lax.stop_gradient(clean(rewards, m)) * lp, axis=1)
    return total / length if token_reduction == "mean" else total

  reg_w, reg_l = reg(lp_w, chosen_token_rewards, m_w, len_w), reg(lp_l, rejected_token_rewards,
                                                                   m_l, len_l)
  loss = _masked_mean(pair + alpha * weight * (reg_w + reg_l), mask)
  metrics = _reward_metrics(r_w, r_l, lp_w.sum(1), lp_l.sum(1), mask)
  sg = jax.lax.stop_gradient
  metrics.update({"treg/pair_loss": _masked_mean(sg(pair), mask),
                  "treg/weight": _masked_mean(weight, mask),
                  "treg/reg_chosen": _masked_mean(sg(reg_w), mask),
                  "treg/reg_rejected": _masked_mean(sg(reg_l), mask)})
  return loss, metrics


def dno_loss(
    chosen_logps: Float[Array, " B"],
    rejected_logps: Float[Array, " B"],
    prev_chosen_logps: Float[Array, " B"],
    prev_rejected_logps: Float[Array, " B"],
    *,
    beta: float = 0.1,
    chosen_rewards: Float[Array, " B"] | None = None,
    rejected_rewards: Float[Array, " B"] | None = None,
    pair_mask: PairMask = None,
) -> tuple[Scalar, Metrics]:
  r"""DNO: regress the log-ratio to the previous iterate onto preference-derived rewards.

    h(y) = eta log pi(y|x) / pi_t(y|x),   p = sig(r_t(y_w) - r_t(y_l))
    loss_b = -p log sig(h(y_w) - h(y_l)) - (1 - p) log sig(h(y_l) - h(y_w))

  With rewards (win rates r_t from `win_rate_rewards`) this is Algorithm 1's batched on-policy
  objective; without them p = 1 (DNO-Prct, Algorithm 2: hard-label DPO on large-margin pairs).
  The reference is the previous iterate pi_t, not the SFT model: recompute its log-probs every
  iteration. eta is `beta` (paper: 0.1 or 0.05).

  Args:
    chosen_logps: [B] summed completion log-probs of y_w under the policy.
    rejected_logps: [B] same for y_l.
    prev_chosen_logps: [B] log-probs of y_w under the previous iterate pi_t (constant).
    prev_rejected_logps: [B] same for y_l.
    beta: eta.
    chosen_rewards: [B] optional r_t(x, y_w) (constant).
    rejected_rewards: [B] optional r_t(x, y_l).
    pair_mask: [B] optional, 1 = pair counts (e.g. from `dno_pair_mask`).

  Returns:
    loss: scalar, masked mean over pairs (normaliser max(sum mask, 1)).
    metrics: the `dpo_loss` metrics plus soft_labels/mean.

  References:
    Rosset et al., arXiv 2404.03715, Algorithm 1 (eq. 8) and Algorithm 2.

  >>> z = jnp.zeros(1)
  >>> loss, m = dno_loss(z, z, z, z, chosen_rewards=z + 1.0, rejected_rewards=z)
  >>> print(round(float(loss), 4), round(float(m["soft_labels/mean"]), 4))   # p = sig(1)
  0.6931 0.7311
  """
  if (chosen_rewards is None) != (rejected_rewards is None):
    raise ValueError("pass both chosen_rewards and rejected_rewards, or neither")
  labels = 1.0 if chosen_rewards is None else jax.nn.sigmoid(
      _f32(chosen_rewards) - _f32(rejected_rewards))
  return soft_label_dpo_loss(chosen_logps, rejected_logps, prev_chosen_logps,
                             prev_rejected_logps, labels, beta=beta, pair_mask=pair_mask)


def win_rate_rewards(
    preferences: Float[Array, "P N N"],
    mask: Float[Array, "P N"] | Bool[Array, "P N"] | None = None,
) -> Float[Array, "P N"]:
  r"""Self-play win-rate reward: mean preference of each response over the others of its prompt.

    r_i = sum_{j != i} m_j P(y_i > y_j) / max(sum_{j != i} m_j, 1)

  `preferences[p, i, j]` is P(y_i > y_j | x_p) in [0, 1] (a hard comparator gives 1 win, 1/2 tie,
  0 loss; DNO uses one {0, 1} draw per pair). The diagonal is ignored; masked responses neither
  score nor count as opponents and get 0. This is DNO's r_t (K samples plus the gold response)
  and SPO's (minimax) reward.

  Args:
    preferences: [P, N, N] pairwise preference probabilities.
    mask: [P, N] optional, 1 = valid response.

  Returns:
    [P, N] rewards in [0, 1] (constant).

  References:
    Swamy et al., arXiv 2401.04056 (SPO, minimax winner reward); Rosset et al., arXiv
    2404.03715, Algorithm 2.

  >>> pref = jnp.array([[[0.0, 1.0, 1.0], [0.0, 0.0, 0.5], [0.0, 0.5, 0.0]]])
  >>> print(win_rate_rewards(pref))
  [[1.   0.25 0.25]]
  """
  pref = _f32(preferences)
  p, n = pref.shape[0], pref.shape[1]
  m = jnp.ones((p, n), jnp.float32) if mask is None else _f32(mask)
  off_diag_1xNxN = (1.0 - jnp.eye(n, dtype=jnp.float32))[None]
  opponents_PxNxN = off_diag_1xNxN * m[:, None, :]
  wins_PxN = jnp.sum(jnp.where(opponents_PxNxN > 0, pref, 0.0), axis=2)
  rate_PxN = wins_PxN / jnp.maximum(jnp.sum(opponents_PxNxN, axis=2), 1.0)
  return jax.lax.stop_gradient(rate_PxN * m)


def dno_pair_mask(
    scores: Float[Array, "P N"],
    is_student: Bool[Array, "P N"],
    mask: Float[Array, "P N"] | Bool[Array, "P N"] | None = None,
    *,
    pos_min: float = 5.0,
    margin: float = 2.0,
    student_margin: float = 1.0,
) -> Bool[Array, "P N N"]:
  r"""DNO-Prct large-margin pairs: which (y_i chosen, y_j rejected) pairs to train on.

    keep[p, i, j] = i != j and s_i >= pos_min and s_i - s_j >= (student_margin if y_i is a
                    policy sample else margin)

  Teacher > student, student > teacher and student > student pairs are all kept (allowing
  student > teacher is what separates DNO from DNO-Restrictive / SPIN). Scores are the judge's
  additive 6-point scores.

  Args:
    scores: [P, N] judge scores of the K policy samples and the gold response per prompt.
    is_student: [P, N] True = policy (student) sample, False = teacher / gold.
    mask: [P, N] optional, 1 = valid response.
    pos_min: minimum score of a positive.
    margin: minimum score gap when the positive is a teacher response.
    student_margin: minimum score gap when the positive is a student sample.

  Returns:
    [P, N, N] boolean, True where (i, j) is a training pair.

  References:
    Rosset et al., arXiv 2404.03715, §5.1.

  >>> keep = dno_pair_mask(jnp.array([[6.0, 5.0, 3.0]]), jnp.array([[False, True, True]]))
  >>> print(keep[0].astype(int))
  [[0 0 1]
   [0 0 1]
   [0 0 0]]
  """
  s = _f32(scores)
  n = s.shape[1]
  m = jnp.ones_like(s) if mask is None else _f32(mask)
  gap_PxNxN = s[:, :, None] - s[:, None, :]
  need_PxN1 = jnp.where(is_student, student_margin, margin)[:, :, None]
  valid_PxNxN = (m[:, :, None] * m[:, None, :] > 0) & ~jnp.eye(n, dtype=bool)[None]
  return valid_PxNxN & (s >= pos_min)[:, :, None] & (gap_PxNxN >= need_PxN1)


def coherent_reward(
    sft_token_logps: Float[Array, "B T"],
    base_token_logps: Float[Array, "B T"],
    mask: Float[Array, "B T"] | Bool[Array, "B T"],
) -> Float[Array, " B"]:
  r"""Self-Rewarding PPO coherent reward: summed log-ratio of the SFT to the pretrained model.

    r(x, y) = sum_t m_t [log pi_sft(y_t | x, y_<t) - log pi_pt(y_t | x, y_<t)]

  Summed (not length-normalised) and given as one scalar at EOS; both models are frozen, so the
  reward is constant. It grows with length: log per-token means to watch for length drift.

  Args:
    sft_token_logps: [B, T] token log-probs under the SFT model.
    base_token_logps: [B, T] token log-probs under the pretrained base model.
    mask: [B, T] 1 = response token.

  Returns:
    [B] rewards (no normaliser).

  References:
    Zhang et al., arXiv 2510.21090 (Self-Rewarding PPO), coherent reward.

  >>> print(coherent_reward(jnp.array([[-1.0, -2.0, -9.0]]), jnp.array([[-2.0, -2.5, 0.0]]),
  ...                       jnp.array([[1.0, 1.0, 0.0]])))
  [1.5]
  """
  m = _f32(mask)
  diff = jnp.where(m > 0, _f32(sft_token_logps) - _f32(base_token_logps), 0.0)
  return jax.lax.stop_gradient(jnp.sum(diff * m, axis=1))
