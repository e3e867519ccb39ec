"""Per-token estimators of KL(pi_theta || pi_ref) from the log-probs of sampled tokens.

With d = ref_logps - logps = log(pi_ref / pi_theta) at the sampled token (Schulman's k1/k2/k3):

  name (alias)           value                      note
  "kl"  ("k1")           logps - ref_logps = -d     unbiased, can be negative
  "mse" ("k2")           (logps - ref_logps)^2 / 2  gradient = the true reverse-KL gradient
  "low_var_kl" ("k3")    exp(d) - d - 1             >= 0, low variance; GRPO, TRL `beta` term
  "abs"                  |logps - ref_logps|
  "k3+" ("low_var_kl+")  value of k3, gradient of k2 (straight-through), as verl

Names follow verl's `kl_penalty` (TRL has only k3). Values are float32.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["KL_ESTIMATORS", "kl_estimate"]


def _k1(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
  return logps - ref_logps


def _k2(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
  return 0.5 * (logps - ref_logps) ** 2


def _k3(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
  d = ref_logps - logps
  return jnp.exp(d) - d - 1.0


def _abs(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
  return jnp.abs(logps - ref_logps)


def _k3_plus(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
  # k1 and k3 estimate the KL value without bias, but only k2's gradient is the KL gradient.
  k2 = _k2(logps, ref_logps)
  return k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(_k3(logps, ref_logps))


KL_ESTIMATORS = {
    "kl": _k1, "k1": _k1,
    "mse": _k2, "k2": _k2,
    "low_var_kl": _k3, "k3": _k3,
    "abs": _abs,
    "k3+": _k3_plus, "low_var_kl+": _k3_plus,
}

# verl clamps log(pi_ref / pi_theta) to this range before exp when it clamps k3.
_LOG_RATIO_BOUND = 20.0


def kl_estimate(logps: Float[Array, "*shape"], ref_logps: Float[Array, "*shape"],
                kind: str = "low_var_kl", *, clamp: float | None = None) -> Float[Array, "*shape"]:
  """Per-token KL(pi_theta || pi_ref) estimate of the named kind (table in the module docstring).

    k1 = logps - ref_logps,  k2 = (logps - ref_logps)^2 / 2,  k3 = exp(d) - d - 1,
    abs = |logps - ref_logps|,  k3+ = k2 - sg(k2) + sg(k3),   with d = ref_logps - logps.

  Args:
    logps: [...] log pi_theta of the sampled tokens (carries the gradient).
    ref_logps: [...] log pi_ref of the same tokens (treat as a constant).
    kind: a key of `KL_ESTIMATORS`: "kl"/"k1", "mse"/"k2", "low_var_kl"/"k3", "abs",
      "k3+"/"low_var_kl+".
    clamp: None (TRL, OpenRLHF: no clamp) or c > 0 to clip the estimate to [-c, c]; for
      k3/k3+ d is then also clipped to [-20, 20] before exp, as verl does with c = 10.

  Returns:
    [...] float32 per-token estimate, same shape as the inputs. Unmasked: multiply by the
    token mask (after making masked log-probs finite) before reducing.

  Normalisers: none (per token).

  References:
    Schulman, "Approximating KL divergence" (2020) k1/k2/k3; DeepSeekMath, arXiv 2402.03300,
    Eq. 4 (k3); verl `kl_penalty` (k3+, clamps).

  >>> lp, ref = jnp.array([-1.0]), jnp.array([-1.5])
  >>> [round(float(kl_estimate(lp, ref, k)[0]), 7) for k in ("kl", "mse", "low_var_kl", "abs")]
  [0.5, 0.125, 0.1065307, 0.5]
  >>> float(kl_estimate(jnp.array([-30.0]), jnp.array([0.0]), "k3", clamp=10.0)[0])
  10.0
  """
  if kind not in KL_ESTIMATORS:
    raise ValueError(f"unknown KL estimator {kind!r}; valid names: {sorted(KL_ESTIMATORS)}")
  if logps.shape != ref_logps.shape:
    raise ValueError(f"logps {logps.shape} and ref_logps {ref_logps.shape} must have one shape")
  logps = logps.astype(jnp.float32)
  ref_logps = ref_logps.astype(jnp.float32)
  if clamp is None:
    return KL_ESTIMATORS[kind](logps, ref_logps)
  if kind in ("low_var_kl", "k3", "k3+", "low_var_kl+"):
    # Bound d = ref - logp (verl): exp(d) cannot overflow and k3 stays within [0, e^20].
    d = jnp.clip(ref_logps - logps, -_LOG_RATIO_BOUND, _LOG_RATIO_BOUND)
    k3 = jnp.clip(jnp.exp(d) - d - 1.0, -clamp, clamp)
    if kind in ("low_var_kl", "k3"):
      return k3
    k2 = _k2(logps, ref_logps)
    return k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(k3)
  return jnp.clip(KL_ESTIMATORS[kind](logps, ref_logps), -clamp, clamp)
