# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The objective library as a playground
#
# Every objective in `rewardjax.losses` is a pure function on arrays: `loss, metrics = fn(...)`.
# Nothing calls a model, so each one can be evaluated on a grid of made-up inputs and
# differentiated with `jax.grad`. This notebook draws four families that way:
#
# 1. DPO-family preference losses and their gradients against the implicit-reward margin;
# 2. the clipped GRPO / PPO surrogate against the importance ratio (and DAPO's clip-higher);
# 3. the k1 / k2 / k3 KL estimators against the true KL;
# 4. reward-model losses for a won pair and for a tie.
#
# No training: the whole notebook runs in seconds on a CPU.

# %%
# Colab: clone and install rewardjax (about a minute); elsewhere nothing happens when rewardjax
# is importable (`pip install -e .` in the repo).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("rewardjax") is None:
  subprocess.run("git clone -q --depth 1 https://github.com/rewardjax/rewardjax.git && "
                 "pip install -q -e rewardjax", shell=True, check=True)
  sys.path.insert(0, os.path.abspath("rewardjax"))

# %%
from rewardjax import notebook

settings = notebook.setup("losses")
TINY = settings.tiny  # True: CI's seconds-long sizes

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rewardjax import losses  # noqa: E402

# %% [markdown]
# ## 1. DPO-family losses against the implicit-reward margin
#
# DPO (arXiv 2305.18290, eq. 7) scores a pair by its *implicit-reward margin*
# m = β (h_w − h_l), where h = log π(y|x) − log π_ref(y|x) is the policy/reference log-ratio of
# the chosen (w) and rejected (l) completion. `losses.dpo_loss` implements every TRL
# `DPOTrainer` loss type on summed log-probs; below each one is evaluated on one pair per margin
# and differentiated with `jax.grad` through the real function (β = 0.1, completion lengths 1).
#
# * **Margin-only losses** (top row) see the pair only through m. DPO's `sigmoid` −log σ(m)
#   never stops pushing: its gradient decays but is never zero. cDPO (`sigmoid` with label
#   smoothing ε = 0.1) and rDPO (`robust`, arXiv 2403.00409) assume a fraction ε of flipped
#   labels: cDPO's loss has a minimum at a finite margin, log((1−ε)/ε) ≈ 2.2, while rDPO's
#   unbiased correction is linear for large m and keeps pushing. SLiC's `hinge` (arXiv
#   2305.10425) is flat past m = 1. IPO (arXiv 2310.12036, eq. 17) regresses the log-ratio
#   difference onto 1/(2β), i.e. m = 1/2 whatever β; its square is 1/β² larger than the
#   others in these units, so it is drawn ×β². EXO (arXiv 2402.00856, eq. 16) is a reverse KL
#   to the soft label (1 − ε, ε): mode-seeking, it gives badly ranked pairs (m ≪ 0) little
#   gradient. DiscoPOP (arXiv 2406.08414, eq. 5, τ = 0.05) blends the logistic loss (m < 0)
#   into an exponential one (m > 0); the switch leaves a small non-convex bump at m = 0, where
#   its gradient briefly turns positive.
# * **Anchored losses** (bottom row) also see each log-ratio on its own: NCA (arXiv 2402.05369),
#   BCO (arXiv 2404.04656), SPPO-hard (arXiv 2405.00675, eq. 4.7; drawn ×β²) and APO-zero
#   (arXiv 2408.06266, eq. 7) reward raising the chosen log-ratio itself, not just the gap. To draw
#   them against m the pair moves symmetrically, h_w = −h_l = m / (2β).

# %%
BETA = 0.1
margins = jnp.linspace(-4.0, 4.0, 401)


def pair_loss(margin, loss_type, **kwargs):
  """One pair's loss at implicit-reward margin `margin`: h_w = -h_l = margin / (2 beta)."""
  h = margin / (2 * BETA)
  zero, one = jnp.zeros(1), jnp.ones(1)
  loss, _ = losses.dpo_loss(zero + h, zero - h, zero, zero, beta=BETA, loss_type=loss_type,
                            chosen_lengths=one, rejected_lengths=one, **kwargs)
  return loss


