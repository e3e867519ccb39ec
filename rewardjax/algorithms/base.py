"""The interface every training algorithm exposes, and the one generic update step.

An `Algorithm` is a value (big_vision chooses a model or an evaluator by name the same way):
its config block's defaults, its table of objectives, and `build(options, setup)` which returns
a `Program`: how to make the model and its params, how a batch is built, the pure update step,
and the held-out evaluation. `train.run` looks the algorithm up once by name, builds its
program, and never asks which algorithm it runs again.

The update step itself is `rewardjax.update.update`, shared by every algorithm.

An `Objective` is one entry of an algorithm's table, chosen by `loss_type`: a pure adapter
`loss(model, batch, **hparams) -> (loss, metrics)` that runs the model forward (the only code
under `value_and_grad`), hands arrays to a `rewardjax.losses` function, and names the batch
fields it needs and the data that produce them.
"""

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections

from rewardjax import sharding


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """How records become token arrays (the config's `data` block, the fields batches read)."""
  fmt: str = "short"               # answer format of the built-in task ("short" | "boxed")
  bucket: int = 16                 # pad lengths to a multiple of this (fewer compilations)
  max_prompt_length: int = 32
  max_completion_length: int = 16


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """How completions are sampled (the config's `rollout` block)."""
  num_generations: int = 8         # G, samples per prompt
  max_new_tokens: int = 8
  temperature: float = 1.0
  top_p: float = 1.0
  top_k: int = 0


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything an algorithm is built from, resolved by the trainer from the config.

  `problems` holds the built-in task's question records ("train", "heldout"), from which an
  algorithm derives its own records (pairs, ranked lists ...); `records` holds records read
  from a file in the algorithm's `record_kind` (empty for the built-in task). `source` is the
  recipe's prompt source for algorithms that sample (None: the algorithm's own record stream).
  """
  tokenizer: Any
  mesh: Any
  model: Any                       # transformer.ModelConfig
  data: DataOptions
  sampling: SamplingOptions
  problems: Mapping[str, list]
  records: Mapping[str, list]
  recipe: Any                      # recipes.Recipe
  batch_size: int                  # prompts (RL), pairs (DPO, RM) or examples (SFT) per step
  eval_batch_size: int
  seed: int
  chunk_size: int = 1024           # vocab rows per chunk of the log-prob kernel
  train_steps: int = 0             # steps of the run (schedules inside a step, e.g. ref sync)
  reward_eval: Any = None          # evaluation.reward_eval.RewardEvalOptions, or None (off)


@dataclasses.dataclass(frozen=True)
class Objective:
  """One objective of an algorithm's table.

  loss: `loss(model, batch, **hparams) -> (loss, metrics)`; pure and jittable.
  hparams: the names of the algorithm block's fields bound into `loss` (functools.partial).
  needs: batch.extra field -> the data or stage that produces it (for the error message).
  records: which records the built-in task makes for it (algorithm-specific, e.g. "pairs").
  uses_ref: whether a frozen reference model is read.
  prepare: optional host stage `prepare(arrays, extra, items, *, setup, options, rng) ->
    (arrays, extra)` that adds the rows or fields this objective needs before the batch goes
    to the mesh (e.g. KTO's mismatched KL rows).
  rows_per_record: rows of the batch per record after `prepare` (2 for a pair).
  """
  loss: Callable
  hparams: tuple[str, ...] = ()
  needs: Mapping[str, str] = dataclasses.field(default_factory=dict)
  records: str = ""
  uses_ref: bool = True
  prepare: Callable | None = None
  rows_per_record: int = 2


@dataclasses.dataclass(frozen=True)
class Companion:
  """A second model trained in the same jitted step as the policy (`TrainState.companion`).

  PPO's critic and Cooper's reward model are companions: the batch stages compute its batch
  (`CoupledBatch.companion`), the step differentiates `loss` w.r.t. its params and applies its
  own optimizer (the run's `optim` block with `learning_rate`).

  name: metrics prefix ("critic", "reward_model").
  model_fn: `model_fn(rngs)` builds its NNX module; None in a recipe's companion means the
    policy's architecture (the algorithm fills it in; OPRL's implicit PRM).
  init_params: `init_params(lm_params, rng)` -> its pure params (e.g. the policy's backbone with
    a fresh value head, or a reward model loaded from a directory); `lm_params` is None for a
    policy trained from scratch, and a None result means a random initialisation.
  loss: `loss(model, companion_batch) -> (loss, metrics)`; pure and jittable.
  learning_rate: its optimizer's peak learning rate.
  make_batch: `make_batch(groups, step) -> dict` of host arrays (its rows) from an RL step's
    scored rollout groups, for a companion a recipe brings (Cooper's reward model); None when
    the algorithm builds the companion's batch itself (PPO's critic).
  export: `export(model, directory)` writes it as a Hugging Face directory at the end of the
    run (`<workdir>/hf_<name>`), or None.
  """
  name: str
  model_fn: Callable | None
  init_params: Callable
  loss: Callable
  learning_rate: float
  make_batch: Callable | None = None
  export: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Rounds:
  """Training in rounds (`rewardjax.rounds`): before step r * steps_per_round the loop calls
  `begin(state, r, rng) -> (state, host metrics)`, which builds round r's data from the
  current model and may replace the reference, the params or the optimizer state (logged as
  "round/<metric>"). A run resumed mid-round finds the round's data in the recipe source's
  checkpointed state, so `begin` runs only at round boundaries.
  """
  steps_per_round: int
  begin: Callable


def batch_shards(setup: Setup) -> int:
  """How many ways the mesh splits a batch's rows (1 without a mesh): a shared prompt's rows
  must split as evenly, or every shard would compute all of them."""
  return 1 if setup.mesh is None else sharding.batch_size_multiple(setup.mesh)


def no_followup(step: int) -> str:
  del step
  return ""


@dataclasses.dataclass(frozen=True)
class Program:
  """An algorithm bound to its options and the run's setup: what the loop executes.

  model_fn: `model_fn(rngs)` builds the NNX module (an LM, or an LM with a scalar head).
  init_params: `init_params(lm_params, rng)` turns a language model's pure params (warm start
    or Hugging Face checkpoint) into this model's params.
  make_batch: `make_batch(state, step, rng) -> (batch, host_metrics)`; the batch is on the mesh.
  step: the pure update `(state, batch, rng) -> (state, metrics)`; the loop jits it once.
  evaluate: `evaluate(state, rng) -> dict` of held-out metrics (floats).
  with_ref: the state carries a frozen copy of the initial params.
  rows_per_update: rows of one update's batch (checked against the mesh).
  num_minibatches, num_iterations: updates per batch = their product (PPO-style epochs).
  export_hf: whether the params are written as a Hugging Face directory at the end: by
    `export(model, directory)` (e.g. a reward model as `*ForSequenceClassification`), or as a
    causal LM (`models.save_pretrained`) when `export` is None.
  followup: `followup(step) -> name`, asked after each batch of step `step` is trained: the
    name of one more batch to build and train in the same step ("" = none), e.g. SPARK's
    "judge" period after its task period. Its metrics are logged as "<name>/<metric>".
  companion: a second model trained in the same step (`Companion`), or None; then `step`
    takes `CoupledBatch`es and updates `state.companion` too.
  rounds: `Rounds` when the program trains in rounds (iterated self-rewarding), else None.
  """
  model_fn: Callable
  init_params: Callable
  make_batch: Callable
  step: Callable
  evaluate: Callable
  with_ref: bool
  rows_per_update: int
  num_minibatches: int = 1
  num_iterations: int = 1
  export_hf: bool = True
  export: Callable | None = None
  followup: Callable[[int], str] = no_followup
  companion: Companion | None = None
  rounds: Rounds | None = None


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """A training algorithm: a value with one small interface (see the module docstring).

  name: the config's `algorithm` string.
  defaults: its config block (`config.algo`), one meaning per field.
  objectives: loss_type -> Objective.
  record_kind: the `data.loaders.KINDS` kind of file records it trains on.
  build: `build(options: ConfigDict, setup: Setup) -> Program`.
  """
  name: str
  defaults: Mapping[str, Any]
  objectives: Mapping[str, Objective]
  record_kind: str
  build: Callable


def objective(table: Mapping[str, Objective], loss_type: str, algorithm: str) -> Objective:
  """`table[loss_type]`, or a ValueError that lists the valid names for this algorithm."""
  if loss_type not in table:
    raise ValueError(f"{algorithm}: unknown loss_type (variant) {loss_type!r}; valid for "
                     f"{algorithm}: {sorted(table)}")
  return table[loss_type]


def bind(obj: Objective, options: ml_collections.ConfigDict | Mapping) -> Callable:
  """`obj.loss` with its hyper-parameters read from the algorithm block `options`."""
  return functools.partial(obj.loss, **{name: options[name] for name in obj.hparams})


def check_fields(obj: Objective, extra: Mapping[str, Any], loss_type: str) -> None:
  """Raises if a batch lacks a field `obj` needs, naming the field and what produces it."""
  for name, source in obj.needs.items():
    if name not in extra:
      raise ValueError(f"loss_type={loss_type!r} needs the batch field {name!r}, which this "
                       f"data does not provide; it comes from {source}.")


def place(obj: Objective, arrays: dict, extra: dict, items, *, setup: Setup, options,
          rng) -> tuple[dict, dict]:
  """The record batch on the mesh: the objective's `prepare` stage (if any) on the host, then
  rows and `extra` fields sharded over the data axes."""
  if obj.prepare is not None:  # objective-specific host stage (extra rows or fields)
    arrays, extra = obj.prepare(arrays, extra, items, setup=setup, options=options, rng=rng)
  return sharding.shard_batch((arrays, extra), setup.mesh)


def task_accuracy(setup: Setup, problems: list, state, rng) -> dict:
  """Greedy held-out accuracy of `state.params` on `problems` ({} if there are none)."""
  if not problems:
    return {}
  from rewardjax.evaluation import accuracy  # noqa: PLC0415 (pulls in the sampler)

  d = setup.data
  return accuracy.task_accuracy(
      state.graphdef, state.params, setup.tokenizer, problems, rng, fmt=d.fmt,
      sizes=accuracy.EvalSizes(max_new_tokens=setup.sampling.max_new_tokens,
                               batch_size=setup.eval_batch_size, bucket=d.bucket,
                               max_prompt_length=d.max_prompt_length))


def two_attempt_accuracy(setup: Setup, problems: list, revise: str, state, rng) -> dict:
  """Greedy first- and second-attempt accuracy of `state.params` on `problems`, Δ(i→c) and
  Δ(c→i) (`evaluation.self_correction`); {} if there are none."""
  if not problems:
    return {}
  from rewardjax.evaluation import accuracy, self_correction  # noqa: PLC0415 (the sampler)

  d = setup.data
  return self_correction.two_attempt_accuracy(
      state.graphdef, state.params, setup.tokenizer, problems, rng, fmt=d.fmt, revise=revise,
      sizes=accuracy.EvalSizes(max_new_tokens=setup.sampling.max_new_tokens,
                               batch_size=setup.eval_batch_size, bucket=d.bucket,
                               max_prompt_length=d.max_prompt_length))


def language_model_params(lm_params, rng):
  """`init_params` of algorithms whose model is the language model itself."""
  del rng
  return lm_params
