"""Policy gradient, GRPO family: sample G completions per prompt, reward, advantages, update.

The batch is built by named stages, each a short function:

  prompts (the recipe's source) -> `sample` -> `decode` -> `score` (the recipe's reward
  composition, overlong shaping) -> `reference_logprobs` -> `advantages` (on device)

`dynamic_sampling` (DAPO) wraps the first three: it keeps drawing prompts until P groups have
rewards that differ. The reference is scored before the advantages because REINFORCE++ puts
the KL in the reward. With `turns=2` (`sample_turns`, `rewardjax.turns`) every rollout gets a
second attempt at a revise prompt showing the first; both attempts' rows train, each turn with
its own group baseline, per-turn rewards and per-row KL weights (SCoRe's stages).
The objective is `losses.grpo_loss` with TRL's `loss_type`; variants (GRPO, Dr. GRPO, DAPO,
GSPO, CISPO, RLOO, REINFORCE++, StableReinforce) are config diffs (`configs/grpo.py`).
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardjax import advantages as advantages_lib
from rewardjax import losses, rollouts, sharding, turns, update
from rewardjax.algorithms import base
from rewardjax.data import tokenizers
from rewardjax.models import transformer
from rewardjax.rewards import composition, process, shaping
from rewardjax.types import CoupledBatch, RolloutBatch

# The `algo` block of a GRPO-family config. Names follow TRL's GRPOConfig where it has the field.
DEFAULTS = dict(
    loss_type="grpo",            # GRPO_LOSS_TYPES: the aggregation (and CISPO's surrogate)
    beta=0.04,                   # KL-in-loss coefficient (0: no KL term)
    kl_estimator="low_var_kl",   # losses.KL_ESTIMATORS name (k3 = "low_var_kl")
    epsilon_low=0.2, epsilon_high=0.2,
    delta=0.0,                   # TRL two-sided clip (INTELLECT-2); 0 = off
    importance_sampling_level="token",   # "sequence" = GSPO
    entropy_coeff=0.0,
    advantage="grpo",            # ADVANTAGES: grpo | dr_grpo | rloo | reinforce_pp | process | oprl
    step_advantage_weight=1.0,   # oprl: alpha in A = A^E + alpha A^S
    scale_rewards="group",       # grpo advantages: "group" | "batch" | "none" (TRL)
    reward_kl_coef=0.0,          # reinforce_pp: k1 KL in the token reward (OpenRLHF init_kl_coef)
    log_ratio_clip=0.0,          # StableReinforce pre-clip c (|log rho| <= c); 0 = off
    advantage_filter=0.0,        # StableReinforce: zero |A| > value; 0 = off
    tis_cap=0.0,                 # truncated importance sampling cap (verl); 0 = off
    num_iterations=1, num_minibatches=1,
    dynamic_sampling=False, max_resample_rounds=4,   # DAPO
    overlong_buffer=0, overlong_penalty=1.0,         # DAPO soft overlong punishment
    # Reference sync (TRL sync_ref_model; TR-DPO): every ref_model_sync_steps updates,
    # ref <- alpha * params + (1 - alpha) * ref; alpha cosine-annealed to
    # ref_model_mixup_alpha_end over the run when that is > 0 (Co-rewarding-II's EMA teacher).
    sync_ref_model=False, ref_model_mixup_alpha=0.6, ref_model_sync_steps=512,
    ref_model_mixup_alpha_end=0.0,
    # Two attempts per rollout (rewardjax.turns; SCoRe, arXiv 2409.12917 §5): turns=2 samples
    # a revision of each first attempt at a `revise_prompt` (turns.REVISE_PROMPTS).
    turns=1, revise_prompt="reflection",
    turn_bonus=0.0,              # SCoRe alpha: Stage II bonus alpha (r2 - r1) on attempt 2
    stage_one_steps=0,           # SCoRe Stage I (rewards (0, r2)) for the first steps, then II
    first_turn_kl=0.0)           # SCoRe beta2: added to beta on attempt 1 in Stage I

ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "process", "oprl")
# Token advantages from a process term's step rewards (`rewards.process`).
STEP_ADVANTAGES = ("process", "oprl")
# Each reward minus its group's mean (RLOO: the others' mean; `scale_rewards` only rescales):
# with one sample per prompt every advantage is exactly 0. REINFORCE++ whitens over the batch.
GROUP_BASELINES = ("grpo", "dr_grpo", "rloo")


def _sampler_ratio(logps_BxT, sampler_logps_BxT, mask_BxT) -> dict:
  """Trainer / sampler probability ratio on the completion tokens (mean, max |ratio - 1|).

  On a step's first update the params are the sampler's, so any deviation from 1 is numerical
  or engine mismatch (bf16 sampling, another engine): what TIS corrects.
  """
  m = mask_BxT.astype(jnp.float32)
  ratio = jnp.exp(jax.lax.stop_gradient(logps_BxT) - sampler_logps_BxT)
  return {"sampler/ratio_mean": (ratio * m).sum() / jnp.maximum(m.sum(), 1.0),
          "sampler/ratio_max_deviation": jnp.max(jnp.abs(ratio - 1.0) * m)}


# Options whose 0 means "off", passed to `losses.grpo_loss` as None.
_ZERO_IS_OFF = ("delta", "log_ratio_clip", "advantage_filter")


def policy_objective(model, batch: RolloutBatch, *, tis_cap: float, max_completion_length: int,
                     chunk_size: int = 1024, group_size: int = 1, **loss_options):
  """`losses.grpo_loss` of the model's completion log-probs.

  `loss_options` are `grpo_loss`'s keyword options (loss_type, beta, kl_estimator, epsilons,
  delta, importance_sampling_level, entropy_coeff, log_ratio_clip, advantage_filter); 0-valued
  delta / log_ratio_clip / advantage_filter are off. With `tis_cap` > 0 (truncated importance
  sampling, verl), each token's surrogate is weighted by min(pi_old / pi_sampler, cap),
  constant; the surrogate is linear in A, so the weight multiplies the advantages. Adds the
  sampler ratio metrics (`sampler/*`). `group_size` > 1: each group of that many rows shares its
  prompt, computed once (`update.completion_hidden`; same log-probs and gradients).
  """
  completion_length = batch.completion_mask.shape[1]
  prompt_length = batch.tokens.shape[1] - completion_length
  logps_BxT, entropy_BxT = update.token_logprobs(
      model, batch.tokens, batch.attention_mask, prompt_length, completion_length,
      chunk_size=chunk_size, group_size=group_size)
  advantages = batch.advantages
  extra = _sampler_ratio(logps_BxT, batch.sampler_logprobs, batch.completion_mask)
  if tis_cap:
    weight_BxT = jnp.minimum(jnp.exp(batch.old_logprobs - batch.sampler_logprobs), tis_cap)
    advantages = (advantages[:, None] if advantages.ndim == 1 else advantages) * weight_BxT
    extra["sampler/tis_weight_mean"] = jnp.mean(weight_BxT)
  options = {k: (v or None) if k in _ZERO_IS_OFF else v for k, v in loss_options.items()}
  loss, metrics = losses.grpo_loss(
      logps_BxT, batch.old_logprobs, batch.ref_logprobs, advantages, batch.completion_mask,
      max_completion_length=max_completion_length, entropy=entropy_BxT,
      kl_weights=batch.kl_weights, **options)
  return loss, {**metrics, **extra}


_HPARAMS = ("loss_type", "beta", "kl_estimator", "epsilon_low", "epsilon_high", "delta",
            "importance_sampling_level", "entropy_coeff", "log_ratio_clip",
            "advantage_filter", "tis_cap")
OBJECTIVES = {name: base.Objective(policy_objective, hparams=_HPARAMS)
              for name in losses.GRPO_LOSS_TYPES}


def _ref_sync_problems(options) -> list[str]:
  """The problems of the reference sync's fields when `sync_ref_model` is on."""
  if not options["sync_ref_model"]:
    return []
  problems = base.at_least("algo.ref_model_sync_steps", options["ref_model_sync_steps"], 1,
                           "sync_ref_model: updates between syncs")
  if not 0.0 < options["ref_model_mixup_alpha"] <= 1.0:
    problems.append(base.problem("algo.ref_model_mixup_alpha", options["ref_model_mixup_alpha"],
                                 "sync_ref_model needs 0 < ref_model_mixup_alpha <= 1, e.g. 0.6"))
  return problems


