"""SD-Zero: on-policy self-distillation from the model's own reward-conditioned reviser.

Self-Distillation Zero, arXiv 2604.12002 (abstract only; the reconstruction below is ours).
One model is generator and reviser. The batch stages are GRPO's (`grpo.sample_groups`: the
recipe's prompts, G samples each, scored by the reward composition), then one more stage, the
teacher:

  prompts -> sample y ~ π_θ(· | x) -> score r(y) ∈ {0, 1} -> teacher
  teacher: c = feedback_prompt(x, y, r)   (`rewardjax.turns`: the revise prompt with r as text;
           the tiny model's "wrong! redo\\nBadAns:41\\n47-8=" when r = 0, the neutral
           "check&fix\\nAns:41\\n47-8=" when r = 1)
           q_t = π_θ̄(· | c, y_<t) over the whole vocabulary; θ̄ = the params at batch time
           (`teacher_sync_steps=1`), a copy refreshed every K steps (K > 1: the abstract's
           "regular teacher synchronization"), or the starting model (0, never synchronised)

and the update minimises `losses.self_distillation_loss` between q_t and the student
p_t = π_θ(· | x, y_<t) on the same sampled tokens y (the student's own sample). Where r = 0 the
reviser, told the attempt is wrong, is meant to move mass off the tokens that made it wrong
(the shipped char model barely does: README, SD-Zero results); where r = 1 it mostly agrees
with the student. `loss_type` picks the divergence ("reverse_kl", "forward_kl"). There is no
KL to a reference and no reward-weighted term: the reward enters only through the teacher's
context (a periodic teacher copy is kept in `TrainState.ref_params`).
"""

import functools

import jax
import numpy as np
from flax import nnx

from rewardjax import losses, rollouts, sharding, turns, update
from rewardjax.algorithms import base, grpo
from rewardjax.data import tokenizers
from rewardjax.models import transformer
from rewardjax.types import DistillationBatch

DEFAULTS = dict(
    loss_type="reverse_kl",          # losses.DIVERGENCES: the per-token divergence
    revise_prompt="reflection",      # turns.REVISE_PROMPTS: the reviser's (teacher's) context
    reward_threshold=0.5,            # r(y) > threshold is shown to the reviser as "correct"
    teacher_sync_steps=1,            # θ̄ <- θ every K steps (1: the batch-time params; 0: never)
)


def distillation_objective(model, batch: DistillationBatch, *, divergence: str):
  """`losses.self_distillation_loss` of the student's full-vocabulary log-probs."""
  completion_length = batch.completion_mask.shape[1]
  prompt_length = batch.tokens.shape[1] - completion_length
  student_BxTxV = update.token_distributions(model, batch.tokens, batch.attention_mask,
                                             prompt_length, completion_length)
  return losses.self_distillation_loss(student_BxTxV, batch.teacher_logprobs,
                                       batch.completion_mask, divergence=divergence)


OBJECTIVES = {name: base.Objective(functools.partial(distillation_objective, divergence=name),
                                   uses_ref=False)
              for name in losses.DIVERGENCES}


def teacher_logprobs(params, *, graphdef, tokens, attention_mask, completion_length: int):
  """The teacher's next-token log-probs [B, T, V] at the completion positions (constants)."""
  prompt_length = tokens.shape[1] - completion_length
  return jax.lax.stop_gradient(update.token_distributions(
      nnx.merge(graphdef, params), tokens, attention_mask, prompt_length, completion_length))


def teacher_rows(groups, *, setup: base.Setup, revise: str, threshold: float) -> dict:
  """Host arrays of the teacher's rows: feedback prompt of each sample | the same completion.

  Prompts are left-padded to a multiple of `rollouts.PROMPT_BUCKET` (few compiled shapes);
  completions are the sampled tokens, masked like the student's rows.
  """
  items = [it for g in groups for it in g["items"]]
  texts = [t for g in groups for t in g["texts"]]
  rewards = np.concatenate([g["rewards"] for g in groups])
  prompts = [turns.feedback_prompt(revise, it, t, float(r > threshold), setup.data.fmt)
             for it, t, r in zip(items, texts, rewards)]
  prompt_BxS, prompt_mask_BxS = tokenizers.encode_prompts(
      setup.tokenizer, prompts, bucket=rollouts.PROMPT_BUCKET,
      max_length=setup.data.max_prompt_length)
  completion_BxT = np.concatenate([g["completion_tokens"] for g in groups])
  mask_BxT = np.concatenate([g["completion_mask"] * g["finite"][:, None] for g in groups])
  return {"tokens": np.concatenate([prompt_BxS, completion_BxT], 1).astype(np.int32),
          "attention_mask": np.concatenate([prompt_mask_BxS, mask_BxT], 1).astype(np.int32)}


