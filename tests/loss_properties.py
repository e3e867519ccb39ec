"""The property harness shared by the loss test modules that use a `CASES` table.

A module defines `CASES = {name: Case(make, call, ref)}` and binds the shared tests with
`case, test_reference_..., test_check_grads = loss_properties.harness(CASES)`: each case is run
against its numpy reference on random masked inputs, on fully masked inputs (finite value and
gradient under jit, vmap and grad, exactly 0 loss, one trace for both), and by `check_grads`.
"""

import dataclasses
import functools
import zlib
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

TRL_METRICS = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
               "logps/chosen", "logps/rejected"}


def logsig(x):  # log σ(x) in float64, stable; scalars or arrays
  return -np.logaddexp(0.0, -np.float64(x))


def nls(x):  # -log σ(x)
  return -logsig(x)


def sig(x):
  return 1.0 / (1.0 + np.exp(-np.float64(x)))


B, K = 5, 4  # rows (pairs or lists) and responses per list of the random inputs


def pair_mask(rng, degenerate, n=B):
  return np.zeros(n, np.float32) if degenerate else (rng.random(n) < 0.7).astype(np.float32)


def list_mask(rng, degenerate):
  if degenerate:
    return np.zeros((B, K), np.float32)
  w = (rng.random((B, K)) < 0.75).astype(np.float32)
  w[0] = 0.0  # a fully masked list
  w[1, 1:] = 0.0  # a list with one response
  return w


def scores(rng, shape, w, degenerate, fill=np.nan):
  x = rng.normal(size=shape).astype(np.float32)
  # Masked slots hold garbage: the losses must not let it reach the value or the gradient.
  return np.where(w > 0, x, fill).astype(np.float32) if degenerate else x


@dataclasses.dataclass(frozen=True)
class Case:
  """A loss under test: `diff` args carry the gradient, `data` args are masks, ranks, labels."""
  make: Callable  # (rng, degenerate) -> (diff tuple, data tuple) of numpy arrays
  call: Callable  # (diff, data) -> (loss, metrics), on jnp arrays
  ref: Callable  # (diff, data) -> float, on numpy arrays


def j(*xs):
  return tuple(jnp.asarray(x) for x in xs)


def mean_or_zero(xs):
  return float(np.mean(xs)) if len(xs) else 0.0


def all_finite(tree):
  return all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(tree))


def jit(fn, **static):
  """Jitted `fn` with keyword options fixed: one compile instead of dozens of eager op compiles."""
  return jax.jit(functools.partial(fn, **static))


def jit_grad(fn, **static):
  return jax.jit(jax.grad(lambda x, *a: fn(x, *a, **static)[0]))


def harness(cases: dict):
  """(fixture `case`, reference-and-masked test, check_grads test) over `cases`."""

  @pytest.fixture(scope="module", params=sorted(cases))
  def case(request):
    c = cases[request.param]
    rng = np.random.default_rng(zlib.crc32(request.param.encode()))
    return c, c.make(rng, False), c.make(rng, True)

  def test_reference_and_fully_masked_finite_under_jit_vmap_grad_one_trace(case):
    c, (diff, data), (diff0, data0) = case
    # One jit(vmap(value_and_grad)) over [random inputs, fully masked inputs]; masked slots of
    # the latter hold NaN / -inf. Swapping the two must not retrace.
    value_and_grad = jax.value_and_grad(lambda d, x: c.call(d, x), has_aux=True)
    chex.clear_trace_counter()
    step = jax.jit(chex.assert_max_traces(lambda d, x: jax.vmap(value_and_grad)(d, x), n=1))
    pair = [(diff, data), (diff0, data0)]
    for order in (pair, pair[::-1]):
      (losses, metrics), grads = step(*jax.tree.map(lambda *a: jnp.asarray(np.stack(a)), *order))
      assert all_finite((losses, metrics, grads)), (losses, metrics, grads)
      assert all(jnp.shape(v) == (2,) for v in metrics.values())
    loss, loss0 = float(losses[1]), float(losses[0])
    np.testing.assert_allclose(loss, c.ref(diff, data), rtol=1e-5, atol=1e-6)
    if data0:  # masks present and all zero: nothing counts, so the loss is exactly 0
      assert loss0 == 0.0

  def test_check_grads(case):
    c, (diff, data), _ = case
    data = j(*data)
    check_grads(jax.jit(lambda *d: c.call(j(*d), data)[0]), j(*diff), order=1, modes=["rev"])

  return (case, test_reference_and_fully_masked_finite_under_jit_vmap_grad_one_trace,
          test_check_grads)
