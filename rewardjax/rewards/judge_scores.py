"""A generative judge's verdict read from its next-token logits, or parsed from its text.

The judge (often the policy itself) is prompted to answer with one token: "Yes"/"No" (GenRM),
a score digit (G-Eval) or a position label "A"/"B" (MT-Bench pairwise). Reading the
probabilities of those candidate tokens at the answer position gives a smooth reward instead of
a sampled, parsed one. Each probability is renormalised over the candidates only, so the mass
the judge puts on other tokens (" Yes", "yes", a newline) does not shrink the reward; this
makes every reward invariant to adding a constant to all logits. Logits are upcast to float32.

Token ids are static Python ints (they come from the tokenizer), checked at trace time.
`parse_score` is the host-side fallback for a judge that writes its score as text.
"""

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

__all__ = [
    "debiased_pairwise", "expected_score", "pairwise_probability", "parse_score",
    "yes_probability",
]

# Longest digit run `parse_score` converts: int() on a 10^5-digit string costs quadratic time
# (and raises above Python's 4300-digit limit); no score needs more than 6 digits.
_MAX_DIGITS = 6
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
# A number right after one of these is a scale's maximum ("85/100", "85 out of 100").
_DENOMINATOR_RE = re.compile(r"(?:/|\bout\s+of)\s*$", re.IGNORECASE)
_ASCII_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _check_id(name, token_id, vocab):
  if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
    raise ValueError(f"{name} must be a static int token id, got {token_id!r}")
  if not 0 <= token_id < vocab:
    raise ValueError(f"{name}={token_id} is outside the vocabulary [0, {vocab})")
  return int(token_id)


def _two_way(logits_BxV, i, j, names):
  """p(i) / (p(i) + p(j)) = sigmoid(l_i - l_j): the softmax over the two candidates."""
  vocab = jnp.shape(logits_BxV)[-1]
  i, j = _check_id(names[0], i, vocab), _check_id(names[1], j, vocab)
  if i == j:
    raise ValueError(f"{names[0]} and {names[1]} are the same token ({i})")
  logits_BxV = _f32(logits_BxV)
  # sigmoid of the difference: no exp of a raw logit, so large logits cannot overflow.
  return jax.lax.stop_gradient(jax.nn.sigmoid(logits_BxV[:, i] - logits_BxV[:, j]))


def yes_probability(logits_BxV: Float[Array, "B V"], yes_id: int, no_id: int) -> Float[Array, " B"]:
  r"""Probability that the judge answers "Yes", renormalised over {Yes, No}.

    r = p(yes) / (p(yes) + p(no)) = sigmoid(l_yes - l_no)

  GenRM's direct verifier uses p(Yes) over the full vocabulary; renormalising over the two
  verdict tokens removes the mass on formatting tokens and is shift-invariant.

  Args:
    logits_BxV: [B, V] judge logits at the position that emits the verdict.
    yes_id: token id of "Yes" (static int).
    no_id: token id of "No" (static int, different from yes_id).

  Returns:
    [B] float32 probabilities in (0, 1) (constant).

  References:
    Zhang et al., "Generative Verifiers: Reward Modeling as Next-Token Prediction",
    arXiv 2408.15240, direct GenRM verifier (score = p(Yes | x, y, I)).

  >>> print(round(float(yes_probability(jnp.array([[2.0, 5.0, 0.0]]), 2, 0)[0]), 4))  # sig(-2)
  0.1192
  """
  return _two_way(logits_BxV, yes_id, no_id, ("yes_id", "no_id"))


def pairwise_probability(logits_BxV: Float[Array, "B V"], a_id: int,
                         b_id: int) -> Float[Array, " B"]:
  r"""Probability that a pairwise judge picks the first-shown response, label "A" over "B".

    P(A) = p(A) / (p(A) + p(B)) = sigmoid(l_A - l_B)

  "A" is the label of the response shown first in the prompt, whatever that response is; see
  `debiased_pairwise` for combining both presentation orders.

  Args:
    logits_BxV: [B, V] judge logits at the position that emits the verdict label.
    a_id: token id of the first-position label "A" (static int).
    b_id: token id of the second-position label "B".

  Returns:
    [B] float32 probabilities in (0, 1) (constant).

  References:
    Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", arXiv 2306.05685,
    §3.1 (pairwise comparison).

  >>> print(round(float(pairwise_probability(jnp.array([[0.0, 1.0]]), 1, 0)[0]), 4))  # sig(1)
  0.7311
  """
  return _two_way(logits_BxV, a_id, b_id, ("a_id", "b_id"))


def debiased_pairwise(p_ab_B: Float[Array, " B"], p_ba_B: Float[Array, " B"]) -> Float[Array, " B"]:
  r"""Position-debiased probability that response 1 beats response 2, from both orders.

    P(1 > 2) = 1/2 [P_12(A) + (1 - P_21(A))]

  P_xy(A) is `pairwise_probability` (the probability of the first-position label "A") when
  response x is shown first and y second. So p_ab = P_12(A) is the probability that response 1
  wins when shown first, and p_ba = P_21(A) is the probability that response 2 wins when it is
  shown first; 1 - p_ba = P_21(B) is the probability that response 1 wins when shown second.
  Compute both with the same `a_id`, `b_id`. A judge that only prefers a position
  (p_ab = p_ba) gets exactly 1/2; a position-consistent judge (p_ba = 1 - p_ab) is unchanged.
  The debiased probability of response 2 is 1 - P(1 > 2).

  Args:
    p_ab_B: [B] P(label A) with response 1 shown first (in [0, 1]).
    p_ba_B: [B] P(label A) with the order swapped, response 2 shown first.

  Returns:
    [B] float32 probabilities in [0, 1] (constant).

  References:
    Zheng et al., arXiv 2306.05685, §3.3-3.4 (position bias; swapping positions). The
    averaging form (instead of MT-Bench's "win only if both orders agree") follows the
    soft-label use in self-rewarding pipelines.

  >>> [round(float(p), 4) for p in debiased_pairwise(jnp.array([0.7, 0.8]), jnp.array([0.7, 0.2]))]
  [0.5, 0.8]
  """
  p_ab_B, p_ba_B = _f32(p_ab_B), _f32(p_ba_B)
  return jax.lax.stop_gradient(0.5 * (p_ab_B + (1.0 - p_ba_B)))


