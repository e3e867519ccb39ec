"""Reward-model training: a language model with a scalar head, trained on preference data.

Stages: the objective's records (pairs, ranked lists, ...; the built-in task makes each kind,
`reward_model_objectives.py`) -> token rows (`SequenceBatch`, e.g. chosen rows then rejected
rows) with the per-record fields the objective needs in `extra` -> the update. The model is the
warm-started (or pretrained) language model plus a fresh head on the last real token; the
held-out evaluation is pairwise accuracy on the built-in task's pairs. The head has no bias, so
the run's `hf/` export is a `*ForSequenceClassification` directory transformers loads
(`models.hf_reward`), and `rewards.reward_model=<workdir>` scores RL rollouts with it. A
records kind may bring its own model (`Records.model_fn`, e.g. VPL's latent-conditioned reward,
`algorithms/vpl.py`): its backbone is the same language model, and a model with no
`*ForSequenceClassification` form is not exported (`Records.no_export` says why, in the log).
"""

import functools

import jax
import numpy as np
from absl import logging
from flax import nnx

from rewardjax import recipes, sharding, update
from rewardjax.algorithms import base
from rewardjax.algorithms.reward_model_objectives import DEFAULTS, OBJECTIVES, RECORDS
from rewardjax.data import tasks, tokenizers
from rewardjax.models import hf_reward
from rewardjax.types import SequenceBatch


def make_step(options):
  """The pure reward-model update `(state, SequenceBatch, rng) -> (state, metrics)`."""
  obj = base.objective(OBJECTIVES, options["loss_type"], "reward_model")
  return functools.partial(update.update, loss=base.bind(obj, options))


def reward_model_batch(state, step: int, rng: jax.Array, *, setup: base.Setup, stream,
                       obj: base.Objective, options):
  """The `SequenceBatch` of step `step` (rows laid out by the objective's records builder)."""
  del state
  items = stream.prompts(step)
  arrays, extra = RECORDS[obj.records].arrays(items, setup=setup)
  if "step" in obj.needs:  # a schedule inside the loss (VPL's KL annealing) reads the step here
    extra = {**extra, "step": np.full(arrays["tokens"].shape[0], step, np.int32)}
  arrays, extra = base.place(obj, arrays, extra, items, setup=setup, options=options,
                             rng=jax.random.fold_in(rng, step))
  base.check_fields(obj, extra, options.loss_type)
  return SequenceBatch(extra=extra, **arrays), {}


def build(options, setup: base.Setup) -> base.Program:
  """The reward-model program (see `base.Program`)."""
  obj = base.objective(OBJECTIVES, options.loss_type, "reward_model")
  records = RECORDS[obj.records]
  if setup.problems.get("train"):
    train = records.builtin(setup.problems["train"], fmt=setup.data.fmt, seed=setup.seed,
                            options=options)
    heldout = [] if records.evaluate else tasks.preference_pairs(
        setup.problems["heldout"], fmt=setup.data.fmt, seed=setup.seed + 1)
  else:
    train, heldout = setup.records["train"], setup.records["heldout"]
  stream = recipes.RecordStream(train, setup.batch_size, setup.seed)
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
      step=make_step(options), evaluate=evaluate, with_ref=False,
      rows_per_update=records.rows(setup.batch_size, options), export=export,
      export_hf=not records.no_export)


ALGORITHM = base.Algorithm(name="reward_model", defaults=DEFAULTS, objectives=OBJECTIVES,
                           record_kind="preference", build=build)
