"""STARC distances between reward functions of a small finite MDP (Skalse et al., ICLR 2024).

Two rewards are close when they order policies nearly the same way. A STARC metric
  1. canonicalises away potential shaping and S'-redistribution (`val_canonicalize`,
     `minimal_canonicalize`), which never change the policy ordering;
  2. standardises away positive scaling: s(R) = c(R) / n(c(R)) (`standardize`);
  3. measures d(R1, R2) = ||s(R1) - s(R2)||_2 (`starc_distance`), in [0, 2] for the L2 norm n.
`epic_canonicalize` (Gleave et al.) removes shaping only; it is a baseline, not a STARC
canonicalisation.

Letters: S states, A actions. A reward R and a transition tau are dense [S, A, S] arrays indexed
(s, a, s'), with tau(s'|s, a) = transition[s, a, s']; a policy is [S, A]. Everything is float32
and meant for tests and toy MDPs (an |S| x |S| solve), not for LLM-sized spaces. `demonstration`
runs the canonical checks on a random toy MDP; `python -m rewardjax.evaluation.starc` prints them.
"""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = [
    "CANONICALIZATIONS", "StarcOptions", "demonstration", "epic_canonicalize", "format_table",
    "minimal_canonicalize", "policy_returns", "standardize", "starc_distance", "state_values",
    "toy_mdp", "val_canonicalize",
]

_NORM_ORDS = (1, 2, math.inf)
# A Python float, or a traced one under jit.
Scalar = float | Float[Array, ""]


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _uniform(n: int) -> jax.Array:
  return jnp.full((n,), 1.0 / n, jnp.float32)


def state_values(reward: Float[ArrayLike, "S A S"], transition: Float[ArrayLike, "S A S"],
                 gamma: Scalar,
                 policy: Float[ArrayLike, "S A"] | None = None) -> Float[Array, " S"]:
  """Exact policy evaluation V^pi by one linear solve.

    V = (I - gamma P_pi)^-1 r_pi,   P_pi(s, s') = sum_a pi(a|s) tau(s'|s,a),
    r_pi(s) = sum_{a,s'} pi(a|s) tau(s'|s,a) R(s,a,s')

  Args:
    reward: [S, A, S] R(s, a, s').
    transition: [S, A, S] tau(s'|s, a); rows sum to 1.
    gamma: discount in [0, 1) (gamma = 1 makes I - gamma P_pi singular).
    policy: [S, A] pi(a|s); None = uniform 1/|A|, as in the STARC code.

  Returns:
    [S] float32 state values.

  References:
    Skalse et al., arXiv 2309.15257, Sec. 3 (V^pi of the VAL canonicalisation); the authors'
    value iteration (`value_canon`) converges to the same V.

  >>> one = jnp.ones((1, 1, 1))                 # 1 state, 1 action, self-loop, R = 1
  >>> round(float(state_values(one, one, 0.9)[0]), 4)      # 1 / (1 - 0.9)
  10.0
  """
  r_SxAxS, tau_SxAxS = _f32(reward), _f32(transition)
  num_states, num_actions = tau_SxAxS.shape[:2]
  pi_SxA = _f32(policy) if policy is not None else jnp.full((num_states, num_actions),
                                                             1.0 / num_actions, jnp.float32)
  p_SxS = jnp.einsum("sa,sat->st", pi_SxA, tau_SxAxS)
  r_S = jnp.einsum("sa,sat,sat->s", pi_SxA, tau_SxAxS, r_SxAxS)
  return jnp.linalg.solve(jnp.eye(num_states, dtype=jnp.float32) - gamma * p_SxS, r_S)


