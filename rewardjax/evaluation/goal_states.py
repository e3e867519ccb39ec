"""Goal states and Q-values of a reward model's hidden states (Nath et al., "Learning
Goal-Conditioned Representations for Language Reward Models", arXiv 2407.13887 §3.3, §4.2).

The goal state g is the mean last-token hidden state of correct responses; the Q-value of a
partial response is cos(h_t, g). A response is kept by the paper's filter iff every one of its
tokens stays above a threshold, so its score here is the minimum Q over its tokens; the probe
reports how well that score (and the last token's Q) separates correct from wrong held-out
responses (AUROC). Any reward model with hidden states can be probed; the goal-conditioned
objective is trained to make the separation large.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from rewardjax import sharding
from rewardjax.algorithms import reward_model_records as rmr
from rewardjax.models import heads


def goal_state(hidden: Float[Array, "B S D"], attention_mask: Int[Array, "B S"]) -> jax.Array:
  """g [D]: the mean last-token hidden state of the rows (correct responses)."""
  return heads.last_token_pool(hidden, attention_mask).astype(jnp.float32).mean(axis=0)


def q_values(hidden: Float[Array, "B S D"], goal: Float[Array, " D"]) -> jax.Array:
  """Q(s_t) = cos(h_t, g) at every position [B, S] (1e-8 guards a zero norm)."""
  h = hidden.astype(jnp.float32)
  return (h @ goal) / (jnp.linalg.norm(h, axis=-1) * jnp.linalg.norm(goal) + 1e-8)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
  """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U).

  >>> auroc(np.array([2.0, 3.0]), np.array([1.0, 2.0]))
  0.875
  """
  p, n = np.asarray(positive, np.float64)[:, None], np.asarray(negative, np.float64)[None]
  return float(np.mean((p > n) + 0.5 * (p == n)))


_hidden = jax.jit(lambda graphdef, params, tokens, attention_mask: nnx.merge(
    graphdef, params).backbone.hidden_states(tokens, attention_mask=attention_mask)[0],
    static_argnums=0)


def probe(graphdef, params, setup, pairs: Sequence[dict]) -> dict[str, float]:
  """Goal state from the first half of held-out pairs' correct responses; AUROC of the min-
  token and last-token Q-values of the second half's correct vs wrong responses.

  Returns {"goal/auroc_min", "goal/auroc_last"} ({} with fewer than 4 pairs).
  """
  if len(pairs) < 4:
    return {}
  half = len(pairs) // 2
  fit, test = pairs[:half], pairs[half:]

  def hidden(prompts, responses):
    arrays = rmr.response_rows(setup, prompts, responses)
    tokens, mask = arrays["tokens"], arrays["attention_mask"]
    h = sharding.gather(_hidden(graphdef, params, *sharding.feed((tokens, mask))))
    response = np.concatenate([np.zeros_like(arrays["loss_mask"][:, :1]),
                               arrays["loss_mask"]], axis=1)  # token j is a response token
    return jnp.asarray(h), jnp.asarray(mask), response

  h, mask, _ = hidden([p["prompt"] for p in fit], [p["chosen"] for p in fit])
  g = goal_state(h, mask)
  h, mask, response = hidden([p["prompt"] for p in test] * 2,
                             [p["chosen"] for p in test] + [p["rejected"] for p in test])
  q = np.asarray(q_values(h, g))
  q_min = np.where(response > 0, q, np.inf).min(axis=1)
  q_last = np.asarray(heads.last_token_pool(jnp.asarray(q)[..., None], mask))[:, 0]
  n = len(test)
  return {"goal/auroc_min": auroc(q_min[:n], q_min[n:]),
          "goal/auroc_last": auroc(q_last[:n], q_last[n:])}
