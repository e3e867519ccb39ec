"""Decoder-only language model covering the Llama 3, Qwen2/Qwen2.5 and Qwen3 families (Flax NNX).

One implementation, switched by `ModelConfig` fields: `qkv_bias` (Qwen2), `qk_norm` (Qwen3),
`rope_type="llama3"` (Llama 3.x rope scaling), `tie_word_embeddings`. Parameters carry
`logical_axes` metadata that `rewardjax.sharding` maps to mesh axes.

Masks are structural (see `kernels/attention.py`): `attention_mask` [B, S] marks real tokens,
positions default to `cumsum(mask) - 1`, so left-padded prompts get the same RoPE positions as
unpadded ones. With a `KVCache`, the new tokens are written at `cache.index` and attend to every
filled slot whose position is not later than theirs.

Activations are pinned (`sharding.constrain`, a no-op unless a mesh is set) at three named
points: the embedded batch (rows over the data axes), attention q/k/v (heads over "tensor") and
the logits (vocabulary over "tensor", like the embedding table).
"""

import dataclasses
import functools
import math

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from rewardjax import sharding
from rewardjax.kernels import attention as attention_lib
from rewardjax.models import lora

ROPE_TYPES = ("default", "linear", "llama3")
REMATS = ("none", "block")  # "block": recompute each Block in the backward pass

