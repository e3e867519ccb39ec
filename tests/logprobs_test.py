"""Chunked token log-probs / entropy equal the full-logits path, and use less compiled memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rewardjax.kernels import logprobs

B, T, D, V = 2, 13, 8, 50  # T = 13 is not a multiple of the chunk size 4: the tail is padded


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  unembedding = jnp.asarray(rng.normal(size=(D, V)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, V, size=(B, T)), jnp.int32)
  cotangents = tuple(jnp.asarray(rng.normal(size=(B, T)), jnp.float32) for _ in range(2))
  return hidden, unembedding, targets, cotangents


def _numpy_logprobs(hidden, unembedding, targets, temperature):
  """float64 numpy, from the formula: log softmax(h W / temperature) and its entropy."""
  logits = np.einsum("btd,dv->btv", np.float64(hidden), np.float64(unembedding)) / temperature
  logits -= logits.max(axis=-1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
  logps = np.take_along_axis(log_p, np.asarray(targets)[..., None], axis=-1)[..., 0]
  return logps, -(np.exp(log_p) * log_p).sum(axis=-1)


@pytest.fixture(scope="module")
def results(inputs):
  """Values and grads of <c1, logps> + <c2, entropy>, chunked and naive, in one compilation.

  Keys: (path, return_entropy) with path in {"chunked", "naive"}; temperature 0.7 throughout.
  """
  hidden, unembedding, targets, (c_logps, c_entropy) = inputs
  paths = {"chunked": functools.partial(logprobs.token_logprobs_from_hidden, chunk_size=4),
           "naive": logprobs.token_logprobs_reference}

  def objective(fn, return_entropy):
    def f(hidden, unembedding):
      out = fn(hidden, unembedding, targets, return_entropy=return_entropy, temperature=0.7)
      if not return_entropy:
        return jnp.sum(c_logps * out), (out,)
      return jnp.sum(c_logps * out[0]) + jnp.sum(c_entropy * out[1]), out
    return jax.grad(f, argnums=(0, 1), has_aux=True)

  @jax.jit
  def run(hidden, unembedding):
    return {(path, flag): objective(fn, flag)(hidden, unembedding)
            for path, fn in paths.items() for flag in (True, False)}
  return run(hidden, unembedding)


def test_values_match_float64_numpy(inputs, results):
  hidden, unembedding, targets, _ = inputs
  want_logps, want_entropy = _numpy_logprobs(hidden, unembedding, targets, temperature=0.7)
  for path in ("chunked", "naive"):
    _, (logps, entropy) = results[path, True]
    assert logps.dtype == entropy.dtype == jnp.float32 and logps.shape == (B, T)
    np.testing.assert_allclose(logps, want_logps, atol=1e-5, rtol=1e-5, err_msg=path)
    np.testing.assert_allclose(entropy, want_entropy, atol=1e-5, rtol=1e-5, err_msg=path)
    np.testing.assert_allclose(results[path, False][1][0], want_logps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("return_entropy", [True, False])
def test_grads_match_naive_autodiff(results, return_entropy):
  """d/d(hidden, unembedding) of <c1, logps> + <c2, entropy>: custom VJP == autodiff."""
  got, _ = results["chunked", return_entropy]
  want, _ = results["naive", return_entropy]
  for g, w in zip(got, want):
    assert g.dtype == w.dtype == jnp.float32
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=2e-5)


def test_check_grads_finite_differences(inputs):
  hidden, unembedding, targets, (c_logps, c_entropy) = inputs

  def f(hidden, unembedding):
    logps, entropy = logprobs.token_logprobs_from_hidden(hidden, unembedding, targets[:, :5],
                                                         chunk_size=2)
    return jnp.sum(c_logps[:, :5] * logps) + jnp.sum(c_entropy[:, :5] * entropy)

  check_grads(jax.jit(f), (hidden[:, :5], unembedding), order=1, modes=["rev"])


def test_bfloat16_inputs_keep_float32_outputs_and_input_dtype_grads(inputs):
  hidden, unembedding, targets, _ = inputs
  h16, w16 = hidden.astype(jnp.bfloat16), unembedding.astype(jnp.bfloat16)
  logps, entropy = logprobs.token_logprobs_from_hidden(h16, w16, targets, chunk_size=4)
  ref_logps, ref_entropy = jax.jit(logprobs.token_logprobs_reference)(h16, w16, targets)
  assert logps.dtype == jnp.float32
  # Same bf16 products, float32 accumulation in both paths: only summation order differs.
  np.testing.assert_allclose(logps, ref_logps, atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(entropy, ref_entropy, atol=1e-4, rtol=1e-5)
  grads = jax.jit(jax.grad(lambda h, w: jnp.sum(logprobs.token_logprobs_from_hidden(
      h, w, targets, chunk_size=4, return_entropy=False)), argnums=(0, 1)))(h16, w16)
  assert grads[0].dtype == grads[1].dtype == jnp.bfloat16


def test_chunked_grad_path_compiles_to_less_memory():
  """B=2, T=256, V=4096: [B, T, V] float32 is 8 MiB per copy; chunks of 32 are 1 MiB.

  The naive forward+backward holds several full-size copies (logits, softmax, cotangent); the
  chunked path holds a few chunk-size ones plus the [D, V] float32 gradient accumulator, so its
  arguments + temporaries must be under a quarter of the naive ones.
  """
  shapes = (jax.ShapeDtypeStruct((2, 256, 32), jnp.float32),
            jax.ShapeDtypeStruct((32, 4096), jnp.float32),
            jax.ShapeDtypeStruct((2, 256), jnp.int32))

  def compiled_bytes(fn, **kwargs):
    def loss(hidden, unembedding, targets):
      logps, entropy = fn(hidden, unembedding, targets, **kwargs)
      return jnp.sum(logps) + jnp.sum(entropy)
    stats = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*shapes).compile().memory_analysis()
    return stats.argument_size_in_bytes + stats.temp_size_in_bytes

  naive = compiled_bytes(logprobs.token_logprobs_reference)
  chunked = compiled_bytes(logprobs.token_logprobs_from_hidden, chunk_size=32)
  assert naive > 2 * 8 * 2 ** 20  # at least two full [B, T, V] float32 buffers
  assert chunked < naive / 4, (chunked, naive)