def loss_and_grad(loss_type, **kwargs):
  fn = jax.vmap(jax.value_and_grad(lambda m: pair_loss(m, loss_type, **kwargs)))
  return fn(margins)


margin_only = {
    "sigmoid (DPO)": ("sigmoid", {}, 1.0),
    "cDPO ε=0.1": ("sigmoid", {"label_smoothing": 0.1}, 1.0),
    "robust (rDPO) ε=0.1": ("robust", {"label_smoothing": 0.1}, 1.0),
    "hinge (SLiC)": ("hinge", {}, 1.0),
    "ipo ×β²": ("ipo", {}, BETA**2),
    "exo_pair ε=1e-3": ("exo_pair", {"label_smoothing": 1e-3}, 1.0),
    "discopop τ=0.05": ("discopop", {}, 1.0),
}
anchored = {
    "sigmoid (DPO)": ("sigmoid", {}, 1.0),
    "nca_pair": ("nca_pair", {}, 1.0),
    "bco_pair": ("bco_pair", {}, 1.0),
    "sppo_hard ×β²": ("sppo_hard", {}, BETA**2),
    "apo_zero": ("apo_zero", {}, 1.0),
}

fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
for row, table in zip(axes, (margin_only, anchored)):
  for label, (loss_type, kwargs, scale) in table.items():
    value, grad = loss_and_grad(loss_type, **kwargs)
    style = dict(color="black", lw=2.5, alpha=0.35) if label == "sigmoid (DPO)" else {}
    row[0].plot(margins, scale * value, label=label, **style)
    row[1].plot(margins, scale * grad, label=label, **style)
  row[0].set_ylim(-0.2, 4.5)
  row[0].set_ylabel("loss")
  row[1].set_ylabel("d loss / d margin")
  row[1].axhline(0.0, color="gray", lw=0.8)
  row[1].set_ylim(-1.6, 0.6)
  row[1].legend(fontsize=8, loc="lower right")
axes[0, 0].set_title("margin-only losses")
axes[0, 1].set_title("their gradients (negative = push the margin up)")
axes[1, 0].set_title("anchored losses (h_w = −h_l)")
axes[1, 1].set_title("their gradients")
for ax in axes.flat:
  ax.axvline(0.0, color="gray", lw=0.8)
  ax.grid(alpha=0.3)