# Activation layouts at the named points; `sharding.constrain` drops an axis that does not divide.
_BATCH_SD = (sharding.BATCH_AXES, None, None)             # [B, S, D]
_HEADS_SHK = (sharding.BATCH_AXES, None, "tensor", None)  # [B, S, H, K] and [B, S, Hkv, K]
_LOGITS_SV = (sharding.BATCH_AXES, None, "tensor")        # [B, S, V]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a decoder LM; field names follow `transformers` where they exist."""
  vocab_size: int = 128                       # V
  hidden_size: int = 64                       # D
  intermediate_size: int = 256                # F
  num_layers: int = 2                         # N
  num_heads: int = 4                          # H
  num_kv_heads: int = 2                       # grouped-query attention: H % num_kv_heads == 0
  head_dim: int = 16                          # K
  rope_theta: float = 10_000.0
  rope_type: str = "default"                  # one of ROPE_TYPES
  rope_factor: float = 1.0                    # "linear" and "llama3"
  rope_low_freq_factor: float = 1.0           # "llama3"
  rope_high_freq_factor: float = 4.0          # "llama3"
  rope_original_max_position: int = 8192      # "llama3"
  max_position_embeddings: int = 2048
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = True
  qkv_bias: bool = False                      # Qwen2 / Qwen2.5
  qk_norm: bool = False                       # Qwen3: RMSNorm over K on q and k before RoPE
  sliding_window: int | None = None
  param_dtype: str = "float32"
  dtype: str = "float32"                      # compute dtype; logits are always float32
  attention_impl: str = "xla"                 # "xla" | "cudnn" | "pallas"
  remat: str = "none"                         # REMATS: "block" keeps only each Block's input
  architecture: str = "Qwen2ForCausalLM"      # written to config.json by save_pretrained
  bos_token_id: int | None = None
  eos_token_id: int | None = None
  pad_token_id: int | None = None
  lora_rank: int = 0                          # LoRA adapters of rank r (models/lora.py); 0 = off
  lora_alpha: float = 16.0                    # LoRA scale alpha / r
  lora_targets: str = "q,k,v,o,gate,up,down"  # the projections that get adapters

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.rope_type not in ROPE_TYPES:
      raise ValueError(f"rope_type={self.rope_type!r} is not supported; use one of {ROPE_TYPES}")
    if self.remat not in REMATS:
      raise ValueError(f"remat={self.remat!r}; use one of {REMATS}")


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for decoding; slots with segment id 0 are empty."""
  # Head-major, so that a decode step's one query per row reads the cache in place as a batched
  # [G, K] @ [K, Smax] product per kv head (`attention.decode_attention`).
  keys: tuple                                 # N arrays [B, Hkv, Smax, K]
  values: tuple                               # N arrays [B, Hkv, Smax, K]
  positions: jax.Array                        # [B, Smax] RoPE position of each slot
  segment_ids: jax.Array                      # [B, Smax] 1 = filled, 0 = empty / padding
  index: jax.Array                            # [] next slot to write


def init_cache(config: ModelConfig, batch_size: int, max_length: int) -> KVCache:
  """An empty cache for `batch_size` rows and `max_length` slots, in the compute dtype."""
  shape = (batch_size, config.num_kv_heads, max_length, config.head_dim)
  zeros = tuple(jnp.zeros(shape, config.dtype) for _ in range(config.num_layers))
  return KVCache(keys=zeros, values=zeros,
                 positions=jnp.zeros((batch_size, max_length), jnp.int32),
                 segment_ids=jnp.zeros((batch_size, max_length), jnp.int32),
                 index=jnp.zeros((), jnp.int32))


def rope_frequencies(config: ModelConfig) -> jax.Array:
  """Inverse frequencies [K/2] of RoPE, with "linear" or Llama 3 scaling applied."""
  exponents = jnp.arange(0, config.head_dim, 2, dtype=jnp.float32) / config.head_dim
  inv_freq = 1.0 / (config.rope_theta ** exponents)
  if config.rope_type == "linear":
    return inv_freq / config.rope_factor
  if config.rope_type == "llama3":
    # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between
    # interpolated (transformers' _compute_llama3_parameters).
    old_context = config.rope_original_max_position
    low_freq_wavelen = old_context / config.rope_low_freq_factor
    high_freq_wavelen = old_context / config.rope_high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_freq_wavelen, inv_freq / config.rope_factor, inv_freq)
    smooth = (old_context / wavelen - config.rope_low_freq_factor) / (
        config.rope_high_freq_factor - config.rope_low_freq_factor)
    smoothed = (1 - smooth) * scaled / config.rope_factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return jnp.where(is_medium, smoothed, scaled)
  return inv_freq


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """Rotates [B, S, H, K] by positions [B, S] (rotate-half layout, as in transformers)."""
  angles_BxSxK2 = positions[..., None].astype(jnp.float32) * inv_freq[None, None, :]
  angles_BxSxK = jnp.concatenate([angles_BxSxK2, angles_BxSxK2], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles_BxSxK).astype(x.dtype), jnp.sin(angles_BxSxK).astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


def _dense(x: jax.Array, w: jax.Array, in_dims: int = 1) -> jax.Array:
  """x [..., *in] @ w [*in, *out] -> [..., *out], computed as one [rows, in] @ [in, out] matmul.

  With the rows left as [B, S], XLA:CPU forms the weight gradient (a contraction over both B
  and S) through a transposed copy of the activations, which made the backward pass 3x slower
  than the matmuls alone (measured on the benchmarks' tiny Qwen2); flat rows give plain dots.
  """
  rows, inner = x.shape[:x.ndim - in_dims], x.shape[x.ndim - in_dims:]
  size = math.prod(inner)
  y = x.reshape(-1, size) @ w.reshape(size, -1)
  return y.reshape(*rows, *w.shape[in_dims:])


def _param(rngs, init, shape, dtype, axes):
  return nnx.Param(init(rngs.params(), shape, dtype), logical_axes=axes)


class RMSNorm(nnx.Module):
  """x / sqrt(mean(x^2) + eps) * scale, normalised in float32."""

  def __init__(self, dim: int, eps: float, dtype, axes=("embed",)):
    self.scale = nnx.Param(jnp.ones((dim,), dtype), logical_axes=axes)
    self.eps = eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    scale = self.scale[...].astype(x.dtype)
    return x32.astype(x.dtype) * scale.reshape((1,) * (x.ndim - 1) + scale.shape)


class Attention(nnx.Module):
  """Grouped-query self-attention with RoPE, optional qkv bias and q/k RMSNorm."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    c, pd = config, config.param_dtype
    init = nnx.initializers.normal(0.02)
    self.config = config
    self.q_dhk = _param(rngs, init, (c.hidden_size, c.num_heads, c.head_dim), pd,
                        ("embed", "heads", "head_dim"))
    self.k_dhk = _param(rngs, init, (c.hidden_size, c.num_kv_heads, c.head_dim), pd,
                        ("embed", "kv_heads", "head_dim"))
    self.v_dhk = _param(rngs, init, (c.hidden_size, c.num_kv_heads, c.head_dim), pd,
                        ("embed", "kv_heads", "head_dim"))
    self.o_hkd = _param(rngs, init, (c.num_heads, c.head_dim, c.hidden_size), pd,
                        ("heads", "head_dim", "embed"))
    if c.qkv_bias:
      zeros = nnx.initializers.zeros
      self.q_bias_hk = _param(rngs, zeros, (c.num_heads, c.head_dim), pd, ("heads", "head_dim"))
      self.k_bias_hk = _param(rngs, zeros, (c.num_kv_heads, c.head_dim), pd,
                              ("kv_heads", "head_dim"))
      self.v_bias_hk = _param(rngs, zeros, (c.num_kv_heads, c.head_dim), pd,
                              ("kv_heads", "head_dim"))
    if c.qk_norm:
      self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, pd, axes=("head_dim",))
      self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, pd, axes=("head_dim",))
    lora.add_adapters(self, c, rngs, ("q", "k", "v", "o"))

  def __call__(self, x_BxSxD, positions, segment_ids, inv_freq, layer_cache):
    c, dt = self.config, self.config.dtype
    # q, k and v in one matmul, grouped per kv head: [D, Hkv, G + 2, K] holds the G query
    # heads that share kv head j, then k_j and v_j. The concatenation is along the unsharded
    # group axis (no communication under tensor parallelism), and on CPU one larger dot
    # instead of three small ones makes decoding faster.
    d, kv_heads, k_dim = c.hidden_size, c.num_kv_heads, c.head_dim
    groups = c.num_heads // kv_heads
    qkv_w = jnp.concatenate([self.q_dhk[...].reshape(d, kv_heads, groups, k_dim),
                             self.k_dhk[...][:, :, None], self.v_dhk[...][:, :, None]], axis=2)
    qkv = lora.add_fused(self, ("q", "k", "v"), _dense(x_BxSxD, qkv_w.astype(dt)), x_BxSxD,
                         axis=3, sizes=(groups, 1, 1), dtype=dt)
    q = qkv[:, :, :, :groups].reshape(*qkv.shape[:2], c.num_heads, k_dim)
    q, k, v = (sharding.constrain(t, _HEADS_SHK) for t in (q, qkv[:, :, :, groups],
                                                             qkv[:, :, :, groups + 1]))
    if c.qkv_bias:
      q = q + self.q_bias_hk[...].astype(dt)[None, None]
      k = k + self.k_bias_hk[...].astype(dt)[None, None]
      v = v + self.v_bias_hk[...].astype(dt)[None, None]
    if c.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
    kv_positions, kv_segment_ids = positions, segment_ids
    if layer_cache is not None:
      cache_k, cache_v, kv_positions, kv_segment_ids, index = layer_cache
      k, v = (jax.lax.dynamic_update_slice_in_dim(
          cache, new.transpose(0, 2, 1, 3).astype(cache.dtype), index, axis=2)
              for cache, new in ((cache_k, k), (cache_v, v)))
    if layer_cache is not None and q.shape[1] == 1 and c.attention_impl == "xla":
      # A decode step reads the head-major cache in place.
      mask = attention_lib.visibility_mask(segment_ids, kv_segment_ids, positions, kv_positions,
                                           sliding_window=c.sliding_window)
      out = attention_lib.decode_attention(q, k, v, mask)
    else:
      # Prefill, the shared-prefix pass and training read the keys sequence-major.
      seq_k, seq_v = (k, v) if layer_cache is None else (x.transpose(0, 2, 1, 3) for x in (k, v))
      out = attention_lib.attention(
          q, seq_k.astype(dt), seq_v.astype(dt), q_segment_ids=segment_ids,
          kv_segment_ids=kv_segment_ids, q_positions=positions, kv_positions=kv_positions,
          causal=True, sliding_window=c.sliding_window, impl=c.attention_impl)
    out_BxSxD = lora.add(self, "o", _dense(out, self.o_hkd[...].astype(dt), in_dims=2), out, dt)
    return out_BxSxD, (k, v)


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    c, pd = config, config.param_dtype
    init = nnx.initializers.normal(0.02)
    self.dtype = c.dtype
    self.gate_df = _param(rngs, init, (c.hidden_size, c.intermediate_size), pd, ("embed", "mlp"))
    self.up_df = _param(rngs, init, (c.hidden_size, c.intermediate_size), pd, ("embed", "mlp"))
    self.down_fd = _param(rngs, init, (c.intermediate_size, c.hidden_size), pd, ("mlp", "embed"))
    lora.add_adapters(self, c, rngs, ("gate", "up", "down"))

  def __call__(self, x_BxSxD):
    dt = self.dtype
    # gate and up in one matmul (see Attention: stacking keeps the sharding).
    gate_up = lora.add_fused(self, ("gate", "up"), _dense(x_BxSxD, jnp.stack(
        [self.gate_df[...], self.up_df[...]], axis=1).astype(dt)), x_BxSxD, axis=2,
                             sizes=(1, 1), dtype=dt)
    hidden = jax.nn.silu(gate_up[:, :, 0]) * gate_up[:, :, 1]
    return lora.add(self, "down", _dense(hidden, self.down_fd[...].astype(dt)), hidden, dt)


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
    self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.param_dtype)
    self.attention = Attention(config, rngs)
    self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                       config.param_dtype)
    self.mlp = MLP(config, rngs)

  def __call__(self, x, positions, segment_ids, inv_freq, layer_cache):
    attn_out, kv = self.attention(self.input_norm(x), positions, segment_ids, inv_freq,
                                  layer_cache)
    x = x + attn_out
    return x + self.mlp(self.post_attention_norm(x)), kv


