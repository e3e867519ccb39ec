"""What this machine can do: measured float32 matmul FLOP/s, its CPU, and run times rescaled.

Every run's summary reports the measured rate next to its wall time, so a time measured on a
fast machine can be read as the time on the slowest machine the defaults are sized for:

  rate = matmul_flops_per_s(n=1024)            # ~1-2 s on a slow 2-core box
  slow_machine_seconds(wall_seconds, rate)     # the same run at ~60 GFLOP/s

The benchmarks (benchmarks/machine.py) print the same rate next to their own FLOP/s.
"""

import platform
import statistics
import time

import jax
import jax.numpy as jnp

# float32 matmul FLOP/s of the slowest machine class the defaults are sized for (a Zen 1 AVX2
# 2-core box measures about this with matmul_flops_per_s).
SLOW_MACHINE_FLOPS_PER_S = 60e9


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


def slow_machine_seconds(wall_seconds: float, flops_per_s: float,
                         reference: float = SLOW_MACHINE_FLOPS_PER_S) -> float:
  """What a run of `wall_seconds` here would take on the slowest machine class the defaults
  are sized for: wall_seconds * flops_per_s / reference.

  The reference, ~60 GFLOP/s float32 matmul, is e.g. a Zen 1 AVX2 2-core box. An estimate:
  it assumes the run is bound by matmul throughput, while tiny models are partly bound by
  per-step overhead (dispatch, Python), which scales differently between machines.

  >>> slow_machine_seconds(100.0, 120e9)
  200.0
  """
  return wall_seconds * flops_per_s / reference


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (Linux), else `platform.processor()`."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass  # not Linux
  return platform.processor() or "unknown"
