"""Pallas flash attention (FlashAttention-2) with structural masks, for GPU, TPU and CPU.

One kernel body per pass lowers to Triton (GPU) and Mosaic (TPU); on a CPU backend it runs in
Pallas interpret mode, which is how the tests check it. Visibility follows `attention.py`:

  visible[q, k] = (q_seg == kv_seg) & (kv_seg != 0) & (kv_pos <= q_pos if causal)
                  & (q_pos - kv_pos < window if sliding_window)

Layout inside the kernels is [B, H, S, K]. The grid runs over (batch, head, row block) and an
in-kernel loop walks the other sequence (Dao 2023, arXiv:2307.08691, Algorithms 1 and 2):
  forward  : grid over query blocks, loop over key blocks, online softmax;
  dK, dV   : grid over key blocks, loop over query blocks (Alg. 2 without the dQ atomics);
  dQ       : grid over query blocks, loop over key blocks.
Grouped-query heads read their shared K/V block through the index map (h // G); dK and dV are
written per query head in float32 and summed over the G heads of a group outside the kernel.
Segment ids and positions enter twice, stacked as one (segment, position) pair: as columns
[2, S, 1] for the gridded side and as rows [2, n_blocks, block] for the looped side, so every
mask is a broadcast of a column against a row and no in-kernel transpose is needed. Static
options (softmax scale, causal, window) reach the kernels as one frozen `KernelOptions`.

Masked scores never reach `exp` (sanitised with `where` first) and a query that sees no key
keeps l = 0, so its output, log-sum-exp residual and gradients are exactly zero.

Limits: on TPU the looped side of one (batch, head) sits in VMEM, so very long sequences need
`vmem_limit_bytes` raised or a key-block grid axis; sequences are padded internally to a
multiple of the block sizes.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float, Int

from rewardjax.kernels.attention import visibility_mask

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)  # Triton tiles are powers of two, dots need >= 16
SUPPORTED_DTYPES = ("float32", "bfloat16", "float16")
# Finite "minus infinity": MASK - MASK == 0 keeps the running max free of inf - inf = nan.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes (powers of two >= 16): forward, dK/dV and dQ passes, query and key sides."""
  block_q: int
  block_k: int
  block_q_dkv: int
  block_k_dkv: int
  block_q_dq: int
  block_k_dq: int

  def __post_init__(self):
    for name, size in dataclasses.asdict(self).items():
      if size < 16 or size & (size - 1):
        raise ValueError(f"BlockSizes.{name}={size} must be a power of two >= 16")

  @classmethod
  def get_default(cls, backend: str | None = None) -> "BlockSizes":
    """Untuned defaults: 128-lane tiles on TPU, 64/32 on GPU, 16 on CPU (interpret mode)."""
    backend = backend or target_backend()
    if backend == "tpu":
      return cls(128, 128, 128, 128, 128, 128)
    if backend == "gpu":
      return cls(64, 64, 32, 64, 64, 32)
    return cls(16, 16, 16, 16, 16, 16)