for ax in axes[1]:
  ax.set_xlabel("implicit-reward margin m = β (h_w − h_l)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Reading the gradients: where a curve is 0 the pair stops contributing (hinge past m = 1, IPO
# at m = 1/2, SPPO-hard at m = 1); where it is positive the loss pulls the margin *back* (IPO
# and SPPO-hard past their targets, cDPO past log 9 ≈ 2.2; EXO's optimum, log((1−ε)/ε) ≈ 6.9, is
# off the plot): these losses cannot drive the policy arbitrarily far from the reference on
# one pair, which is IPO's argument against DPO (arXiv 2310.12036, §4). Under Adam the scale of
# the gradient matters less than its sign and its zeros.
#
# A margin-only loss is also blind to a *common* shift of both log-ratios: its gradients on h_w
# and h_l are equal and opposite, so nothing in the loss stops both log-probs from falling
# together (likelihood displacement, the subject of `preference.ipynb`). The anchored losses
# are not. The table takes a displaced pair, both log-ratios below the reference
# (β h_w = −1, β h_l = −3, margin 2), and prints the step gradient descent takes on each
# log-ratio: the margin-only rows are mirror images, while NCA, BCO and APO-zero mostly raise the
# chosen log-ratio, and SPPO-hard raises both (it regresses each onto its own target
# ±1/(2β)).

# %%
def pushes(loss_type, **kwargs):
  """-d loss / d(beta h) on the chosen and the rejected completion of the displaced pair."""
  def loss(h_w, h_l):
    return losses.dpo_loss(h_w, h_l, jnp.zeros(1), jnp.zeros(1), beta=BETA, loss_type=loss_type,
                           chosen_lengths=jnp.ones(1), rejected_lengths=jnp.ones(1),
                           **kwargs)[0]
  g_w, g_l = jax.grad(loss, argnums=(0, 1))(jnp.array([-1.0 / BETA]), jnp.array([-3.0 / BETA]))
  return -float(g_w[0]) / BETA, -float(g_l[0]) / BETA


print("gradient descent moves beta h by -dL/d(beta h): + raises it, - lowers it")
print(f"{'loss':22s} {'chosen':>8s} {'rejected':>9s}")
for label, (loss_type, kwargs, scale) in {**margin_only, **anchored}.items():
  up, down = pushes(loss_type, **kwargs)
  print(f"{label:22s} {scale * up:+8.3f} {scale * down:+9.3f}")

# %% [markdown]
# ## 2. The clipped policy-gradient surrogate against the ratio
#
# GRPO (arXiv 2402.03300, eq. 3) and PPO (arXiv 1707.06347, eq. 7) maximise, per token,
# min(ρ A, clip(ρ, 1 − ε_low, 1 + ε_high) A) with ρ = π_θ / π_old. `losses.grpo_loss` returns
# its negative, so each point below is one one-token sequence whose log-prob is log ρ (and
# old log-prob 0), evaluated and differentiated through the real function (β = 0: no KL term).
# With A > 0 the objective stops growing past 1 + ε_high; with A < 0 it stops falling below
# 1 − ε_low; there the gradient is exactly 0. DAPO's clip-higher (arXiv 2503.14476, §3.1)
# raises ε_high from 0.2 to 0.28 so low-probability tokens with positive advantage can still
# grow. verl's dual clip (arXiv 1912.09729) caps the A < 0 loss at −c A (c = 3) for very large
# ratios (the range runs to ρ = 4 to show it).

# %%
ratios = jnp.linspace(0.02, 4.0, 400)


def surrogate_and_grad(advantage, **kwargs):
  """Per-token objective -loss and d objective / d ratio at each ratio."""
  def objective(log_ratio):
    loss, _ = losses.grpo_loss(log_ratio[None, None], jnp.zeros((1, 1)), None,
                               jnp.array([advantage]), jnp.ones((1, 1)), beta=0.0,
                               loss_type="dapo", **kwargs)
    return -loss
  value, d_log_ratio = jax.vmap(jax.value_and_grad(objective))(jnp.log(ratios))
  return value, d_log_ratio / ratios  # d/d rho = (d/d log rho) / rho


clips = {"ε = 0.2 (GRPO / PPO)": dict(epsilon_low=0.2, epsilon_high=0.2),
         "ε_low 0.2, ε_high 0.28 (DAPO)": dict(epsilon_low=0.2, epsilon_high=0.28)}
fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
value, grad = surrogate_and_grad(-1.0, epsilon_low=0.2, epsilon_high=0.2, dual_clip=3.0)
axes[0].plot(ratios, value, color="tab:purple", lw=6, alpha=0.3, label="A = -1, dual clip c = 3")
axes[1].plot(ratios, grad, color="tab:purple", lw=6, alpha=0.3, label="A = -1, dual clip c = 3")
for advantage, color in ((1.0, "tab:green"), (-1.0, "tab:red")):
  for (label, kwargs), style in zip(clips.items(), ("-", "--")):
    value, grad = surrogate_and_grad(advantage, **kwargs)
    axes[0].plot(ratios, value, style, color=color, label=f"A = {advantage:+.0f}, {label}")
    axes[1].plot(ratios, grad, style, color=color, label=f"A = {advantage:+.0f}, {label}")
for ax in axes:
  ax.axvspan(0.8, 1.28, color="gray", alpha=0.12)
  ax.set_xlabel("importance ratio ρ = π_θ / π_old")
  ax.grid(alpha=0.3)
axes[0].set_ylabel("per-token objective (−loss)")
axes[0].set_title("clipped surrogate (grey: DAPO's unclipped band)")
axes[1].set_ylabel("d objective / d ρ")
axes[1].set_title("gradient: 0 where the ratio is clipped")
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8)
fig.tight_layout(rect=(0, 0.12, 1, 1))
plt.show()

