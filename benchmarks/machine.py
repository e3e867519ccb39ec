"""What the machine can do, for the FLOP/s lines every benchmark prints next to its own."""

import statistics
import time

import jax
import jax.numpy as jnp


def matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
  """Measured float32 matmul throughput of this machine (JAX): 2 n^3 / median time."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2.0 * n**3 / statistics.median(times)
