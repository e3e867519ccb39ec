"""The training loop: `run(config, workdir)`, one function that reads top to bottom.

Phases: mesh -> config validation (`validation`) -> data -> algorithm (looked up once by name,
`rewardjax.algorithms`) -> state (born sharded, or restored: `train_state`) -> warm-start stage
(the SFT algorithm, same loop) -> jitted update -> loop (batch, update, metrics, eval,
checkpoint) -> export. Nothing below asks which algorithm runs: each one is a `Program` (model,
batch stages, pure step, evaluation); a recipe (`rewardjax/recipes/<name>.py`) supplies the
prompt source and the reward composition. The run holds its workdir's lock, saves on SIGTERM /
SIGINT and stops on divergence (`guards`).
"""

import dataclasses
import json
import os
import time

import jax
import ml_collections
from flax import nnx

from rewardjax import (
  algorithms,
  checkpoint,
  guards,
  machine,
  optim,
  pretrained,
  recipes,
  sharding,
  train_state,
  validation,
)
from rewardjax import metrics as metrics_lib
from rewardjax.algorithms import base
from rewardjax.data import loaders, tasks, tokenizers
from rewardjax.evaluation import reward_eval
from rewardjax.models import hf, transformer
from rewardjax.rewards import sources


# ---------------------------------------------------------------------------------------------
# Config -> objects. Library code below `run` never sees the config.
# ---------------------------------------------------------------------------------------------
def model_config(config, tokenizer) -> transformer.ModelConfig:
  """The architecture: from the checkpoint's config.json, else from the config's size fields."""
  m = config.model
  overrides = dict(dtype=m.dtype, param_dtype=m.param_dtype, attention_impl=m.attention_impl,
                   remat=m.remat, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha,
                   lora_targets=m.lora_targets)
  if m.checkpoint:
    path = os.path.join(m.checkpoint, "config.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"--config.model.checkpoint={m.checkpoint!r} has no config.json; "
                              "point it at a Hugging Face model directory.")
    with open(path, encoding="utf-8") as f:
      return dataclasses.replace(hf.config_from_hf(json.load(f)), **overrides)
  return transformer.ModelConfig(
      vocab_size=m.vocab_size, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
      num_layers=m.num_layers, num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
      head_dim=m.head_dim, tie_word_embeddings=m.tie_word_embeddings, qkv_bias=m.qkv_bias,
      qk_norm=m.qk_norm, rope_theta=m.rope_theta, rms_norm_eps=m.rms_norm_eps,
      rope_type=m.rope_type, rope_factor=m.rope_factor,
      rope_low_freq_factor=m.rope_low_freq_factor, rope_high_freq_factor=m.rope_high_freq_factor,
      rope_original_max_position=m.rope_original_max_position,
      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
      pad_token_id=tokenizers.pad_token_id(tokenizer), **overrides)


def load_tokenizer(config):
  path = config.model.tokenizer or config.model.checkpoint
  return tokenizers.load_tokenizer(path) if path else tokenizers.char_tokenizer()