def ref_sync(options, total_updates: int) -> update.RefSync | None:
  """The reference sync of the algo block (`update.RefSync`), or None when it is off."""
  if not options["sync_ref_model"]:
    return None
  base.raise_problems(_ref_sync_problems(options), "grpo")
  return update.RefSync(alpha=float(options["ref_model_mixup_alpha"]),
                        every=int(options["ref_model_sync_steps"]),
                        alpha_end=float(options["ref_model_mixup_alpha_end"]),
                        total=int(total_updates))


def make_step(options, *, max_completion_length: int, chunk_size: int = 1024,
              companion: base.Companion | None = None, total_updates: int = 0,
              prompt_group: int = 1) -> Callable:
  """The pure GRPO-family update `(state, RolloutBatch, rng) -> (state, metrics)`; with a
  recipe's `companion` (Cooper's reward model), `(state, CoupledBatch, rng)` updating both.
  With `sync_ref_model`, the step also moves the reference (`ref_sync`; `total_updates` is the
  length of alpha's annealing). `prompt_group` > 1: every group of that many consecutive rows
  shares its prompt, whose forward and backward then run once per group (`prompt_groups`).

  The one place the policy step is wired (trainer, benchmarks and tests call it).
  """
  obj = base.objective(OBJECTIVES, options["loss_type"], "grpo")
  loss = functools.partial(base.bind(obj, options), max_completion_length=max_completion_length,
                           chunk_size=chunk_size, group_size=prompt_group)
  sync = {} if not options["sync_ref_model"] else {"ref_sync": ref_sync(options, total_updates)}
  if companion is None:
    return functools.partial(update.update, loss=loss, **sync)
  return functools.partial(update.update, loss=loss, companion_loss=companion.loss,
                           companion_name=companion.name, **sync)