def target_backend() -> str:
  """The platform the traced program is for: the set mesh's (`jax.set_mesh`), else the default.

  An ahead-of-time compile for a TPU topology runs on a CPU host (`rewardjax.aot`): its mesh's
  devices are TPUs, so the kernels must lower for Mosaic, not run in interpret mode.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.abstract_device is not None:
    return mesh.abstract_device.platform
  return jax.default_backend()


@dataclasses.dataclass(frozen=True)
class KernelOptions:
  """Static options every kernel body closes over with functools.partial."""
  scale: float           # softmax scale, K ** -0.5
  causal: bool
  window: int | None     # sliding window, None for none


@dataclasses.dataclass(frozen=True)
class FlashOptions:
  """Static (jit-hashed) options of `flash_attention`.

  Attributes:
    causal: hide keys whose position is after the query's.
    sliding_window: if set, also hide keys `sliding_window` or more positions back.
    block_sizes: tiles; default `BlockSizes.get_default()` for the current backend.
    interpret: run the kernels in Pallas interpret mode; default True when the target
      (`target_backend`: the set mesh's platform, else the default backend) is a CPU.
  """
  causal: bool = True
  sliding_window: int | None = None
  block_sizes: BlockSizes | None = None
  interpret: bool | None = None


def _visible(q_seg, q_pos, kv_seg, kv_pos, *, causal, window):
  """The module-doc visibility rule; a column [n, 1] against a row [1, m] gives [n, m]."""
  visible = (q_seg == kv_seg) & (kv_seg != 0)
  if causal:
    visible &= kv_pos <= q_pos
  if window is not None:
    visible &= q_pos - kv_pos < window
  return visible


def _dot_nt(a, b):
  """a @ b.T accumulated in float32, without materialising the transpose."""
  return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _dot(a, b):
  return jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _fwd_kernel(q_ref, k_ref, v_ref, q_ids_ref, kv_ids_ref, o_ref, lse_ref, *, opts):
  """One query block against all key blocks: FlashAttention-2 Algorithm 1, lines 4-13."""
  block_k = kv_ids_ref.shape[2]
  q = q_ref[...]                                             # line 4: load Q_i
  q_seg, q_pos = q_ids_ref[0], q_ids_ref[1]                  # [bq, 1] columns
  block_q, head_dim = q.shape

  def body(j, carry):                                        # line 6: for j in 1..T_c
    acc, m_prev, l_prev = carry
    rows = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    k, v = k_ref[rows, :], v_ref[rows, :]                    # line 7: load K_j, V_j
    visible = _visible(q_seg, q_pos, kv_ids_ref[0, pl.ds(j, 1), :],
                       kv_ids_ref[1, pl.ds(j, 1), :], causal=opts.causal, window=opts.window)
    s = _dot_nt(q, k) * opts.scale                                # line 8: S = Q K^T
    m_cur = jnp.max(jnp.where(visible, s, MASK_VALUE), axis=1, keepdims=True)
    m_new = jnp.maximum(m_prev, m_cur)                       # line 9: running max m
    p = jnp.exp(jnp.where(visible, s - m_new, MASK_VALUE))  # line 9: P~ (0 where hidden)
    correction = jnp.exp(m_prev - m_new)
    l_new = correction * l_prev + jnp.sum(p, axis=1, keepdims=True)  # line 9: l
    acc = correction * acc + _dot(p.astype(v.dtype), v)     # line 10: O = diag(.)O + P~ V
    return acc, m_new, l_new

  init = (jnp.zeros((block_q, head_dim), jnp.float32),       # line 5: O = 0, m = -inf, l = 0
          jnp.full((block_q, 1), MASK_VALUE, jnp.float32),
          jnp.zeros((block_q, 1), jnp.float32))
  acc, m, l = jax.lax.fori_loop(0, kv_ids_ref.shape[1], body, init)
  # A query that sees no key has acc = 0 and l = 0: dividing by 1 gives the promised zeros.
  l = jnp.where(l == 0.0, 1.0, l)
  o_ref[...] = (acc / l).astype(o_ref.dtype)                 # line 12: O_i = diag(l)^-1 O
  lse_ref[...] = m + jnp.log(l)                              # line 13: L_i = m + log l


def _dkv_kernel(q_ref, do_ref, res_ref, k_ref, v_ref, q_ids_ref, kv_ids_ref, dk_ref, dv_ref, *,
                opts):
  """One key block against all query blocks: Algorithm 2, lines 6-19, in the transposed frame.

  Rows are keys and columns queries (S^T = K Q^T), so the per-query residuals L and D are rows
  (stacked in `res_ref` [2, n_blocks, bq]) and every product is a plain or NT matmul.
  """
  block_q = q_ids_ref.shape[2]
  k, v = k_ref[...], v_ref[...]                              # line 6: load K_j, V_j
  kv_seg, kv_pos = kv_ids_ref[0], kv_ids_ref[1]              # [bk, 1] columns

  def body(i, carry):                                        # line 8: for i in 1..T_r
    dk, dv = carry
    rows = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
    q, do = q_ref[rows, :], do_ref[rows, :]                  # line 9: load Q_i, dO_i
    lse, delta = res_ref[0, pl.ds(i, 1), :], res_ref[1, pl.ds(i, 1), :]  # [1, bq] rows
    visible_t = _visible(q_ids_ref[0, pl.ds(i, 1), :], q_ids_ref[1, pl.ds(i, 1), :], kv_seg,
                         kv_pos, causal=opts.causal, window=opts.window)
    s_t = _dot_nt(k, q) * opts.scale                              # line 10: S^T = K Q^T
    p_t = jnp.exp(jnp.where(visible_t, s_t - lse, MASK_VALUE))  # line 11: P = exp(S - L)
    dv = dv + _dot(p_t.astype(do.dtype), do)                 # line 12: dV += P^T dO
    dp_t = _dot_nt(v, do)                                    # line 13: dP^T = V dO^T
    ds_t = p_t * (dp_t - delta)                              # line 14: dS = P (dP - D)
    dk = dk + _dot(ds_t.astype(q.dtype), q)                  # line 16: dK += dS^T Q
    return dk, dv

  zeros = jnp.zeros(k.shape, jnp.float32)                   # line 7: dK_j = dV_j = 0
  dk, dv = jax.lax.fori_loop(0, q_ids_ref.shape[1], body, (zeros, zeros))
  dk_ref[...] = (dk * opts.scale).astype(dk_ref.dtype)            # line 18, with the softmax scale
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, do_ref, lse_ref, delta_ref, k_ref, v_ref, q_ids_ref, kv_ids_ref, dq_ref, *,
               opts):
  """One query block against all key blocks: Algorithm 2, line 15 (dQ += dS K) without atomics."""
  block_k = kv_ids_ref.shape[2]
  q, do = q_ref[...], do_ref[...]
  lse, delta = lse_ref[...], delta_ref[...]                  # [bq, 1] columns
  q_seg, q_pos = q_ids_ref[0], q_ids_ref[1]

  def body(j, dq):
    rows = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
    k, v = k_ref[rows, :], v_ref[rows, :]
    visible = _visible(q_seg, q_pos, kv_ids_ref[0, pl.ds(j, 1), :],
                       kv_ids_ref[1, pl.ds(j, 1), :], causal=opts.causal, window=opts.window)
    p = jnp.exp(jnp.where(visible, _dot_nt(q, k) * opts.scale - lse, MASK_VALUE))  # lines 10-11
    ds = p * (_dot_nt(do, v) - delta)                        # lines 13-14
    return dq + _dot(ds.astype(k.dtype), k)                  # line 15: dQ += dS K

  dq = jax.lax.fori_loop(0, kv_ids_ref.shape[1], body, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = (dq * opts.scale).astype(dq_ref.dtype)


def _pallas(kernel, *, grid, in_specs, out_specs, out_shape, interpret, name):
  """pl.pallas_call with the backend's compiler parameters (none in interpret mode)."""
  params, backend = None, target_backend()
  if not interpret and backend == "gpu":
    from jax.experimental.pallas import triton as plgpu  # noqa: PLC0415

    params = plgpu.CompilerParams(num_warps=4, num_stages=2)
  elif not interpret and backend == "tpu":
    from jax.experimental.pallas import tpu as pltpu  # noqa: PLC0415

    params = pltpu.CompilerParams(dimension_semantics=("parallel",) * len(grid))
  return pl.pallas_call(kernel, grid=grid, in_specs=in_specs, out_specs=out_specs,
                        out_shape=out_shape, interpret=interpret, compiler_params=params,
                        name=name)


def _column_spec(block):   # [B, 2, S, 1] ids, one block of rows per grid step
  return pl.BlockSpec((None, 2, block, 1), lambda b, h, i: (b, 0, i, 0))


def _rows_spec(ids_Bx2xNxC):  # [B, 2, n_blocks, block] ids, all of one batch row
  return pl.BlockSpec((None, *ids_Bx2xNxC.shape[1:]), lambda b, h, i: (b, 0, 0, 0))


# lax.div, not //: h >= 0, and floor division would put a `sign` op into the index map.
def _seq_spec(block, head_dim, group=1):  # [B, H, S, K] with one block of S per grid step
  return pl.BlockSpec((None, None, block, head_dim),
                      lambda b, h, i: (b, jax.lax.div(h, group), i, 0))


def _full_spec(length, head_dim, group=1):  # [B, H, S, K], all of S for one (batch, head)
  return pl.BlockSpec((None, None, length, head_dim),
                      lambda b, h, i: (b, jax.lax.div(h, group), 0, 0))


def _forward(q, k, v, ids, *, causal, window, blocks, interpret):
  """Pallas forward on padded [B, H, S, K] inputs; returns (out, (residuals))."""
  q_seg, kv_seg, q_pos, kv_pos = ids
  batch, heads, s_pad, head_dim = q.shape
  group, sk_pad = heads // k.shape[1], k.shape[2]
  bq, bk = blocks.block_q, blocks.block_k
  kv_rows = _rows(kv_seg, kv_pos, bk)
  opts = KernelOptions(scale=head_dim ** -0.5, causal=causal, window=window)
  out, lse = _pallas(
      functools.partial(_fwd_kernel, opts=opts),
      grid=(batch, heads, s_pad // bq),
      in_specs=[_seq_spec(bq, head_dim), _full_spec(sk_pad, head_dim, group),
                _full_spec(sk_pad, head_dim, group), _column_spec(bq), _rows_spec(kv_rows)],
      out_specs=[_seq_spec(bq, head_dim), _seq_spec(bq, 1)],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((batch, heads, s_pad, 1), jnp.float32)],
      interpret=interpret, name="flash_attention_fwd",
  )(q, k, v, _columns(q_seg, q_pos), kv_rows)
  return out, (q, k, v, ids, out, lse)


def _columns(seg_BxS, pos_BxS):  # -> [B, 2, S, 1]
  return jnp.stack([seg_BxS, pos_BxS], axis=1)[..., None]


def _rows(seg_BxS, pos_BxS, block):  # -> [B, 2, n_blocks, block]
  return jnp.stack([seg_BxS, pos_BxS], axis=1).reshape(seg_BxS.shape[0], 2, -1, block)


def _backward(residuals, d_out, *, causal, window, blocks, interpret):
  """dQ, dK, dV from the forward residuals (FlashAttention-2 Algorithm 2)."""
  q, k, v, ids, out, lse = residuals
  q_seg, kv_seg, q_pos, kv_pos = ids
  batch, heads, s_pad, head_dim = q.shape
  kv_heads, sk_pad = k.shape[1], k.shape[2]
  group = heads // kv_heads
  # Algorithm 2, line 4: D_i = rowsum(dO_i * O_i), an elementwise pass XLA fuses well.
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  opts = KernelOptions(scale=head_dim ** -0.5, causal=causal, window=window)

  bq, bk = blocks.block_q_dkv, blocks.block_k_dkv
  # L and D as rows, stacked: [B, H, 2, n_blocks, bq].
  res_rows = jnp.stack([lse, delta], axis=2).reshape(batch, heads, 2, -1, bq)
  res_spec = pl.BlockSpec((None, None, *res_rows.shape[2:]), lambda b, h, j: (b, h, 0, 0, 0))
  q_rows = _rows(q_seg, q_pos, bq)
  dk, dv = _pallas(
      functools.partial(_dkv_kernel, opts=opts),
      grid=(batch, heads, sk_pad // bk),
      in_specs=[_full_spec(s_pad, head_dim), _full_spec(s_pad, head_dim), res_spec,
                _seq_spec(bk, head_dim, group), _seq_spec(bk, head_dim, group),
                _rows_spec(q_rows), _column_spec(bk)],
      out_specs=[_seq_spec(bk, head_dim), _seq_spec(bk, head_dim)],
      out_shape=[jax.ShapeDtypeStruct((batch, heads, sk_pad, head_dim), jnp.float32)] * 2,
      interpret=interpret, name="flash_attention_dkv",
  )(q, d_out, res_rows, k, v, q_rows, _columns(kv_seg, kv_pos))
  # Query heads of one group share K and V: their gradients add up (float32, then cast).
  dk = dk.reshape(batch, kv_heads, group, sk_pad, head_dim).sum(axis=2).astype(k.dtype)
  dv = dv.reshape(batch, kv_heads, group, sk_pad, head_dim).sum(axis=2).astype(v.dtype)

  bq, bk = blocks.block_q_dq, blocks.block_k_dq
  kv_rows = _rows(kv_seg, kv_pos, bk)
  dq = _pallas(
      functools.partial(_dq_kernel, opts=opts),
      grid=(batch, heads, s_pad // bq),
      in_specs=[_seq_spec(bq, head_dim), _seq_spec(bq, head_dim), _seq_spec(bq, 1),
                _seq_spec(bq, 1), _full_spec(sk_pad, head_dim, group),
                _full_spec(sk_pad, head_dim, group), _column_spec(bq), _rows_spec(kv_rows)],
      out_specs=_seq_spec(bq, head_dim),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      interpret=interpret, name="flash_attention_dq",
  )(q, d_out, lse, delta, k, v, _columns(q_seg, q_pos), kv_rows)
  return dq, dk, dv, None  # integer ids get no cotangent


def _attention(q, k, v, ids, **options):
  return _forward(q, k, v, ids, **options)[0]


def _custom_vjp_attention(**options):
  """Padded-layout attention whose backward is the Pallas dQ / dK / dV pair of kernels."""
  attend = jax.custom_vjp(functools.partial(_attention, **options))
  attend.defvjp(functools.partial(_forward, **options), functools.partial(_backward, **options))
  return attend


def _clamp_blocks(blocks: BlockSizes, seq_q: int, seq_k: int) -> BlockSizes:
  """Shrinks tiles to the (power-of-two padded) sequence so short inputs are not padded far."""
  cap_q, cap_k = max(16, pl.next_power_of_2(seq_q)), max(16, pl.next_power_of_2(seq_k))
  return BlockSizes(min(blocks.block_q, cap_q), min(blocks.block_k, cap_k),
                    min(blocks.block_q_dkv, cap_q), min(blocks.block_k_dkv, cap_k),
                    min(blocks.block_q_dq, cap_q), min(blocks.block_k_dq, cap_k))


def _check_inputs(query, key, value, q_segment_ids, kv_segment_ids, q_positions, kv_positions,
                  sliding_window):
  if query.ndim != 4 or key.ndim != 4 or key.shape != value.shape:
    raise ValueError(f"expected q [B, S, H, K] and k = v [B, Sk, Hkv, K], got {query.shape}, "
                     f"{key.shape}, {value.shape}")
  batch, seq_q, heads, head_dim = query.shape
  if key.shape[0] != batch or key.shape[3] != head_dim or heads % key.shape[2]:
    raise ValueError(f"q {query.shape} and k {key.shape} disagree on B or K, or H is not a "
                     "multiple of Hkv")
  if head_dim not in SUPPORTED_HEAD_DIMS:
    raise ValueError(f"head dim {head_dim} is not supported; use one of {SUPPORTED_HEAD_DIMS}")
  dtypes = {jnp.dtype(x.dtype).name for x in (query, key, value)}
  if len(dtypes) != 1 or not dtypes <= set(SUPPORTED_DTYPES):
    raise ValueError(f"q, k, v dtypes {sorted(dtypes)} must be one of {SUPPORTED_DTYPES}")
  for name, ids, shape in (("q_segment_ids", q_segment_ids, (batch, seq_q)),
                           ("q_positions", q_positions, (batch, seq_q)),
                           ("kv_segment_ids", kv_segment_ids, key.shape[:2]),
                           ("kv_positions", kv_positions, key.shape[:2])):
    if ids.shape != shape:
      raise ValueError(f"{name} has shape {ids.shape}, expected {shape}")
  if sliding_window is not None and sliding_window < 1:
    raise ValueError(f"sliding_window={sliding_window} must be a positive int or None")


@functools.partial(jax.jit, static_argnames=("options",))
def flash_attention(
    query: Float[Array, "B S H K"],
    key: Float[Array, "B Sk Hkv K"],
    value: Float[Array, "B Sk Hkv K"],
    *,
    q_segment_ids: Int[Array, "B S"],
    kv_segment_ids: Int[Array, "B Sk"],
    q_positions: Int[Array, "B S"],
    kv_positions: Int[Array, "B Sk"],
    options: FlashOptions | None = None,
) -> Float[Array, "B S H K"]:
  """Fused softmax(q k^T / sqrt(K)) v over the visible keys, with a Pallas forward and backward.

  out[b, s, h] = sum_k softmax_k(q[b, s, h] . k[b, k, h // G] / sqrt(K)) v[b, k, h // G]
  over the keys visible under the module-doc rule, G = H / Hkv (grouped-query attention).
  Softmax statistics and all matmul accumulations are float32; normaliser l = sum of exp over
  visible keys, with l = 0 (no visible key) giving an output of exactly 0.

  Args:
    query: [B, S, H, K] queries; float32, bfloat16 or float16; K in SUPPORTED_HEAD_DIMS.
    key: [B, Sk, Hkv, K] keys, same dtype; H must be a multiple of Hkv.
    value: [B, Sk, Hkv, K] values.
    q_segment_ids: [B, S] segment of each query, 0 = padding.
    kv_segment_ids: [B, Sk] segment of each key, 0 = padding / empty cache slot.
    q_positions: [B, S] position of each query.
    kv_positions: [B, Sk] position of each key.
    options: static `FlashOptions` (causal, sliding_window, block_sizes, interpret); default
      `FlashOptions()`: causal, no window, backend-default tiles, interpret on CPU.

  Returns:
    [B, S, H, K] in the query dtype; rows that see no key are zero (and so are their grads).

  References:
    Dao, "FlashAttention-2", arXiv:2307.08691, Algorithms 1 (forward) and 2 (backward).

  >>> ones = jnp.ones((1, 2, 1, 16))
  >>> v = jnp.concatenate([ones[:, :1], 3 * ones[:, 1:]], axis=1)   # values 1 then 3
  >>> ids, pos = jnp.ones((1, 2), jnp.int32), jnp.arange(2)[None]
  >>> out = flash_attention(ones, ones, v, q_segment_ids=ids, kv_segment_ids=ids,
  ...                       q_positions=pos, kv_positions=pos)
  >>> [round(float(x), 4) for x in out[0, :, 0, 0]]   # query 0 sees v=1, query 1 averages 1, 3
  [1.0, 2.0]
  """
  options = options or FlashOptions()
  _check_inputs(query, key, value, q_segment_ids, kv_segment_ids, q_positions, kv_positions,
                options.sliding_window)
  seq_q, seq_k = query.shape[1], key.shape[1]
  blocks = _clamp_blocks(options.block_sizes or BlockSizes.get_default(), seq_q, seq_k)
  interpret = options.interpret
  if interpret is None:
    interpret = target_backend() == "cpu"
  # Pad both sequences to whole tiles; padded slots get segment 0, so they are never visible.
  pad_q = -seq_q % max(blocks.block_q, blocks.block_q_dkv, blocks.block_q_dq)
  pad_k = -seq_k % max(blocks.block_k, blocks.block_k_dkv, blocks.block_k_dq)

  def to_kernel_layout(x_BxSxHxK, pad):  # [B, S, H, K] -> [B, H, S + pad, K]
    return jnp.pad(x_BxSxHxK, ((0, 0), (0, pad), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  def pad_ids(x_BxS, pad):
    return jnp.pad(x_BxS.astype(jnp.int32), ((0, 0), (0, pad)))

  ids = (pad_ids(q_segment_ids, pad_q), pad_ids(kv_segment_ids, pad_k),
         pad_ids(q_positions, pad_q), pad_ids(kv_positions, pad_k))
  attend = _custom_vjp_attention(causal=options.causal, window=options.sliding_window,
                                 blocks=blocks, interpret=interpret)
  out_BxHxSxK = attend(to_kernel_layout(query, pad_q), to_kernel_layout(key, pad_k),
                       to_kernel_layout(value, pad_k), ids)
  return out_BxHxSxK[:, :, :seq_q].transpose(0, 2, 1, 3)


def flash_attention_reference(
    query: Float[Array, "B S H K"],
    key: Float[Array, "B Sk Hkv K"],
    value: Float[Array, "B Sk Hkv K"],
    *,
    q_segment_ids: Int[Array, "B S"],
    kv_segment_ids: Int[Array, "B Sk"],
    q_positions: Int[Array, "B S"],
    kv_positions: Int[Array, "B Sk"],
    causal: bool = True,
    sliding_window: int | None = None,
) -> Float[Array, "B S H K"]:
  """Plain-jnp attention with the kernel's contract (float32 math, zeros for unseen rows).

  Same equation, arguments and return as `flash_attention`, with a dense [B, S, Sk] mask from
  `attention.visibility_mask` and full [B, H, S, Sk] scores at HIGHEST matmul precision.

  >>> x = jnp.ones((1, 2, 1, 16))
  >>> no_keys = jnp.zeros((1, 2), jnp.int32)   # every key is padding
  >>> out = flash_attention_reference(x, x, x, q_segment_ids=no_keys + 1,
  ...     kv_segment_ids=no_keys, q_positions=no_keys, kv_positions=no_keys)
  >>> print(float(jnp.abs(out).max()))
  0.0
  """
  batch, seq_q, heads, head_dim = query.shape
  kv_heads = key.shape[2]
  q_BxSxHkvxGxK = query.astype(jnp.float32).reshape(batch, seq_q, kv_heads, -1, head_dim)
  hi = jax.lax.Precision.HIGHEST
  s = jnp.einsum("bqhgk,bshk->bhgqs", q_BxSxHkvxGxK, key.astype(jnp.float32), precision=hi)
  s = s / math.sqrt(head_dim)
  visible = visibility_mask(q_segment_ids, kv_segment_ids, q_positions, kv_positions,
                            causal=causal, sliding_window=sliding_window)[:, :, None]
  s = jnp.where(visible, s, MASK_VALUE)  # sanitised before exp: finite value and gradient
  p = jnp.where(visible, jnp.exp(s - jnp.max(s, axis=-1, keepdims=True)), 0.0)
  l = jnp.sum(p, axis=-1, keepdims=True)
  p = p / jnp.where(l == 0.0, 1.0, l)
  out = jnp.einsum("bhgqs,bshk->bqhgk", p, value.astype(jnp.float32), precision=hi)
  return out.reshape(batch, seq_q, heads, head_dim).astype(query.dtype)
