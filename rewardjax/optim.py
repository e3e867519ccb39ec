"""The optimizer: AdamW with warmup and a decay schedule, clipping, accumulation, NaN skipping.

Built from explicit arguments (an `AdamW` options dataclass, never a config). From the outside
in, the chain is

  apply_if_finite( MultiSteps( clip_by_global_norm -> AdamW(lr = schedule) ) )

so a non-finite micro-batch gradient is dropped before it reaches the accumulator, clipping
acts on the accumulated (mean) gradient, and the schedule advances once per real update.

Step units: `total_steps` and `warmup_steps` count calls to `tx.update`, i.e. training-loop
steps, one micro-batch each. With `grad_accum_steps=k` the optimizer applies an update every k
calls; update n (0-based) uses the learning rate `make_schedule(...)(n * k)`, the schedule at
the first loop step of its accumulation window.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

# Never give up skipping: `apply_if_finite` accepts a non-finite update after this many in a
# row, and its counter saturates at int32 max, so this bound is never exceeded.
_NEVER = 2**31 - 1


def _constant_decay(peak: float, decay_steps: int, end: float) -> optax.Schedule:
  del decay_steps, end
  return optax.constant_schedule(peak)


def _linear_decay(peak: float, decay_steps: int, end: float) -> optax.Schedule:
  return optax.linear_schedule(peak, end, decay_steps)


def _cosine_decay(peak: float, decay_steps: int, end: float) -> optax.Schedule:
  alpha = end / peak if peak > 0 else 0.0
  return optax.cosine_decay_schedule(peak, decay_steps, alpha=alpha)


# Post-warmup shapes, keyed by the `schedule` option.
SCHEDULES: dict[str, Callable[[float, int, float], optax.Schedule]] = {
    "constant": _constant_decay,
    "linear": _linear_decay,
    "cosine": _cosine_decay,
}


def make_schedule(*, learning_rate: float, total_steps: int, warmup_steps: int = 0,
                  schedule: str = "cosine",
                  end_learning_rate_ratio: float = 0.0) -> optax.Schedule:
  """Learning rate as a function of the training-loop step: linear warmup, then decay.

  With peak η, warmup w, total T, end ratio r and u = (t - w) / max(T - w, 1) clipped to [0, 1]:

    η(t) = η · t / w                                   for t < w
    constant: η;  linear: η · (1 - (1 - r) u);  cosine: η · (r + (1 - r) · ½ (1 + cos πu))

  so η(0) = 0 when w > 0 (the big_vision / optax convention) and η(t ≥ T) = r·η
  (η for "constant", which ignores r).

  Args:
    learning_rate: peak learning rate η, reached at step w.
    total_steps: T, the number of training-loop steps (calls to `tx.update`).
    warmup_steps: w, the length of the linear warmup from 0; 0 ≤ w ≤ T.
    schedule: post-warmup shape, one of "constant", "linear", "cosine".
    end_learning_rate_ratio: r, the final rate as a fraction of η, in [0, 1].

  Returns:
    An `optax.Schedule`: step (int or int array) -> scalar learning rate.

  Raises:
    ValueError: unknown `schedule` (the message lists valid names) or out-of-range numbers.

  References:
    Loshchilov & Hutter, SGDR, arXiv:1608.03983, eq. 5 (cosine annealing);
    Goyal et al., arXiv:1706.02677, §2.2 (gradual warmup).

  >>> sched = make_schedule(learning_rate=1.0, total_steps=10, warmup_steps=2,
  ...                       schedule="linear")
  >>> [round(float(sched(t)), 4) for t in (0, 1, 2, 6, 10)]
  [0.0, 0.5, 1.0, 0.5, 0.0]
  >>> sched = make_schedule(learning_rate=1.0, total_steps=4, schedule="cosine",
  ...                       end_learning_rate_ratio=0.5)
  >>> [round(float(sched(t)), 4) for t in (0, 2, 4)]
  [1.0, 0.75, 0.5]
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown schedule {schedule!r}; valid names: {sorted(SCHEDULES)}.")
  if learning_rate < 0:
    raise ValueError(f"learning_rate must be >= 0, got {learning_rate}.")
  if total_steps < 1:
    raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got "
                     f"{warmup_steps}.")
  if not 0.0 <= end_learning_rate_ratio <= 1.0:
    raise ValueError(f"end_learning_rate_ratio must be in [0, 1], got "
                     f"{end_learning_rate_ratio}.")
  # max(., 1): a run that is all warmup still needs a well-defined (flat) decay segment.
  decay_steps = max(total_steps - warmup_steps, 1)
  decay = SCHEDULES[schedule](learning_rate, decay_steps, learning_rate * end_learning_rate_ratio)
  if warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