# ---- batch stages --------------------------------------------------------------------------
def sample(state, items: Sequence[dict], rng: jax.Array, *, setup: base.Setup,
           num_samples: int | None = None) -> dict:
  """G completions per prompt item from the current params; host arrays of every row.

  Returns {"tokens" [B, S+T], "prompt_mask" [B, S], "completion_mask" [B, T],
  "completion_tokens" [B, T], "lengths" [B], "model_logprobs" [B, T]}, B = len(items) * G
  (G = `num_samples`, by default the rollout's num_generations).
  """
  s, d = setup.sampling, setup.data
  prompt_tokens, prompt_mask = tokenizers.encode_prompts(
      setup.tokenizer, [it["prompt"] for it in items], bucket=d.bucket,
      max_length=d.max_prompt_length)
  out = rollouts.generate(
      (state.graphdef, state.params), *sharding.feed((prompt_tokens, prompt_mask), setup.mesh),
      rng, max_new_tokens=s.max_new_tokens, num_samples=num_samples or s.num_generations,
      decoding=rollouts.Decoding(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                 eos_token_id=setup.tokenizer.eos_token_id,
                                 pad_token_id=tokenizers.pad_token_id(setup.tokenizer)))
  # Every process gets every row (decoding and rewards are host work, the same everywhere).
  arrays = sharding.gather({"tokens": out.tokens, "prompt_mask": out.prompt_mask,
                            "completion_mask": out.completion_mask,
                            "completion_tokens": out.completion_tokens, "lengths": out.lengths,
                            "model_logprobs": out.model_logprobs})
  separator = _separator_id(setup.tokenizer)
  if separator is not None:  # where each step of a multi-step completion ends
    arrays.update(process.step_layout(np.asarray(arrays["completion_tokens"]),
                                      np.asarray(arrays["completion_mask"]), separator))
  return arrays


@functools.lru_cache(maxsize=8)
def _separator_id(tokenizer) -> int | None:
  try:
    return process.separator_id(tokenizer)
  except ValueError:  # steps are then unavailable, and a process term says so
    return None


def decode(tokenizer, arrays: dict) -> list[str]:
  """The completions' texts, [B]."""
  return tokenizers.decode_completions(tokenizer, arrays["completion_tokens"])


@dataclasses.dataclass(frozen=True)
class Shaping:
  """Reward shaping applied after the recipe's composition (DAPO's soft overlong penalty)."""
  max_length: int
  overlong_buffer: int = 0
  overlong_penalty: float = 1.0


def score(rewards: composition.Composition, scored: composition.Scored,
          shape: Shaping) -> tuple[np.ndarray, np.ndarray, dict]:
  """Outcome rewards [B] (composition + overlong shaping), step rewards [B, K] of the process
  terms (zeros without any) and per-term metrics."""
  values, step_values, metrics = rewards.score_steps(scored)
  values = values + shaping.overlong_penalty(
      scored.arrays["lengths"], max_length=shape.max_length, buffer=shape.overlong_buffer,
      penalty=shape.overlong_penalty)
  if step_values is None:
    step_values = np.zeros(scored.arrays["completion_mask"].shape, np.float32)
  return values.astype(np.float32), step_values, metrics


