"""Supervised fine-tuning: token-mean negative log-likelihood of (prompt, completion) records.

Also the warm-start stage of every embedded config: `train.run` runs this algorithm on the
warm-start half of the built-in task (plus the recipe's warm-start examples) before the main
algorithm, through the same loop.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardjax import recipes, sharding, update
from rewardjax.algorithms import base
from rewardjax.data import tasks, tokenizers
from rewardjax.models import transformer
from rewardjax.types import SequenceBatch

DEFAULTS = dict(
    loss_type="nll",
    slip_rate=0.0,   # built-in task: the demonstrator's carry-slip rate (`tasks.sft_examples`)
)


def nll_objective(model, batch: SequenceBatch, *, chunk_size: int = 1024):
  """Token-mean NLL of the `loss_mask` tokens: -sum(m log p) / max(sum m, 1)."""
  logps_BxL = update.all_token_logprobs(model, batch.tokens, batch.attention_mask,
                                        chunk_size=chunk_size)
  count = jnp.maximum(batch.loss_mask.sum(), 1)
  nll = -(logps_BxL * batch.loss_mask).sum() / count
  return nll, {"geometric_mean_token_prob": jnp.exp(-nll)}


OBJECTIVES = {"nll": base.Objective(nll_objective, records="examples", uses_ref=False)}


def sequence_arrays(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                    data: base.DataOptions) -> dict:
  """Token arrays of (prompt | completion) rows; the loss covers the completion.

  Each row's prompt is right-aligned to S, its completion left-aligned after it and
  right-padded: tokens and attention_mask [R, S+T], loss_mask [R, S+T-1] with loss_mask[j] = 1
  where token j+1 is a completion token.
  """
  prompt_tokens, prompt_mask = tokenizers.encode_prompts(
      tokenizer, list(prompts), bucket=data.bucket, max_length=data.max_prompt_length)
  completion_tokens, completion_mask = tokenizers.encode_completions(
      tokenizer, list(completions), bucket=data.bucket, max_length=data.max_completion_length)
  return {"tokens": np.concatenate([prompt_tokens, completion_tokens], axis=1),
          "attention_mask": np.concatenate([prompt_mask, completion_mask], axis=1),
          "loss_mask": np.concatenate([np.zeros_like(prompt_mask), completion_mask],
                                      axis=1)[:, 1:]}


def sft_batch(state, step: int, rng: jax.Array, *, setup: base.Setup, stream):
  del state, rng
  items = stream.prompts(step)
  arrays = sequence_arrays(setup.tokenizer, [it["prompt"] for it in items],
                           [it["completion"] for it in items], setup.data)
  return SequenceBatch(**sharding.shard_batch(arrays, setup.mesh)), {}


def make_step(options, *, chunk_size: int = 1024):
  """The pure SFT update `(state, SequenceBatch, rng) -> (state, metrics)`."""
  obj = base.objective(OBJECTIVES, options["loss_type"], "sft")
  return functools.partial(update.update, loss=functools.partial(base.bind(obj, options),
                                                                 chunk_size=chunk_size))


def validate(options, sizes: base.RunSizes) -> None:
  """Checks the SFT block against the run's sizes; one `base.ConfigError` listing every
  problem (the objective, the slip rate, the batch's split over the mesh's shards)."""
  p = base.objective_problems(OBJECTIVES, options["loss_type"], "sft")
  p += base.fraction("algo.slip_rate", options["slip_rate"])
  p += base.update_problems(options, sizes, 1)
  base.raise_problems(p, "sft")


def build(options, setup: base.Setup) -> base.Program:
  """The SFT program: built-in task demonstrations (with `slip_rate` slips) plus the recipe's
  warm-start examples, or a file's {"prompt", "completion"} records."""
  validate(options, base.sizes_of(setup))
  examples = list(setup.records.get("train") or [])
  # The built-in task's warm-start half when there is one, so the questions of the other half
  # stay new to RL started from this model.
  problems = setup.problems.get("warmstart") or setup.problems.get("train")
  if problems:
    examples = tasks.sft_examples(problems, fmt=setup.data.fmt,
                                  slip_rate=options.slip_rate, seed=setup.seed)
  examples += list(setup.recipe.warmstart_examples)
  stream = recipes.RecordStream(examples, setup.batch_size, setup.seed)
  heldout = list(setup.problems.get("heldout") or [])

  evaluate = functools.partial(base.task_accuracy, setup, heldout)

  return base.Program(
      model_fn=lambda rngs: transformer.Transformer(setup.model, rngs=rngs),
      init_params=base.language_model_params,
      make_batch=functools.partial(sft_batch, setup=setup, stream=stream),
      step=make_step(options, chunk_size=setup.chunk_size), evaluate=evaluate,
      with_ref=False, rows_per_update=setup.batch_size)


ALGORITHM = base.Algorithm(name="sft", defaults=DEFAULTS, objectives=OBJECTIVES,
                           record_kind="sft", build=build, validate=validate)
