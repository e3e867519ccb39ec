"""Reward-model training: a language model with a scalar head, trained on preference data.

Stages: the objective's records (pairs, ranked lists, ...; the built-in task makes each kind,
`reward_model_records.py`) -> token rows (`SequenceBatch`, e.g. chosen rows then rejected
rows) with the per-record fields the objective needs in `extra` -> the update. The model is the
warm-started (or pretrained) language model plus a fresh head on the last real token; the
held-out evaluation is pairwise accuracy on the built-in task's pairs. The head has no bias, so
the run's `hf/` export is a `*ForSequenceClassification` directory transformers loads
(`models.hf_reward`), and `rewards.reward_model=<workdir>` scores RL rollouts with it. A
records kind may bring its own model (`Records.model_fn`, e.g. VPL's latent-conditioned reward,
`algorithms/vpl.py`): its backbone is the same language model, and a model with no
`*ForSequenceClassification` form is not exported (`Records.no_export` says why, in the log).
"""

import dataclasses
import functools

import jax
import numpy as np
from absl import logging
from flax import nnx

from rewardjax import recipes, sharding, update
from rewardjax.algorithms import base
from rewardjax.algorithms.reward_model_objectives import DEFAULTS, OBJECTIVES
from rewardjax.algorithms.reward_model_records import RECORDS
from rewardjax.data import tasks, tokenizers
from rewardjax.evaluation import goal_states, reward_eval, scorers
from rewardjax.models import hf_reward
from rewardjax.types import SequenceBatch


@dataclasses.dataclass(frozen=True)
class StagedStream:
  """Records of `first` for steps [0, steps), then of `then` (its step count restarting at 0):
  a pre-training stage before the labelled data (POLAR, arXiv 2507.05197 §3.3-3.4)."""
  first: recipes.RecordStream
  steps: int
  then: recipes.RecordStream

  def prompts(self, step: int) -> list[dict]:
    return self.first.prompts(step) if step < self.steps else self.then.prompts(step - self.steps)


def make_step(options):
  """The pure reward-model update `(state, SequenceBatch, rng) -> (state, metrics)`."""
  obj = base.objective(OBJECTIVES, options["loss_type"], "reward_model")
  return functools.partial(update.update, loss=base.bind(obj, options))


def reward_model_batch(state, step: int, rng: jax.Array, *, setup: base.Setup, stream,
                       obj: base.Objective, options):
  """The `SequenceBatch` of step `step` (rows laid out by the objective's records builder)."""
  del state
  items = stream.prompts(step)
  arrays, extra = RECORDS[options.records or obj.records].arrays(items, setup=setup)
  if "step" in obj.needs:  # a schedule inside the loss (VPL's KL annealing) reads the step here
    extra = {**extra, "step": np.full(arrays["tokens"].shape[0], step, np.int32)}
  arrays, extra = base.place(obj, arrays, extra, items, setup=setup, options=options,
                             rng=jax.random.fold_in(rng, step))
  base.check_fields(obj, extra, options.loss_type)
  return SequenceBatch(extra=extra, **arrays), {}


# Fields that size the built-in records of some kinds only: kind -> (field, minimum, meaning).
_KIND_SIZES = {
    "ranked": ("num_responses", 2, "K responses ranked per prompt"),
    "packed": ("num_responses", 2, "K responses packed per row"),
    "user_pairs": ("context_size", 1, "C comparisons per user context"),
    "user_target_pairs": ("context_size", 1, "C comparisons per user context"),
}


def validate(options, sizes: base.RunSizes) -> None:
  """Checks the reward-model block against the run's sizes; one `base.ConfigError` listing
  every problem (the objective, the records kind and its pre-training data, the built-in
  records' sizes and probabilities, the rows per update split over the mesh's shards)."""
  p = base.objective_problems(OBJECTIVES, options["loss_type"], "reward_model")
  own = OBJECTIVES[options["loss_type"]].records if options["loss_type"] in OBJECTIVES else ""
  kind = options["records"] or own
  if options["records"] and kind not in RECORDS:
    p.append(base.problem("algo.records", kind,
                          f"records={kind!r} is not a records kind; valid: {sorted(RECORDS)} "
                          f"('' = the objective's own{f', {own!r}' if own else ''})"))
  for name in ("train_questions", "pretrain_steps"):
    p += base.at_least(f"algo.{name}", options[name], 0, "0 = off")
  if options["pretrain_steps"] and kind in RECORDS and RECORDS[kind].pretrain is None:
    p.append(base.problem(
        "algo.pretrain_steps", options["pretrain_steps"],
        f"records {kind!r} have no pre-training data; kinds that do: "
        f"{sorted(k for k, r in RECORDS.items() if r.pretrain)}; or set it to 0"))
  elif options["pretrain_steps"] and not sizes.builtin_data:
    p.append(base.problem("algo.pretrain_steps", options["pretrain_steps"],
                          "pretrain_steps needs the built-in task (its unlabelled pre-training "
                          "records); set it to 0 for a records file"))
  p += base.at_least("algo.pairs_per_question", options["pairs_per_question"], 1)
  size_problems = []
  if kind in _KIND_SIZES:
    name, low, meaning = _KIND_SIZES[kind]
    size_problems = base.at_least(f"algo.{name}", options[name], low, meaning)
  p += size_problems
  if options["loss_type"] == "goal_conditioned":
    p += base.at_least("algo.goal_samples", options["goal_samples"], 1)
  for name in ("label_noise", "ensemble_error", "tie_fraction", "wrong_tie_fraction",
               "style_fraction"):
    p += base.fraction(f"algo.{name}", options[name])
  p += base.fraction("algo.contrastive_dropout", options["contrastive_dropout"], open_top=True)
  if kind in RECORDS and not size_problems:  # rows per record, e.g. 2 (a pair) or K (ranked)
    p += base.update_problems(options, sizes, RECORDS[kind].rows(1, options))
  base.raise_problems(p, "reward_model")