def sample_groups(state, step: int, rng: jax.Array, round_index: int, *, setup: base.Setup,
                  shape: Shaping) -> tuple[list[dict], dict]:
  """One round of prompts -> sample -> decode -> score, split into groups of G rows."""
  items = setup.recipe.source.prompts(step, round_index)
  arrays = sample(state, items, jax.random.fold_in(rng, round_index), setup=setup)
  texts = decode(setup.tokenizer, arrays)
  group_size = setup.sampling.num_generations
  row_items = [it for it in items for _ in range(group_size)]
  rewards, step_rewards, metrics = score(
      setup.recipe.rewards, composition.Scored(row_items, texts, arrays, state), shape)
  returns = rewards + step_rewards.sum(axis=1)
  finite = shaping.finite_groups(returns, group_size)
  metrics.update({
      "reward": float(np.nanmean(np.where(finite, returns, np.nan))) if finite.any()
      else float("nan"),
      "nonfinite_reward_groups": float((~finite).sum() / group_size),
      "completion_length": float(arrays["lengths"].mean()),
      "clipped_ratio": float((arrays["completion_mask"][:, -1] > 0).mean())})
  groups = []
  for p in range(len(items)):
    rows = slice(p * group_size, (p + 1) * group_size)
    groups.append(dict({k: v[rows] for k, v in arrays.items()},
                       rewards=np.where(finite[rows], rewards[rows], 0.0),
                       step_rewards=np.where(finite[rows, None], step_rewards[rows], 0.0),
                       finite=finite[rows], items=row_items[rows], texts=texts[rows]))
  return groups, metrics


def turn_schedule(options) -> turns.TurnSchedule:
  """The per-turn rewards and KL weights of a two-attempt batch from the algo block."""
  return turns.TurnSchedule(stage_one_steps=options.stage_one_steps, alpha=options.turn_bonus,
                            beta=options.beta, first_turn_kl=options.first_turn_kl)


def sample_turns(state, step: int, rng: jax.Array, round_index: int, *, setup: base.Setup,
                 shape: Shaping, schedule: turns.TurnSchedule,
                 revise: str) -> tuple[list[dict], dict]:
  """`sample_groups` with a second attempt per rollout (arXiv 2409.12917 §3, `rewardjax.turns`).

  Each of the P * G first attempts y1 gets one second attempt y2 ~ pi(. | revise(x1, y1)),
  scored by the same composition. Returns 2P groups of G rows: prompt p's first attempts, then
  its second attempts, so group advantages give each turn its own baseline. Rewards are the
  schedule's per-turn (R1, R2) and every row carries its turn's KL weight ("kl_weights").
  A group pair is non-finite when either turn's rewards are.
  """
  groups, metrics = sample_groups(state, step, rng, round_index, setup=setup, shape=shape)
  group_size = setup.sampling.num_generations
  items1 = [it for g in groups for it in g["items"]]
  items2 = turns.second_items(items1, [t for g in groups for t in g["texts"]], revise=revise,
                              fmt=setup.data.fmt)
  arrays = sample(state, items2, jax.random.fold_in(rng, 1_000_033 + round_index), setup=setup,
                  num_samples=1)
  texts2 = decode(setup.tokenizer, arrays)
  r2, steps2, _ = score(setup.recipe.rewards, composition.Scored(items2, texts2, arrays, state),
                        shape)
  finite = (np.concatenate([g["finite"] for g in groups])
            & shaping.finite_groups(r2, group_size))
  r1 = np.concatenate([g["rewards"] for g in groups])
  r2 = np.where(finite, r2, 0.0)
  reward1, reward2 = schedule.rewards(r1, r2, step)
  w1, w2 = schedule.kl_weights(step)
  metrics.update(turns.turn_metrics(r1[finite], r2[finite]) if finite.any() else {},
                 score_stage=float(schedule.stage(step) == "II") + 1.0,
                 turn2_completion_length=float(arrays["lengths"].mean()))
  out = []
  for p, g in enumerate(groups):
    rows = slice(p * group_size, (p + 1) * group_size)
    ones = np.ones(group_size, np.float32)
    out.append(dict(g, rewards=np.where(finite[rows], reward1[rows], 0.0), finite=finite[rows],
                    kl_weights=w1 * ones))
    out.append(dict({k: v[rows] for k, v in arrays.items()}, kl_weights=w2 * ones,
                    rewards=np.where(finite[rows], reward2[rows], 0.0), finite=finite[rows],
                    step_rewards=np.where(finite[rows, None], steps2[rows], 0.0),
                    items=items2[rows], texts=texts2[rows]))
  return out, metrics


