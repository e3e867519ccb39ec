"""Forward + backward time of attention impls: Pallas flash vs XLA vs cuDNN (README figure).

  python benchmarks/attention.py

On a GPU or TPU: causal self-attention, B=1, H=16 query heads, 8 KV heads, K=128, bfloat16,
T = 1k ... 16k, median wall time of jit(grad) over a few runs; "OOM" where XLA's dense
[B, H, T, T] scores do not fit. Without an accelerator it says so and instead runs one tiny
interpret-mode shape, checking the Pallas output and gradients against the reference.
"""


import jax
import jax.numpy as jnp
import machine  # noqa: E402 (benchmarks/machine.py, next to this script)

from rewardjax.kernels import attention, flash_attention

LENGTHS = (1024, 2048, 4096, 8192, 16384)
BATCH, HEADS, KV_HEADS, HEAD_DIM = 1, 16, 8, 128


def make_inputs(batch, length, heads, kv_heads, head_dim, dtype, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (batch, length, heads, head_dim), dtype)
  k = jax.random.normal(keys[1], (batch, length, kv_heads, head_dim), dtype)
  v = jax.random.normal(keys[2], (batch, length, kv_heads, head_dim), dtype)
  d_out = jax.random.normal(keys[3], q.shape, dtype)
  ids = jnp.ones((batch, length), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
  structure = dict(q_segment_ids=ids, kv_segment_ids=ids, q_positions=positions,
                   kv_positions=positions)
  return (q, k, v, d_out), structure


def make_step(fn, structure):
  """jit of (out, dq, dk, dv) for the cotangent d_out: one forward plus one backward."""
  def step(q, k, v, d_out):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, **structure), q, k, v)
    return out, *vjp(d_out)
  return jax.jit(step)


def accelerator_table():
  backend = jax.default_backend()
  impls = ("pallas", "xla", "cudnn") if backend == "gpu" else ("pallas", "xla")
  print(f"fwd+bwd ms, causal, B={BATCH} H={HEADS} Hkv={KV_HEADS} K={HEAD_DIM} bf16, "
        f"{jax.devices()[0].device_kind}")
  print(f"{'T':>6s} " + " ".join(f"{impl:>8s}" for impl in impls))
  for length in LENGTHS:
    args, structure = make_inputs(BATCH, length, HEADS, KV_HEADS, HEAD_DIM, jnp.bfloat16)
    cells = []
    for impl in impls:
      fn = lambda q, k, v, impl=impl, **s: attention.attention(q, k, v, impl=impl, **s)
      try:
        cells.append(f"{1e3 * machine.median_seconds(make_step(fn, structure), args):8.2f}")
      except Exception as error:  # noqa: BLE001 (OOM or an unsupported shape: report, go on)
        oom = "memory" in str(error).lower()
        cells.append("     OOM" if oom else f"{type(error).__name__:>8.8s}")
    print(f"{length:6d} " + " ".join(cells))


def cpu_line():
  print(f"no GPU/TPU (backend {jax.default_backend()!r}): the accelerator table needs one. "
        "Tiny interpret-mode check instead:")
  args, structure = make_inputs(2, 40, 4, 2, 16, jnp.float32)
  options = flash_attention.FlashOptions(
      block_sizes=flash_attention.BlockSizes(16, 16, 16, 16, 16, 16))
  pallas_step = make_step(
      lambda q, k, v, **s: flash_attention.flash_attention(q, k, v, options=options, **s),
      structure)
  reference_step = make_step(flash_attention.flash_attention_reference, structure)
  errors = [float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(pallas_step(*args), reference_step(*args))]
  print("B=2 S=40 H=4 Hkv=2 K=16 f32, blocks 16: max |pallas - reference| out/dq/dk/dv = "
        + ", ".join(f"{e:.1e}" for e in errors)
        + f"; pallas (interpret) {1e3 * machine.median_seconds(pallas_step, args):.1f} ms, "
        f"reference {1e3 * machine.median_seconds(reference_step, args):.2f} ms")


if __name__ == "__main__":
  if jax.default_backend() in ("gpu", "tpu"):
    accelerator_table()
  else:
    cpu_line()