def distillation_batch(state, step: int, rng: jax.Array, *, setup: base.Setup, options,
                       teacher_fn):
  """The SD-Zero batch of step `step`: GRPO's sample and score stages, then the teacher."""
  shape = grpo.Shaping(setup.sampling.max_new_tokens)
  groups, metrics = grpo.sample_groups(state, step, rng, 0, setup=setup, shape=shape)
  on_mesh = grpo.place_groups(groups, step, setup=setup)
  rows = sharding.shard_batch(teacher_rows(groups, setup=setup, revise=options.revise_prompt,
                                           threshold=options.reward_threshold), setup.mesh)
  # The teacher copy θ̄ lives in `ref_params` unless it is the batch-time params.
  teacher_params = (state.params if options.teacher_sync_steps == 1
                    else state.reference_params())
  teacher = teacher_fn(teacher_params, graphdef=state.graphdef, tokens=rows["tokens"],
                       attention_mask=rows["attention_mask"])
  return DistillationBatch(tokens=on_mesh["tokens"], attention_mask=on_mesh["attention_mask"],
                           completion_mask=on_mesh["completion_mask"],
                           teacher_logprobs=teacher), metrics


def validate(options, sizes: base.RunSizes) -> None:
  """Checks the SD-Zero block against the run's sizes; one `base.ConfigError` listing every
  problem (divergence, revise prompt, teacher sync, sampling, the rows' split over the mesh)."""
  p = base.objective_problems(OBJECTIVES, options["loss_type"], "self_distillation")
  p += base.choice("algo.revise_prompt", options["revise_prompt"], turns.REVISE_PROMPTS)
  p += base.at_least("algo.teacher_sync_steps", options["teacher_sync_steps"], 0,
                     "1: every step, K: every K steps, 0: never")
  p += base.sampling_problems(sizes)
  p += base.update_problems(options, sizes, sizes.num_generations)
  base.raise_problems(p, "self_distillation")


def build(options, setup: base.Setup) -> base.Program:
  """The SD-Zero program (see `base.Program`)."""
  validate(options, base.sizes_of(setup))
  obj = base.objective(OBJECTIVES, options.loss_type, "self_distillation")
  teacher_fn = jax.jit(functools.partial(teacher_logprobs,
                                         completion_length=setup.sampling.max_new_tokens),
                       static_argnames=("graphdef",))
  heldout = list(setup.problems.get("heldout") or setup.records.get("heldout") or [])
  return base.Program(
      model_fn=lambda rngs: transformer.Transformer(setup.model, rngs=rngs),
      init_params=base.language_model_params,
      make_batch=functools.partial(distillation_batch, setup=setup, options=options,
                                   teacher_fn=teacher_fn),
      # A periodic teacher: every K updates θ̄ (`ref_params`) <- θ inside the jitted step
      # (`update.RefSync` with alpha 1, the reference sync every GRPO config can use).
      step=functools.partial(update.update, loss=obj.loss, ref_sync=update.RefSync(
          alpha=1.0, every=options.teacher_sync_steps)
          if options.teacher_sync_steps > 1 else None),
      # Attempt 1 is the plain greedy accuracy; attempt 2 shows how the reviser changed.
      evaluate=functools.partial(base.two_attempt_accuracy, setup, heldout,
                                 options.revise_prompt),
      with_ref=options.teacher_sync_steps != 1,
      rows_per_update=setup.batch_size * setup.sampling.num_generations)


ALGORITHM = base.Algorithm(name="self_distillation", defaults=DEFAULTS, objectives=OBJECTIVES,
                           record_kind="answer", build=build, validate=validate)
