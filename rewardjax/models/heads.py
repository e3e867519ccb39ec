"""Scalar heads on a decoder backbone: reward models (last token) and PPO critics (every token)."""

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from rewardjax.models.transformer import ModelConfig, Transformer


def last_token_index(attention_mask: Int[Array, "B S"]) -> Int[Array, " B"]:
  """Index of the last real token of each row (works for left and right padding; 0 if empty).

  >>> import jax.numpy as jnp
  >>> last_token_index(jnp.array([[0, 1, 1, 0], [1, 0, 0, 0]])).tolist()
  [2, 0]
  """
  positions_S = jnp.arange(attention_mask.shape[1])
  return jnp.max(jnp.where(attention_mask > 0, positions_S, 0), axis=1)


def last_token_pool(hidden: Float[Array, "B S D"],
                    attention_mask: Int[Array, "B S"]) -> Float[Array, "B D"]:
  """Hidden state of the last real token of each row, [B, D]."""
  index_B = last_token_index(attention_mask)
  return jnp.take_along_axis(hidden, index_B[:, None, None], axis=1)[:, 0]


class ScalarHead(nnx.Module):
  """score = hidden . w (+ b), one scalar per position, in float32.

  `bias=False` drops `b`: Hugging Face `*ForSequenceClassification` score heads have no bias, so
  a reward model meant for export (`hf_reward.save_reward_model`) is trained without one.
  """

  def __init__(self, hidden_size: int, *, rngs: nnx.Rngs, param_dtype="float32",
               bias: bool = True):
    self.w_d = nnx.Param(nnx.initializers.normal(1.0 / hidden_size ** 0.5)(
        rngs.params(), (hidden_size,), param_dtype), logical_axes=("embed",))
    self.use_bias = bias
    if bias:
      self.b = nnx.Param(jnp.zeros((), param_dtype), logical_axes=())

  def __call__(self, hidden: Float[Array, "... D"]) -> Float[Array, "..."]:
    score = jnp.einsum("...d,d->...", hidden.astype(jnp.float32),
                       self.w_d[...].astype(jnp.float32))
    return score + self.b[...].astype(jnp.float32) if self.use_bias else score


class ScalarModel(nnx.Module):
  """A backbone with a scalar head: reward model (`pool="last"`) or value model (`pool="none"`).

  `model(tokens, attention_mask=mask)` returns [B] scores for "last" (the head on the last real
  token) and [B, S] per-position values for "none". `bias` is the head's (see `ScalarHead`).
  """

  def __init__(self, config: ModelConfig, *, pool: str = "last", rngs: nnx.Rngs,
               backbone: Transformer | None = None, bias: bool = True):
    if pool not in ("last", "none"):
      raise ValueError(f"pool={pool!r}; use 'last' (reward model) or 'none' (value model)")
    self.backbone = backbone if backbone is not None else Transformer(config, rngs=rngs)
    self.head = ScalarHead(config.hidden_size, rngs=rngs, param_dtype=config.param_dtype,
                           bias=bias)
    self.pool = pool

  def __call__(self, tokens: Int[Array, "B S"], *,
               attention_mask: Int[Array, "B S"] | None = None,
               positions: Int[Array, "B S"] | None = None) -> jax.Array:
    if attention_mask is None:
      attention_mask = jnp.ones(tokens.shape, jnp.int32)
    hidden, _ = self.backbone.hidden_states(tokens, positions=positions,
                                            attention_mask=attention_mask)
    if self.pool == "last":
      return self.head(last_token_pool(hidden, attention_mask))
    return self.head(hidden)