def build(options, setup: base.Setup) -> base.Program:
  """The reward-model program (see `base.Program`)."""
  validate(options, base.sizes_of(setup))
  obj = base.objective(OBJECTIVES, options.loss_type, "reward_model")
  kind = options.records or obj.records
  records = RECORDS[kind]
  pretrain = []
  if setup.problems.get("train"):
    problems = setup.problems["train"]
    labelled = problems[:options.train_questions] if options.train_questions else problems
    train = records.builtin(labelled, fmt=setup.data.fmt, seed=setup.seed, options=options)
    if options.pretrain_steps:  # unlabelled: every training question
      pretrain = records.pretrain(problems, seed=setup.seed)
    heldout = [] if records.evaluate else tasks.preference_pairs(
        setup.problems["heldout"], fmt=setup.data.fmt, seed=setup.seed + 1)
  else:
    train, heldout = setup.records["train"], setup.records["heldout"]
  stream = recipes.RecordStream(train, setup.batch_size, setup.seed)
  if pretrain:
    stream = StagedStream(recipes.RecordStream(pretrain, setup.batch_size, setup.seed + 1),
                          options.pretrain_steps, stream)
  score = jax.jit(lambda graphdef, params, t, a: nnx.merge(graphdef, params)(
      t, attention_mask=a), static_argnums=0)

  def evaluate(state, rng):
    del rng
    if not heldout:
      return {}
    arrays, _ = records.heldout_arrays(heldout, setup=setup)
    tokens, attention_mask = arrays["tokens"], arrays["attention_mask"]
    scores = sharding.gather(score(state.graphdef, state.params,
                                   *sharding.feed((tokens, attention_mask))))
    chosen, rejected = scores[:len(heldout)], scores[len(heldout):]
    return {"pair_accuracy": float(np.mean(chosen > rejected)),
            "reward_margin": float(np.mean(chosen - rejected))}

  if records.evaluate is not None:  # e.g. a PRM: step accuracy on held-out step records
    evaluate = functools.partial(records.evaluate, setup, setup.problems.get("heldout") or [],
                                 options=options)
  # The RewardBench-style benchmark and best-of-N (config `reward_eval`), on the head's scores
  # in this objective's row layout.
  # Kinds whose model is not a scalar head on prompt | response (a PRM, VPL's latent-conditioned
  # reward) are scored by their own `evaluate` only.
  scalar = kind != "steps" and not records.no_export
  reward_evaluation = reward_eval.program_evaluation(
      setup, lambda state: scorers.reward_model(state.graphdef, state.params, setup,
                                                records=kind),
      setup.problems.get("heldout") or [] if scalar else [], heldout)

  # The goal-state probe (arXiv 2407.13887 §4.2) of the backbone's hidden states, on plain
  # prompt | response rows.
  probe = bool(scalar and heldout and setup.reward_eval and setup.reward_eval.questions
               and not setup.reward_eval.scorer and kind not in ("polar", "packed"))

  def evaluate_all(state, rng):
    goal = goal_states.probe(state.graphdef, state.params, setup, heldout) if probe else {}
    return {**evaluate(state, rng), **reward_evaluation(state, rng), **goal}

  def init_params(lm_params, rng):
    # The backbone is the (warm-started or pretrained) language model; the rest is fresh.
    fresh = nnx.to_pure_dict(nnx.split(model_fn(nnx.Rngs(rng)), nnx.Param)[1])
    return {**fresh, "backbone": lm_params}

  def model_fn(rngs):
    return records.model_fn(setup.model, options, rngs=rngs)

  def export(model, directory):
    hf_reward.save_reward_model(model, directory,
                                pad_token_id=tokenizers.pad_token_id(setup.tokenizer))

  if records.no_export:
    logging.warning("reward_model: loss_type=%s has no Hugging Face export: %s", options.loss_type,
                 records.no_export)
  return base.Program(
      model_fn=model_fn, init_params=init_params,
      make_batch=functools.partial(reward_model_batch, setup=setup, stream=stream, obj=obj,
                                   options=options),
      step=make_step(options), evaluate=evaluate_all, with_ref=False,
      rows_per_update=records.rows(setup.batch_size, options), export=export,
      export_hf=not records.no_export)


ALGORITHM = base.Algorithm(name="reward_model", defaults=DEFAULTS, objectives=OBJECTIVES,
                           record_kind="preference", build=build, validate=validate)
