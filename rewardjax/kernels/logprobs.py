"""Token log-probs and entropies from final hidden states without materialising [B, T, V].

The policy-gradient losses need, per completion token, log pi(y_t) and (for entropy bonuses and
metrics) H(pi_t); with V ~ 150k the full [B, T, V] float32 logits and their gradient dominate
training memory. `token_logprobs_from_hidden` forms logits = hidden @ unembedding / temperature
for `chunk_size` positions at a time inside a `lax.scan`, keeps only the [B, T] statistics, and
its custom VJP recomputes each chunk's logits in the backward pass, so neither pass holds more
than [B, chunk, V]. The batch axis is never folded into the chunk axis, so a batch sharding of
`hidden` survives the reshape.
"""

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def _chunk_logits(hidden_BxCxD, unembedding, temperature):
  """float32 logits of one chunk, [B, C, V]; the matmul accumulates in float32."""
  dtype = jnp.result_type(hidden_BxCxD, unembedding)
  logits = jnp.einsum("bcd,dv->bcv", hidden_BxCxD.astype(dtype), unembedding.astype(dtype),
                      preferred_element_type=jnp.float32)
  return logits / temperature


def _to_chunks(x_BxT, chunk):
  """[B, T, ...] -> [T / chunk, B, chunk, ...], zero-padding T up to a multiple of `chunk`."""
  pad = -x_BxT.shape[1] % chunk
  x_BxT = jnp.pad(x_BxT, [(0, 0), (0, pad)] + [(0, 0)] * (x_BxT.ndim - 2))
  x_BxNxC = x_BxT.reshape(x_BxT.shape[0], -1, chunk, *x_BxT.shape[2:])
  return jnp.moveaxis(x_BxNxC, 1, 0)


def _from_chunks(x_NxBxC, length):
  """Inverse of `_to_chunks`: [N, B, C, ...] -> [B, length, ...]."""
  x_BxNxC = jnp.moveaxis(x_NxBxC, 0, 1)
  return x_BxNxC.reshape(x_BxNxC.shape[0], -1, *x_BxNxC.shape[3:])[:, :length]


def _forward(hidden, unembedding, targets, *, chunk, temperature, return_entropy):
  """Scan over chunks: log p(target) = z_target - logsumexp(z), H = sum_v p_v (lse - z_v)."""
  vocab_1x1xV = jnp.arange(unembedding.shape[1])[None, None, :]

  def step(_, xs):
    hidden_BxCxD, targets_BxC = xs
    logits_BxCxV = _chunk_logits(hidden_BxCxD, unembedding, temperature)
    lse_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
    # A one-hot select instead of a gather keeps a vocabulary-sharded unembedding local.
    is_target = vocab_1x1xV == targets_BxC[..., None]
    logps_BxC = jnp.sum(jnp.where(is_target, logits_BxCxV, 0.0), axis=-1) - lse_BxC
    entropy_BxC = jnp.zeros_like(lse_BxC)
    if return_entropy:
      p_BxCxV = jnp.exp(logits_BxCxV - lse_BxC[..., None])
      entropy_BxC = jnp.sum(p_BxCxV * (lse_BxC[..., None] - logits_BxCxV), axis=-1)
    return None, (logps_BxC, lse_BxC, entropy_BxC)

  xs = (_to_chunks(hidden, chunk), _to_chunks(targets, chunk))
  _, stats = jax.lax.scan(step, None, xs)
  logps, lse, entropy = (_from_chunks(x, targets.shape[1]) for x in stats)
  return (logps, entropy), (hidden, unembedding, targets, lse, entropy)


def _backward(residuals, cotangents, *, chunk, temperature, return_entropy):
  """Recompute each chunk's logits; d logp/dz = onehot - p, dH/dz = p (lse - z - H)."""
  hidden, unembedding, targets, lse, entropy = residuals
  d_logps, d_entropy = cotangents
  vocab_1x1xV = jnp.arange(unembedding.shape[1])[None, None, :]
  dtype = jnp.result_type(hidden, unembedding)

  def step(d_unembedding_DxV, xs):
    hidden_BxCxD, targets_BxC, lse_BxC, entropy_BxC, d_logps_BxC, d_entropy_BxC = xs
    logits_BxCxV = _chunk_logits(hidden_BxCxD, unembedding, temperature)
    p_BxCxV = jnp.exp(logits_BxCxV - lse_BxC[..., None])
    is_target = vocab_1x1xV == targets_BxC[..., None]
    d_logits = d_logps_BxC[..., None] * (jnp.where(is_target, 1.0, 0.0) - p_BxCxV)
    if return_entropy:
      d_logits += d_entropy_BxC[..., None] * p_BxCxV * (
          lse_BxC[..., None] - logits_BxCxV - entropy_BxC[..., None])
    # z = h W / temperature: the temperature divides both matmul cotangents.
    d_logits_BxCxV = (d_logits / temperature).astype(dtype)
    d_hidden_BxCxD = jnp.einsum("bcv,dv->bcd", d_logits_BxCxV, unembedding.astype(dtype),
                                preferred_element_type=jnp.float32)
    d_unembedding_DxV += jnp.einsum("bcd,bcv->dv", hidden_BxCxD.astype(dtype), d_logits_BxCxV,
                                    preferred_element_type=jnp.float32)
    return d_unembedding_DxV, d_hidden_BxCxD

  xs = tuple(_to_chunks(x, chunk) for x in (hidden, targets, lse, entropy, d_logps, d_entropy))
  d_unembedding, d_hidden = jax.lax.scan(
      step, jnp.zeros(unembedding.shape, jnp.float32), xs)
  d_hidden = _from_chunks(d_hidden, hidden.shape[1]).astype(hidden.dtype)
  return d_hidden, d_unembedding.astype(unembedding.dtype), None  # integer targets: no grad


