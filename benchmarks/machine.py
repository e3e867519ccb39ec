"""What the machine can do, for the FLOP/s lines every benchmark prints next to its own."""

import statistics
import time

import jax
import jax.numpy as jnp


def median_seconds(step, args=(), repeats: int = 5) -> float:
  """Median wall seconds of `step(*args)` until its outputs are ready, after one warm-up call
  (which compiles)."""
  jax.block_until_ready(step(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(step(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
  """Measured float32 matmul throughput of this machine (JAX): 2 n^3 / median time."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  return 2.0 * n**3 / median_seconds(jax.jit(jnp.matmul), (a, a), repeats)
