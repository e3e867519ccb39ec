"""The interface every training algorithm exposes, and the one generic update step.

An `Algorithm` is a value (big_vision chooses a model or an evaluator by name the same way):
its config block's defaults, its table of objectives, and `build(options, setup)` which returns
a `Program`: how to make the model and its params, how a batch is built, the pure update step,
and the held-out evaluation. `train.run` looks the algorithm up once by name, builds its
program, and never asks which algorithm it runs again. Before any data is loaded,
`validate(options, sizes)` checks the algorithm's config block against the run's `RunSizes`
(`rewardjax.validation` calls it in its one pass over the config; `build` calls it too) and
raises one `ConfigError` listing every invalid field as the `--config.<path>=<value>` flag
that sets it, with a valid value.

The update step itself is `rewardjax.update.update`, shared by every algorithm.

An `Objective` is one entry of an algorithm's table, chosen by `loss_type`: a pure adapter
`loss(model, batch, **hparams) -> (loss, metrics)` that runs the model forward (the only code
under `value_and_grad`), hands arrays to a `rewardjax.losses` function, and names the batch
fields it needs and the data that produce them.
"""

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
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
class RunSizes:
  """The run's sizes an algorithm's `validate` checks its block against, known from the config
  alone (before data, models or compilation; `sizes_of(setup)` gives them from a `Setup`).

  batch_size: prompts (RL), pairs (DPO, RM) or examples (SFT) per step (`train.batch_size`).
  num_generations, max_new_tokens, temperature: the `rollout` block (G samples per prompt).
  train_steps: steps of the run (`train.steps`).
  batch_shards: how many ways the mesh splits a batch's rows (`sharding.batch_size_multiple`;
    1 without a mesh).
  builtin_data: the built-in task (False: records read from a file, `data.source`).
  """
  batch_size: int = 1
  num_generations: int = 1
  max_new_tokens: int = 1
  temperature: float = 1.0
  train_steps: int = 0
  batch_shards: int = 1
  builtin_data: bool = True


class ConfigError(ValueError):
  """Invalid config fields, one line per problem (`problems`): each names its field as the
  `--config.<path>=<value>` flag that sets it, what is wrong, and a valid value."""

  def __init__(self, problems: Sequence[str], what: str = "config"):
    self.problems = tuple(problems)
    super().__init__(f"{what}: {len(self.problems)} invalid config field(s); fix them on the "
                     "command line:\n  " + "\n  ".join(self.problems))


def problem(path: str, value: Any, message: str) -> str:
  """One line of a `ConfigError`: the field as the flag that sets it, then `message`.

  >>> problem("algo.turns", 3, "valid: 1, 2")
  '--config.algo.turns=3: valid: 1, 2'
  """
  return f"--config.{path}={value!r}: {message}"


def raise_problems(problems: Sequence[str], what: str) -> None:
  """Raises a `ConfigError` listing `problems` unless there are none."""
  if problems:
    raise ConfigError(problems, what)


def choice(path: str, value: Any, valid: Iterable) -> list[str]:
  """[] if `value` is one of `valid`, else the problem line naming the valid values."""
  valid = list(valid)
  return [] if value in valid else [problem(path, value, f"valid: {valid}")]


def at_least(path: str, value: Any, low: int | float, meaning: str = "") -> list[str]:
  """[] if `value` >= `low`, else the problem line (`meaning`: what the value counts)."""
  if value >= low:
    return []
  return [problem(path, value, f"must be >= {low}{f' ({meaning})' if meaning else ''}")]


def fraction(path: str, value: int | float, *, open_top: bool = False) -> list[str]:
  """[] if `value` is in [0, 1] ([0, 1) with `open_top`), else the problem line."""
  if 0.0 <= value < 1.0 or (value == 1.0 and not open_top):
    return []
  return [problem(path, value, f"must be in [0, 1{')' if open_top else ']'}")]


