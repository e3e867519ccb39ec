"""Memory and speed of chunked token log-probs vs the naive full-logits path (README figure).

  python benchmarks/logprobs.py

Memory is XLA's compiled estimate (`memory_analysis()`: arguments + temporaries) of one
forward + backward (grads w.r.t. hidden and unembedding of sum(logps) + sum(entropy)) at
B=8, T=2048, D=1024, V=151,936 in bfloat16. Both paths are only compiled, never run: the naive
one needs tens of GB. Speed is the median wall time of the same step on a shape a CPU runs.
"""


import jax
import jax.numpy as jnp
import machine  # noqa: E402 (benchmarks/machine.py, next to this script)
import numpy as np

from rewardjax.kernels import logprobs

MEMORY_SHAPE = dict(B=8, T=2048, D=1024, V=151_936)
SPEED_SHAPE = dict(B=4, T=512, D=256, V=32_768)
CHUNK_SIZE = 128
GIB = 2 ** 30


def make_step(fn, **kwargs):
  """Jitted (loss, grads) of sum(logps) + sum(entropy) w.r.t. hidden and unembedding."""
  def loss(hidden, unembedding, targets):
    logps, entropy = fn(hidden, unembedding, targets, **kwargs)
    return jnp.sum(logps) + jnp.sum(entropy)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def abstract_inputs(B, T, D, V, dtype):
  return (jax.ShapeDtypeStruct((B, T, D), dtype), jax.ShapeDtypeStruct((D, V), dtype),
          jax.ShapeDtypeStruct((B, T), jnp.int32))


def compiled_bytes(step, args):
  stats = step.lower(*args).compile().memory_analysis()
  return stats.argument_size_in_bytes, stats.temp_size_in_bytes, stats.output_size_in_bytes


def memory_table(dtype=jnp.bfloat16):
  args = abstract_inputs(**MEMORY_SHAPE, dtype=dtype)
  rows = {
      "naive": compiled_bytes(make_step(logprobs.token_logprobs_reference), args),
      f"chunked (chunk_size={CHUNK_SIZE})": compiled_bytes(
          make_step(logprobs.token_logprobs_from_hidden, chunk_size=CHUNK_SIZE), args),
  }
  print(f"compiled memory, fwd+bwd, {MEMORY_SHAPE}, {jnp.dtype(dtype).name}")
  print(f"{'path':28s} {'args GiB':>9s} {'temp GiB':>9s} {'out GiB':>8s} {'args+temp':>10s}")
  for name, (arg, temp, out) in rows.items():
    print(f"{name:28s} {arg / GIB:9.2f} {temp / GIB:9.2f} {out / GIB:8.2f} "
          f"{(arg + temp) / GIB:10.2f}")
  naive, chunked = (sum(r[:2]) for r in rows.values())
  print(f"ratio chunked / naive (args + temp): {chunked / naive:.3f} (target <= 0.125); "
        f"temp only: {list(rows.values())[1][1] / list(rows.values())[0][1]:.3f}")


def speed_table(dtype=jnp.float32):
  B, T, D, V = SPEED_SHAPE.values()
  rng = np.random.default_rng(0)
  args = (jnp.asarray(rng.normal(size=(B, T, D)), dtype),
          jnp.asarray(rng.normal(size=(D, V)) / np.sqrt(D), dtype),
          jnp.asarray(rng.integers(0, V, size=(B, T)), jnp.int32))
  naive = machine.median_seconds(make_step(logprobs.token_logprobs_reference), args)
  chunked = machine.median_seconds(
      make_step(logprobs.token_logprobs_from_hidden, chunk_size=CHUNK_SIZE), args)
  print(f"speed, fwd+bwd, {SPEED_SHAPE}, {jnp.dtype(dtype).name}, {jax.default_backend()}: "
        f"naive {naive * 1e3:.0f} ms, chunked {chunked * 1e3:.0f} ms, "
        f"chunked / naive time {chunked / naive:.2f}")


if __name__ == "__main__":
  memory_table()
  speed_table()
