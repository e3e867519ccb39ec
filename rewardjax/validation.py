"""Validate before work: the config's names, sizes and divisibilities, checked in one pass.

`validate_config(config, mesh)` runs when a run starts, before data loading, the warm start or
any compilation: it checks the common blocks (train, checkpoint, rollout, model, data,
warmstart, optim, rewards, mesh, the algorithm and recipe names), then asks the chosen algorithm
to check its own block (`algorithms.base.Algorithm.validate`, against the run's
`base.RunSizes`). Every problem is collected and one `base.ConfigError` (a ValueError) lists
them, one line per field, each naming the field as the `--config.<path>=<value>` flag that sets
it, what is wrong and a valid value:

    config: 2 invalid config field(s); fix them on the command line:
      --config.model.dtype='float77': valid: ['float32', 'bfloat16', 'float16']
      --config.algo.loss_type='nope': unknown loss_type (variant) 'nope'; valid for grpo: [...]

`check_splits(problems, records, config)` runs after the data is loaded: an empty training,
warm-start or held-out split is an error naming the split, the data and the fix (an empty
held-out split would silently skip every evaluation).

Like `train.py`, this module reads the config; the library below it never does.
"""

import os
from collections.abc import Mapping

import ml_collections

from rewardjax import algorithms, optim, recipes, sharding
from rewardjax.algorithms import base
from rewardjax.data import tasks
from rewardjax.kernels import attention
from rewardjax.models import lora, transformer
from rewardjax.rewards import process, sources

# Float dtypes a model computes and stores its params in (`model.dtype`, `model.param_dtype`).
DTYPES = ("float32", "bfloat16", "float16")
# `data.source`: the built-in task, or a reader of records (`train.load_data`).
DATA_SOURCES = ("arithmetic", "jsonl", "hf", "tfds")
# Sources whose `data.path` / `data.eval_path` is a local file or directory (tfds: a name).
LOCAL_SOURCES = ("jsonl", "hf")

problem, at_least, choice, fraction = base.problem, base.at_least, base.choice, base.fraction


def warmstart_runs(config: ml_collections.ConfigDict) -> bool:
  """Whether the run trains the supervised warm start first (`train.make_job`): steps > 0 and no
  checkpoint, or on top of one with `warmstart.from_checkpoint`."""
  w = config.warmstart
  return w.steps > 0 and (not config.model.checkpoint or w.from_checkpoint)


def batch_shards(config: ml_collections.ConfigDict, mesh=None) -> int:
  """How many ways the mesh splits a batch's rows: from `mesh`, else from the config's `mesh`
  block when its data and fsdp sizes are explicit (1 when they are not: -1 takes the devices
  left over, which only the mesh knows)."""
  if mesh is not None:
    return sharding.batch_size_multiple(mesh)
  m = config.mesh
  return m.data * m.fsdp if m.data >= 1 and m.fsdp >= 1 else 1


def _run(config) -> list[str]:
  """train, checkpoint, optim and guard blocks."""
  t, c, o = config.train, config.checkpoint, config.optim
  p = at_least("train.steps", t.steps, 0, "0 = only evaluate the start")
  p += at_least("train.batch_size", t.batch_size, 1)
  p += at_least("train.eval_every", t.eval_every, 0,
                "steps between evaluations; 0 = off, only the first and the final one")
  p += at_least("train.eval_batch_size", t.eval_batch_size, 1)
  p += at_least("checkpoint.every", c.every, 1, "steps between checkpoints")
  p += at_least("checkpoint.keep", c.keep, 1, "checkpoints kept")
  p += choice("optim.schedule", o.schedule, optim.SCHEDULES)
  p += at_least("optim.learning_rate", o.learning_rate, 0.0)
  p += at_least("optim.warmup_steps", o.warmup_steps, 0)
  p += at_least("optim.grad_accum_steps", o.grad_accum_steps, 1)
  p += at_least("optim.max_grad_norm", o.max_grad_norm, 0.0, "0 = no clipping")
  p += at_least("optim.weight_decay", o.weight_decay, 0.0)
  p += fraction("optim.b1", o.b1, open_top=True) + fraction("optim.b2", o.b2, open_top=True)
  g = config.guard
  p += at_least("guard.patience", g.patience, 0, "consecutive bad steps; 0 = guard off")
  for name in ("max_abs_loss", "max_grad_norm", "max_kl", "max_param_rms"):
    if not g[name] > 0:
      p.append(problem(f"guard.{name}", g[name], "must be > 0 (a bound; loosen it, or "
                       "--config.guard.patience=0 turns the guard off)"))
  p += at_least("guard.min_entropy", g.min_entropy, 0.0, "0 = never too low")
  return p