# %% [markdown]
# The wide purple band is the A = −1 surrogate with dual clip: it follows the solid red line up
# to ρ = 3, where the cap −c A takes over and its gradient drops to 0.

# %%
# The metrics grpo_loss reports on a batch of such tokens: the clipped fractions.
batch_ratios = jnp.array([0.5, 0.9, 1.1, 1.25, 1.5, 2.0])
for adv in (1.0, -1.0):
  _, metrics = losses.grpo_loss(jnp.log(batch_ratios)[:, None], jnp.zeros((6, 1)), None,
                                jnp.full(6, adv), jnp.ones((6, 1)), beta=0.0,
                                epsilon_high=0.28)
  print(f"A = {adv:+.0f}: ratios {np.asarray(batch_ratios)} -> clip_ratio/high "
        f"{float(metrics['clip_ratio/high']):.3f}, clip_ratio/low "
        f"{float(metrics['clip_ratio/low']):.3f}")

# %% [markdown]
# ## 3. KL estimators against the true KL
#
# GRPO puts a KL penalty to the reference policy in its loss (arXiv 2402.03300, eq. 4), estimated
# per sampled token from two log-probs only. With r = π_ref(x) / π_θ(x) and x ~ π_θ, Schulman's
# "Approximating KL divergence" (2020) compares k1 = −log r (unbiased, high variance, can be
# negative), k2 = (log r)² / 2 (biased, but its gradient is the true KL gradient) and
# k3 = r − 1 − log r (unbiased and always ≥ 0: GRPO's eq. 4). `losses.kl_estimate` has all three
# (and |log r|). Here π_θ = N(0, 1) and π_ref = N(μ, 1), so KL(π_θ ‖ π_ref) = μ²/2 exactly; each
# point is the mean and standard deviation of the per-sample estimate over the samples.

# %%
num_samples = 20_000 if TINY else 200_000
x = jax.random.normal(jax.random.key(0), (num_samples,))
mus = np.linspace(0.0, 3.0, 16)
true_kl = mus**2 / 2
kinds = {"k1 (kl)": "k1", "k2 (mse)": "k2", "k3 (low_var_kl)": "k3", "abs": "abs"}
stats = {label: [] for label in kinds}
for mu in mus:
  logps = -0.5 * x**2                # log N(x; 0, 1) without the shared constant
  ref_logps = -0.5 * (x - mu) ** 2   # log N(x; mu, 1)
  for label, kind in kinds.items():
    estimate = losses.kl_estimate(logps, ref_logps, kind)
    stats[label].append((float(estimate.mean()), float(estimate.std())))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for label in kinds:
  mean, std = np.array(stats[label]).T
  axes[0].plot(true_kl, mean, marker=".", label=label)
  axes[1].plot(true_kl[1:], std[1:] / true_kl[1:], marker=".", label=label)
axes[0].plot(true_kl, true_kl, color="black", lw=0.8, ls="--", label="true KL")
axes[0].set_title("mean of the per-sample estimate")
axes[0].set_ylabel("estimated KL")
axes[1].set_title("relative standard deviation (std / true KL)")
axes[1].set_ylabel("std / KL")
axes[1].set_yscale("log")
for ax in axes:
  ax.set_xlabel("true KL(π_θ ‖ π_ref) = μ² / 2")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
i = int(np.argmin(np.abs(true_kl - 0.5)))
print(f"true KL {true_kl[i]:.3f}: " + ", ".join(
    f"{label} {stats[label][i][0]:.3f} ± {stats[label][i][1]:.3f}" for label in kinds))

