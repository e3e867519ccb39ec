"""The VPL reward model: a backbone, a set encoder q(z | C) and a latent-conditioned decoder.

Poddar et al., arXiv 2408.10075 §4 and the authors' LLM code (WEIRDLabUW/vpl_llm):

    e = last-token hidden state of (prompt | response)                      [N, D]
    pair encoder  h_c = MLP([e_chosen ; e_rejected])      2D → H → H → L   (LeakyReLU 0.2)
    set encoder   a = softmax(Q Kᵀ / √L) V over a user's C context pairs, mean over the set
                  μ = W_μ ā,  log σ² = W_σ ā                               [B, L]
    decoder       r(e, z) = MLP([e ; z])                  D+L → H → H → 1  (LeakyReLU 0.2)

The backbone is the language model (`transformer.Transformer`, as in `heads.ScalarModel`, so a
pretrained LM's params load into `backbone`). The paper uses L = H = 512 on top of a 2B-7B LLM;
the embedded default is L = 16, H = 64 for the D = 128 tiny model.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from rewardjax.losses import vpl as vpl_losses
from rewardjax.models.heads import last_token_pool
from rewardjax.models.transformer import ModelConfig, Transformer

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope of the code's encoder and decoder MLPs


@dataclasses.dataclass(frozen=True)
class VPLConfig:
  """Sizes of the encoder and decoder (the backbone's come from its ModelConfig)."""
  latent_dim: int = 16            # L (paper: 512)
  hidden_dim: int = 64            # H of the pair encoder and decoder MLPs (paper: 512)
  clamp: bool = True              # clamp μ and log σ² to [−1, 1] (the LLM code does)


class MLP(nnx.Module):
  """Linear → LeakyReLU(0.2) → Linear → LeakyReLU(0.2) → Linear, in float32."""

  def __init__(self, sizes: tuple[int, int, int, int], *, rngs: nnx.Rngs):
    self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

  def __call__(self, x: Float[Array, "... I"]) -> Float[Array, "... O"]:
    x = x.astype(jnp.float32)
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if i < len(self.layers) - 1:
        x = jax.nn.leaky_relu(x, NEGATIVE_SLOPE)
    return x


class SetEncoder(nnx.Module):
  """q(z | C): pair encoder, single-head self-attention over the set, mean, linear heads."""

  def __init__(self, embed_dim: int, config: VPLConfig, *, rngs: nnx.Rngs):
    h, d = config.hidden_dim, config.latent_dim
    self.pair = MLP((2 * embed_dim, h, h, d), rngs=rngs)
    self.query, self.key, self.value = (nnx.Linear(d, d, rngs=rngs) for _ in range(3))
    self.mean = nnx.Linear(d, d, rngs=rngs)
    self.log_var = nnx.Linear(d, d, rngs=rngs)
    self.clamp = config.clamp

  def __call__(self, chosen: Float[Array, "B C D"], rejected: Float[Array, "B C D"]
               ) -> tuple[Float[Array, "B L"], Float[Array, "B L"]]:
    pairs_BxCxL = self.pair(jnp.concatenate([chosen, rejected], axis=-1))
    q_BxCxL, k_BxCxL, v_BxCxL = (f(pairs_BxCxL) for f in (self.query, self.key, self.value))
    logits_BxCxC = jnp.einsum("bcl,bkl->bck", q_BxCxL, k_BxCxL) / jnp.sqrt(
        float(q_BxCxL.shape[-1]))
    attended_BxCxL = jnp.einsum("bck,bkl->bcl", jax.nn.softmax(logits_BxCxC, axis=-1), v_BxCxL)
    pooled_BxL = attended_BxCxL.mean(axis=1)
    mean, log_var = self.mean(pooled_BxL), self.log_var(pooled_BxL)
    if self.clamp:
      mean, log_var = vpl_losses.clamp_posterior(mean, log_var)
    return mean, log_var


class VPLModel(nnx.Module):
  """Backbone + `SetEncoder` + decoder. `model(tokens, attention_mask=m, z=z)` is the reward
  [N] of each row under its latent z [N, L] (z = 0 if omitted: the prior's mean)."""

  def __init__(self, config: ModelConfig, vpl: VPLConfig = VPLConfig(), *, rngs: nnx.Rngs,
               backbone: Transformer | None = None):
    self.backbone = backbone if backbone is not None else Transformer(config, rngs=rngs)
    self.encoder = SetEncoder(config.hidden_size, vpl, rngs=rngs)
    self.decoder = MLP((config.hidden_size + vpl.latent_dim, vpl.hidden_dim, vpl.hidden_dim, 1),
                       rngs=rngs)
    self.latent_dim = vpl.latent_dim

  def embed(self, tokens: Int[Array, "N S"],
            attention_mask: Int[Array, "N S"]) -> Float[Array, "N D"]:
    """Last-real-token hidden state of each row, float32."""
    hidden_NxSxD, _ = self.backbone.hidden_states(tokens, attention_mask=attention_mask)
    return last_token_pool(hidden_NxSxD, attention_mask).astype(jnp.float32)

  def reward(self, features: Float[Array, "N D"], z: Float[Array, "N L"]) -> Float[Array, " N"]:
    """r(e, z) = decoder([e ; z])."""
    return self.decoder(jnp.concatenate([features, z.astype(jnp.float32)], axis=-1))[..., 0]

  def __call__(self, tokens: Int[Array, "N S"], *, attention_mask: Int[Array, "N S"] | None = None,
               z: Float[Array, "N L"] | None = None) -> Float[Array, " N"]:
    if attention_mask is None:
      attention_mask = jnp.ones(tokens.shape, jnp.int32)
    if z is None:
      z = jnp.zeros((tokens.shape[0], self.latent_dim), jnp.float32)
    return self.reward(self.embed(tokens, attention_mask), z)