def _rollout(config) -> list[str]:
  r = config.rollout
  p = at_least("rollout.num_generations", r.num_generations, 1, "G samples per prompt")
  p += at_least("rollout.max_new_tokens", r.max_new_tokens, 1, "tokens sampled per completion")
  p += at_least("rollout.temperature", r.temperature, 0.0, "0 = greedy")
  p += at_least("rollout.top_k", r.top_k, 0, "0 = off")
  if not 0.0 < r.top_p <= 1.0:
    p.append(problem("rollout.top_p", r.top_p, "must be in (0, 1]; 1.0 = off"))
  return p


def _model(config) -> list[str]:
  m = config.model
  p = choice("model.dtype", m.dtype, DTYPES) + choice("model.param_dtype", m.param_dtype, DTYPES)
  p += choice("model.attention_impl", m.attention_impl, attention.IMPLS)
  p += choice("model.remat", m.remat, transformer.REMATS)
  p += at_least("model.lora_rank", m.lora_rank, 0, "0 = off: every weight trains")
  try:
    lora.parse_targets(m.lora_targets)
  except ValueError as e:
    p.append(problem("model.lora_targets", m.lora_targets, str(e)))
  if m.checkpoint:
    fix = ("point it at a Hugging Face model directory (config.json and *.safetensors), or set "
           "--config.model.checkpoint='' to train the config's architecture")
    if not os.path.isdir(m.checkpoint):
      p.append(problem("model.checkpoint", m.checkpoint, f"no such directory; {fix}"))
    elif not os.path.exists(os.path.join(m.checkpoint, "config.json")):
      p.append(problem("model.checkpoint", m.checkpoint, f"has no config.json; {fix}"))
    return p
  # No checkpoint: the architecture comes from the config's size fields.
  for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
               "num_kv_heads", "head_dim"):
    p += at_least(f"model.{name}", m[name], 1)
  if m.num_heads >= 1 and m.num_kv_heads >= 1 and m.num_heads % m.num_kv_heads:
    p.append(problem("model.num_kv_heads", m.num_kv_heads,
                     f"must divide model.num_heads={m.num_heads} (each kv head serves a group "
                     f"of query heads), e.g. {_divisor(m.num_heads, m.num_kv_heads)}"))
  p += choice("model.rope_type", m.rope_type, transformer.ROPE_TYPES)
  return p


def _divisor(n: int, near: int) -> int:
  """The largest divisor of `n` that is at most `near` (1 at least)."""
  return max(d for d in range(1, max(min(n, near), 1) + 1) if n % d == 0)


def _data(config) -> list[str]:
  d, w = config.data, config.warmstart
  p = choice("data.source", d.source, DATA_SOURCES)
  p += choice("data.fmt", d.fmt, tasks.FORMATS)
  for name in ("bucket", "max_prompt_length", "max_completion_length"):
    p += at_least(f"data.{name}", d[name], 1)
  if d.source == "arithmetic" or not d.eval_path:  # a held-out file is read whole
    p += at_least("data.num_eval", d.num_eval, 1, "held-out examples; an empty held-out split "
                  "would skip every evaluation")
  if d.source == "arithmetic":
    p += choice("data.difficulty", d.difficulty, range(len(tasks.LEVELS)))
    p += at_least("data.num_train", d.num_train, 2, "questions, split between the warm start "
                  "and the algorithm")
  if not (0.0 < d.heldout_fraction < 1.0 or (d.source != "arithmetic" and d.eval_path)):
    p.append(problem("data.heldout_fraction", d.heldout_fraction,
                     "must be in (0, 1): the share held out for evaluation, e.g. 0.1"
                     + ("" if d.source == "arithmetic" else
                        "; or give the held-out file as --config.data.eval_path")))
  if d.source in DATA_SOURCES and d.source != "arithmetic":
    if not d.path:
      p.append(problem("data.path", d.path, f"data.source={d.source!r} reads its records from "
                       "data.path; give e.g. --config.data.path=/path/to/train.jsonl"))
    for name in ("path", "eval_path"):
      if d.source in LOCAL_SOURCES and d[name] and not os.path.exists(d[name]):
        p.append(problem(f"data.{name}", d[name], "no such file or directory (records are read "
                         "from local files only)"))
    if warmstart_runs(config):
      p.append(problem(
          "warmstart.steps", w.steps,
          f"the warm start trains on the built-in task's questions only, and "
          f"data.source={d.source!r} has none; set --config.warmstart.steps=0, or give a "
          "pretrained model with --config.model.checkpoint=/path/to/hf_dir"
          + (" and --config.warmstart.from_checkpoint=False" if w.from_checkpoint else "")))
  return p


