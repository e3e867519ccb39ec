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
    optim.make_optimizer(optim.AdamW(learning_rate=1e-3, **kwargs), total_steps=10)


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_nonfinite_grad_is_skipped_then_finite_grad_updates(grad_accum_steps):
  tx = optim.make_optimizer(optim.AdamW(learning_rate=0.1, weight_decay=0.01,
                                        grad_accum_steps=grad_accum_steps), total_steps=10)
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


def _np_adamw(params, grads, lrs, *, b1, b2, eps, weight_decay, max_grad_norm):
  """Parameters after each AdamW step (arXiv:1711.05101, Alg. 2) on clipped grads, float64."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  out = []
  for n, (g, lr) in enumerate(zip(grads, lrs), start=1):
    g = {k: np.asarray(x, np.float64) for k, x in g.items()}
    norm = np.sqrt(sum((x**2).sum() for x in g.values()))
    g = {k: x * min(1.0, max_grad_norm / norm) for k, x in g.items()}
    for k in p:
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
      m_hat, v_hat = m[k] / (1 - b1**n), v[k] / (1 - b2**n)
      p[k] = p[k] - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p[k])
    out.append(dict(p))
  return out


def test_skipped_updates_is_zero_without_skipping():
  """Finite steps: 0 skipped and exact AdamW moves; a NaN step: 1 skipped, nothing moves.

  Settings make every factor visible: linear decay (lr 0.1 (1 - n/10) at update n), clipping
  on every step (global norms 0.93 to 3.4 > 0.5), eps = 0.01 against clipped |g| >= 0.056,
  weight decay 0.1.
  """
  opts = dict(b1=0.9, b2=0.999, eps=1e-2, weight_decay=0.1, max_grad_norm=0.5)
  tx = optim.make_optimizer(optim.AdamW(learning_rate=0.1, schedule="linear", **opts),
                            total_steps=10)
  update = jax.jit(tx.update)
  params = _params()
  opt_state = tx.init(params)
  grads = [_grads(seed) for seed in (0, 1, 2, 3)]
  want = _np_adamw(params, grads, [0.1 * (1 - n / 10) for n in range(4)], **opts)
  # Step 1 by hand: m_hat = g, v_hat = g^2, so each parameter moves by
  # -lr (g / (|g| + eps) + wd p) with g the clipped gradient (about -lr sign(g) for eps << |g|).
  lr, wd, eps = 0.1, 0.1, 1e-2
  # ||g|| = 0.9338617 > max_grad_norm = 0.5, so the gradient is clipped by 0.5 / 0.9338617.
  g0 = {k: np.asarray(x, np.float64) * 0.5 / 0.9338617 for k, x in grads[0].items()}
  step1 = {k: np.asarray(p, np.float64) - lr * (g0[k] / (np.abs(g0[k]) + eps)
                                                + wd * np.asarray(p, np.float64))
           for k, p in params.items()}
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-7), step1, want[0])

  # atol: optax's float32 bias correction 1 - 0.999^n (~1e-3) keeps ~4.5 digits, so each step
  # of size <= lr = 0.1 carries up to ~2e-6 of rounding.
  close = lambda a, b: jax.tree.map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=0, atol=1e-5), a, b)
  for n in range(3):
    updates, opt_state = update(grads[n], opt_state, params)
    params = optax.apply_updates(params, updates)
    assert int(optim.skipped_updates(opt_state)) == 0
    close(params, want[n])

  bad = dict(grads[3], w=grads[3]["w"].at[1, 0].set(jnp.nan))
  updates, skipped_state = update(bad, opt_state, params)
  assert int(optim.skipped_updates(skipped_state)) == 1
  _assert_trees_equal(optax.apply_updates(params, updates), params)
  _assert_trees_equal(skipped_state.inner_state, opt_state.inner_state)
  # The skipped step used no schedule step or bias correction: the next finite step is update 4.
  updates, opt_state = update(grads[3], skipped_state, params)
  params = optax.apply_updates(params, updates)
  assert int(optim.skipped_updates(opt_state)) == 1
  close(params, want[3])

  # Without skipping there is nothing to count: the counter stays 0 and NaN reaches the params.
  tx = optim.make_optimizer(optim.AdamW(learning_rate=0.1, skip_nonfinite=False),
                            total_steps=10)
  updates, opt_state = jax.jit(tx.update)(bad, tx.init(params), params)
  assert int(optim.skipped_updates(opt_state)) == 0
  assert np.isnan(np.asarray(optax.apply_updates(params, updates)["w"])).all()


def test_accumulating_k_micro_steps_equals_one_step_on_mean_gradient():
  k = 3
  common = dict(learning_rate=0.05, schedule="constant", weight_decay=0.1, max_grad_norm=0.5)
  tx_acc = optim.make_optimizer(optim.AdamW(grad_accum_steps=k, **common), total_steps=30)
  tx_one = optim.make_optimizer(optim.AdamW(grad_accum_steps=1, **common), total_steps=30)
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
  kwargs = dict(learning_rate=1.0, warmup_steps=4, schedule="linear")
  tx = optim.make_optimizer(optim.AdamW(grad_accum_steps=k, **kwargs), total_steps=8)
  sched = optim.make_schedule(total_steps=8, **kwargs)
  params = _params()
  opt_state = tx.init(params)
  for _ in range(2 * k):  # two applied updates: the second uses the rate at loop step k
    params, opt_state = _apply(tx, opt_state, params, _grads(0))
  assert float(optim.learning_rate_at(opt_state)) == pytest.approx(float(sched(k)))
  assert float(sched(k)) == pytest.approx(0.5)


def test_bfloat16_params_keep_their_dtype_through_skip_and_accumulation():
  tx = optim.make_optimizer(optim.AdamW(learning_rate=0.1, grad_accum_steps=2),
                            total_steps=10)
  params = {"w": jnp.ones((2, 2), jnp.bfloat16)}
  opt_state = tx.init(params)
  for g in (1.0, jnp.nan, 0.5):
    grads = {"w": jnp.full((2, 2), g, jnp.bfloat16)}
    updates, opt_state = jax.jit(tx.update)(grads, opt_state, params)
    assert updates["w"].dtype == jnp.bfloat16
  assert int(optim.skipped_updates(opt_state)) == 1
  assert float(updates["w"][0, 0]) < 0  # the window of 1.0 and 0.5 was applied
