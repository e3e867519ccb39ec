"""PPO with a learned critic: sample, reward, values, GAE, one jitted step for actor and critic.

Classic RLHF PPO (Ouyang et al., arXiv 2203.02155; Schulman et al., arXiv 1707.06347), as TRL
`PPOTrainer` and verl run it. The batch is built by named stages:

  prompts (the recipe's source) -> sample -> decode -> score (the recipe's reward composition;
  `grpo.sample_groups`) -> reference log-probs -> critic values -> token rewards (the sequence
  reward at the last completion token, minus the k1 KL when the KL is in the reward) -> GAE
  (whitened advantages, returns) (`advantages.gae_advantages`)

The critic is a second model, a `heads.ScalarModel` with a value head on every position and
its own backbone initialised from the policy's (verl initialises the critic from the actor;
TRL from the reward model), trained in the same jitted step with its own optimizer
(`base.Companion`, `TrainState.companion`) on the clipped value loss `losses.ppo_value_loss`.
The policy loss is `losses.grpo_loss` with per-token advantages; with `kl_in="loss"` the KL is
a loss term (coefficient `kl_coef`, estimator `kl_estimator`) instead of a reward term.
The G samples per prompt of the rollout stage are kept (set `rollout.num_generations=1` for
one sample per prompt): PPO needs no groups, the critic is the baseline.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from rewardjax import advantages as advantages_lib
from rewardjax import losses, update
from rewardjax.algorithms import base, grpo
from rewardjax.models import heads, transformer
from rewardjax.types import CoupledBatch, RolloutBatch

# The `algo` block of a PPO config. Names follow TRL's PPOConfig where it has the field.
DEFAULTS = dict(
    loss_type="dapo",              # policy aggregation: "dapo" = token-mean (TRL PPO masked_mean)
    epsilon_low=0.2, epsilon_high=0.2,   # TRL `cliprange`
    kl_in="reward",                # "reward": -kl_coef * k1 per token in the reward; "loss"
    kl_coef=0.05,                  # TRL `kl_coef` (KL in reward), or the loss's beta
    kl_estimator="low_var_kl",     # the loss's estimator when kl_in="loss"
    gamma=1.0, lam=0.95,           # TRL PPOConfig
    whiten_advantages=True,
    cliprange_value=0.2,           # TRL `cliprange_value`
    critic_learning_rate=1e-4,     # the critic's own optimizer (the run's `optim` otherwise)
    entropy_coeff=0.0,
    num_iterations=1, num_minibatches=1)   # TRL `num_ppo_epochs`, `num_mini_batches`

KL_PLACES = ("reward", "loss")


def critic_values(model, tokens, attention_mask, *, completion_length: int):
  """Values [B, T] of the states before each completion token: the critic's output at
  positions S-1 .. S+T-2 (TRL `value[:, context_length - 1 : -1]`)."""
  values_BxL = model(tokens, attention_mask=attention_mask)
  start = tokens.shape[1] - completion_length - 1
  return jax.lax.dynamic_slice_in_dim(values_BxL, start, completion_length, axis=1)


def critic_objective(model, batch: dict, *, cliprange_value: float, completion_length: int):
  """`losses.ppo_value_loss` of the critic's values on the rollout rows (TRL's clipped form)."""
  values_BxT = critic_values(model, batch["tokens"], batch["attention_mask"],
                             completion_length=completion_length)
  return losses.ppo_value_loss(values_BxT, batch["old_values"], batch["returns"],
                               batch["completion_mask"], clip_range_value=cliprange_value or None)


@dataclasses.dataclass(frozen=True)
class GaeOptions:
  """PPO's advantage options: k1 KL coefficient in the reward (0: KL in the loss or none),
  GAE gamma and lambda, and whether advantages are whitened (TRL PPOConfig names)."""
  kl_coef: float
  gamma: float = 1.0
  lam: float = 0.95
  whiten: bool = True


def advantages(rewards_B, row_weights_B, old_logprobs_BxT, ref_logprobs_BxT, values_BxT,
               completion_mask_BxT, steps=None, *, options: GaeOptions):
  """(advantages [B, T], returns [B, T], KL-in-reward mean) on device; jitted by the caller.

  `steps` = (step_rewards [B, K], token_step_ids [B, T]) of the process terms: each step's
  reward is a token reward on its last token (Gao et al., arXiv 2410.15115, §3: PPO with the
  process reward at each step's end and the outcome at the last token). Rows of non-finite
  reward groups have weight 0: their completion mask is already 0.
  """
  r_BxT = advantages_lib.token_rewards(rewards_B, old_logprobs_BxT, ref_logprobs_BxT,
                                       completion_mask_BxT, kl_coef=options.kl_coef)
  if steps is not None:
    step_rewards_BxK, token_step_ids_BxT = steps
    r_BxT = r_BxT + advantages_lib.step_token_rewards(step_rewards_BxK, token_step_ids_BxT) * (
        completion_mask_BxT > 0)
  adv_BxT, returns_BxT = advantages_lib.gae_advantages(
      r_BxT, values_BxT, completion_mask_BxT, gamma=options.gamma, lam=options.lam,
      whiten=options.whiten)
  m_BxT = completion_mask_BxT.astype(jnp.float32)
  kl = ((old_logprobs_BxT - ref_logprobs_BxT) * m_BxT).sum() / jnp.maximum(m_BxT.sum(), 1.0)
  return adv_BxT * row_weights_B[:, None], returns_BxT, kl


def critic_loss(options, *, completion_length: int):
  """The critic's objective with its options bound: `loss(model, critic_rows)`."""
  return functools.partial(critic_objective, cliprange_value=options["cliprange_value"],
                           completion_length=completion_length)


def make_step(options, *, max_completion_length: int, chunk_size: int = 1024):
  """The pure PPO update `(state, CoupledBatch, rng) -> (state, metrics)`: the clipped policy
  loss on `batch.policy` and the clipped value loss on `batch.companion`, one jitted step."""
  base.raise_problems(base.choice("algo.kl_in", options["kl_in"], KL_PLACES), "ppo")
  base.objective(grpo.OBJECTIVES, options["loss_type"], "ppo")
  policy_loss = functools.partial(
      grpo.policy_objective, loss_type=options["loss_type"],
      beta=options["kl_coef"] if options["kl_in"] == "loss" else 0.0,
      kl_estimator=options["kl_estimator"], epsilon_low=options["epsilon_low"],
      epsilon_high=options["epsilon_high"], delta=0.0, importance_sampling_level="token",
      entropy_coeff=options["entropy_coeff"], log_ratio_clip=0.0, advantage_filter=0.0,
      tis_cap=0.0, max_completion_length=max_completion_length, chunk_size=chunk_size)
  return functools.partial(
      update.update, loss=policy_loss, companion_name="critic",
      companion_loss=critic_loss(options, completion_length=max_completion_length))


def ppo_batch(state, step: int, rng: jax.Array, *, setup: base.Setup, options, score_fn,
              value_fn, advantage_fn):
  """The PPO batch of step `step`: `CoupledBatch(RolloutBatch, critic rows)` on the mesh."""
  shape = grpo.Shaping(setup.sampling.max_new_tokens, 0, 0.0)
  groups, metrics = grpo.sample_groups(state, step, rng, 0, setup=setup, shape=shape)
  on_mesh = grpo.place_groups(groups, step, setup=setup)
  old = on_mesh["sampler_logprobs"]
  _, ref = grpo.reference_logprobs(score_fn, state, on_mesh["tokens"],
                                   on_mesh["attention_mask"], trainer_old=False)
  ref = old if ref is None else ref
  c = state.companion
  values = value_fn(c.graphdef, c.params, on_mesh["tokens"], on_mesh["attention_mask"])
  adv, returns, kl = advantage_fn(on_mesh["rewards"], on_mesh["row_weights"], old, ref, values,
                                  on_mesh["completion_mask"],
                                  (on_mesh["step_rewards"], on_mesh["token_step_ids"]))
  policy = RolloutBatch(
      tokens=on_mesh["tokens"], attention_mask=on_mesh["attention_mask"],
      completion_mask=on_mesh["completion_mask"], old_logprobs=old, ref_logprobs=ref,
      advantages=adv, sampler_logprobs=old)
  critic = dict(tokens=on_mesh["tokens"], attention_mask=on_mesh["attention_mask"],
                completion_mask=on_mesh["completion_mask"], old_values=values, returns=returns)
  metrics["kl_in_reward"] = kl   # a device scalar: fetched with the step's metrics
  return CoupledBatch(policy=policy, companion=critic), metrics


def validate(options, sizes: base.RunSizes) -> None:
  """Checks the PPO block against the run's sizes; one `base.ConfigError` listing every
  problem (the policy objective, where the KL goes and its estimator, GAE's gamma and lambda,
  update sizes and their split over minibatches and mesh shards). PPO needs no groups (the
  critic is the baseline): one sample per prompt is fine.
  """
  p = base.objective_problems(grpo.OBJECTIVES, options["loss_type"], "ppo")
  p += base.choice("algo.kl_in", options["kl_in"], KL_PLACES)
  p += base.choice("algo.kl_estimator", options["kl_estimator"], losses.KL_ESTIMATORS)
  p += base.fraction("algo.gamma", options["gamma"])
  p += base.fraction("algo.lam", options["lam"])
  p += base.sampling_problems(sizes)
  p += base.update_problems(options, sizes, sizes.num_generations)
  base.raise_problems(p, "ppo")


def build(options, setup: base.Setup) -> base.Program:
  """The PPO program (see `base.Program`); the critic is its `Companion`."""
  validate(options, base.sizes_of(setup))
  completion_length = setup.sampling.max_new_tokens
  step = make_step(options, max_completion_length=completion_length,
                   chunk_size=setup.chunk_size)
  score_fn = jax.jit(functools.partial(
      update.score_rollouts, completion_length=completion_length, chunk_size=setup.chunk_size),
      static_argnames=("graphdef",))
  value_fn = jax.jit(lambda graphdef, params, tokens, mask: jax.lax.stop_gradient(
      critic_values(nnx.merge(graphdef, params), tokens, mask,
                    completion_length=completion_length)), static_argnums=0)
  advantage_fn = jax.jit(functools.partial(advantages, options=GaeOptions(
      kl_coef=options.kl_coef if options.kl_in == "reward" else 0.0, gamma=options.gamma,
      lam=options.lam, whiten=options.whiten_advantages)))
  heldout = list(setup.problems.get("heldout") or setup.records.get("heldout") or [])

  def critic_model(rngs):
    return heads.ScalarModel(setup.model, pool="none", rngs=rngs)

  def critic_params(lm_params, rng):
    if lm_params is None:  # a policy from scratch: a random critic, initialised with the state
      return None
    # The policy's backbone (a copy: the two models train apart) and a fresh value head.
    head = nnx.to_pure_dict(nnx.split(critic_model(nnx.Rngs(rng)), nnx.Param)[1])["head"]
    return {"backbone": jax.tree.map(jnp.copy, lm_params), "head": head}

  critic = base.Companion(
      name="critic", model_fn=critic_model, init_params=critic_params,
      loss=critic_loss(options, completion_length=completion_length),
      learning_rate=options.critic_learning_rate)
  return base.Program(
      model_fn=lambda rngs: transformer.Transformer(setup.model, rngs=rngs),
      init_params=base.language_model_params,
      make_batch=functools.partial(ppo_batch, setup=setup, options=options, score_fn=score_fn,
                                   value_fn=value_fn, advantage_fn=advantage_fn),
      step=step, evaluate=functools.partial(base.task_accuracy, setup, heldout),
      with_ref=options.kl_coef > 0 or setup.recipe.rewards.uses_reference,
      rows_per_update=setup.batch_size * setup.sampling.num_generations
      // options.num_minibatches,
      num_minibatches=options.num_minibatches, num_iterations=options.num_iterations,
      followup=setup.recipe.source.followup, companion=critic)


ALGORITHM = base.Algorithm(name="ppo", defaults=DEFAULTS, objectives=grpo.OBJECTIVES,
                           record_kind="answer", build=build, validate=validate)