def val_canonicalize(reward: Float[ArrayLike, "S A S"], transition: Float[ArrayLike, "S A S"],
                     gamma: Scalar,
                     policy: Float[ArrayLike, "S A"] | None = None) -> Float[Array, "S A S"]:
  """Value-adjusted levelling (VAL): expected shaped reward with the potential V^pi.

    c(R)(s,a,s') = sum_{s''} tau(s''|s,a) [R(s,a,s'') + gamma V^pi(s'') - V^pi(s)]

  for every s' (the result does not depend on s': the expectation over S' is what removes
  S'-redistribution; shaping with V^pi alone would not). c(R) = 0 exactly when R is potential
  shaping plus S'-redistribution of 0, so c(R1) = c(R2) iff R1, R2 differ only by those.

  Args:
    reward: [S, A, S] R(s, a, s').
    transition: [S, A, S] tau(s'|s, a).
    gamma: discount in [0, 1).
    policy: [S, A] the fixed policy pi; None = uniform (the paper's and code's choice). Keep pi,
      gamma and tau fixed across a comparison: the canonical reward depends on all three.

  Returns:
    [S, A, S] float32 canonical reward, constant along the last axis.

  References:
    Skalse et al., "STARC: A General Framework For Quantifying Differences Between Reward
    Functions", arXiv 2309.15257, Sec. 3 (Definition of canonicalisation, VAL); authors' code
    lucyfarnik/starc `src/distance/canon/value.py`.

  One state with two self-looping actions, R = [1, 0], gamma = 0.5: V = 0.5 / 0.5 = 1, so
  c = [1 + 0.5 - 1, 0 + 0.5 - 1].

  >>> tau = jnp.ones((1, 2, 1)); r = jnp.array([1.0, 0.0]).reshape(1, 2, 1)
  >>> val_canonicalize(r, tau, 0.5).ravel().tolist()
  [0.5, -0.5]
  """
  r_SxAxS, tau_SxAxS = _f32(reward), _f32(transition)
  v_S = state_values(r_SxAxS, tau_SxAxS, gamma, policy)
  shaped_SxAxS = r_SxAxS + gamma * v_S[None, None, :] - v_S[:, None, None]
  mean_SxA = (tau_SxAxS * shaped_SxAxS).sum(axis=-1)
  return jnp.broadcast_to(mean_SxA[:, :, None], tau_SxAxS.shape)


def epic_canonicalize(reward: Float[ArrayLike, "S A S"], state_dist: Float[ArrayLike, " S"],
                      action_dist: Float[ArrayLike, " A"], gamma: Scalar) -> Float[Array, "S A S"]:
  """EPIC canonicalisation (a baseline): removes potential shaping but NOT S'-redistribution.

    Phi(s) = sum_{a,s'} D_A(a) D_S(s') R(s,a,s')
    c(R)(s,a,s') = R(s,a,s') + gamma Phi(s') - Phi(s) - gamma sum_{s,a,s'} D_S D_A D_S R

  i.e. R + E[gamma R(s',A,S') - R(s,A,S') - gamma R(S,A,S')] with S, S' ~ D_S, A ~ D_A. It
  ignores tau, so two rewards with the same expected rewards under tau (same policy ordering)
  generally get different canonical rewards. The original EPIC metric then takes a Pearson
  distance; `starc_distance(..., canonicalize="epic")` standardises and takes the L2 distance.

  Args:
    reward: [S, A, S] R(s, a, s').
    state_dist: [S] coverage distribution D_S.
    action_dist: [A] coverage distribution D_A.
    gamma: discount.

  Returns:
    [S, A, S] float32 canonical reward.

  References:
    Gleave et al., "Quantifying Differences in Reward Functions", arXiv 2006.13900, Def. 4.1;
    used as a baseline in Skalse et al., arXiv 2309.15257, Sec. 3 and 5 (code
    lucyfarnik/starc `src/distance/canon/epic.py`).

  Same one-state MDP as in `val_canonicalize`: Phi = 0.5, so c = R + 0.25 - 0.5 - 0.25.

  >>> r = jnp.array([1.0, 0.0]).reshape(1, 2, 1)
  >>> epic_canonicalize(r, jnp.ones(1), jnp.array([0.5, 0.5]), 0.5).ravel().tolist()
  [0.5, -0.5]
  """
  r_SxAxS, d_s_S, d_a_A = _f32(reward), _f32(state_dist), _f32(action_dist)
  phi_S = jnp.einsum("a,t,sat->s", d_a_A, d_s_S, r_SxAxS)
  mean_r = d_s_S @ phi_S                                  # E_{S, A, S'} R(S, A, S')
  return r_SxAxS + gamma * phi_S[None, None, :] - phi_S[:, None, None] - gamma * mean_r