def _chunked(hidden, unembedding, targets, **options):
  return _forward(hidden, unembedding, targets, **options)[0]


@functools.partial(jax.jit, static_argnames=("chunk_size", "return_entropy", "temperature"))
def token_logprobs_from_hidden(
    hidden: Float[Array, "B T D"],
    unembedding: Float[Array, "D V"],
    targets: Int[Array, "B T"],
    *,
    chunk_size: int = 128,
    return_entropy: bool = True,
    temperature: float = 1.0,
) -> Float[Array, "B T"] | tuple[Float[Array, "B T"], Float[Array, "B T"]]:
  """Per-token log pi(target) and entropy, chunked over T so [B, T, V] never exists.

  z[b, t] = hidden[b, t] @ unembedding / temperature   (float32 accumulation)
  logps[b, t] = z[b, t, targets[b, t]] - logsumexp_v z[b, t, v]
  entropy[b, t] = -sum_v p[b, t, v] log p[b, t, v],  p = softmax_v z[b, t]
  Both passes hold at most [B, chunk_size, V] logits; the backward recomputes them.

  Args:
    hidden: [B, T, D] final (post-norm) hidden states, position t predicting targets[:, t].
    unembedding: [D, V] output projection (`Transformer.unembedding()`).
    targets: [B, T] token ids in [0, V) whose log-probs are wanted.
    chunk_size: positions per chunk (min(chunk_size, T) is used; T is padded to a multiple).
    return_entropy: also return the per-token entropy (and differentiate through it).
    temperature: logits are divided by it before the softmax (TRL's `temperature`).

  Returns:
    logps [B, T] float32, and entropy [B, T] float32 if `return_entropy`.

  References:
    A sequence-chunked relative of Cut Cross-Entropy (Wijmans et al., "Cut Your Losses in
    Large-Vocabulary Language Models", arXiv:2411.09009), which also blocks the vocabulary.

  >>> hidden, unembedding = jnp.zeros((1, 2, 3)), jnp.ones((3, 4))   # uniform over V = 4
  >>> logps, entropy = token_logprobs_from_hidden(hidden, unembedding, jnp.zeros((1, 2), int))
  >>> print(round(float(logps[0, 0]), 4), round(float(entropy[0, 1]), 4))   # -log 4, log 4
  -1.3863 1.3863
  """
  if hidden.shape[:2] != targets.shape or hidden.shape[2] != unembedding.shape[0]:
    raise ValueError(f"hidden {hidden.shape}, unembedding {unembedding.shape} and targets "
                     f"{targets.shape} must be [B, T, D], [D, V] and [B, T]")
  if chunk_size < 1 or temperature <= 0:
    raise ValueError(f"chunk_size={chunk_size} and temperature={temperature} must be positive")
  options = dict(chunk=min(chunk_size, targets.shape[1]), temperature=temperature,
                 return_entropy=return_entropy)
  chunked = jax.custom_vjp(functools.partial(_chunked, **options))
  chunked.defvjp(functools.partial(_forward, **options), functools.partial(_backward, **options))
  logps, entropy = chunked(hidden, unembedding, targets.astype(jnp.int32))
  return (logps, entropy) if return_entropy else logps


def token_logprobs_reference(
    hidden: Float[Array, "B T D"],
    unembedding: Float[Array, "D V"],
    targets: Int[Array, "B T"],
    *,
    return_entropy: bool = True,
    temperature: float = 1.0,
) -> Float[Array, "B T"] | tuple[Float[Array, "B T"], Float[Array, "B T"]]:
  """Naive `token_logprobs_from_hidden`: full [B, T, V] float32 logits, plain autodiff.

  Same equations, arguments and returns as `token_logprobs_from_hidden`.

  >>> logps = token_logprobs_reference(jnp.zeros((1, 1, 3)), jnp.ones((3, 2)),
  ...                                  jnp.zeros((1, 1), int), return_entropy=False)
  >>> print(round(float(logps[0, 0]), 4))   # -log 2
  -0.6931
  """
  logits_BxTxV = _chunk_logits(hidden, unembedding, temperature)
  log_p_BxTxV = jax.nn.log_softmax(logits_BxTxV, axis=-1)
  logps = jnp.take_along_axis(log_p_BxTxV, targets[..., None], axis=-1)[..., 0]
  if not return_entropy:
    return logps
  return logps, -jnp.sum(jnp.exp(log_p_BxTxV) * log_p_BxTxV, axis=-1)
