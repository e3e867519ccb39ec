"""Pallas flash attention in interpret mode equals the jnp reference, values and gradients.

Every case uses blocks of 16 and lengths that are not multiples of 16, so the padded tail and
several blocks per row are exercised. The interpret-mode HLO is large, so each case is jitted
once (output and all three gradients together) with XLA's cheap CPU compile options; they
change compile time, not the computed semantics.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rewardjax.kernels import flash_attention as fa
from rewardjax.models.transformer import ModelConfig, Transformer

BLOCKS = fa.BlockSizes(16, 16, 16, 16, 16, 16)
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
HEAD_DIM = 16


def _arange(batch, length, start=0):
  return np.broadcast_to(np.arange(start, start + length), (batch, length)).copy()


def _case_causal_padded_packed():
  """Row 0 left-padded by 5, row 1 three packed segments, row 2 right-padded by 6; GQA 4:2."""
  seg, pos = np.ones((3, 37), np.int32), _arange(3, 37)
  seg[0, :5], pos[0] = 0, np.maximum(np.arange(37) - 5, 0)
  seg[1] = np.repeat([1, 2, 3], [12, 18, 7])
  pos[1] = np.concatenate([np.arange(12), np.arange(18), np.arange(7)])
  seg[2, 31:] = 0
  return dict(shape=(3, 37, 37, 4, 2), causal=True, window=None, ids=(seg, seg, pos, pos))


def _case_sliding_window_mqa():
  """Window of 6 positions; row 1 packs two segments; one KV head for 4 query heads."""
  seg, pos = np.ones((2, 40), np.int32), _arange(2, 40)
  seg[1, 23:], pos[1, 23:] = 2, np.arange(17)
  return dict(shape=(2, 40, 40, 4, 1), causal=True, window=6, ids=(seg, seg, pos, pos))


def _case_cache_continuation():
  """19 new queries at positions 16..34 over a 35-slot cache whose row 0 ends in 3 empty slots."""
  q_seg, kv_seg = np.ones((2, 19), np.int32), np.ones((2, 35), np.int32)
  kv_seg[0, 32:] = 0
  return dict(shape=(2, 19, 35, 2, 2), causal=True, window=None,
              ids=(q_seg, kv_seg, _arange(2, 19, start=16), _arange(2, 35)))


def _case_bidirectional():
  """Non-causal (encoder-style) attention; row 1 has 3 padding queries and 4 padding keys."""
  q_seg, kv_seg = np.ones((2, 21), np.int32), np.ones((2, 21), np.int32)
  q_seg[1, :3], kv_seg[1, -4:] = 0, 0
  return dict(shape=(2, 21, 21, 2, 1), causal=False, window=None,
              ids=(q_seg, kv_seg, _arange(2, 21), _arange(2, 21)))


CASES = {"causal_padded_packed": _case_causal_padded_packed,
         "sliding_window_mqa": _case_sliding_window_mqa,
         "cache_continuation": _case_cache_continuation,
         "bidirectional": _case_bidirectional}


def _inputs(case, dtype, seed=0):
  batch, seq_q, seq_k, heads, kv_heads = case["shape"]
  rng = np.random.default_rng(seed)
  q, d_out = (rng.normal(size=(batch, seq_q, heads, HEAD_DIM)) for _ in range(2))
  k, v = (rng.normal(size=(batch, seq_k, kv_heads, HEAD_DIM)) for _ in range(2))
  return tuple(jnp.asarray(x, dtype) for x in (q, k, v, d_out))


def _out_and_grads(fn, case, args):
  """Jitted (out, dq, dk, dv) of `fn` for the cotangent d_out, compiled once."""
  names = ("q_segment_ids", "kv_segment_ids", "q_positions", "kv_positions")
  structure = {n: jnp.asarray(x, jnp.int32) for n, x in zip(names, case["ids"])}

  def step(q, k, v, d_out):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, causal=case["causal"],
                                          sliding_window=case["window"], **structure), q, k, v)
    return out, *vjp(d_out)
  return jax.jit(step).lower(*args).compile(FAST_COMPILE)(*args)


def _kernel(q, k, v, *, causal, sliding_window, **ids):
  options = fa.FlashOptions(causal=causal, sliding_window=sliding_window, block_sizes=BLOCKS)
  return fa.flash_attention(q, k, v, options=options, **ids)


@pytest.fixture(scope="module", params=list(CASES))
def f32_case(request):
  case = CASES[request.param]()
  args = _inputs(case, jnp.float32)
  return (case, _out_and_grads(_kernel, case, args),
          _out_and_grads(fa.flash_attention_reference, case, args))


def test_f32_output_and_grads_match_reference(f32_case):
  """float32: out, dq, dk, dv agree to 2e-5 (O(1) values; ~100 float32 ulps of slack)."""
  _, kernel, reference = f32_case
  for name, got, want in zip(("out", "dq", "dk", "dv"), kernel, reference):
    assert got.shape == want.shape and got.dtype == want.dtype, name
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5, err_msg=name)


def test_queries_that_see_no_key_give_zeros_and_finite_grads(f32_case):
  """Exactly the padding queries see no key; their output and dq are 0, all grads finite."""
  case, (out, dq, dk, dv), _ = f32_case
  q_seg, kv_seg, q_pos, kv_pos = (x[:, :, None] if i % 2 == 0 else x[:, None, :]
                                  for i, x in enumerate(case["ids"]))
  visible = (q_seg == kv_seg) & (kv_seg != 0)
  if case["causal"]:
    visible &= kv_pos <= q_pos
  if case["window"] is not None:
    visible &= q_pos - kv_pos < case["window"]
  blind_BxS = ~visible.any(axis=-1)
  np.testing.assert_array_equal(blind_BxS, case["ids"][0] == 0)
  assert float(jnp.abs(out[blind_BxS]).max(initial=0.0)) == 0.0
  assert float(jnp.abs(dq[blind_BxS]).max(initial=0.0)) == 0.0
  assert all(bool(jnp.isfinite(g).all()) for g in (out, dq, dk, dv))


def _naive_bf16(q, k, v, *, q_segment_ids, kv_segment_ids, q_positions, kv_positions, causal,
                sliding_window):
  """Textbook attention computed entirely in bfloat16: the error budget bf16 itself allows."""
  group = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
  s = jnp.einsum("bqhk,bshk->bhqs", q, k) / jnp.asarray(np.sqrt(q.shape[-1]), q.dtype)
  visible = (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) & (
      kv_segment_ids[:, None, :] != 0)
  if causal:
    visible &= kv_positions[:, None, :] <= q_positions[:, :, None]
  if sliding_window is not None:
    visible &= q_positions[:, :, None] - kv_positions[:, None, :] < sliding_window
  s = jnp.where(visible[:, None], s, -1e4)
  p = jnp.where(visible[:, None], jnp.exp(s - s.max(axis=-1, keepdims=True)), 0)
  p = p / jnp.maximum(p.sum(axis=-1, keepdims=True), 1e-3)
  return jnp.einsum("bhqs,bshk->bqhk", p, v)


def test_bf16_error_is_at_most_twice_naive_bf16_error():
  """bfloat16 inputs: |kernel - f32 reference| <= 2 |naive bf16 - f32 reference| + 2^-8.

  FlashAttention's own test criterion (Dao et al., tests/test_flash_attn.py): the fused kernel
  may lose at most twice the accuracy a plain bf16 implementation loses; the 2^-8 floor (one
  bf16 ulp at 1) covers entries where the naive error happens to be zero.
  """
  case = _case_causal_padded_packed()
  args = _inputs(case, jnp.bfloat16, seed=1)
  kernel = _out_and_grads(_kernel, case, args)
  naive = _out_and_grads(_naive_bf16, case, args)
  exact = _out_and_grads(fa.flash_attention_reference, case,
                         tuple(x.astype(jnp.float32) for x in args))
  for name, got, base, want in zip(("out", "dq", "dk", "dv"), kernel, naive, exact):
    assert got.dtype == jnp.bfloat16, name
    kernel_error = float(jnp.abs(got.astype(jnp.float32) - want).max())
    naive_error = float(jnp.abs(base.astype(jnp.float32) - want).max())
    assert kernel_error <= 2 * naive_error + 2 ** -8, (name, kernel_error, naive_error)


def test_pallas_model_forward_equals_xla():
  """A 2-layer GQA model: attention_impl="pallas" and "xla" agree on every real token."""
  small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
               num_kv_heads=2, head_dim=HEAD_DIM)
  graphdefs = {}
  for impl in ("xla", "pallas"):
    config = ModelConfig(attention_impl=impl, **small)
    graphdefs[impl], abstract = nnx.split(
        nnx.eval_shape(lambda config=config: Transformer(config, rngs=nnx.Rngs(0))))
  # One parameter tree for both models, drawn in numpy: no per-initializer compilations.
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda x: jnp.asarray(rng.normal(1.0 if x.ndim == 1 else 0.0, 0.1, x.shape), x.dtype),
      abstract)
  tokens = jnp.asarray(rng.integers(0, 64, (2, 21)), jnp.int32)
  mask = jnp.ones((2, 21), jnp.int32).at[1, :4].set(0)  # row 1 left-padded

  def hidden(impl):
    run = lambda p, t, m: nnx.merge(graphdefs[impl], p).hidden_states(t, attention_mask=m)[0]
    return jax.jit(run).lower(params, tokens, mask).compile(FAST_COMPILE)(params, tokens, mask)

  real = np.asarray(mask, bool)
  np.testing.assert_allclose(hidden("pallas")[real], hidden("xla")[real], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("head_dim, dtype", [(24, jnp.float32), (16, jnp.float8_e4m3fn)])
def test_unsupported_head_dim_or_dtype_raises(head_dim, dtype):
  x = jnp.zeros((1, 4, 2, head_dim), dtype)
  ids = jnp.ones((1, 4), jnp.int32)
  with pytest.raises(ValueError, match=r"16, 32, 64, 128, 256|float32', 'bfloat16"):
    fa.flash_attention(x, x, x, q_segment_ids=ids, kv_segment_ids=ids, q_positions=ids,
                       kv_positions=ids)


def test_block_sizes_must_be_powers_of_two():
  with pytest.raises(ValueError, match="power of two"):
    fa.BlockSizes(16, 24, 16, 16, 16, 16)
  assert fa.BlockSizes.get_default("tpu").block_k % 128 == 0