def minimal_canonicalize(reward: Float[ArrayLike, "S A S"],
                         transition: Float[ArrayLike, "S A S"],
                         gamma: Scalar) -> Float[Array, "S A S"]:
  """Minimal canonicalisation: the smallest-L2-norm reward equivalent to R, in closed form.

  The rewards equivalent to R under shaping and S'-redistribution are exactly those whose
  expected rewards are r_Phi(s,a) = E_{S'~tau(s,a)}[R(s,a,S') + gamma Phi(S')] - Phi(s) for
  some Phi. For fixed expectations the smallest ||R'||_2 with sum_s' tau R' = r_Phi spreads r_Phi
  along tau (norm^2 = r_Phi^2 / ||tau(.|s,a)||^2), so

    Phi* = argmin_Phi sum_{s,a} r_Phi(s,a)^2 / ||tau(.|s,a)||_2^2     (weighted least squares)
    c(R)(s,a,s') = tau(s'|s,a) r_Phi*(s,a) / ||tau(.|s,a)||_2^2

  This is R minus its orthogonal projection onto the subspace spanned by the shaping terms and
  the S'-redistributions of 0, so it is linear, idempotent, 0 wherever tau(s'|s,a) = 0, and no
  larger in norm than any other canonical reward of R (e.g. VAL's).

  Args:
    reward: [S, A, S] R(s, a, s').
    transition: [S, A, S] tau(s'|s, a); rows sum to 1.
    gamma: discount in [0, 1] (at gamma = 1, Phi* is unique only up to a constant; c(R) is
      still unique).

  Returns:
    [S, A, S] float32 canonical reward (minimal for the unweighted L2 norm only).

  References:
    Skalse et al., arXiv 2309.15257, Sec. 3 (minimal canonicalisation); the authors' code
    (lucyfarnik/starc `src/distance/canon/minimal.py`) minimises the same norm with Adam.

  One state, two self-looping actions, R = [1, 0], gamma = 0.5: r_Phi = R - 0.5 Phi, and
  (1 - 0.5 Phi)^2 + (0.5 Phi)^2 is smallest at Phi = 1.

  >>> tau = jnp.ones((1, 2, 1)); r = jnp.array([1.0, 0.0]).reshape(1, 2, 1)
  >>> [round(x, 4) for x in minimal_canonicalize(r, tau, 0.5).ravel().tolist()]
  [0.5, -0.5]
  """
  r_SxAxS, tau_SxAxS = _f32(reward), _f32(transition)
  num_states, num_actions = tau_SxAxS.shape[:2]
  mean_r_SA = (tau_SxAxS * r_SxAxS).sum(axis=-1).reshape(-1)
  tau_sq_SA = (tau_SxAxS ** 2).sum(axis=-1).reshape(-1)   # > 0: each row sums to 1
  # r_Phi = mean_r + m @ Phi with m[(s,a), k] = gamma tau(k|s,a) - [s == k]; rows ordered (s, a).
  m_SAxS = (gamma * tau_SxAxS.reshape(-1, num_states)
            - jnp.repeat(jnp.eye(num_states, dtype=jnp.float32), num_actions, axis=0))
  inv_norm_SA = jax.lax.rsqrt(tau_sq_SA)
  phi_S = jnp.linalg.lstsq(m_SAxS * inv_norm_SA[:, None], -mean_r_SA * inv_norm_SA)[0]
  mean_shaped_SA = mean_r_SA + m_SAxS @ phi_S
  spread_SxA = (mean_shaped_SA / tau_sq_SA).reshape(num_states, num_actions)
  return tau_SxAxS * spread_SxA[:, :, None]


def _norm(x: jax.Array, norm_ord, weights) -> jax.Array:
  if norm_ord not in _NORM_ORDS:
    raise ValueError(f"norm_ord must be one of 1, 2, inf; got {norm_ord!r}")
  w = jnp.ones_like(x) if weights is None else _f32(weights)
  if norm_ord == math.inf:
    return jnp.max(w * jnp.abs(x))
  total = jnp.sum(w * jnp.abs(x) ** norm_ord)
  # Double where: the gradient of t ** (1/p) at t = 0 is inf, and inf * 0 = NaN.
  return jnp.where(total > 0, jnp.where(total > 0, total, 1.0) ** (1.0 / norm_ord), 0.0)