def _warmstart(config, shards: int) -> list[str]:
  w = config.warmstart
  p = at_least("warmstart.steps", w.steps, 0, "0 = off")
  if not warmstart_runs(config):
    return p
  p += at_least("warmstart.batch_size", w.batch_size, 1)
  if w.batch_size >= 1 and w.batch_size % shards:
    p.append(problem("warmstart.batch_size", w.batch_size,
                     f"does not split over the mesh's {shards} batch shards (data*fsdp); use a "
                     f"multiple of {shards}, e.g. {-(-w.batch_size // shards) * shards}"))
  p += at_least("warmstart.learning_rate", w.learning_rate, 0.0)
  p += at_least("warmstart.warmup_steps", w.warmup_steps, 0)
  p += fraction("warmstart.slip_rate", w.slip_rate)
  return p


def _rewards(config) -> list[str]:
  r = config.rewards
  p = []
  try:
    sources.parse_terms(r.terms)
  except ValueError as e:
    p.append(problem("rewards.terms", r.terms, str(e)))
  p += choice("rewards.judge_read", r.judge_read, sources.JUDGE_READS)
  p += choice("rewards.preference", r.preference, sources.PREFERENCES)
  p += choice("rewards.endogenous_model", r.endogenous_model, ("reference", "policy"))
  p += choice("rewards.prm_mechanism", r.prm_mechanism, process.MECHANISMS)
  p += at_least("rewards.max_length", r.max_length, 1)
  p += at_least("rewards.bucket", r.bucket, 1)
  p += at_least("rewards.timeout_seconds", r.timeout_seconds, 0.0,
                "seconds a text-scored term may take per batch; 0 = no limit")
  return p


def _mesh(config, mesh) -> list[str]:
  """The mesh block's sizes, and against the devices of `mesh` when one is given."""
  sizes = {name: config.mesh[name] for name in sharding.AXES}
  p = [problem(f"mesh.{name}", size, "must be >= 1, or -1 (the devices left over)")
       for name, size in sizes.items() if size != -1 and size < 1]
  if list(sizes.values()).count(-1) > 1:
    p.append(problem("mesh.data", sizes["data"], f"at most one axis may be -1, got {sizes}"))
  if p or mesh is None:
    return p
  count = mesh.devices.size
  known = 1
  for size in sizes.values():
    known *= 1 if size == -1 else size
  fits = count % known == 0 if -1 in sizes.values() else known == count
  if not fits:
    fsdp, tensor = sizes["fsdp"], sizes["tensor"]
    shape = (f"data={count // (fsdp * tensor)}, fsdp={fsdp}, tensor={tensor}"
             if fsdp >= 1 and tensor >= 1 and count % (fsdp * tensor) == 0
             else f"data={count}, fsdp=1, tensor=1")
    p.append(problem("mesh.data", sizes["data"], f"the mesh {sizes} does not fit the {count} "
                     f"devices; make data*fsdp*tensor == {count}, e.g. {shape}"))
  return p


