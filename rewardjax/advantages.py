"""Advantage estimators: group-normalised (GRPO), leave-one-out (RLOO), GAE, step-level (OPRL),
dense process rewards (return-to-go, Clip / Delta).

Rollouts of one prompt are contiguous, so a `[B]` reward vector reshapes to `[P, G]`
(verl/TRL layout) and every group statistic is a reshape plus a reduction: no segment ops, static
shapes, jit-friendly. Rewards are constants; the estimators are differentiable only so that tests
can check their gradients.

Group statistics follow Hugging Face TRL `GRPOTrainer`: std with ddof=1 (torch's default), eps=1e-4
added to the std. verl uses eps=1e-6 and OpenRLHF 1e-9; pass `eps` to match them. Unlike TRL
(whose ddof=1 std is NaN for G=1) and verl (A = R for G=1), a group of size 1 and a group of equal
rewards get advantage exactly 0.

Select a group estimator by name with `get_advantage_fn(name)`; `ADVANTAGES` maps each name to a
function `(rewards[B], group_size) -> advantages[B]`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Shaped

__all__ = [
    "ADVANTAGES", "SCALE_REWARDS", "combine_step_advantages", "dr_grpo_advantages",
    "gae_advantages", "get_advantage_fn", "group_advantages", "group_keep_mask", "masked_whiten",
    "process_advantages", "rloo_advantages", "step_advantages", "step_token_rewards",
]

SCALE_REWARDS = ("group", "batch", "none")


def _to_groups(rewards: jax.Array, group_size: int) -> jax.Array:
  if rewards.ndim != 1 or group_size < 1 or rewards.shape[0] % group_size:
    raise ValueError(f"rewards of shape {rewards.shape} do not split into contiguous groups of "
                     f"group_size={group_size}; expected shape [P * G]")
  return rewards.astype(jnp.float32).reshape(-1, group_size)


def _safe_sqrt(x: jax.Array) -> jax.Array:
  # sqrt'(0) = inf would turn the zero std of an all-equal group into a NaN gradient.
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _masked_centre_std(x: jax.Array, m: jax.Array, axis) -> tuple[jax.Array, jax.Array]:
  """(x - mean, std with ddof=1) over `axis` for entries with m = 1; counts guarded by max(., 1).

  The mean is taken after shifting by one valid entry, so a set of equal values is centred to
  exactly 0 (a plain float mean of equal values can be off by one ulp).
  """
  shift = jnp.max(jnp.where(m > 0, x, -jnp.inf), axis=axis, keepdims=True)
  shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
  d = jnp.where(m > 0, x - shift, 0.0)
  n = m.sum(axis=axis, keepdims=True)
  centred = jnp.where(m > 0, d - d.sum(axis=axis, keepdims=True) / jnp.maximum(n, 1.0), 0.0)
  var = (centred**2).sum(axis=axis, keepdims=True) / jnp.maximum(n - 1.0, 1.0)
  return centred, _safe_sqrt(var)


def group_advantages(rewards: Float[Array, " B"], group_size: int, *, scale_rewards: str = "group",
                     eps: float = 1e-4) -> Float[Array, " B"]:
  """Group-normalised advantage of GRPO, with TRL's `scale_rewards` options.

    A_i = (R_i - mean_g R) / (std R + eps)

  where the mean is over the G rollouts of the same prompt and std is over the group
  (`scale_rewards="group"`), over the whole batch of B rewards (`"batch"`), or omitted (`"none"`,
  Dr. GRPO: A_i = R_i - mean_g R). This is exactly TRL `GRPOTrainer` except that G = 1 and
  all-equal groups give 0, not NaN.

  Args:
    rewards: [B] scalar reward per rollout, B = P * G, the G rollouts of a prompt contiguous.
    group_size: G, rollouts per prompt.
    scale_rewards: "group" | "batch" | "none" (TRL `GRPOConfig.scale_rewards`).
    eps: added to the std (TRL 1e-4; verl 1e-6).

  Returns:
    [B] float32 advantages.

  Normalisers: group mean over G; std with ddof=1 over G ("group") or B ("batch"), the ddof
  denominator guarded by max(n - 1, 1); eps=1e-4 added to the std.

  References:
    DeepSeekMath, arXiv 2402.03300, §4.1.2 (outcome supervision); Dr. GRPO, arXiv 2503.20783,
    §3.2; TRL `GRPOTrainer` (`scale_rewards="group"`).

  >>> r = jnp.array([1.0, 0.0, 0.0, 1.0])
  >>> [round(float(a), 4) for a in group_advantages(r, 4, eps=1e-6)]  # std = sqrt(1/3)
  [0.866, -0.866, -0.866, 0.866]
  >>> [float(a) for a in group_advantages(jnp.array([1.0, 1.0, 0.5, 1.5]), 2, scale_rewards="none")]
  [0.0, 0.0, -0.5, 0.5]
  """
  if scale_rewards not in SCALE_REWARDS:
    raise ValueError(f"unknown scale_rewards {scale_rewards!r}; valid: {list(SCALE_REWARDS)}")
  rewards_PxG = _to_groups(rewards, group_size)
  ones_PxG = jnp.ones_like(rewards_PxG)
  centred_PxG, std_Px1 = _masked_centre_std(rewards_PxG, ones_PxG, axis=1)
  if scale_rewards == "none":
    return centred_PxG.reshape(-1)
  if scale_rewards == "batch":
    # TRL: per-group mean, but the std of the raw rewards over the whole batch.
    _, std_1x1 = _masked_centre_std(rewards_PxG.reshape(1, -1), ones_PxG.reshape(1, -1), axis=1)
    std_Px1 = jnp.broadcast_to(std_1x1, std_Px1.shape)
  return (centred_PxG / (std_Px1 + eps)).reshape(-1)


def dr_grpo_advantages(rewards: Float[Array, " B"], group_size: int) -> Float[Array, " B"]:
  """Dr. GRPO advantage: the group-centred reward without std scaling, A_i = R_i - mean_g R.

  Args:
    rewards: [B] rewards, groups of `group_size` contiguous.
    group_size: G.

  Returns:
    [B] float32 advantages (TRL `scale_rewards="none"`).

  Normalisers: group mean over G only.

  References:
    Dr. GRPO, arXiv 2503.20783, §3.2; official code sail-sg/understand-r1-zero
    `train_zero_math.py`.

  >>> [float(a) for a in dr_grpo_advantages(jnp.array([1.0, 0.0, 0.0, 1.0]), 4)]
  [0.5, -0.5, -0.5, 0.5]
  """
  return group_advantages(rewards, group_size, scale_rewards="none")


def rloo_advantages(rewards: Float[Array, " B"], group_size: int) -> Float[Array, " B"]:
  """REINFORCE leave-one-out advantage: each reward minus the mean of the other G - 1.

    A_i = R_i - (1 / (G - 1)) sum_{j != i} R_j = G / (G - 1) * (R_i - mean_g R)

  Args:
    rewards: [B] rewards, groups of `group_size` contiguous.
    group_size: G. G = 1 has no other sample and gives A = 0.

  Returns:
    [B] float32 advantages (exactly 0 for all-equal groups).

  Normalisers: baseline = sum of the other rewards / (G - 1); no std scaling.

  References:
    Ahmadian et al., "Back to Basics", arXiv 2402.14740, §3.3 (RLOO); OpenRLHF `rloo`.

  >>> [float(a) for a in rloo_advantages(jnp.arange(1.0, 7.0), 3)]
  [-1.5, 0.0, 1.5, -1.5, 0.0, 1.5]
  """
  rewards_PxG = _to_groups(rewards, group_size)
  centred_PxG, _ = _masked_centre_std(rewards_PxG, jnp.ones_like(rewards_PxG), axis=1)
  return (centred_PxG * (group_size / max(group_size - 1, 1))).reshape(-1)


ADVANTAGES: dict[str, Callable[..., jax.Array]] = {
    "grpo": group_advantages,
    "rloo": rloo_advantages,
    "dr_grpo": dr_grpo_advantages,
}


def get_advantage_fn(name: str) -> Callable[..., jax.Array]:
  """The group estimator `(rewards[B], group_size) -> [B]` called `name` in `ADVANTAGES`.

  >>> get_advantage_fn("rloo") is rloo_advantages
  True
  """
  if name not in ADVANTAGES:
    raise ValueError(f"unknown advantage estimator {name!r}; valid names: {sorted(ADVANTAGES)}")
  return ADVANTAGES[name]


def group_keep_mask(rewards: Float[Array, " B"], group_size: int) -> Bool[Array, " P"]:
  """DAPO dynamic-sampling filter: True for groups whose rewards are not all equal.

  A group with equal rewards has zero advantage, hence zero policy gradient, but still counts in
  token-mean denominators. DAPO drops such groups and resamples (host-side); inside jit use this
  mask to zero the groups' loss mask instead. Groups of size 1 are kept (as verl does).

  Args:
    rewards: [B] rewards (or the metric DAPO filters on, e.g. accuracy), groups contiguous.
    group_size: G.

  Returns:
    [P] bool, True = keep. Equality is exact (max == min), not a std threshold.

  References:
    DAPO, arXiv 2503.14476, §3.2 (Eq. 11, 0 < |correct| < G); verl DAPO recipe `recipe/dapo`.

  >>> group_keep_mask(jnp.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]), 2).tolist()
  [False, True, False]
  """
  rewards_PxG = _to_groups(rewards, group_size)
  differ_P = rewards_PxG.max(axis=1) != rewards_PxG.min(axis=1)
  return differ_P | (group_size == 1)


def masked_whiten(values: Float[Array, "B T"], mask: Shaped[Array, "B T"], *,
                  shift_mean: bool = True, eps: float = 1e-8) -> Float[Array, "B T"]:
  """Whiten values with the mean and variance of the masked entries only.

    x' = (x - mean_m x) / sqrt(var_m x + eps)   (+ mean_m x if not shift_mean)

  Args:
    values: [B, T] values (e.g. token advantages).
    mask: [B, T] 1/True on the entries that count.
    shift_mean: if False, add the mean back (only the scale is normalised).
    eps: added to the variance inside the square root.

  Returns:
    [B, T] float32, 0 where mask = 0.

  Normalisers: mean over the n masked entries, variance with ddof=1 (divide by max(n - 1, 1),
  as TRL/verl `masked_var(unbiased=True)`), eps=1e-8 inside the sqrt. All-masked input gives 0.

  References:
    TRL / verl `masked_whiten`; REINFORCE++ global whitening (arXiv 2501.03262), as in the
    official StableReinforce code yfzhang114/r1_reward `replay_buffer.py`.

  >>> x = jnp.array([[1.0, 3.0, 100.0]]); m = jnp.array([[1.0, 1.0, 0.0]])
  >>> [round(float(v), 4) for v in masked_whiten(x, m)[0]]  # mean 2, var 2
  [-0.7071, 0.7071, 0.0]
  """
  _check_same_shape(values=values, mask=mask)
  m_BxT = mask.astype(jnp.float32)
  # Sanitise first: a NaN/inf under the mask must not reach the sums (inf * 0 = NaN).
  x_BxT = jnp.where(m_BxT > 0, values.astype(jnp.float32), 0.0)
  n = m_BxT.sum()
  mean = x_BxT.sum() / jnp.maximum(n, 1.0)
  var = (((x_BxT - mean) * m_BxT) ** 2).sum() / jnp.maximum(n - 1.0, 1.0)
  out_BxT = (x_BxT - mean) * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    out_BxT = out_BxT + mean
  return jnp.where(m_BxT > 0, out_BxT, 0.0)


def token_rewards(rewards: Float[ArrayLike, " B"], logprobs: Float[ArrayLike, "B T"],
                  ref_logprobs: Float[ArrayLike, "B T"], mask: Shaped[ArrayLike, "B T"], *,
                  kl_coef: float) -> Float[Array, "B T"]:
  """Token rewards with the KL in the reward: the sequence reward at the last completion token,
  minus kl_coef * k1 on every completion token.

    r_t = R 1[t = last completion token] - kl_coef (logp_t - ref_logp_t),   0 where mask = 0

  Args:
    rewards: [B] sequence rewards R.
    logprobs: [B, T] log-probs of the sampling policy.
    ref_logprobs: [B, T] log-probs of the reference policy.
    mask: [B, T] 1 on completion tokens (right-padded rows).
    kl_coef: the KL-in-reward coefficient (TRL PPO `kl_coef`, OpenRLHF `init_kl_coef`).

  Returns:
    [B, T] float32.

  References:
    TRL `PPOTrainer` (`non_score_reward = -kl_coef * (logprobs - ref_logprobs)`); REINFORCE++,
    arXiv 2501.03262, §3.

  >>> token_rewards(jnp.array([1.0]), jnp.zeros((1, 3)), jnp.zeros((1, 3)),
  ...               jnp.array([[1, 1, 0]]), kl_coef=0.1).tolist()
  [[0.0, 1.0, 0.0]]
  """
  logprobs, ref_logprobs = jnp.asarray(logprobs), jnp.asarray(ref_logprobs)
  m_BxT = jnp.asarray(mask, jnp.float32)
  _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=m_BxT)
  length_B = m_BxT.sum(axis=1).astype(jnp.int32)
  last_BxT = jax.nn.one_hot(jnp.maximum(length_B - 1, 0), m_BxT.shape[1]) * (length_B > 0)[:, None]
  kl_BxT = (logprobs - ref_logprobs) * m_BxT
  return jnp.asarray(rewards, jnp.float32)[:, None] * last_BxT - kl_coef * kl_BxT


def reinforce_pp_advantages(rewards: Float[Array, " B"], logprobs: Float[Array, "B T"],
                            ref_logprobs: Float[Array, "B T"], mask: Shaped[Array, "B T"], *,
                            kl_coef: float = 1e-3) -> Float[Array, "B T"]:
  """REINFORCE++ token advantages: KL-in-reward returns, globally whitened.

    r_t = -kl_coef (logp_t - ref_logp_t) + R 1[t = last completion token]     (k1 KL in reward)
    G_t = sum_{s >= t} r_s m_s                                                 (gamma = 1)
    A_t = masked_whiten(G)_t                                                    (over all tokens)

  Args:
    rewards: [B] sequence rewards R.
    logprobs: [B, T] log-probs of the sampling policy (the rollout's old log-probs).
    ref_logprobs: [B, T] log-probs of the reference policy.
    mask: [B, T] 1 on completion tokens.
    kl_coef: KL-in-reward coefficient (OpenRLHF `init_kl_coef`, 1e-3 in R1-Reward).

  Returns:
    [B, T] float32 advantages, 0 off the mask.

  Normalisers: `masked_whiten` over every masked token of the batch (mean, variance ddof=1,
  eps=1e-8); no group baseline (REINFORCE++ is group-free).

  References:
    REINFORCE++, arXiv 2501.03262, §3; R1-Reward (StableReinforce), arXiv 2505.02835, §3.

  >>> a = reinforce_pp_advantages(jnp.array([1.0, 0.0]), jnp.zeros((2, 2)), jnp.zeros((2, 2)),
  ...                             jnp.array([[1, 1], [1, 0]]))
  >>> [[round(float(v), 4) for v in row] for row in a]   # returns [[1, 1], [0, -]]: mean 2/3
  [[0.5774, 0.5774], [-1.1547, 0.0]]
  """
  m_BxT = mask.astype(jnp.float32)
  token_rewards_BxT = token_rewards(rewards, logprobs, ref_logprobs, mask, kl_coef=kl_coef)
  # Right-padded completions: reverse cumsum = return from t to the end (gamma = 1).
  returns_BxT = jnp.flip(jnp.cumsum(jnp.flip(token_rewards_BxT, 1), axis=1), 1) * m_BxT
  return masked_whiten(returns_BxT, m_BxT)


def gae_advantages(rewards: Float[Array, "B T"], values: Float[Array, "B T"],
                   mask: Shaped[Array, "B T"], *, gamma: float = 1.0, lam: float = 0.95,
                   whiten: bool = True) -> tuple[Float[Array, "B T"], Float[Array, "B T"]]:
  """Generalised advantage estimation over the masked tokens, with optional whitening.

    delta_t = r_t + gamma V_{t'} - V_t,   A_t = delta_t + gamma lam A_{t'},   G_t = A_t + V_t

  where t' is the next token with mask = 1 (masked tokens, e.g. tool observations or padding,
  are skipped: they carry neither value nor TD error, as in verl), and V, A after the last
  valid token are 0.

  Args:
    rewards: [B, T] token rewards (usually the sequence reward at the last valid token).
    values: [B, T] critic values V_t.
    mask: [B, T] 1 on response tokens.
    gamma: discount (TRL PPO and verl default 1.0).
    lam: GAE lambda (TRL PPO default 0.95; verl 1.0).
    whiten: whiten the advantages with `masked_whiten` (returns are never whitened).

  Returns:
    (advantages [B, T], returns [B, T]), float32, 0 where mask = 0; returns are computed from the
    un-whitened advantages.

  Normalisers: whitening as in `masked_whiten` (ddof=1, eps=1e-8).

  References:
    Schulman et al., arXiv 1506.02438, Eq. 16; verl `compute_gae_advantage_return`.

  >>> r = jnp.array([[0.0, 0.0, 1.0]]); v = jnp.array([[0.5, 0.5, 0.5]]); m = jnp.ones((1, 3))
  >>> adv, ret = gae_advantages(r, v, m, gamma=1.0, lam=1.0, whiten=False)
  >>> [float(a) for a in adv[0]], [float(g) for g in ret[0]]
  ([0.5, 0.5, 0.5], [1.0, 1.0, 1.0])
  """
  _check_same_shape(rewards=rewards, values=values, mask=mask)
  m_BxT = mask.astype(jnp.float32)
  r_BxT = jnp.where(m_BxT > 0, rewards.astype(jnp.float32), 0.0)
  v_BxT = jnp.where(m_BxT > 0, values.astype(jnp.float32), 0.0)

  def step(carry, xs):
    next_value_B, next_adv_B = carry
    r_B, v_B, m_B = xs
    adv_B = r_B + gamma * next_value_B - v_B + gamma * lam * next_adv_B
    # A masked token passes the carry through unchanged.
    next_value_B = m_B * v_B + (1.0 - m_B) * next_value_B
    next_adv_B = m_B * adv_B + (1.0 - m_B) * next_adv_B
    return (next_value_B, next_adv_B), next_adv_B

  zeros_B = jnp.zeros(r_BxT.shape[0], jnp.float32)
  _, adv_TxB = jax.lax.scan(step, (zeros_B, zeros_B), (r_BxT.T, v_BxT.T, m_BxT.T), reverse=True)
  adv_BxT = jnp.where(m_BxT > 0, adv_TxB.T, 0.0)
  returns_BxT = jnp.where(m_BxT > 0, adv_BxT + v_BxT, 0.0)
  if whiten:
    adv_BxT = masked_whiten(adv_BxT, m_BxT)
  return adv_BxT, returns_BxT


def step_advantages(step_rewards: Float[Array, "B K"], step_mask: Shaped[Array, "B K"],
                    group_size: int, *, eps: float = 1e-4,
                    cumulative: bool = False) -> Float[Array, "B K"]:
  """Step-level advantage: step rewards normalised over all steps of all G rollouts of a prompt.

    r~_{i,k} = (r_{i,k} - mean_g r) / (std_g r + eps),   A^S_{i,k} = r~_{i,k}
    (cumulative=True: A^S_{i,k} = sum_{j >= k} r~_{i,j})

  The mean and std run over every valid step of the group's G rollouts (DeepSeekMath process
  supervision; OPRL's A^S). `cumulative=True` gives DeepSeekMath's token advantage (the sum of the
  normalised rewards of the steps ending at or after it); OPRL uses the step's own normalised
  reward (cumulative=False) [OPRL's exact normalisation is unverified].

  Args:
    step_rewards: [B, K] reward of step k of rollout b (e.g. OPRL's implicit PRM reward
      beta * log pi_phi(a_k) / pi_old(a_k)).
    step_mask: [B, K] 1 on real steps.
    group_size: G; rows are grouped as in `group_advantages`.
    eps: added to the std.
    cumulative: return suffix sums over steps instead of the per-step values.

  Returns:
    [B, K] float32, 0 on masked steps; all-equal step rewards in a group give exactly 0.

  Normalisers: mean over the n valid steps of the group, std with ddof=1 (max(n - 1, 1)), eps=1e-4.

  References:
    DeepSeekMath, arXiv 2402.03300, §4.1.3; OPRL, arXiv 2509.19199, §3 (A^S).

  >>> r = jnp.array([[1.0, 3.0], [2.0, 0.0]]); m = jnp.array([[1.0, 1.0], [1.0, 0.0]])
  >>> [float(a) for a in step_advantages(r, m, 2, eps=0.0).reshape(-1)]  # mean 2, std 1
  [-1.0, 1.0, 0.0, 0.0]
  """
  _check_same_shape(step_rewards=step_rewards, step_mask=step_mask)
  b, k = step_rewards.shape
  _to_groups(jnp.zeros(b), group_size)  # validates the grouping
  m_PxGK = step_mask.astype(jnp.float32).reshape(-1, group_size * k)
  r_PxGK = step_rewards.astype(jnp.float32).reshape(-1, group_size * k)
  centred_PxGK, std_Px1 = _masked_centre_std(r_PxGK, m_PxGK, axis=1)
  adv_BxK = (centred_PxGK / (std_Px1 + eps)).reshape(b, k)
  if cumulative:
    adv_BxK = jnp.cumsum(adv_BxK[:, ::-1], axis=1)[:, ::-1]
  return jnp.where(step_mask.astype(jnp.float32) > 0, adv_BxK, 0.0)


def combine_step_advantages(episode_advantages: Float[Array, " B"],
                            step_advantages: Float[Array, "B K"],
                            token_step_ids: Int[Array, "B T"], mask: Shaped[Array, "B T"], *,
                            alpha: float = 1.0) -> Float[Array, "B T"]:
  """OPRL token advantage: episode-level plus weighted step-level advantage.

    A_{b,t} = (A^E_b + alpha * A^S_{b, k(t)}) * mask_{b,t}

  where k(t) = token_step_ids[b, t] is the step (agent action) token t belongs to; tokens with
  an id outside [0, K) (observations, padding) get no step term.

  Args:
    episode_advantages: [B] outcome advantage A^E (e.g. `group_advantages` or `rloo_advantages`).
    step_advantages: [B, K] step advantage A^S (e.g. `step_advantages`).
    token_step_ids: [B, T] int step index of each token, -1 for none.
    mask: [B, T] 1 on trained tokens.
    alpha: weight of the step term [OPRL's alpha is unverified].

  Returns:
    [B, T] float32 token advantages, 0 where mask = 0.

  References:
    OPRL, arXiv 2509.19199, §3 (A = A^E + alpha A^S).

  >>> a = combine_step_advantages(jnp.array([1.0]), jnp.array([[0.5, -2.0]]),
  ...                             jnp.array([[0, 0, -1, 1]]), jnp.ones((1, 4)), alpha=0.5)
  >>> [float(x) for x in a[0]]
  [1.25, 1.25, 1.0, 0.0]
  """
  _check_same_shape(token_step_ids=token_step_ids, mask=mask)
  if (episode_advantages.shape[0] != mask.shape[0]
      or step_advantages.shape[0] != mask.shape[0]):
    raise ValueError(f"batch sizes differ: episode_advantages {episode_advantages.shape}, "
                     f"step_advantages {step_advantages.shape}, mask {mask.shape}")
  k = step_advantages.shape[1]
  in_step_BxT = (token_step_ids >= 0) & (token_step_ids < k)
  ids_BxT = jnp.clip(token_step_ids, 0, k - 1)
  step_BxT = jnp.take_along_axis(step_advantages.astype(jnp.float32), ids_BxT, axis=1)
  step_BxT = jnp.where(in_step_BxT, step_BxT, 0.0)
  adv_BxT = episode_advantages.astype(jnp.float32)[:, None] + alpha * step_BxT
  return jnp.where(mask.astype(jnp.float32) > 0, adv_BxT, 0.0)


def process_advantages(outcome_rewards: Float[Array, " B"], step_rewards: Float[Array, "B K"],
                       token_step_ids: Int[Array, "B T"], mask: Shaped[Array, "B T"],
                       group_size: int, *, scale_rewards: str = "group",
                       eps: float = 1e-4) -> Float[Array, "B T"]:
  """Token advantages of dense (per-step) rewards: return-to-go minus the group's mean return.

    G_{b,t} = R_b + sum_{k >= k(t)} s_{b,k}      (tokens after the last step: G_{b,t} = R_b)
    A_{b,t} = (G_{b,t} - mean_g G_{g,0}) / (std_g G_{g,0} + eps)     ("none": no division)

  R_b is the outcome reward (at the last token), s_{b,k} the reward placed at the end of step k
  and k(t) the step of token t. This is PPO's advantage with gamma = lambda = 1 and the group's
  mean return as the value (GRPO's baseline), so the return a step sequence collects is exactly
  what the policy is pushed towards: the setting in which Gao et al. (arXiv 2410.15115, §3-4)
  show that summed PRM scores reward repeating steps and Clip / Delta bound the return.

  Args:
    outcome_rewards: [B] outcome reward R.
    step_rewards: [B, K] step rewards s (0 on masked steps).
    token_step_ids: [B, T] step of each token, -1 for none (`rewards.process.step_layout`).
    mask: [B, T] 1 on trained tokens.
    group_size: G; rows are grouped as in `group_advantages`.
    scale_rewards: "group" (divide by the group's std of G_0) or "none".
    eps: added to the std.

  Returns:
    [B, T] float32, 0 where mask = 0.

  >>> a = process_advantages(jnp.array([1.0, 0.0]), jnp.array([[0.5, 0.5], [0.5, 0.0]]),
  ...                        jnp.array([[0, 1, -1], [0, -1, -1]]), jnp.ones((2, 3)), 2,
  ...                        scale_rewards="none")
  >>> [[float(x) for x in row] for row in a]   # G_0 = 2 and 0.5, mean 1.25
  [[0.75, 0.25, -0.25], [-0.75, -1.25, -1.25]]
  """
  _check_same_shape(token_step_ids=token_step_ids, mask=mask)
  if scale_rewards not in ("group", "none"):
    raise ValueError(f"scale_rewards={scale_rewards!r}; process advantages take 'group' or 'none'")
  s_BxK = step_rewards.astype(jnp.float32)
  suffix_BxK = jnp.flip(jnp.cumsum(jnp.flip(s_BxK, 1), axis=1), 1)
  k = s_BxK.shape[1]
  ids_BxT = jnp.clip(token_step_ids, 0, k - 1)
  to_go_BxT = jnp.where(token_step_ids >= 0, jnp.take_along_axis(suffix_BxK, ids_BxT, axis=1), 0.0)
  returns_B = outcome_rewards.astype(jnp.float32) + s_BxK.sum(axis=1)
  g_PxG = _to_groups(returns_B, group_size)
  mean_B = jnp.repeat(g_PxG.mean(axis=1), group_size)
  adv_BxT = outcome_rewards.astype(jnp.float32)[:, None] + to_go_BxT - mean_B[:, None]
  if scale_rewards == "group":
    std_B = jnp.repeat(jnp.std(g_PxG, axis=1, ddof=1) if group_size > 1
                       else jnp.zeros(g_PxG.shape[0]), group_size)
    adv_BxT = adv_BxT / (std_B[:, None] + eps)
  return jnp.where(mask.astype(jnp.float32) > 0, adv_BxT, 0.0)


def step_token_rewards(step_rewards: Float[Array, "B K"],
                       token_step_ids: Int[Array, "B T"]) -> Float[Array, "B T"]:
  """Step rewards placed on the last token of their step (a PPO token reward), [B, T].

  >>> step_token_rewards(jnp.array([[0.5, 2.0]]), jnp.array([[0, 0, 1, -1]])).tolist()
  [[0.0, 0.5, 2.0, 0.0]]
  """
  ids = token_step_ids
  next_ids = jnp.concatenate([ids[:, 1:], jnp.full_like(ids[:, :1], -1)], axis=1)
  last_BxT = (ids >= 0) & (next_ids != ids)
  values = jnp.take_along_axis(step_rewards.astype(jnp.float32),
                               jnp.clip(ids, 0, step_rewards.shape[1] - 1), axis=1)
  return jnp.where(last_BxT, values, 0.0)


def _check_same_shape(**arrays: jax.Array) -> None:
  shapes = {name: tuple(x.shape) for name, x in arrays.items()}
  if len(set(shapes.values())) > 1:
    raise ValueError("shapes must match: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