def dynamic_sampling(draw: Callable[[int], tuple[list[dict], dict]], num_prompts: int,
                     max_rounds: int) -> tuple[list[dict], dict]:
  """DAPO dynamic sampling around `draw(round) -> (groups, metrics)`: keep groups whose rewards
  differ until `num_prompts` are kept or `max_rounds` extra rounds are spent, then fill with
  the others. Metrics are round 0's, plus "kept_groups".
  """
  kept, spare, metrics = [], [], {}
  for round_index in range(max_rounds + 1):
    groups, round_metrics = draw(round_index)
    metrics = metrics or round_metrics
    for g in groups:
      informative = g["finite"].all() and (np.ptp(g["rewards"]) > 0 or len(g["rewards"]) == 1)
      (kept if informative else spare).append(g)
    if len(kept) >= num_prompts:
      break
  return (kept + spare)[:num_prompts], {**metrics, "kept_groups": float(min(len(kept),
                                                                             num_prompts))}


def assemble(groups: Sequence[dict], pad_id: int, max_new_tokens: int) -> dict:
  """Host arrays of the batch: groups concatenated, prompts left-padded to the longest."""
  prompt_length = max(g["prompt_mask"].shape[1] for g in groups)

  def left_pad(x, width, value=0):
    return np.pad(x, ((0, 0), (prompt_length - width, 0)), constant_values=value)

  tokens = np.concatenate([left_pad(g["tokens"], g["tokens"].shape[1] - max_new_tokens, pad_id)
                           for g in groups])
  prompt_mask = np.concatenate([left_pad(g["prompt_mask"], g["prompt_mask"].shape[1])
                                for g in groups])
  completion_mask = np.concatenate([g["completion_mask"] * g["finite"][:, None]
                                    for g in groups]).astype(np.int32)
  out = dict(
      tokens=tokens, completion_mask=completion_mask,
      attention_mask=np.concatenate([prompt_mask, completion_mask], axis=1).astype(np.int32),
      sampler_logprobs=np.concatenate([g["model_logprobs"] for g in groups]).astype(np.float32),
      rewards=np.concatenate([g["rewards"] for g in groups]).astype(np.float32),
      step_rewards=np.concatenate([g.get("step_rewards", np.zeros(g["completion_mask"].shape))
                                   for g in groups]).astype(np.float32),
      token_step_ids=np.concatenate([
          g.get("token_step_ids", np.full(g["completion_mask"].shape, -1)) for g in groups
      ]).astype(np.int32),
      step_mask=np.concatenate([g.get("step_mask", np.zeros(g["completion_mask"].shape))
                                for g in groups]).astype(np.float32),
      # An item's optional "weight" w >= 0 (a recipe's per-prompt loss weight) scales its rows'
      # advantages: the clipped surrogate is positively homogeneous in A, so this weights the
      # policy term exactly (the KL term keeps weight 1). Non-finite groups get weight 0.
      row_weights=np.array([float(it.get("weight", 1.0)) * f for g in groups
                            for it, f in zip(g["items"], g["finite"])], np.float32))
  if any("kl_weights" in g for g in groups):  # per-row KL multipliers (two-attempt batches)
    out["kl_weights"] = np.concatenate([g.get("kl_weights", np.ones(len(g["rewards"])))
                                        for g in groups]).astype(np.float32)
  return out


def reference_logprobs(score_fn: Callable, state, tokens, attention_mask, *,
                       trainer_old: bool) -> tuple[jax.Array | None, jax.Array | None]:
  """(trainer old log-probs or None, reference log-probs or None), [B, T] on the mesh.

  The sampler's log-probs serve as the old policy's unless `trainer_old` (TIS needs the
  trainer's own); without a reference there is no KL and nothing is scored.
  """
  if not trainer_old and state.ref_params is None:
    return None, None
  return score_fn(state.params if trainer_old else None, state.reference_params(),
                  graphdef=state.graphdef, tokens=tokens, attention_mask=attention_mask)


@dataclasses.dataclass(frozen=True)
class AdvantageOptions:
  """How `advantages` turns rewards into advantages (from the algo block and the group size).

  estimator: a name of ADVANTAGES; group_size: G; scale_rewards: "group" | "batch" | "none"
  (TRL); reward_kl_coef: REINFORCE++'s k1 KL in the token reward; step_advantage_weight: OPRL's
  alpha in A = A^E + alpha A^S.
  """
  estimator: str
  group_size: int
  scale_rewards: str = "group"
  reward_kl_coef: float = 0.0
  step_advantage_weight: float = 1.0