# %% [markdown]
# k1 and k3 follow the dashed diagonal (unbiased); k2 and |log r| do not (here k2's mean is
# KL + KL²/2 exactly). For close distributions (the regime of a KL penalty) k3's
# relative spread is far below k1's, the reason GRPO uses it; for distant ones k3's
# exp(log r) term makes it heavy-tailed and its spread overtakes k1's.

# %% [markdown]
# ## 4. Reward-model losses: a won pair and a tie
#
# A reward model is trained on score differences Δ = r(x, y_c) − r(x, y_r). The Bradley-Terry
# loss −log σ(Δ) (InstructGPT arXiv 2203.02155, eq. 1) keeps pushing Δ up; Llama 2
# (arXiv 2307.09288, eq. 2) subtracts a margin m for clearly better answers. A tie (two equally
# good answers) has no BT label. `losses.win_tie_bradley_terry_loss` (SoliReward BT-WT,
# arXiv 2512.22170) gives ties the soft label μ = 1/2: the loss −½ log σ(Δ) − ½ log σ(−Δ) is
# minimal at Δ = 0, pulling the two scores together; its `form="code"` variant follows the
# released code (margin inside both sigmoids, tie term not halved). `losses.plackett_luce_loss`
# with equal ranks (Breslow's tie handling) gives a tied pair the same shape, twice the paper's
# term. Below: the loss of one pair against Δ, labelled as a win (left) and as a tie (right).

# %%
deltas = jnp.linspace(-6.0, 6.0, 241)


def per_pair(fn):
  return np.asarray(jax.vmap(lambda d: fn(jnp.array([d]), jnp.zeros(1)))(deltas))


win = {
    "Bradley-Terry": lambda c, r: losses.bradley_terry_loss(c, r)[0],
    "BT, margin 1 (Llama 2)": lambda c, r: losses.bradley_terry_loss(c, r, margin=1.0)[0],
    "BT-WT paper": lambda c, r: losses.win_tie_bradley_terry_loss(c, r, jnp.zeros(1))[0],
    "BT-WT code, margin 3": lambda c, r: losses.win_tie_bradley_terry_loss(
        c, r, jnp.zeros(1), form="code", margin=3.0)[0],
    "Plackett-Luce, ranks (0, 1)": lambda c, r: losses.plackett_luce_loss(
        jnp.stack([c, r], axis=1), jnp.array([[0, 1]]))[0],
}
tie = {
    "BT-WT paper": lambda c, r: losses.win_tie_bradley_terry_loss(c, r, jnp.ones(1))[0],
    "BT-WT code, margin 3": lambda c, r: losses.win_tie_bradley_terry_loss(
        c, r, jnp.ones(1), form="code", margin=3.0)[0],
    "Plackett-Luce, ranks (0, 0)": lambda c, r: losses.plackett_luce_loss(
        jnp.stack([c, r], axis=1), jnp.array([[0, 0]]))[0],
}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, table, title in ((axes[0], win, "won pair: y_c ≻ y_r"),
                         (axes[1], tie, "tied pair: y_c ≈ y_r")):
  for (label, fn), style in zip(table.items(), ("-", "--", "-.", ":", (0, (1, 3)))):
    ax.plot(deltas, per_pair(fn), ls=style, lw=2, label=label)
  ax.set_title(title)
  ax.set_xlabel("score difference Δ = r_c − r_r")
  ax.axvline(0.0, color="gray", lw=0.8)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
axes[0].set_ylabel("loss of the pair")
axes[0].set_ylim(0, 8)
fig.tight_layout()
plt.show()

# %% [markdown]
# On won pairs the paper's BT-WT is plain Bradley-Terry, and Plackett-Luce over two ranked items
# is too (the curves coincide); a margin shifts the curve right by m, so a pair counts as
# learnt only once Δ > m (the code form's win term is BT with margin 3). On ties the losses are
# symmetric bowls centred at Δ = 0. The code form with margin 3 sits near 2m = 6 for |Δ| < m,
# a constant with little gradient, and rises with slope 1 past ±m: it only pulls together tied
# scores that differ by more than the margin.