def _static_ids(candidate_ids_K, vocab):
  try:
    ids_K = np.asarray(candidate_ids_K)
  except jax.errors.TracerArrayConversionError as e:
    raise ValueError("candidate_ids_K must be static (a list of ints or a concrete array), not "
                     "a traced value: pass them outside jit or close over them") from e
  if ids_K.ndim != 1 or ids_K.size == 0 or not np.issubdtype(ids_K.dtype, np.integer):
    raise ValueError(f"candidate_ids_K must be a non-empty 1-D list of int token ids, got "
                     f"{candidate_ids_K!r}")
  if len(np.unique(ids_K)) != ids_K.size:
    # A repeated id would count that token's probability twice in the renormalisation.
    raise ValueError(f"candidate_ids_K must be distinct, got {ids_K.tolist()}")
  if ids_K.min() < 0 or ids_K.max() >= vocab:
    raise ValueError(f"candidate_ids_K {ids_K.tolist()} fall outside the vocabulary [0, {vocab})")
  return ids_K


def expected_score(
    logits_BxV: Float[Array, "B V"],
    candidate_ids_K: Sequence[int] | Int[np.ndarray, " K"] | Int[Array, " K"],
    values_K: Sequence[float | int] | Float[np.ndarray, " K"] | Float[Array, " K"],
) -> Float[Array, " B"]:
  r"""Expected score under the judge's distribution over the score tokens (G-Eval).

    s = sum_k v_k p_k,   p = softmax(logits[candidate_ids])    (renormalised over K tokens)

  Args:
    logits_BxV: [B, V] judge logits at the position that emits the score token.
    candidate_ids_K: [K] distinct token ids of the score tokens (static; e.g. "1".."5").
    values_K: [K] the score each token stands for (may be traced).

  Returns:
    [B] float32 expected scores in [min v, max v] (constant).

  Raises:
    ValueError: at trace time, if the ids are traced, repeated, empty, out of the vocabulary,
      or not as many as the values.

  References:
    Liu et al., "G-Eval: NLG Evaluation using GPT-4 with Better Human Alignment",
    arXiv 2303.16634, §2.3 (score = sum_i p(s_i) s_i).

  >>> logits = jnp.log(jnp.array([[0.0, 0.2, 0.3, 0.5]]) + 1e-30)
  >>> print(round(float(expected_score(logits, [1, 2, 3], [1.0, 2.0, 3.0])[0]), 4))
  2.3
  """
  logits_BxV = _f32(logits_BxV)
  ids_K = _static_ids(candidate_ids_K, logits_BxV.shape[-1])
  values_K = _f32(values_K)
  if values_K.shape != ids_K.shape:
    raise ValueError(f"values_K has shape {values_K.shape}, candidate_ids_K {ids_K.shape}")
  # softmax over the K candidates only: invariant to a shift of all logits, stable for large ones.
  p_BxK = jax.nn.softmax(logits_BxV[:, ids_K], axis=-1)
  return jax.lax.stop_gradient(jnp.sum(p_BxK * values_K[None, :], axis=-1))


def parse_score(text: str, low: int = 0, high: int = 100) -> float | None:
  """The last integer in [low, high] written in a judge's reply, or None.

  Rules, in order, for each run of digits (host-side, no jax):
    * a decimal ("7.5") is not an integer and is skipped (never read as 5);
    * digits glued to an ASCII letter or "_" are part of a word ("Qwen2", "2nd") and skipped;
    * a scale's maximum after "/" or "out of" ("85/100", "85 out of 100") is skipped;
    * "-" right before the digits, not after a letter or digit, makes the number negative;
    * runs longer than 6 digits are skipped before int() (guards against absurd strings).
  Of the integers left, the last one inside [low, high] is returned as a float.

  Args:
    text: the judge's reply (SSR-Zero asks for a score from 0 to 100).
    low: smallest valid score.
    high: largest valid score.

  Returns:
    The score as a float, or None if no integer in [low, high] is found.

  References:
    Yang et al., "SSR-Zero: Simple Self-Rewarding Reinforcement Learning for Machine
    Translation", arXiv 2505.16637 (GEMBA-DA-style self-judging score from 0 to 100).

  >>> parse_score("Accuracy is fine. Final score: 85/100")
  85.0
  >>> parse_score("Score: 7.5 out of 10", high=10) is None
  True
  """
  if low > high:
    raise ValueError(f"low={low} > high={high}")
  found = None
  for match in _NUMBER_RE.finditer(text):
    digits, start, end = match.group(), match.start(), match.end()
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    if "." in digits or before == "." or len(digits) > _MAX_DIGITS:
      continue
    if before in _ASCII_WORD or after in _ASCII_WORD:
      continue
    if _DENOMINATOR_RE.search(text, max(0, start - 16), start):
      continue
    value = int(digits)
    before_sign = text[start - 2] if start > 1 else ""
    if before == "-" and not before_sign.isalnum():
      value = -value
    if low <= value <= high:
      found = float(value)
  return found