def load_data(config, tokenizer, record_kind: str) -> tuple[dict, dict]:
  """`(problems, records)`: the built-in task's questions, or a file's records of `record_kind`.

  Built-in task: problems {"train", "heldout", "warmstart"}; the warm-start stage and the main
  algorithm see disjoint question halves (RL on questions the warm start memorised has nothing
  left to learn and stops generalising to held-out ones). Files: records {"train", "heldout"}
  (a hashed split of `data.path` unless `data.eval_path` is given).
  """
  d = config.data
  if d.source == "arithmetic":
    common = dict(difficulty=d.difficulty, seed=config.seed, fmt=d.fmt,
                  heldout_fraction=d.heldout_fraction)
    problems = tasks.problems(d.num_train, split="train", **common)
    warm = [tasks.heldout_bucket("warmstart/" + p["question"]) < 0.5 for p in problems]
    return {"train": [p for p, w in zip(problems, warm) if not w],
            "warmstart": [p for p, w in zip(problems, warm) if w],
            "heldout": tasks.problems(d.num_eval, split="heldout", **common)}, {}
  readers = {
      "jsonl": lambda path: loaders.load_jsonl(path, kind=record_kind),
      "hf": lambda path: loaders.load_hf_dataset(path, kind=record_kind),
      "tfds": lambda name: loaders.load_tfds(name, data_dir=d.tfds_data_dir, kind=record_kind),
  }
  if d.source not in readers:
    raise ValueError(f"data.source={d.source!r}; valid: {['arithmetic', *readers]}")
  if not d.path:
    raise ValueError(f"data.source={d.source!r} needs --config.data.path")
  records = readers[d.source](d.path)
  if d.eval_path:
    train, heldout = records, readers[d.source](d.eval_path)
  else:
    held = [tasks.heldout_bucket(json.dumps(r, sort_keys=True)) < d.heldout_fraction
            for r in records]
    train = [r for r, h in zip(records, held) if not h]
    heldout = [r for r, h in zip(records, held) if h][:d.num_eval]
  if d.chat_template:
    for rows in (train, heldout):
      for r, p in zip(rows, loaders.format_prompts(tokenizer, [r["prompt"] for r in rows])):
        r["prompt"] = p
  return {}, {"train": train, "heldout": heldout}


def make_optimizer(o, total_steps: int):
  """`optim.make_optimizer` from the `optim` config block (a run of 0 steps, which only
  evaluates its start, gets a 1-step schedule it never uses)."""
  total_steps = max(total_steps, 1)
  return optim.make_optimizer(optim.AdamW(
      learning_rate=o.learning_rate, warmup_steps=min(o.warmup_steps, total_steps),
      schedule=o.schedule, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2,
      max_grad_norm=o.max_grad_norm or None, grad_accum_steps=o.grad_accum_steps),
      total_steps=total_steps)


@dataclasses.dataclass(frozen=True)
class Job:
  """A config resolved into objects: the run's setup, its program, and the warm-start stage."""
  tokenizer: object
  setup: base.Setup
  recipe: recipes.Recipe
  program: base.Program
  warmstart: base.Program | None   # the SFT program on the warm-start half, or None


def make_job(config: ml_collections.ConfigDict, mesh) -> Job:
  """Tokenizer, data, recipe and the algorithm's program (looked up once, by name)."""
  # `run` has validated already; callers of make_job alone (launch/eval.py, notebooks, tests)
  # get the same one-pass check (milliseconds: no data, no model).
  validation.validate_config(config, mesh)
  algorithm = algorithms.get(config.algorithm)
  if config.model.checkpoint:  # a missing or corrupted file is named before any work starts
    pretrained.verify(config.model.checkpoint)
  tokenizer = load_tokenizer(config)
  problems, records = load_data(config, tokenizer, algorithm.record_kind)
  validation.check_splits(problems, records, config)  # an empty split would waste the run
  d, r = config.data, config.rollout
  stream = recipes.RecordStream(problems.get("train") or records["train"],
                                config.train.batch_size, config.seed)
  rewards = sources.composition_from_options(
      sources.RewardOptions(**config.rewards), tokenizer=tokenizer, mesh=mesh, fmt=d.fmt,
      group_size=r.num_generations)
  recipe = recipes.load(config.recipe, config.recipe_args.to_dict(), stream=stream,
                        problems=problems, fmt=d.fmt, seed=config.seed, rewards=rewards,
                        tokenizer=tokenizer)
  mconfig = model_config(config, tokenizer)
  tokenizers.check_vocab(tokenizer, mconfig.vocab_size)
  setup = base.Setup(
      tokenizer=tokenizer, mesh=mesh, model=mconfig,
      data=base.DataOptions(fmt=d.fmt, bucket=d.bucket, max_prompt_length=d.max_prompt_length,
                            max_completion_length=d.max_completion_length),
      sampling=base.SamplingOptions(num_generations=r.num_generations,
                                    max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                    top_p=r.top_p, top_k=r.top_k),
      problems=problems, records=records, recipe=recipe, batch_size=config.train.batch_size,
      eval_batch_size=config.train.eval_batch_size, seed=config.seed,
      train_steps=config.train.steps, reward_eval=reward_eval.RewardEvalOptions(
          **(config.reward_eval.to_dict() | {
              "policy": config.reward_eval.policy or config.model.checkpoint})))
  program = algorithm.build(config.algo, setup)
  if recipe.rounds is not None and program.rounds is None:
    raise ValueError(f"recipe={config.recipe!r} trains in rounds of preference pairs, which "
                     f"algorithm={config.algorithm!r} does not run; use algorithm='dpo'")
  warmstart = None
  w = config.warmstart
  # From a checkpoint only on request (an SFT stage on top of it, e.g. Self-Rewarding PPO's
  # pi_sft); otherwise the checkpoint replaces the warm start.
  if validation.warmstart_runs(config):
    # The warm start trains every weight (no LoRA): adapters are added on top of its result.
    warm_setup = dataclasses.replace(
        setup, problems={"train": problems.get("warmstart", [])}, records={},
        batch_size=w.batch_size, model=dataclasses.replace(mconfig, lora_rank=0))
    warmstart = algorithms.get("sft").build(
        ml_collections.ConfigDict(dict(loss_type="nll", slip_rate=w.slip_rate)), warm_setup)
  return Job(tokenizer, setup, recipe, program, warmstart)