def update_problems(options, sizes: RunSizes, rows_per_record: int) -> list[str]:
  """The problems of a step's update sizes: `num_iterations` and `num_minibatches` >= 1 (when
  the block has them), the step's rows (`batch_size * rows_per_record`) split into the
  minibatches, and each update's rows split over the mesh's batch shards
  (`sharding.check_batch` at run time). A batch size that fixes the split is named.
  """
  problems = []
  minibatches = options.get("num_minibatches", 1)
  for name in ("num_iterations", "num_minibatches"):
    if name in options:
      problems += at_least(f"algo.{name}", options[name], 1)
  if minibatches < 1:
    return problems
  rows = sizes.batch_size * rows_per_record
  # The smallest batch size whose rows split into the minibatches and over the shards.
  unit = minibatches * sizes.batch_shards // math.gcd(rows_per_record,
                                                     minibatches * sizes.batch_shards)
  fixed = max(unit, -(-sizes.batch_size // unit) * unit)
  if rows % minibatches:
    divisor = max(d for d in range(1, minibatches + 1) if rows % d == 0)
    problems.append(problem(
        "algo.num_minibatches", minibatches,
        f"the step's {rows} rows (train.batch_size={sizes.batch_size} x {rows_per_record}) do "
        f"not split into {minibatches} equal minibatches; use a divisor of {rows}, e.g. "
        f"{divisor}, or --config.train.batch_size={fixed}"))
  elif (rows // minibatches) % sizes.batch_shards:
    problems.append(problem(
        "train.batch_size", sizes.batch_size,
        f"rows per update {rows // minibatches} (batch_size x {rows_per_record} / "
        f"num_minibatches={minibatches}) do not split over the mesh's {sizes.batch_shards} "
        f"batch shards (data*fsdp); use --config.train.batch_size={fixed} (a multiple of "
        f"{unit}) or a smaller mesh"))
  return problems


def sampling_problems(sizes: RunSizes) -> list[str]:
  """The problems of the `rollout` block for an algorithm that learns from its own samples:
  greedy decoding (temperature 0) gives every sample of a prompt the same completion."""
  if sizes.temperature > 0:
    return []
  return [problem("rollout.temperature", sizes.temperature,
                  "this algorithm learns from sampled completions, and greedy decoding (0) "
                  "makes every sample of a prompt the same; use e.g. 1.0")]


def sizes_of(setup: "Setup") -> RunSizes:
  """The `RunSizes` of a resolved `Setup` (what `build` validates its options against)."""
  return RunSizes(batch_size=setup.batch_size, num_generations=setup.sampling.num_generations,
                  max_new_tokens=setup.sampling.max_new_tokens,
                  temperature=setup.sampling.temperature, train_steps=setup.train_steps,
                  batch_shards=batch_shards(setup),
                  builtin_data=bool(setup.problems.get("train")))


def no_validation(options, sizes: RunSizes) -> None:
  """The `validate` of an algorithm that checks nothing beyond `build`."""
  del options, sizes


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
  validate: `validate(options, sizes: RunSizes) -> None`: checks the block's names, sizes and
    divisibilities from the config alone and raises one `ConfigError` listing every problem
    (`rewardjax.validation.validate_config` calls it before any work; `build` calls it too).
  """
  name: str
  defaults: Mapping[str, Any]
  objectives: Mapping[str, Objective]
  record_kind: str
  build: Callable
  validate: Callable[[Any, RunSizes], None] = no_validation


def unknown_objective(table: Mapping[str, Objective], loss_type: str, algorithm: str) -> str:
  """Why `loss_type` names no objective of `table`, with the valid names ("" if it does)."""
  if loss_type in table:
    return ""
  return f"unknown loss_type (variant) {loss_type!r}; valid for {algorithm}: {sorted(table)}"


def objective_problems(table: Mapping[str, Objective], loss_type: str,
                       algorithm: str) -> list[str]:
  """`validate`'s problem line for `algo.loss_type` ([] if it names an objective)."""
  message = unknown_objective(table, loss_type, algorithm)
  return [problem("algo.loss_type", loss_type, message)] if message else []


def objective(table: Mapping[str, Objective], loss_type: str, algorithm: str) -> Objective:
  """`table[loss_type]`, or a ValueError that lists the valid names for this algorithm."""
  message = unknown_objective(table, loss_type, algorithm)
  if message:
    raise ValueError(f"{algorithm}: {message}")
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
