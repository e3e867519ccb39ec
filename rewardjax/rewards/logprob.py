"""Rewards read from a model's own log-probabilities: self-aligned (SAR) and endogenous rewards.

Every function is pure and jittable and returns a constant (`stop_gradient`): these rewards
score finished rollouts, so no gradient may flow back into the model that produced the
log-probs. Inputs are per-token log-probs (or logits) with a mask (float, int or bool; the
rollouts' `completion_mask` is int32). Masked positions may hold garbage (padding, -inf, NaN)
and are replaced by 0 before any arithmetic. Every mean is guarded with max(count, 1), and a
row with no valid token gets reward 0.

`coherent_reward` (Self-Rewarding PPO, arXiv 2510.21090) lives with its objective in
`rewardjax.losses.self_rewarding` and is re-exported here.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, Shaped

from rewardjax.losses.self_rewarding import coherent_reward

__all__ = [
    "coherent_reward", "endogenous_reward", "endogenous_token_rewards", "self_aligned_reward",
    "value_at",
]

# The official SAR code divides by (A + 1e-9); kept so use_log=True (A = mean NLL, which can be
# ~0) matches it bit for bit.
_SAR_EPS = 1e-9


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _check_alpha(alpha):
  # A traced alpha cannot be checked; a Python number can, and alpha <= 0 is a silent sign flip.
  if isinstance(alpha, (int, float)) and not alpha > 0:
    raise ValueError(f"alpha must be > 0, got {alpha}")


def _masked_mean_nll(logps_BxT, mask_BxT):
  """(-mean of the valid log-probs per row, number of valid tokens per row)."""
  m_BxT = _f32(mask_BxT) > 0
  logps_BxT = jnp.where(m_BxT, _f32(logps_BxT), 0.0)
  count_B = m_BxT.sum(axis=1).astype(jnp.float32)
  return -logps_BxT.sum(axis=1) / jnp.maximum(count_B, 1.0), count_B


def self_aligned_reward(
    answer_logps_BxT: Float[Array, "B Ta"],
    answer_mask_BxT: Shaped[Array, "B Ta"],
    question_logps_BxT: Float[Array, "B Tq"],
    question_mask_BxT: Shaped[Array, "B Tq"],
    *,
    use_log: bool = False,
    use_denominator: bool = True,
    clip_min: float | None = -1.0,
) -> Float[Array, " B"]:
  r"""Self-aligned reward (SAR): how much the question lowers the completion's perplexity.

    ppl(a | q) = exp(-mean_j log P(a_j | q, a_<j))       (question_logps, question_mask)
    ppl(a)     = exp(-mean_j log P(a_j | c0, a_<j))      (answer_logps, answer_mask)
    R_SA       = max((A - QA) / (A + 1e-9), clip_min)     use_denominator=True (default)
               = A - QA                                   use_denominator=False (no clip)
    A, QA      = ppl(a), ppl(a | q);  with use_log=True the mean NLLs log ppl(a), log ppl(a | q)

  c0 is the answer-only context: the official code replaces the question by the system prompt
  and an empty user turn, so the same completion tokens sit at a different offset. Hence the two
  log-prob arrays may have different lengths and alignments; each is averaged over its own mask.
  R_SA > 0 when the completion is more predictable given its question than on its own (it
  answers the question); ppl(a) = 4, ppl(a | q) = 2 gives 0.5, and ppl(a | q) = 10 gives -1.5,
  clipped to -1 as in the official `compute_ppl_qa_log`. Its `clip_value` cap on A and QA is
  not implemented (off by default there).

  Args:
    answer_logps_BxT: [B, Ta] log-probs of the completion tokens in the answer-only context c0.
    answer_mask_BxT: [B, Ta] 1 = completion token in that context.
    question_logps_BxT: [B, Tq] log-probs of the same completion tokens given the real prompt q
      (the rollout's own log-probs).
    question_mask_BxT: [B, Tq] 1 = completion token (the rollout's completion mask).
    use_log: compare mean NLLs (cross-entropies) instead of perplexities.
    use_denominator: divide by A (the paper's relative form) or return the plain difference.
    clip_min: lower clip of the relative form (official: -1); None disables it. Not applied
      when use_denominator=False, as in the official code.

  Returns:
    [B] float32 rewards (constant); 0 for a row where either mask is empty.

  Normalisers: token means over each mask, denominators max(count, 1); 1e-9 added to A.

  References:
    Han et al., "Self-Aligned Reward: Towards Effective and Efficient Reasoners",
    arXiv 2509.05489 (R_SA = clip((ppl(a) - ppl(a|q)) / ppl(a), -1, 1)); official code
    amazon-science/Self-Aligned-Reward-Towards_Effective_and_Efficient_Reasoners
    (`verl/utils/reward_score/efficiency_reward.py::compute_ppl_qa_log`,
    `verl/trainer/ppo/ray_trainer.py::compute_perplexity`, `create_ans_only_batch`).

  >>> ones = jnp.ones((2, 3))
  >>> a = -jnp.log(4.0) * ones                       # ppl(a) = 4 in both rows
  >>> qa = -jnp.log(jnp.array([[2.0], [10.0]])) * ones   # ppl(a|q) = 2, then 10
  >>> [round(float(r), 4) for r in self_aligned_reward(a, ones, qa, ones)]
  [0.5, -1.0]
  >>> [round(float(r), 4) for r in self_aligned_reward(a, ones, qa, ones, clip_min=None)]
  [0.5, -1.5]
  """
  nll_a_B, count_a_B = _masked_mean_nll(answer_logps_BxT, answer_mask_BxT)
  nll_qa_B, count_qa_B = _masked_mean_nll(question_logps_BxT, question_mask_BxT)
  if use_log:
    a_B, qa_B = nll_a_B, nll_qa_B
  else:
    a_B, qa_B = jnp.exp(nll_a_B), jnp.exp(nll_qa_B)
  if use_denominator:
    reward_B = (a_B - qa_B) / (a_B + _SAR_EPS)
    if clip_min is not None:
      reward_B = jnp.maximum(reward_B, clip_min)
  else:
    reward_B = a_B - qa_B
  # An empty row has no completion to score; 0 keeps it out of the group statistics' way.
  valid_B = (count_a_B > 0) & (count_qa_B > 0)
  return jax.lax.stop_gradient(jnp.where(valid_B, reward_B, 0.0))


def value_at(logits_BxV: Float[Array, "*batch V"], alpha: float = 1.0) -> Float[Array, " *batch"]:
  r"""Soft value of a state from its next-token logits read as soft Q-values.

    V(s) = alpha * logsumexp_a(Q(s, a) / alpha),   Q(s, .) = logits(s)

  Args:
    logits_BxV: [..., V] logits at the position that predicts the next token (any leading
      shape, e.g. [B, V] or [B, T, V]).
    alpha: entropy temperature alpha > 0 (the policy is softmax(logits / alpha)).

  Returns:
    [...] float32 values (logits upcast to float32 before the logsumexp).

  References:
    Li et al., "Generalist Reward Models: Found Inside Large Language Models",
    arXiv 2506.23235, §3 (V_Q).

  >>> print(round(float(value_at(jnp.zeros((1, 4)))[0]), 4))   # log 4
  1.3863
  >>> print(round(float(value_at(jnp.array([[0.0, 1.0]]), 0.5)[0]), 4))   # 0.5 log(1 + e^2)
  1.0635
  """
  _check_alpha(alpha)
  # float32 before the logsumexp: bf16 logits lose the small differences that set V.
  return alpha * jax.nn.logsumexp(_f32(logits_BxV) / alpha, axis=-1)


def endogenous_reward(
    token_logps_BxT: Float[Array, "B T"],
    mask_BxT: Shaped[Array, "B T"],
    first_value_B: Float[Array, " B"],
    *,
    alpha: float = 1.0,
) -> Float[Array, " B"]:
  r"""Endogenous sequence reward of a completion, from its token log-probs and V(s_1).

    r(tau) = sum_t r_t = alpha * sum_t m_t log pi(y_t | s_t) + V(s_1),
    pi = softmax(logits / alpha),  V(s_1) = alpha logsumexp(logits(s_1) / alpha)

  the telescoped sum of the inverse-soft-Bellman token rewards
  r_t = Q(s_t, y_t) - V(s_{t+1}) = alpha log pi(y_t | s_t) + V(s_t) - V(s_{t+1}), with V = 0 after
  the last token (`endogenous_token_rewards` is the per-token reference). s_1 is the prompt, so
  V(s_1) = `value_at(logits at the position predicting the first completion token, alpha)`; the
  caller passes it and this function never needs [B, T, V] logits. The sum includes EOS (pass
  the completion mask that covers it). With alpha != 1 the log-probs must be at temperature
  alpha, log_softmax(logits / alpha), not the rollout's temperature-1 log-probs. The identity
  with the token rewards needs the mask to be one contiguous run per row.

  Args:
    token_logps_BxT: [B, T] log pi(y_t | s_t) of the completion tokens at temperature alpha,
      under the model that acts as the reward model (a frozen base or SFT model).
    mask_BxT: [B, T] 1 = completion token, EOS included.
    first_value_B: [B] V(s_1) from `value_at`.
    alpha: entropy temperature alpha > 0 (the paper uses 1).

  Returns:
    [B] float32 rewards (constant, no normaliser); 0 for a row with no completion token.

  References:
    Li et al., "Generalist Reward Models: Found Inside Large Language Models",
    arXiv 2506.23235, §3, Eq. 9-12 (inverse soft Bellman operator, trajectory reward).

  >>> logps = jnp.log(jnp.array([[0.5, 0.5]]))    # two tokens from uniform 2-way softmaxes
  >>> v1 = value_at(jnp.zeros((1, 2)))             # log 2
  >>> print(round(float(endogenous_reward(logps, jnp.ones((1, 2)), v1)[0]), 4))   # 2 log .5 + log 2
  -0.6931
  """
  _check_alpha(alpha)
  m_BxT = _f32(mask_BxT) > 0
  logps_BxT = jnp.where(m_BxT, _f32(token_logps_BxT), 0.0)
  has_tokens_B = m_BxT.any(axis=1)
  # V(s_1) belongs to the trajectory only if it has a step; an empty row scores 0, as the sum of
  # its (all-masked) token rewards does.
  first_B = jnp.where(has_tokens_B, _f32(first_value_B), 0.0)
  return jax.lax.stop_gradient(alpha * logps_BxT.sum(axis=1) + first_B)


def endogenous_token_rewards(
    logits_BxTxV: Float[Array, "B T V"],
    targets_BxT: Int[Array, "B T"],
    mask_BxT: Shaped[Array, "B T"],
    *,
    alpha: float = 1.0,
) -> Float[Array, "B T"]:
  r"""Endogenous token rewards by the inverse soft Bellman operator on the logits.

    r_t = m_t [Q(s_t, y_t) - m_{t+1} V(s_{t+1})],   Q(s_t, .) = logits[t],
    V(s) = alpha logsumexp(Q(s, .) / alpha)

  logits[t] is the position that predicts targets[t] (already shifted by one, as in
  `rewardjax.logprobs`). V of a position outside the mask is 0, so the last completion token
  (EOS) gets r = Q(s_T, y_T) and sum_t r_t = `endogenous_reward` for a contiguous mask. This is
  the reference definition; it needs the [B, T, V] logits, the sequence form does not.

  Args:
    logits_BxTxV: [B, T, V] logits of the reward model at the positions predicting targets.
    targets_BxT: [B, T] completion token ids y_t (any value where masked).
    mask_BxT: [B, T] 1 = completion token, EOS included.
    alpha: entropy temperature alpha > 0.

  Returns:
    [B, T] float32 token rewards (constant), 0 where masked.

  References:
    Li et al., "Generalist Reward Models: Found Inside Large Language Models",
    arXiv 2506.23235, §3, Eq. 9-10 (inverse soft Bellman operator).

  >>> r = endogenous_token_rewards(jnp.zeros((1, 2, 2)), jnp.array([[0, 1]]), jnp.ones((1, 2)))
  >>> [round(float(v), 4) for v in r[0]]           # [0 - log 2, 0 - 0]
  [-0.6931, 0.0]
  """
  _check_alpha(alpha)
  logits_BxTxV = _f32(logits_BxTxV)
  m_BxT = _f32(mask_BxT) > 0
  # Padding ids (e.g. -100) would gather out of range; any in-range id is fine under the mask.
  targets_BxT = jnp.where(m_BxT, targets_BxT, 0)
  q_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  v_BxT = jnp.where(m_BxT, value_at(logits_BxTxV, alpha), 0.0)
  # V(s_{t+1}): shift left by one; past the end of the array, as past the mask, V = 0.
  v_next_BxT = jnp.concatenate([v_BxT[:, 1:], jnp.zeros_like(v_BxT[:, :1])], axis=1)
  return jax.lax.stop_gradient(jnp.where(m_BxT, q_BxT - v_next_BxT, 0.0))