@dataclasses.dataclass(frozen=True)
class AdamW:
  """The options of `make_optimizer`'s AdamW chain (everything but the run length).

  Attributes:
    learning_rate: peak learning rate; see `make_schedule`.
    warmup_steps: loop steps of linear warmup from 0.
    schedule: "constant" | "linear" | "cosine" (after warmup).
    end_learning_rate_ratio: final rate as a fraction of the peak.
    weight_decay: λ, decoupled (AdamW) weight decay, multiplied by the learning rate.
    b1: Adam first-moment decay.
    b2: Adam second-moment decay.
    eps: Adam denominator epsilon, added outside the square root.
    max_grad_norm: c, clip threshold on the global L2 norm; None disables clipping.
    grad_accum_steps: k, micro-batches averaged (`optax.MultiSteps`, use_grad_mean) per update.
      k = 1 skips the wrapper and its parameter-sized accumulator.
    skip_nonfinite: wrap everything in `optax.apply_if_finite`.
  """
  learning_rate: float
  warmup_steps: int = 0
  schedule: str = "cosine"
  end_learning_rate_ratio: float = 0.0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  max_grad_norm: float | None = 1.0
  grad_accum_steps: int = 1
  skip_nonfinite: bool = True


def make_optimizer(options: AdamW, *, total_steps: int,
                   weight_decay_mask: Any = None) -> optax.GradientTransformation:
  """AdamW with warmup + schedule, global-norm clipping, accumulation and non-finite skipping.

  Per applied update with mean gradient ḡ over k micro-batches and step size η_n:

    g = ḡ · min(1, c / ‖ḡ‖₂)                       (global norm over all leaves; c = max_grad_norm)
    m ← b1 m + (1 - b1) g;  v ← b2 v + (1 - b2) g²;  m̂, v̂ bias-corrected
    θ ← θ - η_n (m̂ / (√v̂ + eps) + λ θ)            (decoupled weight decay λ, masked)

  Non-finite skipping is outermost: if any gradient element is NaN or ±inf, the returned update
  is all zeros, the inner state (accumulator, Adam moments, counts) is left untouched, and the
  counter read by `skipped_updates` increments. With k > 1 a skipped micro-batch does not
  count towards the k of its window. Skipping never gives up (unlike the default use of
  `optax.apply_if_finite`); watch `skipped_updates` in the metrics.

  Args:
    options: the `AdamW` options (learning rate, schedule, Adam constants, clipping,
      accumulation, skipping); see its fields.
    total_steps: training-loop steps (calls to `tx.update`), not optimizer updates.
    weight_decay_mask: optax `mask` for the decay (pytree of bools or callable); None decays
      every parameter.

  Returns:
    An `optax.GradientTransformation`; call `update(grads, opt_state, params)`. Its state
    structure depends on `options.max_grad_norm is None`, `options.grad_accum_steps == 1` and
    `options.skip_nonfinite`, so those belong in the checkpoint's config fingerprint.

  Raises:
    ValueError: unknown `schedule` (listing valid names) or out-of-range numbers.

  References:
    Loshchilov & Hutter, AdamW, arXiv:1711.05101, Alg. 2; Kingma & Ba, Adam, arXiv:1412.6980,
    Alg. 1; Pascanu et al., arXiv:1211.5063, Alg. 2 (norm clipping).

  >>> tx = make_optimizer(AdamW(learning_rate=0.1, schedule="constant"), total_steps=10)
  >>> params = {"w": jnp.zeros(2)}
  >>> opt_state = tx.init(params)
  >>> updates, opt_state = tx.update({"w": jnp.array([1.0, -1.0])}, opt_state, params)
  >>> [round(float(u), 4) for u in updates["w"]]  # first Adam step: -lr * sign(g)
  [-0.1, 0.1]
  >>> updates, opt_state = tx.update({"w": jnp.array([jnp.nan, 1.0])}, opt_state, params)
  >>> [float(u) for u in updates["w"]], int(skipped_updates(opt_state))
  ([0.0, 0.0], 1)
  """
  o = options
  learning_rate, warmup_steps, schedule = o.learning_rate, o.warmup_steps, o.schedule
  end_learning_rate_ratio, weight_decay, b1, b2, eps = (o.end_learning_rate_ratio,
                                                         o.weight_decay, o.b1, o.b2, o.eps)
  max_grad_norm, grad_accum_steps, skip_nonfinite = (o.max_grad_norm, o.grad_accum_steps,
                                                     o.skip_nonfinite)
  if grad_accum_steps < 1:
    raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}.")
  if max_grad_norm is not None and max_grad_norm <= 0:
    raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}.")
  loop_schedule = make_schedule(learning_rate=learning_rate, total_steps=total_steps,
                                warmup_steps=warmup_steps, schedule=schedule,
                                end_learning_rate_ratio=end_learning_rate_ratio)
  k = grad_accum_steps
  # The inner count advances once per applied update; map it back to loop steps.
  update_schedule = loop_schedule if k == 1 else (lambda count: loop_schedule(count * k))
  # Inject only the learning rate, so `learning_rate_at` can read the rate actually used.
  adamw = optax.inject_hyperparams(
      optax.adamw, static_args=("b1", "b2", "eps", "eps_root", "weight_decay", "mask",
                                "nesterov"))(
      learning_rate=update_schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
      mask=weight_decay_mask)
  tx = adamw if max_grad_norm is None else optax.chain(
      optax.clip_by_global_norm(max_grad_norm), adamw)
  tx = _keep_dtype(tx)
  if k > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=k, use_grad_mean=True).gradient_transformation()
  if skip_nonfinite:
    tx = optax.apply_if_finite(tx, max_consecutive_errors=_NEVER)
  return tx