def standardize(canonical: Float[ArrayLike, "*shape"], norm_ord: int | float = 2,
                weights: Float[ArrayLike, "*shape"] | None = None, *,
                atol: Scalar = 0.0) -> Float[Array, "*shape"]:
  """Standardisation s(R) = c(R) / n(c(R)); zeros (never NaN) when n(c(R)) <= atol.

    n(c) = (sum w |c|^p)^(1/p)   p in {1, 2};   n(c) = max w |c|   p = inf;   w = 1 if None

  Args:
    canonical: [*shape] canonical reward c(R).
    norm_ord: 1, 2 or math.inf.
    weights: [*shape] w; pass tau for the transition-weighted norms of the paper.
    atol: a norm at or below this counts as 0. `starc_distance` sets it relative to n(R),
      because a float32 canonical reward of a shaping-only R is ~1e-7 |R|, not 0.

  Returns:
    [*shape] float32 array with n(s(R)) = 1, or zeros.

  References:
    Skalse et al., arXiv 2309.15257, Sec. 3 (Definition 3: s(R) = c(R) / n(c(R)), with s(R) = c(R)
    when n(c(R)) = 0); norms as in lucyfarnik/starc `src/distance/norm.py`.

  >>> [round(x, 4) for x in standardize(jnp.array([3.0, 4.0])).tolist()]
  [0.6, 0.8]
  >>> [round(x, 4) for x in standardize(jnp.array([3.0, 4.0]), 1).tolist()]      # 3/7, 4/7
  [0.4286, 0.5714]
  >>> standardize(jnp.zeros(2)).tolist()
  [0.0, 0.0]
  """
  c = _f32(canonical)
  n = _norm(c, norm_ord, weights)
  nonzero = n > atol
  # Double where: the untaken branch must not divide by 0 either (NaN gradients).
  return jnp.where(nonzero, c / jnp.where(nonzero, n, 1.0), 0.0)


@dataclasses.dataclass(frozen=True)
class StarcOptions:
  """The static choices of a STARC distance (fixed across a comparison).

  Attributes:
    canonicalize: "val" (default, recommended), "minimal" (L2-minimal) or "epic" (baseline).
    norm_ord: order of the standardising norm n: 1, 2 or math.inf.
    weighted_norm: weight n by tau(s'|s,a) (the paper's transition-weighted norms).
    scale: multiplies the distance; 1.0 = range [0, 2] as in the code, 0.5 maps it to [0, 1].
    zero_rtol: c(R) with n(c(R)) <= zero_rtol * n(R) counts as 0 (float32 round-off).
  """
  canonicalize: str = "val"
  norm_ord: int | float = 2
  weighted_norm: bool = False
  scale: float = 1.0
  zero_rtol: float = 1e-4


CANONICALIZATIONS = {
    "val": lambda r, tau, gamma, pi, d_s, d_a: val_canonicalize(r, tau, gamma, pi),
    "minimal": lambda r, tau, gamma, pi, d_s, d_a: minimal_canonicalize(r, tau, gamma),
    "epic": lambda r, tau, gamma, pi, d_s, d_a: epic_canonicalize(r, d_s, d_a, gamma),
}


