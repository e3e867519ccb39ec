"""Contrastive reward-model objectives: SimCSE, MetaRM difference, goal-conditioned states.

Auxiliary terms added by the caller to a Bradley-Terry loss (`reward_model.py`); they shape what
the reward model separates rather than fit preference labels. SimCSE and the goal-conditioned loss
act on hidden states: they pull two views of a response (or a state and its future) together and
push other responses apart. MetaRM's difference term acts on scores: it pushes apart the rewards of
K policy samples, a contrastive objective with negatives only. Conventions are `reward_model.py`'s
(dense masks, `(loss, metrics)`, finite value and gradient when everything is masked) and so are
the shape/option helpers, imported from there. Formulas: Secrets of RLHF II, arXiv 2401.06080
(contrastive RM, MetaRM); Nath et al., arXiv 2407.13887 (goal-conditioned RM).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, Key, Real, UInt32

from rewardjax.losses.reward_model import (
  MaskB,
  MaskBK,
  Metrics,
  Scalar,
  _check,
  _clean,
  _mean,
  _option,
  _weights,
)

__all__ = [
  "simcse_loss", "metarm_difference_loss", "goal_contrastive_positions", "goal_contrastive_loss",
]

_COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's eps, used by the reference code.


def _unit(x: jax.Array) -> jax.Array:
  # Guard the norm *inside* the sqrt: sqrt'(0) is inf, so zero vectors would give NaN gradients.
  norm = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(x), axis=-1, keepdims=True), _COS_EPS**2))
  return x / norm


def simcse_loss(
    embeddings: Float[Array, "B D"], positive_embeddings: Float[Array, "B D"],
    mask: MaskB = None, *, temperature: float = 0.05,
) -> tuple[Scalar, Metrics]:
  """SimCSE in-batch contrastive loss on reward-model features (MOSS-RLHF II).

  Equation:
    L = mean_i −log [ exp(cos(h_i, h'_i)/τ) / Σ_j exp(cos(h_i, h'_j)/τ) ]

  The two views are two dropout forward passes (paper: dropout 0.05) of the same inputs; for the
  paper's "-diff" variant pass f(y_c) − f(y_r) features. Masked rows are neither anchors nor
  negatives. cos uses per-vector norms max(‖h‖, 1e-8). Normaliser: mean over unmasked rows,
  max(count, 1). The paper's total is L_rm + β L (β = 1 for SimCSE); β is applied by the caller.

  Args:
    embeddings: [B, D] features h (e.g. the last-token hidden state fed to the reward head).
    positive_embeddings: [B, D] second view h'.
    mask: [B] 1 = row counts; None = all rows count.
    temperature: τ (paper gives none; 0.05 is the SimCSE default).

  Returns:
    (loss [], metrics) with accuracy (positive is the argmax), positive_cosine, negative_cosine.

  TRL:
    none

  References:
    arXiv:2401.06080 (Secrets of RLHF II) contrastive RM; arXiv:2104.08821.

  >>> eye = jnp.eye(2)
  >>> print(round(float(simcse_loss(eye, eye, temperature=1.0)[0]), 4))  # log(1 + e^-1)
  0.3133
  """
  _check("simcse_loss", 2, embeddings=embeddings, positive_embeddings=positive_embeddings)
  _check("simcse_loss", 1, embeddings_rows=embeddings[:, 0], mask=mask)
  w_B = _weights(mask, embeddings[:, 0])
  a_BxD = _unit(_clean(embeddings, w_B[:, None]))
  b_BxD = _unit(_clean(positive_embeddings, w_B[:, None]))
  cos_BxB = a_BxD @ b_BxD.T
  eye_BxB = jnp.eye(cos_BxB.shape[0], dtype=bool)
  # Keep the diagonal so a fully masked batch never takes a log-sum-exp over an empty set.
  allowed_BxB = (w_B[None, :] > 0) | eye_BxB
  logits_BxB = cos_BxB / temperature
  lse_B = jax.nn.logsumexp(logits_BxB, axis=-1, where=allowed_BxB)
  loss = _mean(lse_B - jnp.diagonal(logits_BxB), w_B)
  best_B = jnp.argmax(jnp.where(allowed_BxB, logits_BxB, -jnp.inf), axis=-1)
  negatives_BxB = (allowed_BxB & ~eye_BxB).astype(jnp.float32) * w_B[:, None]
  return loss, {"accuracy": _mean((best_B == jnp.arange(w_B.shape[0])).astype(jnp.float32), w_B),
                "positive_cosine": _mean(jnp.diagonal(cos_BxB), w_B),
                "negative_cosine": _mean(cos_BxB, negatives_BxB)}


def metarm_difference_loss(
    rewards: Float[Array, "B K"], mask: MaskBK = None,
) -> tuple[Scalar, Metrics]:
  """Negated MetaRM difference objective: how far apart the RM scores K policy samples.

  Equation:
    L = −mean_b J_b,  J_b = (2 / k_b²) Σ_{i<j} σ(|r_bi − r_bj|)

  MetaRM *maximises* J on shifted-distribution samples (a gradient-ascent meta step
  θ' = θ + η∇J), so this returns −J for use with gradient descent. k_b is the number of valid
  samples of prompt b; the mean is over prompts with k_b ≥ 2, max(count, 1). Note J ≥ 0.5·(k−1)/k
  and ascent inflates reward scale: pair it with the Bradley-Terry loss.

  Args:
    rewards: [B, K] scores of K policy samples per meta prompt.
    mask: [B, K] 1 = sample exists; None = all count.

  Returns:
    (loss [], metrics) with discrimination (mean J) and mean_abs_gap (mean |r_i − r_j|).

  TRL:
    none

  References:
    arXiv:2401.06080 (Secrets of RLHF II) MetaRM, Algorithm 1.

  >>> print(round(float(metarm_difference_loss(jnp.zeros((1, 2)))[0]), 4))  # −(2/4)·σ(0)
  -0.25
  """
  _check("metarm_difference_loss", 2, rewards=rewards, mask=mask)
  w_BxK = _weights(mask, rewards)
  r_BxK = _clean(rewards, w_BxK)
  k = r_BxK.shape[1]
  upper_KxK = jnp.triu(jnp.ones((k, k), jnp.float32), 1)
  pairs_BxKxK = upper_KxK[None] * w_BxK[:, :, None] * w_BxK[:, None, :]
  gap_BxKxK = jnp.abs(r_BxK[:, :, None] - r_BxK[:, None, :])
  n_B = jnp.sum(w_BxK, axis=1)
  j_B = 2.0 * jnp.sum(jax.nn.sigmoid(gap_BxKxK) * pairs_BxKxK, axis=(1, 2)) / jnp.maximum(
    jnp.square(n_B), 1.0)
  j = _mean(j_B, (n_B >= 2).astype(jnp.float32))
  return -j, {"discrimination": j, "mean_abs_gap": _mean(gap_BxKxK, pairs_BxKxK)}


def _token_positions(u_BxN, mask_BxS):
  """Position of the floor(u·n)-th valid token of each row (n = number of valid tokens)."""
  m_BxS = (jnp.asarray(mask_BxS) != 0).astype(jnp.int32)
  n_B = jnp.sum(m_BxS, axis=1)
  q_BxN = jnp.minimum(jnp.floor(u_BxN * n_B[:, None]).astype(jnp.int32), n_B[:, None] - 1)
  # The q-th valid token sits after exactly the positions whose running count is still <= q.
  below_BxNxS = jnp.cumsum(m_BxS, axis=1)[:, None, :] <= jnp.maximum(q_BxN, 0)[:, :, None]
  pos_BxN = jnp.sum(below_BxNxS, axis=-1)
  return jnp.minimum(pos_BxN, m_BxS.shape[1] - 1), n_B


def goal_contrastive_positions(
    rng: Key[Array, ""] | UInt32[Array, "2"],
    chosen_mask: Bool[Array, "B Sc"] | Real[Array, "B Sc"],
    rejected_mask: Bool[Array, "B Sr"] | Real[Array, "B Sr"], *,
    num_positive: int = 16, num_negative: int = 16,
    source_percentile: float = 0.0, goal_percentile: float = 0.0,
) -> tuple[Int[Array, "B Np"], Int[Array, "B Np"], Int[Array, "B Nn"], Int[Array, "B Nn"],
           Float[Array, " B"]]:
  """Samples the token positions used by `goal_contrastive_loss` (goal-conditioned RM).

  Equation:
    (u_src, u_goal) ~ sort(U(0,1)²),  pos = floor((1 − P)·u · n)-th response token

  For each example: `num_positive` (source, goal) pairs on the chosen response with the goal at or
  after the source, and `num_negative` (anchor, negative) positions, anchors on the chosen and
  negatives on the rejected response. P (source/goal percentile, default 0 = whole response)
  restricts positions to the first (1 − P) of the response. Positions come from the response masks,
  so any padding side works; the reference code counts back from the end of left-padded rows and
  can land one token before the response.

  Args:
    rng: PRNG key.
    chosen_mask: [B, Sc] 1 = response token of the chosen sequence.
    rejected_mask: [B, Sr] 1 = response token of the rejected sequence.
    num_positive: S, sampled (source, goal) pairs per example (`sim_samples`).
    num_negative: U, sampled (anchor, negative) pairs per example (`unsim_samples`).
    source_percentile: P for sources and anchors.
    goal_percentile: P for goals and negatives.

  Returns:
    (source_idx [B, S], goal_idx [B, S], anchor_idx [B, U], negative_idx [B, U], valid [B]);
    valid is 1 where both responses have at least one token.

  TRL:
    none

  References:
    arXiv:2407.13887 (goal-conditioned RM); official code vaskarnathscale/goal-conditioned-rm
    `openrlhf/models/loss.py` (ContrastiveGoalLoss).

  >>> mask = jnp.array([[0, 1, 1, 1]])
  >>> src, goal, _, _, valid = goal_contrastive_positions(jax.random.key(0), mask, mask)
  >>> print(bool((src >= 1).all() & (goal >= src).all()), float(valid[0]))
  True 1.0
  """
  fn = "goal_contrastive_positions"
  _check(fn, 2, chosen_mask=chosen_mask)
  _check(fn, 2, rejected_mask=rejected_mask)
  _check(fn, 1, chosen_rows=chosen_mask[:, 0], rejected_rows=rejected_mask[:, 0])
  k_pos, k_anchor, k_neg = jax.random.split(rng, 3)
  b = chosen_mask.shape[0]
  u_Bx2xS = jnp.sort(jax.random.uniform(k_pos, (b, 2, num_positive)), axis=1)
  source, n_c = _token_positions((1.0 - source_percentile) * u_Bx2xS[:, 0], chosen_mask)
  goal, _ = _token_positions((1.0 - goal_percentile) * u_Bx2xS[:, 1], chosen_mask)
  u_anchor = (1.0 - source_percentile) * jax.random.uniform(k_anchor, (b, num_negative))
  u_neg = (1.0 - goal_percentile) * jax.random.uniform(k_neg, (b, num_negative))
  anchor, _ = _token_positions(u_anchor, chosen_mask)
  negative, n_r = _token_positions(u_neg, rejected_mask)
  return source, goal, anchor, negative, ((n_c > 0) & (n_r > 0)).astype(jnp.float32)


_GOAL_STRATEGIES = ("cosine", "cosine_avg")


def goal_contrastive_loss(
    chosen_hidden: Float[Array, "B Sc D"], rejected_hidden: Float[Array, "B Sr D"],
    source_idx: Int[Array, "B Np"], goal_idx: Int[Array, "B Np"],
    anchor_idx: Int[Array, "B Nn"], negative_idx: Int[Array, "B Nn"],
    mask: MaskB = None, *,
    beta: float = 0.5, strategy: str = "cosine",
) -> tuple[Scalar, Metrics]:
  """Goal-conditioned contrastive loss: chosen states near their future, far from rejected ones.

  Equation:
    L = β [−log mean σ(cos(h_c[src_a], h_c[goal_b])) − log(1 − mean σ(cos(h_c[anc_a], h_r[neg_b])))]

  Means run over all S×S (resp. U×U) cross pairs of every unmasked example, max(count, 1): the
  mean of sigmoids is taken *inside* the log, as in the reference code. "cosine_avg" first
  averages the goal (and negative) embeddings over samples. σ(cos) ∈ [0.27, 0.73], so the loss
  never approaches 0. Added to the Bradley-Terry loss; positions from
  `goal_contrastive_positions`. cos uses per-vector norms max(‖h‖, 1e-8).

  Args:
    chosen_hidden: [B, Sc, D] last-layer hidden states of the chosen sequences.
    rejected_hidden: [B, Sr, D] the same for the rejected sequences.
    source_idx: [B, S] source positions in the chosen sequence.
    goal_idx: [B, S] goal positions in the chosen sequence (at or after the sources).
    anchor_idx: [B, U] anchor positions in the chosen sequence.
    negative_idx: [B, U] positions in the rejected sequence.
    mask: [B] 1 = example counts (`valid` from the sampler); None = all count.
    beta: weight β (reference script: 0.5).
    strategy: "cosine" or "cosine_avg".

  Returns:
    (loss [], metrics) with positive_cosine and negative_cosine (mean cos of the pairs).

  TRL:
    none

  References:
    arXiv:2407.13887 (goal-conditioned RM); official code vaskarnathscale/goal-conditioned-rm
    `openrlhf/models/loss.py` (ContrastiveGoalLoss).

  >>> h, i = jnp.ones((1, 3, 2)), jnp.zeros((1, 2), jnp.int32)
  >>> print(round(float(goal_contrastive_loss(h, h, i, i, i, i)[0]), 4))  # β·log((1+e^-1)(1+e))
  0.8133
  """
  fn = "goal_contrastive_loss"
  _option(fn, dict.fromkeys(_GOAL_STRATEGIES), strategy, "strategy")
  _check(fn, 2, source_idx=source_idx, goal_idx=goal_idx)
  _check(fn, 2, anchor_idx=anchor_idx, negative_idx=negative_idx)
  _check(fn, 3, chosen_hidden=chosen_hidden)
  _check(fn, 3, rejected_hidden=rejected_hidden)
  _check(fn, 1, chosen_rows=chosen_hidden[:, 0, 0], rejected_rows=rejected_hidden[:, 0, 0],
         source_rows=source_idx[:, 0], anchor_rows=anchor_idx[:, 0], mask=mask)
  w_B = _weights(mask, chosen_hidden[:, 0, 0])

  def gather(h_BxSxD, idx_BxN):
    picked_BxNxD = jnp.take_along_axis(jnp.asarray(h_BxSxD, jnp.float32), idx_BxN[:, :, None], 1)
    return _clean(picked_BxNxD, w_B[:, None, None])

  def cos_mean(a_BxNxD, b_BxMxD):
    if strategy == "cosine_avg":  # average raw embeddings first, as the reference code does
      b_BxMxD = jnp.mean(b_BxMxD, axis=1, keepdims=True)
    cos_BxNxM = jnp.einsum("bnd,bmd->bnm", _unit(a_BxNxD), _unit(b_BxMxD))
    pair_w = jnp.broadcast_to(w_B[:, None, None], cos_BxNxM.shape)
    return _mean(jax.nn.sigmoid(cos_BxNxM), pair_w), _mean(cos_BxNxM, pair_w)

  attract, pos_cos = cos_mean(gather(chosen_hidden, source_idx), gather(chosen_hidden, goal_idx))
  repel, neg_cos = cos_mean(gather(chosen_hidden, anchor_idx),
                            gather(rejected_hidden, negative_idx))
  some = jnp.sum(w_B) > 0
  # With nothing unmasked the means are 0 and log(0) would be -inf: log a dummy 1/2 instead.
  loss = -jnp.log(jnp.where(some, attract, 0.5)) - jnp.log(jnp.where(some, 1.0 - repel, 0.5))
  return jnp.where(some, beta * loss, 0.0), {"positive_cosine": pos_cos,
                                             "negative_cosine": neg_cos}