def advantages(rewards_B, row_weights_B, old_logprobs_BxT, ref_logprobs_BxT,
               completion_mask_BxT, steps=None, *, options: AdvantageOptions):
  """Advantages on device: [B] from group estimators, [B, T] for REINFORCE++ and the step
  estimators; times weights.

  `steps` = (step_rewards [B, K], step_mask [B, K], token_step_ids [B, T]) of the process terms
  (None: no steps):
  "process" places their return-to-go on tokens (`advantages.process_advantages`), "oprl" adds
  the group-normalised step reward to the outcome advantage (`step_advantages`,
  `combine_step_advantages`; OPRL, arXiv 2509.19199, §3). Jitted by the caller; rows of
  non-finite groups have weight 0.
  """
  estimator, group_size = options.estimator, options.group_size
  scale_rewards = options.scale_rewards
  if steps is None and estimator in STEP_ADVANTAGES:
    raise ValueError(f"advantage={estimator!r} needs the rollouts' steps")
  step_rewards_BxK, step_mask_BxK, token_step_ids_BxT = steps or (None, None, None)
  if estimator == "process":
    a_BxT = advantages_lib.process_advantages(
        rewards_B, step_rewards_BxK, token_step_ids_BxT, completion_mask_BxT, group_size,
        scale_rewards=scale_rewards)
    return a_BxT * row_weights_B[:, None]
  if estimator == "oprl":
    episode_B = advantages_lib.group_advantages(rewards_B, group_size,
                                                scale_rewards=scale_rewards)
    a_BxT = advantages_lib.combine_step_advantages(
        episode_B, advantages_lib.step_advantages(step_rewards_BxK, step_mask_BxK, group_size),
        token_step_ids_BxT, completion_mask_BxT, alpha=options.step_advantage_weight)
    return a_BxT * row_weights_B[:, None]
  # The other estimators see one number per rollout: the outcome plus its step rewards.
  if step_rewards_BxK is not None:
    rewards_B = rewards_B + step_rewards_BxK.sum(axis=1)
  if estimator == "reinforce_pp":
    a_BxT = advantages_lib.reinforce_pp_advantages(
        rewards_B, old_logprobs_BxT, ref_logprobs_BxT, completion_mask_BxT,
        kl_coef=options.reward_kl_coef)
    return a_BxT * row_weights_B[:, None]
  kwargs = {"scale_rewards": scale_rewards} if estimator == "grpo" else {}
  return advantages_lib.get_advantage_fn(estimator)(rewards_B, group_size, **kwargs) * row_weights_B


