"""Sampling completions from a decoder LM: jitted prefill + KV-cache decode, groups, stop tokens.

`generate` repeats each prompt `num_samples` (G) times contiguously, so rows [p*G, (p+1)*G) of
every output belong to prompt p, the layout `advantages.py` reshapes to [P, G]. How tokens are
drawn and when a row stops is a `Decoding`. One compiled program serves every call with the
same static options (sizes, temperature, top-k, top-p) and the same bucketed shapes: the
prompt length is left-padded up to a multiple of `PROMPT_BUCKET`, and the stop ids are padded
to a multiple of `STOP_BUCKET`, so neither the prompt content nor the stop ids recompile.

The decode loop is a `lax.while_loop` that stops as soon as every row has emitted a stop token;
positions after a row's stop token hold `Decoding.pad_token_id` with mask 0. Two things keep a
CPU decode step lean (`benchmarks/rollouts.py`, `benchmarks/decode_steps.py`). A step reads
every slot of the KV cache it is given, so the cache grows with the completion instead of
starting at its final size: decoding runs as up to `DECODE_SEGMENTS` consecutive while-loops,
each over a cache (a static shape) just long enough for its own steps. And every random number
of a call is drawn before the loop, one uniform per row and step, and tokens are sampled by
inverting the cdf (`_sample_with_uniform`): threefry inside the loop lowers to two rolled loops
per step on CPU.

`token_logprobs` recomputes per-token log-probs of given completions with a teacher-forced
forward pass (old / reference log-probs for the policy losses) with `kernels/logprobs.py`, the
project's one teacher-forced log-softmax gather; the decode loop, which already holds the [B, V]
logits of one step, gathers them with `_gather_logprobs`.
"""

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from rewardjax.kernels import logprobs as logprobs_lib
from rewardjax.models import transformer

