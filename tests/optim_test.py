"""Tests for rewardjax.optim: schedule values, non-finite skipping, gradient accumulation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rewardjax import optim


def _params():
  return {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.array([0.1, -0.2])}


def _grads(seed):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(2,)), jnp.float32)}


def _apply(tx, opt_state, params, grads):
  updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("schedule, expected", [
    # peak 2, warmup 4 of 12, end ratio 0.25 -> end 0.5; halfway through decay is t = 8.
    ("constant", {0: 0.0, 2: 1.0, 4: 2.0, 8: 2.0, 12: 2.0, 20: 2.0}),
    ("linear", {0: 0.0, 2: 1.0, 4: 2.0, 8: 1.25, 12: 0.5, 20: 0.5}),
    ("cosine", {0: 0.0, 2: 1.0, 4: 2.0, 8: 1.25,
                10: 0.5 + 1.5 * 0.5 * (1 + math.cos(0.75 * math.pi)), 12: 0.5, 20: 0.5}),
])
def test_schedule_values_by_hand(schedule, expected):
  sched = optim.make_schedule(learning_rate=2.0, total_steps=12, warmup_steps=4,
                              schedule=schedule, end_learning_rate_ratio=0.25)
  steps = jnp.array(list(expected))
  np.testing.assert_allclose(sched(steps), list(expected.values()), rtol=1e-6, atol=1e-7)


def test_no_warmup_starts_at_peak():
  sched = optim.make_schedule(learning_rate=3.0, total_steps=5, schedule="cosine")
  assert float(sched(0)) == pytest.approx(3.0)
  assert float(sched(5)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="exponential"), r"valid names: \['constant', 'cosine', 'linear'\]"),
    (dict(warmup_steps=11), "warmup_steps"),
    (dict(grad_accum_steps=0), "grad_accum_steps"),
    (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(end_learning_rate_ratio=1.5), "end_learning_rate_ratio"),
])
def test_bad_options_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.make_optimizer(learning_rate=1e-3, total_steps=10, **kwargs)


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_nonfinite_grad_is_skipped_then_finite_grad_updates(grad_accum_steps):
  tx = optim.make_optimizer(learning_rate=0.1, total_steps=10, weight_decay=0.01,
                            grad_accum_steps=grad_accum_steps)
  params = _params()
  opt_state = tx.init(params)
  # One finite micro-step first so the inner state is not trivially the init state.
  params, opt_state = _apply(tx, opt_state, params, _grads(0))
  inner_before = opt_state.inner_state
  for bad in (jnp.nan, jnp.inf):
    grads = _grads(1)
    grads["w"] = grads["w"].at[0, 1].set(bad)
    new_params, new_state = _apply(tx, opt_state, params, grads)
    _assert_trees_equal(new_params, params)
    _assert_trees_equal(new_state.inner_state, inner_before)
    opt_state = new_state
  assert int(optim.skipped_updates(opt_state)) == 2
  # Finite gradients go through again: the first one completes the accumulation window.
  new_params, opt_state = _apply(tx, opt_state, params, _grads(2))
  assert not np.array_equal(np.asarray(new_params["w"]), np.asarray(params["w"]))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(new_params))
  assert int(optim.skipped_updates(opt_state)) == 2


def test_skipped_updates_is_zero_without_skipping():
  tx = optim.make_optimizer(learning_rate=0.1, total_steps=10, skip_nonfinite=False)
  assert int(optim.skipped_updates(tx.init(_params()))) == 0


def test_accumulating_k_micro_steps_equals_one_step_on_mean_gradient():
  k = 3
  common = dict(learning_rate=0.05, total_steps=30, schedule="constant", weight_decay=0.1,
                max_grad_norm=0.5)
  tx_acc = optim.make_optimizer(grad_accum_steps=k, **common)
  tx_one = optim.make_optimizer(grad_accum_steps=1, **common)
  params = _params()
  state_acc, state_one = tx_acc.init(params), tx_one.init(params)
  params_acc = params_one = params
  for window in range(2):
    micro = [_grads(10 * window + i) for i in range(k)]
    for i, g in enumerate(micro):
      before = params_acc
      params_acc, state_acc = _apply(tx_acc, state_acc, params_acc, g)
      if i < k - 1:  # nothing is applied until the window is full
        _assert_trees_equal(params_acc, before)
    mean = jax.tree.map(lambda *g: sum(g) / k, *micro)
    params_one, state_one = _apply(tx_one, state_one, params_one, mean)
    # Tolerance covers the running-mean accumulator's float32 rounding only.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 params_acc, params_one)


def test_learning_rate_at_counts_loop_steps_under_accumulation():
  k = 2
  kwargs = dict(learning_rate=1.0, total_steps=8, warmup_steps=4, schedule="linear")
  tx = optim.make_optimizer(grad_accum_steps=k, **kwargs)
  sched = optim.make_schedule(**kwargs)
  params = _params()
  opt_state = tx.init(params)
  for _ in range(2 * k):  # two applied updates: the second uses the rate at loop step k
    params, opt_state = _apply(tx, opt_state, params, _grads(0))
  assert float(optim.learning_rate_at(opt_state)) == pytest.approx(float(sched(k)))
  assert float(sched(k)) == pytest.approx(0.5)


def test_bfloat16_params_keep_their_dtype_through_skip_and_accumulation():
  tx = optim.make_optimizer(learning_rate=0.1, total_steps=10, grad_accum_steps=2)
  params = {"w": jnp.ones((2, 2), jnp.bfloat16)}
  opt_state = tx.init(params)
  for g in (1.0, jnp.nan, 0.5):
    grads = {"w": jnp.full((2, 2), g, jnp.bfloat16)}
    updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    assert updates["w"].dtype == jnp.bfloat16
  assert int(optim.skipped_updates(opt_state)) == 1
  assert float(updates["w"][0, 0]) < 0  # the window of 1.0 and 0.5 was applied
