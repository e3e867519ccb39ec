"""On-policy self-distillation from a reward-conditioned reviser (SD-Zero, arXiv 2604.12002).

One model plays generator and reviser. On the generator's own sample y of prompt x, the
teacher is the same model with frozen parameters θ̄ reading the reviser context c = (x, y, r(y),
revise instruction): at each completion position t it gives a full next-token distribution
q_t = π_θ̄(· | c, y_<t), and the student p_t = π_θ(· | x, y_<t) is pulled towards it by a
per-token divergence over the whole vocabulary. The binary reward r becomes dense token-level
targets: the reviser moves mass mainly where the attempt needs revising.

Inputs are full-vocabulary log-probs [B, T, V]. The embedded model's V is ~100 characters, so
this is cheap; at V = 152k (Qwen2.5) one [B, T, V] float32 teacher tensor is 0.6 MB per token
(B T V 4 bytes: 40 GB for 128 x 512 tokens), so large vocabularies need a truncated teacher
support (top-k of q plus a remainder bucket) or chunked recomputation, not implemented here.
Nothing here calls a model.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Shaped

from rewardjax.losses.policy import reduce_loss

__all__ = ["DIVERGENCES", "self_distillation_loss", "token_divergence"]

DIVERGENCES = ("forward_kl", "reverse_kl")


def token_divergence(student_logprobs: Float[Array, "B T V"],
                     teacher_logprobs: Float[Array, "B T V"],
                     divergence: str = "reverse_kl") -> Float[Array, "B T"]:
  """Per-token divergence between the teacher q_t and the student p_t over the vocabulary.

  Equation:
    forward_kl: KL(q_t || p_t) = sum_v q_t(v) (log q_t(v) - log p_t(v))
    reverse_kl: KL(p_t || q_t) = sum_v p_t(v) (log p_t(v) - log q_t(v))

  Forward KL is mass-covering, reverse KL mode-seeking.

  The teacher is a constant (stop_gradient). Terms with zero probability in the weighting
  distribution count 0 (0 log 0 = 0), so a teacher with -inf log-probs (a truncated support)
  stays finite in the forward direction.

  Args:
    student_logprobs: [B, T, V] log p_t, normalised over V (carries the gradient).
    teacher_logprobs: [B, T, V] log q_t, normalised over V.
    divergence: "forward_kl" | "reverse_kl".

  Returns:
    [B, T] float32 divergences (>= 0).

  TRL:
    GKDTrainer's generalised JSD with beta 0 / 1 (forward / reverse KL over the vocabulary)

  References:
    SD-Zero, arXiv 2604.12002 (abstract: token-level self-distillation from a reward-conditioned
    reviser); Agarwal et al., GKD, arXiv 2306.13649, §3 (on-policy distillation, both
    directions).

  >>> s = jnp.log(jnp.array([[[0.5, 0.5]]])); t = jnp.log(jnp.array([[[0.25, 0.75]]]))
  >>> round(float(token_divergence(s, t, "reverse_kl")[0, 0]), 4)  # .5 ln 2 + .5 ln(2/3)
  0.1438
  """
  if divergence not in DIVERGENCES:
    raise ValueError(f"unknown divergence {divergence!r}; valid: {list(DIVERGENCES)}")
  if student_logprobs.shape != teacher_logprobs.shape or student_logprobs.ndim != 3:
    raise ValueError(f"student {student_logprobs.shape} and teacher {teacher_logprobs.shape} "
                     "log-probs must both be [B, T, V]")
  log_p = student_logprobs.astype(jnp.float32)
  log_q = jax.lax.stop_gradient(teacher_logprobs.astype(jnp.float32))
  if divergence == "forward_kl":
    q = jnp.exp(log_q)
    # q = 0 where log q = -inf: 0 * (-inf) would be NaN; the term is 0.
    terms = jnp.where(q > 0, q * (log_q - log_p), 0.0)
  else:
    p = jnp.exp(log_p)
    terms = jnp.where(p > 0, p * (log_p - log_q), 0.0)
  return terms.sum(axis=-1)


def self_distillation_loss(
    student_logprobs: Float[Array, "B T V"],
    teacher_logprobs: Float[Array, "B T V"],
    mask: Shaped[Array, "B T"],
    *,
    divergence: str = "reverse_kl",
    loss_agg: str = "token-mean",
) -> tuple[Float[Array, ""], dict[str, jax.Array]]:
  """SD-Zero's self-distillation loss on the student's own sampled completions.

  Equation:
    L = reduce(D(q_t, p_t), mask); p_t = π_θ(· | x, y_<t), q_t = sg π_θ̄(· | x, y, r(y), p, y_<t)

  p is the revise instruction.

  with D = `token_divergence` and y the student's own sample (the attempt the teacher reads is
  the same sample it then scores token by token).

  Args:
    student_logprobs: [B, T, V] student log-probs at the completion positions.
    teacher_logprobs: [B, T, V] teacher log-probs at the same tokens (constants).
    mask: [B, T] 1 on completion tokens that count.
    divergence: "forward_kl" | "reverse_kl" (the abstract does not say which; reverse is the
      usual on-policy distillation choice).
    loss_agg: a `reduce_loss` mode (default "token-mean").

  Returns:
    (loss [], metrics) with token means: forward_kl, reverse_kl (both directions logged),
    teacher_agreement (share of positions where both argmaxes agree), teacher_entropy,
    student_entropy.

  Normalisers: those of `loss_agg` (token-mean: sum m, guarded by max(., 1)).

  TRL:
    none (GKDTrainer distils from a separate teacher model with an unconditioned context)

  References:
    SD-Zero, arXiv 2604.12002 (abstract only; the conditioning, divergence direction and
    schedules are our reconstruction).

  >>> s = jnp.log(jnp.array([[[0.5, 0.5], [0.9, 0.1]]])); t = jnp.log(jnp.array([[[0.25, 0.75],
  ...     [0.1, 0.9]]]))
  >>> loss, _ = self_distillation_loss(s, t, jnp.array([[1, 0]]), divergence="forward_kl")
  >>> round(float(loss), 4)  # .25 ln .5 + .75 ln 1.5, the masked second token drops out
  0.1308
  """
  if mask.shape != student_logprobs.shape[:2]:
    raise ValueError(f"mask {mask.shape} must be [B, T] = {student_logprobs.shape[:2]}")
  m_BxT = mask.astype(jnp.float32)
  valid = m_BxT[..., None] > 0
  # Padding positions may hold anything (even NaN): replace them by a uniform distribution.
  uniform = -jnp.log(float(student_logprobs.shape[-1]))
  log_p = jnp.where(valid, student_logprobs.astype(jnp.float32), uniform)
  log_q = jnp.where(valid, teacher_logprobs.astype(jnp.float32), uniform)
  per_token_BxT = token_divergence(log_p, log_q, divergence)
  loss = reduce_loss(per_token_BxT, m_BxT, loss_agg)
  other = "forward_kl" if divergence == "reverse_kl" else "reverse_kl"
  count = jnp.maximum(m_BxT.sum(), 1.0)
  mean = lambda x: (x * m_BxT).sum() / count  # noqa: E731
  q = jnp.exp(jax.lax.stop_gradient(log_q))
  p = jnp.exp(jax.lax.stop_gradient(log_p))
  metrics = {
      divergence: mean(per_token_BxT),
      other: mean(token_divergence(jax.lax.stop_gradient(log_p), log_q, other)),
      "teacher_agreement": mean(jnp.argmax(log_p, -1) == jnp.argmax(log_q, -1)),
      "teacher_entropy": mean(-jnp.where(q > 0, q * log_q, 0.0).sum(-1)),
      "student_entropy": mean(-jnp.where(p > 0, p * log_p, 0.0).sum(-1)),
  }
  return loss, jax.lax.stop_gradient(metrics)
