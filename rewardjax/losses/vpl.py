"""Variational Preference Learning (VPL): the negative ELBO of a latent-conditioned reward.

Poddar et al., "Personalizing RLHF with Variational Preference Learning", arXiv 2408.10075:
an encoder infers q(z | C) = N(μ, diag σ²) from a user's context set C of labelled comparisons,
and the reward r(s, z) is trained with the latent-conditional Bradley-Terry likelihood inside
an ELBO (§3, eq. 3):

    L = mean_b[ −log σ(r(y_c, z_b) − r(y_r, z_b)) ] + β · mean_b[ KL(N(μ_b, σ_b²) ‖ N(0, I)) ]
    KL(N(μ, σ²) ‖ N(0, I)) = −½ Σ_d (1 + log σ²_d − μ_d² − σ²_d)

The pieces here are the ones the authors' LLM code (WEIRDLabUW/vpl_llm) uses: the KL summed
over latent dims and averaged over the batch, a cyclical cosine annealing of β, the
reparameterised sample renormalised to the sphere of radius √d, and μ, log σ² clamped to
[−1, 1]. L = latent dim, B = pairs.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

# Why a floor on ‖z‖: a zero sample (only if μ = 0 and ε = 0) must not divide by zero.
_MIN_NORM = 1e-12


def gaussian_kl(mean: Float[Array, "B L"], log_var: Float[Array, "B L"]) -> Float[Array, " B"]:
  """KL(N(μ, diag σ²) ‖ N(0, I)) per row, summed over the latent dims:
  −½ Σ_d (1 + log σ²_d − μ_d² − σ²_d).

  >>> import jax.numpy as jnp
  >>> gaussian_kl(jnp.array([[0.0, 0.0], [1.0, 0.0]]), jnp.zeros((2, 2))).tolist()   # −0.0: −½·0
  [-0.0, 0.5]
  """
  return -0.5 * jnp.sum(1.0 + log_var - jnp.square(mean) - jnp.exp(log_var), axis=-1)


def clamp_posterior(mean: Float[Array, "B L"], log_var: Float[Array, "B L"], *,
                    bound: float = 1.0) -> tuple[Float[Array, "B L"], Float[Array, "B L"]]:
  """μ and log σ² clipped to [−bound, bound] (the LLM code clamps both to [−1, 1]; arXiv
  2408.10075 App. B; keeps z near the prior's shell at the cost of expressivity)."""
  return jnp.clip(mean, -bound, bound), jnp.clip(log_var, -bound, bound)


def reparameterize(mean: Float[Array, "B L"], log_var: Float[Array, "B L"], key: jax.Array, *,
                   renormalize: bool = True) -> Float[Array, "B L"]:
  """z = μ + σ ⊙ ε, ε ~ N(0, I); with `renormalize`, z ← √L · z / ‖z‖ (the LLM code's
  projection to the sphere of radius √L, where a standard normal sample concentrates).
  At evaluation VPL uses z = μ instead (no sample, no renormalisation).
  """
  eps_BxL = jax.random.normal(key, mean.shape, jnp.float32)
  z_BxL = mean + jnp.exp(0.5 * log_var) * eps_BxL
  if not renormalize:
    return z_BxL
  norm_Bx1 = jnp.linalg.norm(z_BxL, axis=-1, keepdims=True)
  return jnp.sqrt(float(mean.shape[-1])) * z_BxL / jnp.maximum(norm_Bx1, _MIN_NORM)


def kl_annealing(step: Int[Array, ""] | int, *, period: int,
                 baseline: float = 0.1) -> Float[Array, ""]:
  """Cyclical cosine KL weight multiplier in [baseline, 1) (VPL LLM code, `Annealer`):

      t = step mod period,  y = (cos(π (t / period − 1)) + 1) / 2,  β-scale = y (1 − b) + b

  so each cycle starts at b = `baseline`, is (1 + b) / 2 half way and approaches 1 at its end.
  `period` <= 0 turns annealing off (1.0).

  >>> [round(float(kl_annealing(t, period=4)), 3) for t in (0, 2, 4, 6)]
  [0.1, 0.55, 0.1, 0.55]
  """
  if period <= 0:
    return jnp.ones((), jnp.float32)
  t = jnp.mod(jnp.asarray(step, jnp.float32), float(period))
  y = (jnp.cos(jnp.pi * (t / period - 1.0)) + 1.0) / 2.0
  return y * (1.0 - baseline) + baseline


def vpl_loss(chosen_rewards: Float[Array, " B"], rejected_rewards: Float[Array, " B"],
             mean: Float[Array, "B L"], log_var: Float[Array, "B L"], *,
             kl_weight: float | Float[Array, ""] = 0.01,
             mask: Float[Array, " B"] | Bool[Array, " B"] | None = None
             ) -> tuple[Float[Array, ""], dict]:
  """The VPL negative ELBO: BT reconstruction under the sampled z plus β · KL.

      L = Σ_b w_b [−log σ(r_c,b − r_r,b)] / max(Σ_b w_b, 1)
          + kl_weight · Σ_b w_b KL_b / max(Σ_b w_b, 1),   KL_b = `gaussian_kl`(μ_b, log σ²_b)

  Args:
    chosen_rewards: [B] r(y_c, z_b), the decoder's reward of the preferred response under the
      record's latent sample.
    rejected_rewards: [B] r(y_r, z_b).
    mean: [B, L] posterior means μ of q(z | C_b) (clamped upstream if wanted).
    log_var: [B, L] posterior log-variances log σ².
    kl_weight: β, already annealed (`kl_annealing`) if wanted; a float or a traced scalar.
    mask: [B] 1 for pairs that count (default all).

  Returns:
    (loss, metrics): metrics "reconstruction_loss", "kl", "kl_weight", "accuracy" (r_c > r_r),
    "margin" (mean r_c − r_r), "mean_norm" (mean ‖μ‖: near 0 means z collapsed to the prior),
    "posterior_std" (mean σ).

  References: arXiv 2408.10075 §3 eq. 3 (ELBO); the authors' code for the reductions.

  >>> import jax.numpy as jnp
  >>> loss, m = vpl_loss(jnp.zeros(2), jnp.zeros(2), jnp.ones((2, 1)), jnp.zeros((2, 1)),
  ...                    kl_weight=1.0)
  >>> round(float(loss), 4), round(float(m["kl"]), 4)   # log 2 + 0.5 · 1²
  (1.1931, 0.5)
  """
  w_B = jnp.ones(chosen_rewards.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
  count = jnp.maximum(w_B.sum(), 1.0)  # a fully masked batch gives 0, not 0/0

  def avg(x_B):
    # where, not multiply: a masked row's value may be inf or NaN.
    return jnp.where(w_B > 0, x_B, 0.0).sum() / count

  diff_B = chosen_rewards.astype(jnp.float32) - rejected_rewards.astype(jnp.float32)
  reconstruction = avg(-jax.nn.log_sigmoid(diff_B))
  kl = avg(gaussian_kl(mean.astype(jnp.float32), log_var.astype(jnp.float32)))
  loss = reconstruction + kl_weight * kl
  return loss, {
      "reconstruction_loss": reconstruction, "kl": kl,
      "kl_weight": jnp.asarray(kl_weight, jnp.float32),
      "accuracy": avg((diff_B > 0).astype(jnp.float32)), "margin": avg(diff_B),
      "mean_norm": avg(jnp.linalg.norm(mean, axis=-1)),
      "posterior_std": avg(jnp.exp(0.5 * log_var).mean(axis=-1))}


__all__ = ["clamp_posterior", "gaussian_kl", "kl_annealing", "reparameterize", "vpl_loss"]