def _keep_dtype(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """Casts updates back to the gradients' dtypes.

  The injected learning rate is a float32 array, so `lr * g` promotes bfloat16 updates to
  float32; `apply_if_finite`'s `lax.cond` then sees branches of different dtypes.
  """
  inner = optax.with_extra_args_support(inner)

  def update(updates, state, params=None, **extra_args):
    new_updates, state = inner.update(updates, state, params, **extra_args)
    return optax.tree.cast_like(new_updates, updates), state

  return optax.GradientTransformationExtraArgs(inner.init, update)


def skipped_updates(opt_state: Any) -> jax.Array:
  """Total number of `tx.update` calls skipped for a non-finite gradient, as an int32 scalar.

  Found anywhere in `opt_state` (or in a larger pytree holding it, e.g. a TrainState); jittable.
  Returns 0 when the optimizer was built with `skip_nonfinite=False` (nothing is skipped then:
  a NaN gradient poisons the parameters).

  >>> tx = make_optimizer(AdamW(learning_rate=0.1), total_steps=10)
  >>> int(skipped_updates(tx.init({"w": jnp.zeros(2)})))
  0
  """
  count = optax.tree.get(opt_state, "total_notfinite")
  return jnp.zeros((), jnp.int32) if count is None else count


def learning_rate_at(opt_state: Any) -> jax.Array:
  """Learning rate of the most recent applied update (before any: of the first), float32 scalar.

  Read from the state `optax.inject_hyperparams` keeps inside `make_optimizer`'s AdamW, so it is
  exact under accumulation and skipping; jittable. For the rate at an arbitrary loop step use
  `make_schedule(...)(step)` instead.

  >>> tx = make_optimizer(AdamW(learning_rate=1.0, warmup_steps=2, schedule="constant"),
  ...                     total_steps=4)
  >>> params = {"w": jnp.zeros(1)}
  >>> opt_state = tx.init(params)
  >>> for _ in range(2):
  ...   _, opt_state = tx.update({"w": jnp.ones(1)}, opt_state, params)
  >>> round(float(learning_rate_at(opt_state)), 4)  # step 1 of a 2-step warmup
  0.5
  """
  hyperparams = optax.tree.get(opt_state, "hyperparams")
  if hyperparams is None or "learning_rate" not in hyperparams:
    raise ValueError("opt_state holds no injected learning rate; build the optimizer with "
                     "rewardjax.optim.make_optimizer.")
  return hyperparams["learning_rate"]