PROMPT_BUCKET = 16     # prompt lengths are left-padded up to a multiple of this
STOP_BUCKET = 8        # stop-id lists are padded (with -1, matching nothing) to a multiple
DECODE_SEGMENTS = 8    # the KV cache grows (by re-padding) at most this many times per call
MIN_SEGMENT = 8        # ... and only by at least this many decode steps at a time


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How tokens are drawn and when a row stops (see `generate`).

  Attributes:
    temperature: τ ≥ 0; 0 = greedy decoding.
    top_k: keep the k most likely tokens (0 = off).
    top_p: nucleus mass in (0, 1] (1 = off).
    eos_token_id: stops a row (None: only `stop_token_ids` stop; pass the tokenizer's).
    stop_token_ids: more ids that end a completion.
    pad_token_id: written after a row's stop token (and left of bucketed prompts).
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  eos_token_id: int | None = None
  stop_token_ids: tuple[int, ...] = ()
  pad_token_id: int = 0


class _Sampling(NamedTuple):
  """The static part of a `Decoding` (the stop and pad ids are traced: no recompilation)."""
  temperature: float
  top_k: int
  top_p: float


@flax.struct.dataclass
class Rollout:
  """Sampled completions of P prompts, G each: B = P*G rows, rows [p*G, (p+1)*G) from prompt p.

  S is the *bucketed* prompt length (the caller's S left-padded up to a multiple of
  `PROMPT_BUCKET`), so that jitted training steps downstream also see few distinct shapes.

  Attributes:
    tokens: [B, S+T] left-padded prompt followed by the completion.
    prompt_mask: [B, S] 1 on real prompt tokens.
    completion_tokens: [B, T] sampled tokens; `pad_token_id` after the stop token.
    completion_mask: [B, T] 1 up to and including the stop token (or all T if none).
    logprobs: [B, T] log-prob of each sampled token under the distribution it was drawn
      from: softmax of logits / temperature after the top-k and top-p filters. 0 where the mask
      is 0, and 0 for greedy decoding (a point mass).
    model_logprobs: [B, T] log-prob of each token under the unmodified model,
      log_softmax(logits) at temperature 1 (what `token_logprobs` recomputes). 0 where masked.
    lengths: [B] number of completion tokens, = completion_mask.sum(-1).
  """
  tokens: jax.Array
  prompt_mask: jax.Array
  completion_tokens: jax.Array
  completion_mask: jax.Array
  logprobs: jax.Array
  model_logprobs: jax.Array
  lengths: jax.Array

  @property
  def prompt_length(self) -> int:
    """S, the index of the first completion token in `tokens` (`completion_start`)."""
    return self.prompt_mask.shape[1]


def _gather_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log_softmax(logits)[..., targets] in float32 without materialising the log-softmax."""
  logits = logits.astype(jnp.float32)  # the log-sum-exp over a large vocab needs f32
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def _filter_logits(scaled_BxV: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """Sets logits outside the top-k / nucleus to -inf (the top token is always kept)."""
  if top_k == 0 and top_p >= 1.0:
    return scaled_BxV
  if top_k > 0:
    # lax.top_k returns values sorted in descending order; the nucleus is found among them.
    sorted_BxK = jax.lax.top_k(scaled_BxV, min(top_k, scaled_BxV.shape[-1]))[0]
  else:
    sorted_BxK = -jnp.sort(-scaled_BxV, axis=-1)
  threshold_B = sorted_BxK[:, -1]
  if top_p < 1.0:
    # Nucleus as in HF TopPLogitsWarper: keep token i (sorted descending) iff the mass of the
    # tokens ranked above it is < top_p, i.e. the smallest prefix with mass >= top_p.
    probs_BxK = jax.nn.softmax(sorted_BxK, axis=-1)
    mass_above_BxK = jnp.cumsum(probs_BxK, axis=-1) - probs_BxK
    num_kept_B = jnp.maximum(jnp.sum(mass_above_BxK < top_p, axis=-1), 1)
    threshold_B = jnp.take_along_axis(sorted_BxK, num_kept_B[:, None] - 1, axis=-1)[:, 0]
  # Ties with the threshold are kept (as HF's top-k; HF's top-p breaks such ties by sort order).
  return jnp.where(scaled_BxV < threshold_B[:, None], -jnp.inf, scaled_BxV)


def sample_logits(
    logits: Float[Array, "B V"],
    rng: jax.Array,
    *,
    temperature: float | int = 1.0,
    top_k: int = 0,
    top_p: float | int = 1.0,
) -> tuple[Int[Array, " B"], Float[Array, " B"]]:
  """Draws one token per row from softmax(filter(logits / temperature)).

  p(v) ∝ exp(l_v / τ) · [v in top-k] · [v in nucleus(top_p)], nucleus = smallest set of the
  most likely tokens with total probability ≥ top_p (computed after top-k and temperature, as
  the HF logits warpers are applied: temperature, top-k, top-p). The most likely token is
  always kept. τ = 0 is greedy decoding (argmax, log-prob 0). The draw inverts the cdf:
  x = min{v : Σ_{w ≤ v} p(w) > u}, u ~ U[0, 1), one uniform per row.

  Args:
    logits: [B, V] next-token logits.
    rng: PRNG key (draws the B uniforms).
    temperature: τ ≥ 0; 0 means greedy.
    top_k: keep the k largest logits (0 = all).
    top_p: nucleus mass in (0, 1] (1 = all).

  Returns:
    tokens [B] int32 and their log-probs [B] (float32) under the distribution sampled from.

  References:
    Holtzman et al., The Curious Case of Neural Text Degeneration, arXiv:1904.09751, §3.1
    (nucleus sampling); transformers `TopKLogitsWarper` / `TopPLogitsWarper` conventions.

  >>> logits = jnp.log(jnp.array([[0.5, 0.3, 0.2]]))
  >>> tokens, logps = sample_logits(logits, jax.random.key(0), top_p=0.4)  # nucleus {0}
  >>> int(tokens[0]), round(float(jnp.exp(logps[0])), 3)
  (0, 1.0)
  >>> logits = jnp.log(jnp.array([[0.4, 0.4, 0.2]]))
  >>> tokens, logps = sample_logits(logits, jax.random.key(0), top_k=2)  # each 0.4 / 0.8
  >>> int(tokens[0]) in (0, 1), round(float(jnp.exp(logps[0])), 3)
  (True, 0.5)
  """
  _check_sampling(temperature, top_k, top_p)
  uniform_B = jax.random.uniform(rng, logits.shape[:1], jnp.float32)
  return _sample_with_uniform(logits, uniform_B, temperature=temperature, top_k=top_k,
                              top_p=top_p)


def _sample_with_uniform(logits_BxV, uniform_B, *, temperature, top_k, top_p):
  """`sample_logits` by inversion: the first token whose cumulative probability exceeds u.

  One uniform per row instead of `jax.random.categorical`'s V Gumbel draws, so a decode loop
  can draw all its randomness before the loop: on CPU, threefry is lowered to a rolled loop,
  and two of them inside every decode step cost more than the model's attention.
  """
  if temperature == 0.0:
    tokens_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return tokens_B, jnp.zeros(tokens_B.shape, jnp.float32)
  filtered_BxV = _filter_logits(logits_BxV.astype(jnp.float32) / temperature, top_k, top_p)
  probs_BxV = jax.nn.softmax(filtered_BxV, axis=-1)
  cdf_BxV = jnp.cumsum(probs_BxV, axis=-1)
  # The token is the first index where the cdf rises above t = u * total (total is 1 up to
  # rounding): a rise means probability > 0, so filtered tokens are never drawn. t < total
  # strictly, so the last kept token is reachable and the count stays < V.
  total_B = cdf_BxV[:, -1]
  threshold_B = jnp.minimum(uniform_B * total_B, jnp.nextafter(total_B, 0.0))
  tokens_B = jnp.sum(cdf_BxV <= threshold_B[:, None], axis=-1).astype(jnp.int32)
  return tokens_B, _gather_logprobs(filtered_BxV, tokens_B)


def _split(model) -> tuple[nnx.GraphDef, Any]:
  """(graphdef, params); params may be an nnx.State or its pure dict (as in TrainState)."""
  if isinstance(model, nnx.Module):
    return nnx.split(model, nnx.Param)
  graphdef, params = model
  return graphdef, params


@functools.partial(jax.jit, static_argnames=("pad", "value"))
def _left_pad_device(x, *, pad, value):
  return jnp.pad(x.astype(jnp.int32), ((0, 0), (pad, 0)), constant_values=value)


def _left_pad(x, pad: int, value: int) -> jax.Array:
  """int32 [B, pad + S]: `pad` columns of `value` on the left, on device (bucketing)."""
  if not isinstance(x, jax.Array):
    return jax.device_put(np.pad(np.asarray(x, np.int32), ((0, 0), (pad, 0)),
                                 constant_values=value))
  if pad == 0 and x.dtype == jnp.int32:
    return x
  return _left_pad_device(x, pad=pad, value=value)


def _check_sampling(temperature, top_k, top_p):
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
  if top_k < 0:
    raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _segment_ends(steps: int) -> list[int]:
  """Exclusive last decode step of each segment: ~equal parts of >= MIN_SEGMENT steps.

  >>> _segment_ends(64), _segment_ends(20), _segment_ends(12), _segment_ends(512)[:3]
  ([8, 16, 24, 32, 40, 48, 56, 64], [10, 20], [12], [64, 128, 192])
  """
  segments = max(1, min(DECODE_SEGMENTS, steps // MIN_SEGMENT))
  return [math.ceil(steps * (j + 1) / segments) for j in range(segments)]


def _grow(cache: transformer.KVCache, length: int) -> transformer.KVCache:
  """The cache with empty slots (segment id 0) appended up to `length` slots."""
  extra = length - cache.segment_ids.shape[1]
  if extra <= 0:
    return cache
  def pad(x, axis):  # slots are axis 2 of the head-major keys / values, axis 1 of the rest
    return jnp.pad(x, [(0, extra) if a == axis else (0, 0) for a in range(x.ndim)])

  return cache.replace(keys=tuple(pad(k, 2) for k in cache.keys),
                       values=tuple(pad(v, 2) for v in cache.values),
                       positions=pad(cache.positions, 1), segment_ids=pad(cache.segment_ids, 1))


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "num_samples",
                                             "sampling"))
def _generate(graphdef, params, prompt_PxS, prompt_mask_PxS, rng, stop_ids, pad_id, *,
              max_new_tokens, num_samples, sampling: _Sampling):
  temperature, top_k, top_p = sampling
  model = nnx.merge(graphdef, params)
  num_prompts, prompt_len = prompt_PxS.shape
  rows, steps = num_prompts * num_samples, max_new_tokens
  mask_PxS = prompt_mask_PxS.astype(jnp.int32)

  # Prefill once per prompt, then copy the cache to the G samples: G times less prefill work.
  # Within a segment, decode steps write the cache in place; it grows only between segments.
  ends = _segment_ends(steps)
  cache = transformer.init_cache(model.config, num_prompts, prompt_len + ends[0])
  hidden_PxSxD, cache = model.hidden_states(prompt_PxS, attention_mask=mask_PxS, cache=cache)
  logits_PxV = model.logits(hidden_PxSxD[:, -1:])[:, 0]  # only the last position is needed
  cache = jax.tree.map(lambda x: jnp.repeat(x, num_samples, axis=0) if x.ndim else x, cache)
  logits_BxV = jnp.repeat(logits_PxV, num_samples, axis=0)
  position_B = jnp.repeat(jnp.sum(mask_PxS, axis=1), num_samples)  # RoPE position of token 0

  # Every draw of the call at once, outside the decode loop (see _sample_with_uniform).
  uniform_TxB = jax.random.uniform(rng, (steps, rows), jnp.float32)

  def sample(logits_BxV, step, done_B):
    tokens_B, logps_B = _sample_with_uniform(logits_BxV, uniform_TxB[step],
                                             temperature=temperature, top_k=top_k, top_p=top_p)
    if temperature == 1.0 and top_k == 0 and top_p >= 1.0:
      model_logps_B = logps_B  # the sampling distribution is the model's: skip a logsumexp
    else:
      model_logps_B = _gather_logprobs(logits_BxV, tokens_B)
    tokens_B = jnp.where(done_B, pad_id, tokens_B)
    logps_B = jnp.where(done_B, 0.0, logps_B)
    model_logps_B = jnp.where(done_B, 0.0, model_logps_B)
    return tokens_B, logps_B, model_logps_B, done_B | jnp.isin(tokens_B, stop_ids)

  done_B = jnp.zeros((rows,), bool)
  tokens_B, logps_B, model_logps_B, done_B = sample(logits_BxV, 0, done_B)
  # Outputs are built as [T, B] so that each step writes one contiguous row.
  outputs = (jnp.full((steps, rows), pad_id, jnp.int32).at[0].set(tokens_B),
             jnp.zeros((steps, rows), jnp.float32).at[0].set(logps_B),
             jnp.zeros((steps, rows), jnp.float32).at[0].set(model_logps_B))
  lengths_B = jnp.ones((rows,), jnp.int32)

  def running(carry, end):
    step, _, _, done_B, _, _, _ = carry
    return (step < end) & ~jnp.all(done_B)  # early exit once every row has stopped

  def body(carry):
    step, cache, tokens_B, done_B, position_B, lengths_B, outputs = carry
    hidden_Bx1xD, cache = model.hidden_states(
        tokens_B[:, None], positions=position_B[:, None], cache=cache)
    logits_BxV = model.logits(hidden_Bx1xD)[:, 0]
    lengths_B = lengths_B + ~done_B  # token `step` counts iff the row had not stopped before
    tokens_B, logps_B, model_logps_B, done_B = sample(logits_BxV, step, done_B)
    outputs = tuple(out.at[step].set(new) for out, new in
                    zip(outputs, (tokens_B, logps_B, model_logps_B)))
    return step + 1, cache, tokens_B, done_B, position_B + 1, lengths_B, outputs

  carry = (jnp.ones((), jnp.int32), cache, tokens_B, done_B, position_B, lengths_B, outputs)
  for end in ends:  # step s writes slot S + s - 1: steps < end need S + end - 1 slots
    step, cache, *rest = carry
    carry = jax.lax.while_loop(functools.partial(running, end=end), body,
                               (step, _grow(cache, prompt_len + end), *rest))
  *_, lengths_B, (tokens_TxB, logps_TxB, model_logps_TxB) = carry
  completion_BxT = tokens_TxB.T
  return Rollout(
      tokens=jnp.concatenate([jnp.repeat(prompt_PxS, num_samples, axis=0), completion_BxT],
                             axis=1),
      prompt_mask=jnp.repeat(mask_PxS, num_samples, axis=0),
      completion_tokens=completion_BxT,
      completion_mask=(jnp.arange(steps)[None, :] < lengths_B[:, None]).astype(jnp.int32),
      logprobs=logps_TxB.T, model_logprobs=model_logps_TxB.T, lengths=lengths_B)


def generate(
    model: nnx.Module | tuple,
    prompt_tokens: Int[Array | np.ndarray, "P S"],
    prompt_mask: Int[Array | np.ndarray, "P S"] | Bool[Array | np.ndarray, "P S"],
    rng: jax.Array,
    *,
    max_new_tokens: int,
    num_samples: int = 1,
    decoding: Decoding = Decoding(),
) -> Rollout:
  """Samples `num_samples` completions of `max_new_tokens` tokens for every prompt.

  x_t ~ softmax(filter(logits(x_<t) / temperature)) (see `sample_logits`), for t = 1..T or
  until x_t ∈ {eos_token_id} ∪ stop_token_ids; the stop token is part of the completion.
  temperature, top_k, top_p, eos_token_id, stop_token_ids and pad_token_id are `decoding`'s.

  Args:
    model: a `Transformer`, or `(graphdef, params)` from `nnx.split(model, nnx.Param)`.
    prompt_tokens: [P, S] left-padded prompts (every row must end with a real token).
    prompt_mask: [P, S] 1 on real prompt tokens.
    rng: PRNG key; it draws one uniform per row and step, so a call is reproducible.
    max_new_tokens: T, the completion length of the outputs.
    num_samples: G completions per prompt, rows [p*G, (p+1)*G) for prompt p.
    decoding: temperature, top-k, top-p, stop ids and pad id (`Decoding`; the default samples
      from the model at temperature 1 until max_new_tokens, padding with 0).

  Returns:
    A `Rollout` with [B = P*G, ...] arrays; see its docstring for `logprobs` vs `model_logprobs`.
    The prompts come back left-padded to a multiple of 16 tokens (`Rollout.prompt_length`):
    calls whose S falls in the same bucket share one compilation, here and downstream.

  >>> from rewardjax.models.transformer import ModelConfig, Transformer
  >>> lm = Transformer(ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
  ...                              num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4),
  ...                  rngs=nnx.Rngs(0))
  >>> out = generate(lm, jnp.array([[0, 5, 6], [4, 5, 6]]), jnp.array([[0, 1, 1], [1, 1, 1]]),
  ...                jax.random.key(0), max_new_tokens=4, num_samples=2,
  ...                decoding=Decoding(eos_token_id=None))
  >>> out.tokens.shape, out.prompt_length, out.completion_tokens.shape, out.lengths.tolist()
  ((4, 20), 16, (4, 4), [4, 4, 4, 4])
  """
  if isinstance(prompt_mask, np.ndarray) and prompt_mask.ndim == 2 and not prompt_mask[:, -1].all():
    raise ValueError("prompts must be left-padded: prompt_mask[:, -1] has zeros")
  if prompt_tokens.ndim != 2 or prompt_tokens.shape != prompt_mask.shape:
    raise ValueError(f"prompt_tokens {prompt_tokens.shape} and prompt_mask {prompt_mask.shape} "
                     "must both be [P, S]")
  if max_new_tokens < 1 or num_samples < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} and num_samples={num_samples} must be >= 1")
  d = decoding
  _check_sampling(d.temperature, d.top_k, d.top_p)
  graphdef, params = _split(model)
  pad = -prompt_tokens.shape[1] % PROMPT_BUCKET
  stops = ([] if d.eos_token_id is None else [d.eos_token_id]) + list(d.stop_token_ids)
  stops += [-1] * (STOP_BUCKET * max(1, math.ceil(len(stops) / STOP_BUCKET)) - len(stops))
  # Explicit device_puts only, so that callers may run under jax_transfer_guard="disallow".
  return _generate(
      graphdef, params, _left_pad(prompt_tokens, pad, d.pad_token_id),
      _left_pad(prompt_mask, pad, 0), rng, jax.device_put(np.asarray(stops, np.int32)),
      jax.device_put(np.asarray(d.pad_token_id, np.int32)),
      max_new_tokens=max_new_tokens, num_samples=num_samples,
      sampling=_Sampling(float(d.temperature), int(d.top_k), float(d.top_p)))


@functools.partial(jax.jit, static_argnames=("graphdef", "completion_start", "temperature"))
def _token_logprobs(graphdef, params, tokens_BxS, mask_BxS, *, completion_start, temperature):
  model = nnx.merge(graphdef, params)
  tokens_BxS, mask_BxS = tokens_BxS.astype(jnp.int32), mask_BxS.astype(jnp.int32)
  hidden_BxSxD, _ = model.hidden_states(tokens_BxS, attention_mask=mask_BxS)
  # Token s is predicted at position s - 1; the chunked kernel never forms [B, T, V] logits.
  logps_BxT = logprobs_lib.token_logprobs_from_hidden(
      hidden_BxSxD[:, completion_start - 1:-1], model.unembedding(),
      tokens_BxS[:, completion_start:], return_entropy=False, temperature=temperature)
  return jnp.where(mask_BxS[:, completion_start:] > 0, logps_BxT, 0.0)


def token_logprobs(
    model: nnx.Module | tuple,
    tokens: Int[Array, "B S"],
    mask: Int[Array, "B S"] | Bool[Array, "B S"],
    completion_start: int,
    *,
    temperature: float | int = 1.0,
) -> Float[Array, "B T"]:
  """Teacher-forced log-probs of the completion tokens, log p(x_s | x_<s), s ≥ completion_start.

  logp[b, t] = log_softmax(logits[b, c + t - 1] / τ)[tokens[b, c + t]], c = completion_start,
  computed in float32 by `kernels.logprobs.token_logprobs_from_hidden` (chunked over T, never
  [B, T, V]). τ = 1 gives `Rollout.model_logprobs`; TRL divides by the sampling temperature,
  pass it to match. Positions are cumsum(mask) - 1, as in `generate`.

  Args:
    model: a `Transformer`, or `(graphdef, params)` from `nnx.split(model, nnx.Param)`.
    tokens: [B, S] left-padded prompt followed by the completion (`Rollout.tokens`).
    mask: [B, S] 1 on real tokens (prompt mask concatenated with the completion mask).
    completion_start: index of the first completion token (the prompt length), ≥ 1.
    temperature: τ > 0 dividing the logits.

  Returns:
    [B, S - completion_start] float32 log-probs, 0 where `mask` is 0.

  >>> from rewardjax.models.transformer import ModelConfig, Transformer
  >>> lm = Transformer(ModelConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
  ...                              num_layers=1, num_heads=2, num_kv_heads=1, head_dim=4),
  ...                  rngs=nnx.Rngs(0))
  >>> logps = token_logprobs(lm, jnp.array([[1, 2, 3, 4]]), jnp.array([[1, 1, 1, 0]]), 2)
  >>> logps.shape, bool(logps[0, 0] < 0), float(logps[0, 1])
  ((1, 2), True, 0.0)
  """
  if tokens.ndim != 2 or tokens.shape != mask.shape:
    raise ValueError(f"tokens {tokens.shape} and mask {mask.shape} must both be [B, S]")
  if not 1 <= completion_start < tokens.shape[1]:
    raise ValueError(f"completion_start={completion_start} must be in [1, S={tokens.shape[1]})")
  if temperature <= 0 or not math.isfinite(temperature):
    raise ValueError(f"temperature must be > 0, got {temperature}")
  graphdef, params = _split(model)
  return _token_logprobs(graphdef, params, tokens, mask, completion_start=completion_start,
                         temperature=float(temperature))