def _algorithm(config, sizes: base.RunSizes) -> list[str]:
  """The algorithm and recipe names, the algo block's fields, then the algorithm's `validate`."""
  p = choice("recipe", config.recipe, ("", *recipes.RECIPES))
  if config.algorithm not in algorithms.ALGORITHMS:
    return p + [problem("algorithm", config.algorithm,
                        f"valid: {sorted(algorithms.ALGORITHMS)}")]
  algorithm = algorithms.get(config.algorithm)
  unknown = sorted(set(config.algo) - set(algorithm.defaults))
  missing = sorted(set(algorithm.defaults) - set(config.algo))
  p += [problem(f"algo.{name}", config.algo[name], f"algorithm={config.algorithm!r} does not "
                f"read this field; its fields: {sorted(algorithm.defaults)}") for name in unknown]
  if missing:
    p.append(problem("algorithm", config.algorithm,
                     f"config.algo lacks the fields {missing} this algorithm reads; start from "
                     f"a config of algorithm {config.algorithm!r} (e.g. "
                     f"configs/{config.algorithm}.py) rather than switching --config.algorithm"))
    return p
  try:
    algorithm.validate(config.algo, sizes)
  except base.ConfigError as e:
    p += e.problems
  return p


def validate_config(config: ml_collections.ConfigDict, mesh=None) -> None:
  """Checks every field of `config` that names an implementation, a size or a divisibility,
  before any work; raises one `base.ConfigError` listing every problem (module docstring).

  Args:
    config: the run's config (`configs/base.py` blocks).
    mesh: the run's mesh, or None: then device-dependent checks use the config's explicit mesh
      sizes only (a -1 axis is resolved by the mesh).
  """
  shards = batch_shards(config, mesh)
  r = config.rollout
  sizes = base.RunSizes(
      batch_size=config.train.batch_size, num_generations=r.num_generations,
      max_new_tokens=r.max_new_tokens, temperature=r.temperature,
      train_steps=config.train.steps, batch_shards=shards,
      builtin_data=config.data.source == "arithmetic")
  problems = (_run(config) + _rollout(config) + _model(config) + _data(config)
              + _warmstart(config, shards) + _rewards(config) + _mesh(config, mesh)
              + _algorithm(config, sizes))
  base.raise_problems(problems, "config")


def check_splits(problems: Mapping[str, list], records: Mapping[str, list],
                 config: ml_collections.ConfigDict) -> None:
  """Raises a `base.ConfigError` naming each empty split of the loaded data and its fix.

  Args:
    problems: the built-in task's splits ("train", "warmstart", "heldout"), `train.load_data`'s
      first result ({} for a file).
    records: a file's splits ("train", "heldout"), its second result ({} for the built-in task).
    config: the run's config.
  """
  d = config.data
  p = []
  if d.source == "arithmetic":
    if not problems.get("train"):
      p.append(problem("data.num_train", d.num_train, "the training split is empty (half the "
                       "questions go to the warm start); use more, e.g. 1000"))
    if warmstart_runs(config) and not problems.get("warmstart"):
      p.append(problem("data.num_train", d.num_train, "the warm-start split is empty (it gets "
                       "half the questions); use more, e.g. 1000, or --config.warmstart.steps=0"))
    if not problems.get("heldout"):
      p.append(problem("data.num_eval", d.num_eval, "the held-out split is empty, so every "
                       "evaluation would be skipped; use e.g. 256"))
    base.raise_problems(p, "data")
    return
  train, heldout = records.get("train") or [], records.get("heldout") or []
  if not train:
    p.append(problem("data.path", d.path, "the training split is empty") if d.eval_path else
             problem("data.heldout_fraction", d.heldout_fraction,
                     f"every one of the {len(heldout)} records of data.path={d.path!r} fell "
                     "into the held-out split; lower it (e.g. 0.1) or give the held-out "
                     "records as --config.data.eval_path"))
  if not heldout:
    if d.eval_path:
      p.append(problem("data.eval_path", d.eval_path, "the held-out file has no records, so "
                       "every evaluation would be skipped; give a file of held-out records"))
    else:
      p.append(problem(
          "data.heldout_fraction", d.heldout_fraction,
          f"the hashed held-out split of the {len(train)} records of data.path={d.path!r} is "
          "empty (identical records share a hash: duplicates land in one split), so every "
          "evaluation would be skipped; give --config.data.eval_path=/path/to/heldout.jsonl "
          "or raise --config.data.heldout_fraction (e.g. 0.2)"))
  base.raise_problems(p, "data")
