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


# The instruction sets that decide XLA:CPU's and oneDNN's float32 / bfloat16 matmul kernels.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_flags() -> tuple[str, ...]:
  """The `ISA_FLAGS` this CPU reports in /proc/cpuinfo (Linux; () elsewhere)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("flags"):
          present = set(line.split(":", 1)[1].split())
          return tuple(flag for flag in ISA_FLAGS if flag in present)
  except OSError:
    pass  # not Linux
  return ()


def machine_class(flags: tuple[str, ...]) -> str:
  """"AMX", "AVX-512" or "AVX2" (or "other"): the class the README's benchmark tables use.

  >>> machine_class(("avx2", "fma", "avx512f")), machine_class(("avx2", "fma"))
  ('AVX-512', 'AVX2')
  """
  if "amx_tile" in flags:
    return "AMX"
  if "avx512f" in flags:
    return "AVX-512"
  return "AVX2" if "avx2" in flags else "other"


def describe(flops_per_s: float | None = None) -> str:
  """One line naming the machine a figure comes from: CPU model, class, ISA flags, cores and
  the measured float32 matmul rate (measured now unless given)."""
  import os  # noqa: PLC0415

  rate = matmul_flops_per_s() if flops_per_s is None else flops_per_s
  flags = cpu_flags()
  return (f"cpu: {cpu_model()} ({machine_class(flags)}; {' '.join(flags) or 'no flags read'}), "
          f"{os.cpu_count()} cores; float32 matmul {rate / 1e9:.1f} GFLOP/s (measured); "
          f"jax {jax.__version__}")


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