def _run_block(block_def, block_state, *args):
  return nnx.merge(block_def, block_state)(*args)


class Transformer(nnx.Module):
  """Decoder LM. `model(tokens)` -> float32 logits [B, S, V]; see `__call__` for the cache path."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed_vd = _param(rngs, nnx.initializers.normal(0.02),
                           (config.vocab_size, config.hidden_size), config.param_dtype,
                           ("vocab", "embed"))
    self.layers = nnx.List([Block(config, rngs) for _ in range(config.num_layers)])
    self.final_norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.param_dtype)
    if not config.tie_word_embeddings:
      self.lm_head_dv = _param(rngs, nnx.initializers.normal(0.02),
                               (config.hidden_size, config.vocab_size), config.param_dtype,
                               ("embed", "vocab"))

  def unembedding(self) -> jax.Array:
    """The [D, V] matrix that maps final hidden states to logits."""
    if self.config.tie_word_embeddings:
      return self.embed_vd[...].T
    return self.lm_head_dv[...]

  def hidden_states(
      self,
      tokens: Int[Array, "B S"],
      *,
      positions: Int[Array, "B S"] | None = None,
      attention_mask: Int[Array, "B S"] | None = None,
      cache: KVCache | None = None,
  ) -> tuple[Float[Array, "B S D"], KVCache | None]:
    """Final-norm hidden states [B, S, D] (compute dtype) and the updated cache (or None).

    Args:
      tokens: [B, S] token ids.
      positions: [B, S] RoPE positions; default `cumsum(attention_mask) - 1` (0 on padding).
      attention_mask: [B, S] 1 for real tokens, 0 for padding; default all ones.
      cache: if given, the tokens are written at slots [cache.index, cache.index + S) and attend
        to every filled slot; positions must then be given for decode steps.
    """
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [B, S] token ids, got shape {tokens.shape}")
    if attention_mask is None:
      attention_mask = jnp.ones(tokens.shape, jnp.int32)
    segment_ids = attention_mask.astype(jnp.int32)
    if positions is None:
      positions = jnp.maximum(jnp.cumsum(segment_ids, axis=1) - 1, 0)
    positions = positions.astype(jnp.int32)
    inv_freq = rope_frequencies(self.config)
    x = sharding.constrain(self.embed_vd[...][tokens].astype(self.config.dtype), _BATCH_SD)
    if cache is not None:
      cache_positions = jax.lax.dynamic_update_slice_in_dim(
          cache.positions, positions, cache.index, axis=1)
      cache_segments = jax.lax.dynamic_update_slice_in_dim(
          cache.segment_ids, segment_ids, cache.index, axis=1)
    new_keys, new_values = [], []
    for i, layer in enumerate(self.layers):
      layer_cache = None
      if cache is not None:
        layer_cache = (cache.keys[i], cache.values[i], cache_positions, cache_segments,
                       cache.index)
      if self.config.remat == "block":
        # Activation memory of N layers at 5k tokens exceeds HBM: keep only each Block's
        # input [B, S, D] and recompute its inside in the backward pass (~1/3 more FLOPs).
        # A pure jax.checkpoint over the Block's split state: nnx.remat would write the
        # variables back across the trace levels of value_and_grad.
        block_def, block_state = nnx.split(layer)
        x, (k, v) = jax.checkpoint(functools.partial(_run_block, block_def))(
            block_state, x, positions, segment_ids, inv_freq, layer_cache)
      else:
        x, (k, v) = layer(x, positions, segment_ids, inv_freq, layer_cache)
      new_keys.append(k)
      new_values.append(v)
    x = self.final_norm(x)
    if cache is None:
      return x, None
    return x, KVCache(keys=tuple(new_keys), values=tuple(new_values), positions=cache_positions,
                      segment_ids=cache_segments, index=cache.index + tokens.shape[1])

  def shared_prefix_hidden_states(
      self,
      prompt: Int[Array, "P S"],
      prompt_mask: Int[Array, "P S"],
      completion: Int[Array, "B T"],
      completion_mask: Int[Array, "B T"],
  ) -> tuple[Float[Array, "P D"], Float[Array, "B T D"]]:
    """Hidden states of B = P*G rows whose G consecutive rows share one prompt, the prompt
    computed once per group instead of G times.

    Row b is prompt[b // G] followed by completion[b]. The P prompts run alone and fill a KV
    cache, which is repeated G times; the completions then attend to it and to themselves
    causally, exactly as the unshared [B, S+T] pass would (same keys, positions and segments;
    float tolerance). Gradients reach the prompt through the repeated keys and values, so a
    training step over a group of G samples does the prompt's arithmetic once (GRPO and its
    reference pass; DPO's chosen / rejected pair is G = 2).

    Args:
      prompt: [P, S] left-padded prompts (the last column is a real token).
      prompt_mask: [P, S] 1 on real prompt tokens.
      completion: [B, T] completions, B a multiple of P.
      completion_mask: [B, T] 1 on real tokens, a prefix of each row (then padding).

    Returns:
      (the prompts' last hidden states [P, D], which predict completion token 0;
       the completions' hidden states [B, T, D], row b's position t predicting token t+1).
    """
    num_prompts, prompt_len = prompt.shape
    rows, completion_len = completion.shape
    if rows % num_prompts:
      raise ValueError(f"{rows} completion rows do not split into groups of the {num_prompts} "
                       "prompts")
    group = rows // num_prompts
    cache = init_cache(self.config, num_prompts, prompt_len + completion_len)
    prompt_hidden, cache = self.hidden_states(prompt, attention_mask=prompt_mask, cache=cache)
    cache = jax.tree.map(lambda x: jnp.repeat(x, group, axis=0) if x.ndim else x, cache)
    # The unshared pass's positions, cumsum(mask) - 1 over prompt + completion.
    start = jnp.repeat(jnp.sum(prompt_mask.astype(jnp.int32), axis=1), group)[:, None]
    completion_mask = completion_mask.astype(jnp.int32)
    positions = jnp.maximum(start + jnp.cumsum(completion_mask, axis=1) - 1, 0)
    completion_hidden, _ = self.hidden_states(completion, positions=positions,
                                              attention_mask=completion_mask, cache=cache)
    return prompt_hidden[:, -1], completion_hidden

  def logits(self, hidden: Float[Array, "B S D"]) -> Float[Array, "B S V"]:
    """float32 logits = hidden @ unembedding, accumulated in float32."""
    logits = jnp.einsum("bsd,dv->bsv", hidden, self.unembedding().astype(hidden.dtype),
                        preferred_element_type=jnp.float32)
    return sharding.constrain(logits, _LOGITS_SV)

  def __call__(self, tokens, *, positions=None, attention_mask=None, cache=None):
    """Logits [B, S, V] float32; with a `cache`, returns `(logits, new_cache)`."""
    hidden, new_cache = self.hidden_states(tokens, positions=positions,
                                           attention_mask=attention_mask, cache=cache)
    if cache is None:
      return self.logits(hidden)
    return self.logits(hidden), new_cache


def count_params(params) -> int:
  """Number of scalars in a parameter pytree."""
  return sum(x.size for x in jax.tree.leaves(params))