def prompt_groups(options, num_generations: int, batch_size: int, *, minibatch: bool = True,
                  shards: int = 1) -> int:
  """How many consecutive rows share one prompt, so that the training and reference passes
  compute it once per group instead of once per row.

  G = num_generations rows sample one prompt (the reference pass sees whole batches:
  `minibatch=False`); an update's minibatch of R rows keeps whole sub-groups of gcd(G, R) rows.
  Over `shards` batch shards (`sharding.batch_size_multiple`), the R / g prompt rows must split
  evenly too, else the prompt pass would be replicated on every shard: g = gcd(G, R / shards),
  i.e. each device shares the prompt among its own rows. Two-attempt batches (turns=2) give each
  second attempt its own prompt: 1. GRPO with 8 prompts x 8 samples of a 16-token prompt and 32
  new tokens does 23% less arithmetic (`benchmarks/grpo_step.py`).
  """
  if options.turns != 1:
    return 1
  rows = batch_size * num_generations // (1 if not minibatch else options.num_minibatches)
  return math.gcd(num_generations, rows // shards) if rows % shards == 0 else 1


def place_groups(groups: Sequence[dict], step: int, *, setup: base.Setup,
                 prompt_group: int = 1) -> dict:
  """The scored groups as the batch's arrays on the mesh (`assemble`); the recipe's source
  observes every scored rollout first ({"item", "text", "reward"} per row). With
  `prompt_group` > 1, checks that each group of that many rows shares its prompt."""
  host = assemble(groups, tokenizers.pad_token_id(setup.tokenizer),
                  setup.sampling.max_new_tokens)
  update.check_shared_prompts(host["tokens"], host["attention_mask"],
                              host["tokens"].shape[1] - setup.sampling.max_new_tokens,
                              prompt_group)
  setup.recipe.source.observe([dict(item=it, text=t, reward=float(r)) for g in groups
                               for it, t, r in zip(g["items"], g["texts"], g["rewards"])], step)
  return sharding.shard_batch({k: host[k] for k in (
      "tokens", "attention_mask", "completion_mask", "sampler_logprobs", "rewards",
      "row_weights", "step_rewards", "step_mask", "token_step_ids", "kl_weights")
      if k in host}, setup.mesh)


def rollout_batch(state, step: int, rng: jax.Array, *, setup: base.Setup, options,
                  score_fn: Callable, advantage_fn: Callable, prompt_group: int = 1):
  """The RL batch of step `step`: the stages above, then device placement. `prompt_group`: the
  rows per shared prompt that `score_fn` assumes (`prompt_groups`), checked on the host rows.

  Returns (RolloutBatch on the mesh, host metrics); the recipe's source observes every scored
  rollout ({"item", "text", "reward"} per row).
  """
  shape = Shaping(setup.sampling.max_new_tokens, options.overlong_buffer,
                  options.overlong_penalty)
  draw = functools.partial(sample_groups, state, step, rng, setup=setup, shape=shape)
  if options.turns == 2:
    draw = functools.partial(sample_turns, state, step, rng, setup=setup, shape=shape,
                             schedule=turn_schedule(options), revise=options.revise_prompt)
  if options.dynamic_sampling:
    groups, metrics = dynamic_sampling(draw, setup.batch_size, options.max_resample_rounds)
  else:
    groups, metrics = draw(0)
  on_mesh = place_groups(groups, step, setup=setup, prompt_group=prompt_group)
  trainer_old, ref = reference_logprobs(score_fn, state, on_mesh["tokens"],
                                        on_mesh["attention_mask"],
                                        trainer_old=bool(options.tis_cap))
  old = on_mesh["sampler_logprobs"] if trainer_old is None else trainer_old
  ref = old if ref is None else ref
  batch = RolloutBatch(
      tokens=on_mesh["tokens"], attention_mask=on_mesh["attention_mask"],
      completion_mask=on_mesh["completion_mask"], old_logprobs=old, ref_logprobs=ref,
      advantages=advantage_fn(on_mesh["rewards"], on_mesh["row_weights"], old, ref,
                              on_mesh["completion_mask"], (on_mesh["step_rewards"],
                                                           on_mesh["step_mask"],
                                                           on_mesh["token_step_ids"])),
      sampler_logprobs=on_mesh["sampler_logprobs"], kl_weights=on_mesh.get("kl_weights"))
  companion = setup.recipe.companion
  if companion is not None:  # a second model trained on this step's rollouts (Cooper, OPRL)
    batch = CoupledBatch(policy=batch, companion=sharding.shard_batch(
        companion.make_batch(groups, step), setup.mesh))
  return batch, metrics


def validate(options, sizes: base.RunSizes) -> None:
  """Checks the GRPO-family block against the run's sizes; one `base.ConfigError` listing every
  problem (names of the objective, KL estimator, advantage, reward scaling and revise prompt;
  turns; update sizes and their split over minibatches and mesh shards; a group baseline with
  one sample per prompt; the reference sync). What depends on the recipe (a companion model, a
  source that refuses resampling) is checked by `build`.
  """
  p = base.objective_problems(OBJECTIVES, options["loss_type"], "grpo")
  p += base.choice("algo.kl_estimator", options["kl_estimator"], losses.KL_ESTIMATORS)
  p += base.choice("algo.importance_sampling_level", options["importance_sampling_level"],
                   losses.IMPORTANCE_SAMPLING_LEVELS)
  p += base.choice("algo.advantage", options["advantage"], ADVANTAGES)
  p += base.choice("algo.scale_rewards", options["scale_rewards"],
                   ("group", "none") if options["advantage"] == "process"
                   else advantages_lib.SCALE_REWARDS)
  turns_ok = options["turns"] in (1, 2)
  if not turns_ok:
    p.append(base.problem("algo.turns", options["turns"],
                          "valid: 1 (one attempt), 2 (a revision of each attempt)"))
  elif options["turns"] == 2:
    p += base.choice("algo.revise_prompt", options["revise_prompt"], turns.REVISE_PROMPTS)
    if options["dynamic_sampling"]:
      p.append(base.problem("algo.dynamic_sampling", True,
                            "turns=2 pairs each prompt's groups of both attempts, which dynamic "
                            "sampling would split; set --config.algo.dynamic_sampling=False"))
  if options["first_turn_kl"] and options["beta"] <= 0:
    p.append(base.problem("algo.first_turn_kl", options["first_turn_kl"],
                          "adds to the KL term, which is off (beta <= 0); set "
                          "--config.algo.beta > 0 (e.g. 0.01) or first_turn_kl=0.0"))
  if sizes.num_generations == 1 and options["advantage"] in GROUP_BASELINES:
    p.append(base.problem(
        "rollout.num_generations", 1,
        f"advantage={options['advantage']!r} subtracts each prompt's group mean, so with one "
        "sample per prompt every advantage is 0 and the policy never moves; use "
        "--config.rollout.num_generations=2 or more, or --config.algo.advantage='reinforce_pp'"
        " (returns whitened over the batch, no group baseline)"))
  p += base.at_least("algo.max_resample_rounds", options["max_resample_rounds"], 0)
  p += base.at_least("algo.overlong_buffer", options["overlong_buffer"], 0, "0 = off")
  p += base.at_least("algo.stage_one_steps", options["stage_one_steps"], 0)
  p += _ref_sync_problems(options)
  p += base.sampling_problems(sizes)
  p += base.update_problems(options, sizes,
                            sizes.num_generations * (options["turns"] if turns_ok else 1))
  base.raise_problems(p, "grpo")


def build(options, setup: base.Setup) -> base.Program:
  """The GRPO-family program (see `base.Program`)."""
  validate(options, base.sizes_of(setup))
  companion = setup.recipe.companion
  policy_model_fn = lambda rngs: transformer.Transformer(setup.model, rngs=rngs)  # noqa: E731
  if companion is not None and companion.model_fn is None:  # a copy of the policy (OPRL's PRM)
    companion = dataclasses.replace(companion, model_fn=policy_model_fn)
  if options.turns == 2 and companion is not None:
    raise ValueError("grpo: turns=2 pairs each prompt's groups of both attempts; it runs "
                     "without a companion model")
  if companion is not None and options.num_minibatches != 1:
    raise ValueError(f"grpo: recipe {type(setup.recipe.source).__name__} trains a companion "
                     f"model, whose rows do not split into num_minibatches="
                     f"{options.num_minibatches}; use 1")
  if options.dynamic_sampling and not getattr(setup.recipe.source, "resamples", True):
    raise ValueError(f"grpo: dynamic_sampling draws extra prompts and drops groups, which the "
                     f"source {type(setup.recipe.source).__name__} refuses (its prompts are "
                     f"aligned across rows, e.g. Co-Reward's question / rewrite pairs); set "
                     f"--config.algo.dynamic_sampling=False")
  shards = base.batch_shards(setup)
  prompt_group = prompt_groups(options, setup.sampling.num_generations, setup.batch_size,
                               shards=shards)
  batch_group = prompt_groups(options, setup.sampling.num_generations, setup.batch_size,
                              minibatch=False, shards=shards)   # the reference pass's batches
  step = make_step(options, max_completion_length=setup.sampling.max_new_tokens,
                   chunk_size=setup.chunk_size, companion=companion,
                   total_updates=setup.train_steps * options.num_iterations
                   * options.num_minibatches, prompt_group=prompt_group)
  score_fn = jax.jit(functools.partial(
      update.score_rollouts, completion_length=setup.sampling.max_new_tokens,
      chunk_size=setup.chunk_size, group_size=batch_group), static_argnames=("graphdef",))
  advantage_fn = jax.jit(functools.partial(advantages, options=AdvantageOptions(
      estimator=options.advantage, group_size=setup.sampling.num_generations,
      scale_rewards=options.scale_rewards, reward_kl_coef=options.reward_kl_coef,
      step_advantage_weight=options.step_advantage_weight)))
  heldout = list(setup.problems.get("heldout") or setup.records.get("heldout") or [])

  evaluate = functools.partial(base.task_accuracy, setup, heldout)
  if options.turns == 2:  # first- and second-attempt accuracy, Δ(i→c), Δ(c→i)
    evaluate = functools.partial(base.two_attempt_accuracy, setup, heldout,
                                 options.revise_prompt)

  return base.Program(
      model_fn=policy_model_fn, init_params=base.language_model_params,
      make_batch=functools.partial(rollout_batch, setup=setup, options=options,
                                   score_fn=score_fn, advantage_fn=advantage_fn,
                                   prompt_group=batch_group),
      step=step, evaluate=evaluate,
      # A reference for the KL in the loss, or in REINFORCE++'s reward
      # (or for a reward term that reads it, or a synchronised reference: an EMA teacher).
      with_ref=options.beta > 0 or (options.advantage == "reinforce_pp"
                                    and options.reward_kl_coef > 0)
      or setup.recipe.rewards.uses_reference or options.sync_ref_model,
      rows_per_update=setup.batch_size * setup.sampling.num_generations * options.turns
      // options.num_minibatches,
      num_minibatches=options.num_minibatches, num_iterations=options.num_iterations,
      followup=setup.recipe.source.followup, companion=companion)


ALGORITHM = base.Algorithm(name="grpo", defaults=DEFAULTS, objectives=OBJECTIVES,
                           record_kind="answer", build=build, validate=validate)