def starc_distance(reward1: Float[ArrayLike, "S A S"], reward2: Float[ArrayLike, "S A S"],
                   transition: Float[ArrayLike, "S A S"], gamma: Scalar, *,
                   options: StarcOptions = StarcOptions(),
                   policy: Float[ArrayLike, "S A"] | None = None,
                   state_dist: Float[ArrayLike, " S"] | None = None,
                   action_dist: Float[ArrayLike, " A"] | None = None) -> Float[Array, ""]:
  """STARC distance: the L2 distance between standardised canonical rewards.

    d(R1, R2) = scale * || c(R1)/n(c(R1)) - c(R2)/n(c(R2)) ||_2

  0 iff R1 and R2 differ by potential shaping, S'-redistribution and positive scaling (for a
  STARC canonicalisation); 2 for R2 = -R1 != 0; in [0, 2] * scale for the unweighted L2 n.

  Args:
    reward1: [S, A, S] first reward.
    reward2: [S, A, S] second reward.
    transition: [S, A, S] tau(s'|s, a).
    gamma: discount in [0, 1).
    options: canonicalisation, norm and scale (`StarcOptions`).
    policy: [S, A] pi for "val"; None = uniform.
    state_dist: [S] D_S for "epic"; None = uniform.
    action_dist: [A] D_A for "epic"; None = uniform.

  Returns:
    [] float32 distance.

  References:
    Skalse et al., arXiv 2309.15257, Sec. 3 (Definition 3, STARC metrics: d = m(s(R1), s(R2)));
    the code (lucyfarnik/starc `src/distance/distance_funcs.py`) uses m = L2, not halved.

  >>> tau = jnp.ones((1, 2, 1)); r = jnp.array([1.0, 0.0]).reshape(1, 2, 1)
  >>> round(float(starc_distance(r, 3 * r + 5, tau, 0.5)), 4)   # a constant is shaping here
  0.0
  >>> round(float(starc_distance(r, 1 - r, tau, 0.5)), 4)       # 1 - r = -r + shaping
  2.0
  """
  if options.canonicalize not in CANONICALIZATIONS:
    raise ValueError(f"unknown canonicalize {options.canonicalize!r}; "
                     f"valid: {sorted(CANONICALIZATIONS)}")
  tau_SxAxS = _f32(transition)
  num_states, num_actions = tau_SxAxS.shape[:2]
  d_s_S = _uniform(num_states) if state_dist is None else state_dist
  d_a_A = _uniform(num_actions) if action_dist is None else action_dist
  weights = tau_SxAxS if options.weighted_norm else None
  canon = CANONICALIZATIONS[options.canonicalize]

  def standardized(reward):
    r_SxAxS = _f32(reward)
    c_SxAxS = canon(r_SxAxS, tau_SxAxS, gamma, policy, d_s_S, d_a_A)
    atol = options.zero_rtol * _norm(r_SxAxS, options.norm_ord, weights)
    return standardize(c_SxAxS, options.norm_ord, weights, atol=atol)

  return options.scale * jnp.linalg.norm((standardized(reward1) - standardized(reward2)).ravel())


def toy_mdp(seed: int = 0, num_states: int = 4,
            num_actions: int = 3) -> tuple[Float[Array, "S A S"], Float[Array, "S A S"]]:
  """A random toy MDP: (transition, reward), with some zero-probability successors.

  Each (s, a) reaches about half of the states (always its likeliest one) with softmax-of-normal
  probabilities; the reward is standard normal on all [S, A, S] entries.

  >>> tau, r = toy_mdp(0, 3, 2)
  >>> tau.shape, bool(jnp.allclose(tau.sum(-1), 1.0)), r.shape
  ((3, 2, 3), True, (3, 2, 3))
  """
  key_t, key_m, key_r = jax.random.split(jax.random.key(seed), 3)
  shape = (num_states, num_actions, num_states)
  logits_SxAxS = jax.random.normal(key_t, shape)
  keep_SxAxS = ((jax.random.uniform(key_m, shape) < 0.5)
                | (logits_SxAxS == logits_SxAxS.max(axis=-1, keepdims=True)))
  transition = jax.nn.softmax(jnp.where(keep_SxAxS, logits_SxAxS, -jnp.inf), axis=-1)
  return transition, jax.random.normal(key_r, shape)


def policy_returns(reward: Float[ArrayLike, "S A S"], transition: Float[ArrayLike, "S A S"],
                   gamma: Scalar, init_dist: Float[ArrayLike, " S"] | None = None
                   ) -> Float[Array, " P"]:
  """Returns J(pi) = E_{s0 ~ init_dist} V^pi(s0) of all P = A^S deterministic policies.

  Policy i takes action `itertools.product(range(A), repeat=S)[i][s]` in state s; init_dist
  defaults to uniform. Meant for toy MDPs (A^S policies).

  >>> one = jnp.ones((1, 1, 1))
  >>> [round(x, 4) for x in policy_returns(one, one, 0.9).tolist()]
  [10.0]
  """
  tau_SxAxS = _f32(transition)
  num_states, num_actions = tau_SxAxS.shape[:2]
  actions_PxS = jnp.array(list(itertools.product(range(num_actions), repeat=num_states)))
  pis_PxSxA = jax.nn.one_hot(actions_PxS, num_actions, dtype=jnp.float32)
  v_PxS = jax.vmap(lambda pi: state_values(reward, tau_SxAxS, gamma, pi))(pis_PxSxA)
  mu_S = _uniform(num_states) if init_dist is None else _f32(init_dist)
  return v_PxS @ mu_S