def minibatches(batch, num_minibatches: int):
  """Splits a batch's rows into `num_minibatches` contiguous, equal parts (device slices)."""
  rows = jax.tree.leaves(batch)[0].shape[0]
  if rows % num_minibatches:
    raise ValueError(f"{rows} rows do not split into num_minibatches={num_minibatches}")
  size = rows // num_minibatches
  return [jax.tree.map(lambda x, i=i: x[i * size:(i + 1) * size], batch)
          for i in range(num_minibatches)]


def jit_step(program: base.Program, state_sharding, batch, mesh):
  """`program.step` jitted with explicit shardings and donated state, for `batch`'s layout."""
  batch_sharding = jax.tree.map(lambda x: sharding.batch_sharding(mesh, x.ndim), batch)
  if program.num_minibatches > 1:
    batch_sharding = None  # minibatch slices keep the layout of the batch they come from
  return jax.jit(program.step,
                 in_shardings=(state_sharding, batch_sharding, sharding.replicated(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)),
                 donate_argnames=("state",))


MAX_FOLLOWUPS = 8   # followup batches per step: a guard against a source that never stops


def train_steps(program: base.Program, state, state_sharding, *, stage: str, start: int,
                steps: int, rng, writer, after_step=lambda step, state: False,
                watch=lambda step, metrics: None):
  """The loop of one stage: batches -> updates -> lagged metrics -> `after_step(step, state)`.

  `after_step(step, state)` runs after each step (evaluation, checkpoint) and returns True to
  end the stage there (a stop signal); `watch(step, metrics)` reads each step's fetched
  metrics and may raise (the divergence guard).

  A program trained in rounds (`program.rounds`) begins a round before the first step of each
  (its metrics are "round/<metric>"). A step trains one batch, then each batch
  `program.followup(step)` names (SPARK's judge period), built after the previous one's
  updates; their metrics are "<name>/<metric>". Every
  batch gets num_iterations x num_minibatches updates; its metrics are the last update's,
  except `sampler/*`, measured on the first update (where the params are the sampler's). The
  metrics of step t (device and host ones: a batch stage may report a device scalar) are
  fetched in one transfer after step t+1 is dispatched. `data/truncated_prompts` counts the
  prompts cut to `max_prompt_length` so far in this process (`tokenizers.encode_prompts`).
  """
  step_fn, pending = None, None

  def flush(pending):
    metrics = metrics_lib.fetch({**pending[1], **pending[2]})
    writer.write(pending[0], metrics, prefix=stage)
    watch(pending[0], metrics)

  for step in range(start, steps):
    step_rng = jax.random.fold_in(rng, step)
    phase, device_metrics, host_metrics = "", {}, {}
    if program.rounds is not None and step % program.rounds.steps_per_round == 0:
      state, round_metrics = program.rounds.begin(
          state, step // program.rounds.steps_per_round, jax.random.fold_in(step_rng, 2_000_003))
      host_metrics.update({f"round/{k}": v for k, v in round_metrics.items()})
    for index in range(MAX_FOLLOWUPS + 1):
      # The main batch keeps the step's key, so runs without followups are unchanged.
      batch_rng = step_rng if index == 0 else jax.random.fold_in(step_rng, 1_000_003 + index)
      batch, batch_host = program.make_batch(state, step, batch_rng)
      step_fn = step_fn or jit_step(program, state_sharding, batch, jax.sharding.get_mesh())
      first = None
      for _ in range(program.num_iterations):
        for minibatch in minibatches(batch, program.num_minibatches):
          with jax.transfer_guard("disallow"):
            state, batch_metrics = step_fn(state, minibatch, batch_rng)
          first = first or batch_metrics
      batch_metrics = {**batch_metrics, **{k: v for k, v in first.items()
                                            if k.startswith("sampler/")}}
      name = f"{phase}/" if phase else ""
      device_metrics.update({name + k: v for k, v in batch_metrics.items()})
      host_metrics.update({name + k: v for k, v in batch_host.items()})
      phase = program.followup(step)
      if not phase:
        break
    else:
      raise RuntimeError(f"step {step}: more than {MAX_FOLLOWUPS} followup batches")
    host_metrics["data/truncated_prompts"] = tokenizers.truncated_prompt_count()
    if pending is not None:
      flush(pending)
    pending = (step + 1, device_metrics, host_metrics)
    if after_step(step + 1, state):
      break
  if pending is not None:
    flush(pending)
  return state


def pretrained_params(config, mconfig):
  """Pure params of the Hugging Face checkpoint `model.checkpoint`."""
  return nnx.to_pure_dict(nnx.split(hf.from_pretrained(
      config.model.checkpoint, dtype=mconfig.dtype, param_dtype=mconfig.param_dtype,
      attention_impl=mconfig.attention_impl), nnx.Param)[1])


def warm_start(job: Job, config, mesh, rng, writer, params=None):
  """The warm-start stage: the SFT program from `params` (a checkpoint's) or a fresh LM,
  through `train_steps`; returns the language model's params."""
  w = config.warmstart
  tx = optim.make_optimizer(optim.AdamW(learning_rate=w.learning_rate,
                                        warmup_steps=min(w.warmup_steps, w.steps),
                                        schedule="cosine", b2=0.99), total_steps=w.steps)
  if params is None:
    params = nnx.to_pure_dict(nnx.split(job.warmstart.model_fn(nnx.Rngs(config.seed)),
                                        nnx.Param)[1])
  state, shardings = train_state.create_state(job.warmstart.model_fn, tx, mesh, rng,
                                              params=params, with_ref=False)
  writer.stage("warmstart")
  state = train_steps(job.warmstart, state, shardings, stage="warmstart", start=0,
                      steps=w.steps, rng=rng, writer=writer)
  return state.params


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its last checkpoint; returns the summary.

  Before any work the whole config is validated (`validation.validate_config`: one message
  listing every bad field). While it trains the run holds the workdir's lock, and a SIGTERM or
  SIGINT saves a checkpoint of the current step and raises `guards.Preempted`; a diverged run
  raises `guards.Diverged` (`config.guard`).
  """
  if config.distributed.initialize:
    dist = config.distributed
    sharding.initialize_distributed(dist.coordinator_address, dist.num_processes,
                                    dist.process_id)
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  validation.validate_config(config, mesh)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as error:
    raise ValueError(f"--workdir={workdir!r} cannot be created ({error.strerror}: "
                     f"{error.filename}); pass a directory you can write to.") from None
  with guards.workdir_lock(workdir), guards.stop_signals() as stop:
    manager = checkpoint.make_manager(workdir, max_to_keep=config.checkpoint.keep,
                                      save_interval_steps=config.checkpoint.every,
                                      async_save=config.checkpoint.async_save)
    try:
      with jax.set_mesh(mesh):  # turns on the models' activation sharding constraints
        return _run_on_mesh(config, workdir, mesh, manager, stop)
    finally:
      # Pending saves finish (or fail) here, so orbax's shutdown never prints its tracebacks
      # after, and over, the error that ended the run.
      try:
        manager.close()
      except Exception as error:  # noqa: BLE001 (the run's own error, if any, comes first)
        print(f"checkpoint manager did not close cleanly: {error}")


def _run_on_mesh(config: ml_collections.ConfigDict, workdir: str, mesh, manager, stop) -> dict:
  # ===== Setup: data, recipe, the algorithm's program =========================================
  started = time.time()
  total_steps = config.train.steps
  newest = manager.latest_step()
  if newest is not None and newest > total_steps:  # before the data: nothing to redo
    raise ValueError(f"{workdir} holds a checkpoint of step {newest}, beyond "
                     f"--config.train.steps={total_steps}; pass --config.train.steps>={newest} "
                     f"to continue it, or a new --workdir.")
  job = make_job(config, mesh)
  program, rng = job.program, jax.random.key(config.seed)
  sharding.check_batch(program.rows_per_update, mesh, "rows per update")
  updates = total_steps * program.num_iterations * program.num_minibatches
  tx = make_optimizer(config.optim, updates)
  companion = None
  if program.companion is not None:  # a second model trained in the same step, own optimizer
    companion = (program.companion, make_optimizer(ml_collections.ConfigDict(
        config.optim.to_dict() | {"learning_rate": program.companion.learning_rate}), updates))

  # ===== State: restore the last checkpoint, or initialise (pretrained / warm start) =========
  fingerprint = checkpoint.config_fingerprint(config.to_dict())
  state, extra, state_sharding = train_state.restore(
      manager, program.model_fn, tx, mesh, rng, with_ref=program.with_ref,
      config_fingerprint=fingerprint, companion=companion)
  stages = [("train", total_steps)]
  if state is None and job.warmstart is not None:
    stages.insert(0, ("warmstart", config.warmstart.steps))
  writer = metrics_lib.MetricsWriter(workdir, stages=stages)
  try:
    return _train(config, workdir, job, manager, stop, writer, started,
                  (state, extra, state_sharding), (tx, companion, fingerprint))
  finally:
    writer.close()


def _train(config, workdir, job, manager, stop, writer, started, restored, optimizers):
  """The run after setup: initial state, the loop with its evaluations and checkpoints, the
  final evaluation, the export and the summary."""
  (state, extra, state_sharding), (tx, companion, fingerprint) = restored, optimizers
  program, rng, total_steps = job.program, jax.random.key(config.seed), config.train.steps
  mesh = jax.sharding.get_mesh()
  first_eval = {}
  if state is not None:
    start_step = int(extra["step"])
    job.recipe.source.load_state(extra.get("recipe", {}))
    first_eval = extra.get("initial_eval", {})
    dropped = writer.rewind(start_step)
    writer.print(f"resumed {workdir} at step {start_step}"
                 + (f" (dropped {dropped} metric records of later steps, redone now)"
                    if dropped else ""))
  else:
    lm_params = None
    if config.model.checkpoint:
      lm_params = pretrained_params(config, job.setup.model)
    if job.warmstart is not None:  # from the checkpoint with warmstart.from_checkpoint
      lm_params = warm_start(job, config, mesh, rng, writer, params=lm_params)
    params = None if lm_params is None else program.init_params(lm_params, config.seed)
    companion_params = None
    if companion is not None:  # asked even from scratch: Cooper's loads its own directory
      companion_params = program.companion.init_params(lm_params, config.seed)
    state, state_sharding = train_state.create_state(
        program.model_fn, tx, mesh, rng, params=params, with_ref=program.with_ref,
        companion=companion, companion_params=companion_params)
    start_step = 0

  def run_eval(step):
    writer.eval_started()
    eval_rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
    result = {**program.evaluate(state, eval_rng),
              **job.recipe.evaluate(state, job.tokenizer)}
    writer.write(step, result, prefix="eval")
    return result

  def save(step, force):
    checkpoint.save(manager, step, train_state.saveable(state), force=force,
                    extra={"step": step, "recipe": job.recipe.source.state_dict(),
                           "config": config.to_json(), checkpoint.FINGERPRINT_KEY: fingerprint,
                           "initial_eval": {k: float(v) for k, v in first_eval.items()}})

  stopped_at = None

  def after_step(step, current):
    nonlocal state, stopped_at
    state = current  # run_eval and save read it
    every = config.train.eval_every  # 0: no evaluation during training
    if every and step % every == 0 and step < total_steps:
      run_eval(step)
    stopping = guards.stop_requested(stop) and step < total_steps
    save(step, force=step == total_steps or stopping)
    if stopping:
      stopped_at = step
    return stopping

  guard, bad_steps = guards.GuardOptions(**config.guard), []

  def watch(step, metrics):
    nonlocal bad_steps
    try:
      bad_steps = guards.check_divergence(bad_steps, step, metrics, guard)
    except guards.Diverged as error:
      first = bad_steps[0][0] if bad_steps else step
      checkpoint.wait(manager)
      good = [s for s in manager.all_steps() if s < first]
      where = (f"the last checkpoint before it is step {max(good)} in {manager.directory}"
               if good else "no checkpoint precedes it")
      raise guards.Diverged(f"{error} At step {step}, {where}.") from None

  # ===== Loop =================================================================================
  if start_step == 0:
    save(0, force=True)  # a crash after the warm start resumes here instead of redoing it
    first_eval = run_eval(0)
  if guards.stop_requested(stop):  # signalled during the warm start or the first evaluation
    stopped_at = start_step
  else:
    writer.stage("train", initial=start_step)
    state = train_steps(program, state, state_sharding, stage="train", start=start_step,
                        steps=total_steps, rng=rng, writer=writer, after_step=after_step,
                        watch=watch)
  checkpoint.wait(manager)
  if stopped_at is not None:
    save(stopped_at, force=True)  # no-op unless the signal came before the loop
    checkpoint.wait(manager)
    raise guards.Preempted(stopped_at, stop.signum, workdir)

  # ===== Final evaluation and export ==========================================================
  final_eval = run_eval(total_steps)
  if config.train.export_hf and program.export_hf:
    host_params = sharding.gather(state.params)  # a collective: every process takes part
    if jax.process_index() == 0:
      export = program.export or hf.save_pretrained
      export(nnx.merge(state.graphdef, host_params), os.path.join(workdir, "hf"))
      job.tokenizer.save_pretrained(os.path.join(workdir, "hf"))
    second = program.companion
    if second is not None and second.export is not None:  # e.g. Cooper's co-trained RM
      companion_params = sharding.gather(state.companion.params)
      if jax.process_index() == 0:
        directory = os.path.join(workdir, f"hf_{second.name}")
        second.export(nnx.merge(state.companion.graphdef, companion_params), directory)
        job.tokenizer.save_pretrained(directory)
  # Wall time is printed and written to summary.json, not returned: the returned summary is
  # deterministic (a resumed or multi-host run returns the same dict). On CPU the machine's
  # matmul rate (measured after the wall time, ~1-2 s on a slow box) lets a time measured on a
  # fast machine be read as one on the slowest CPU class the defaults are sized for.
  wall = time.time() - started
  extra = {"steps": total_steps, "wall_seconds": round(wall, 1)}
  if jax.default_backend() == "cpu":
    rate = machine.matmul_flops_per_s(n=1024)
    extra.update(matmul_gflops=round(rate / 1e9, 1), cpu=machine.cpu_model(),
                 wall_seconds_at_60_gflops=round(machine.slow_machine_seconds(wall, rate), 1))
  writer.summary(initial=first_eval, final=final_eval, extra=extra)
  return metrics_lib.flat_summary(first_eval, final_eval, {"steps": total_steps})