def _order_agreement(j_ref: np.ndarray, j_new: np.ndarray, rtol: float = 1e-4) -> float:
  """Kendall's tau between two policy rankings, skipping pairs tied (within rtol) under j_ref."""
  d_ref = j_ref[:, None] - j_ref[None, :]
  d_new = j_new[:, None] - j_new[None, :]
  pairs = np.abs(d_ref) > rtol * np.ptp(j_ref)
  return float(np.mean(np.sign(d_ref[pairs]) * np.sign(d_new[pairs])))


def demonstration(seed: int = 0, num_states: int = 4, num_actions: int = 3,
                  gamma: float = 0.9) -> dict[str, float]:
  """STARC distances and policy-ordering checks of transformed rewards on a toy MDP.

  For a random reward R and R' in {R + potential shaping, R + S'-redistribution, 3 R, -R, an
  independent reward, R + 0.1 noise}, returns a flat dict with keys "<column>/<transform>":
    val, minimal, epic: STARC distance d(R, R') with that canonicalisation (L2 norm, scale 1);
    kendall: Kendall's tau between the A^S deterministic policies' returns under R and under R'
      (1 = same ordering);
    regret: regret under R of the policy optimal under R', as a fraction of max J_R - min J_R.
  Shaping, redistribution and scaling must give 0 for val and minimal and kendall = 1, regret = 0;
  epic is 0 for shaping and scaling but not for S'-redistribution.

  >>> results = demonstration()
  >>> [abs(results[k]) < 1e-5 for k in ("val/shaping", "minimal/redistribution", "epic/scale_3")]
  [True, True, True]
  """
  tau_SxAxS, r_SxAxS = toy_mdp(seed, num_states, num_actions)
  keys = jax.random.split(jax.random.key(seed + 1), 4)
  shape = r_SxAxS.shape
  phi_S = 3.0 * jax.random.normal(keys[0], (num_states,))
  # S'-redistribution: remove from a random z its tau-expectation (projection onto the rows of tau).
  z_SxAxS = 3.0 * jax.random.normal(keys[1], shape)
  z_SxAxS -= (tau_SxAxS * ((tau_SxAxS * z_SxAxS).sum(-1) / (tau_SxAxS ** 2).sum(-1))[:, :, None])
  transformed = {
      "shaping": r_SxAxS + gamma * phi_S[None, None, :] - phi_S[:, None, None],
      "redistribution": r_SxAxS + z_SxAxS,
      "scale_3": 3.0 * r_SxAxS,
      "negation": -r_SxAxS,
      "independent": jax.random.normal(keys[2], shape),
      "noise_0.1": r_SxAxS + 0.1 * jax.random.normal(keys[3], shape),
  }
  j_ref = np.asarray(policy_returns(r_SxAxS, tau_SxAxS, gamma), np.float64)
  results = {}
  for name, r2_SxAxS in transformed.items():
    for method in CANONICALIZATIONS:
      results[f"{method}/{name}"] = float(starc_distance(
          r_SxAxS, r2_SxAxS, tau_SxAxS, gamma, options=StarcOptions(canonicalize=method)))
    j_new = np.asarray(policy_returns(r2_SxAxS, tau_SxAxS, gamma), np.float64)
    results[f"kendall/{name}"] = _order_agreement(j_ref, j_new)
    results[f"regret/{name}"] = float((j_ref.max() - j_ref[np.argmax(j_new)]) / np.ptp(j_ref))
  return results


def format_table(results: dict[str, float]) -> str:
  """A Markdown table of a `demonstration` dict: one row per transform, one column per prefix."""
  columns, rows = {}, {}
  for key in results:
    column, row = key.split("/", 1)
    columns.setdefault(column, None)
    rows.setdefault(row, None)
  lines = ["| R' | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
  for row in rows:
    cells = [f"{results[f'{c}/{row}']:.3f}" if f"{c}/{row}" in results else "" for c in columns]
    lines.append(f"| {row} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main() -> None:
  print(format_table(demonstration()))


if __name__ == "__main__":
  main()
