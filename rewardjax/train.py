"""The training loop: `run(config, workdir)`, one function that reads top to bottom.

Phases: mesh -> data -> model -> state (born sharded, or restored) -> warm start -> jitted
update -> loop (batch, update, metrics, eval, checkpoint) -> export. The algorithm is chosen
once from `algorithms.ALGORITHMS`; a recipe (`rewardjax/recipes/<name>.py`) plugs in through
`recipes.Hooks` (which prompts, which reward, what to do with finished rollouts, extra eval).
"""

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from rewardjax import algorithms, checkpoint, optim, recipes, sharding, update
from rewardjax import losses as losses_lib
from rewardjax import metrics as metrics_lib
from rewardjax.data import loaders, tasks, tokenizers
from rewardjax.evaluation import accuracy
from rewardjax.models import heads, hf, transformer
from rewardjax.types import TrainState

LOSS_FNS = {"grpo": losses_lib.grpo_loss, "dpo": losses_lib.dpo_loss,
            "reward_model": losses_lib.bradley_terry_loss}


# ---------------------------------------------------------------------------------------------
# Config -> objects. Library code below `run` never sees the config.
# ---------------------------------------------------------------------------------------------
def model_config(config, tokenizer) -> transformer.ModelConfig:
  """The architecture: from the checkpoint's config.json, else from the config's size fields."""
  m = config.model
  overrides = dict(dtype=m.dtype, param_dtype=m.param_dtype, attention_impl=m.attention_impl)
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
      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
      pad_token_id=tokenizers.pad_token_id(tokenizer), **overrides)


def load_tokenizer(config):
  path = config.model.tokenizer or config.model.checkpoint
  return tokenizers.load_tokenizer(path) if path else tokenizers.char_tokenizer()


def load_records(config, tokenizer) -> dict[str, list[dict]]:
  """Train / held-out records for the algorithm: {"train", "heldout", "sft"}."""
  d, kind = config.data, ("answer" if config.algorithm == "grpo" else "preference")
  if d.source == "arithmetic":
    common = dict(difficulty=d.difficulty, seed=config.seed, fmt=d.fmt,
                  heldout_fraction=d.heldout_fraction)
    problems = tasks.problems(d.num_train, split="train", **common)
    heldout = tasks.problems(d.num_eval, split="heldout", **common)
    # The warm start and the later stage see disjoint questions: RL on questions the warm start
    # memorised has nothing left to learn and stops generalising to held-out ones.
    warm = [tasks.heldout_bucket("warmstart/" + p["question"]) < 0.5 for p in problems]
    train = [p for p, w in zip(problems, warm) if not w]
    out = {"sft": tasks.sft_examples([p for p, w in zip(problems, warm) if w], fmt=d.fmt,
                                     slip_rate=config.warmstart.slip_rate, seed=config.seed),
           "train_problems": train, "heldout_problems": heldout}
    if kind == "preference":
      out.update(train=tasks.preference_pairs(train, fmt=d.fmt, seed=config.seed,
                                              pairs_per_question=d.pairs_per_question),
                 heldout=tasks.preference_pairs(heldout, fmt=d.fmt, seed=config.seed + 1))
    else:
      out.update(train=train, heldout=heldout)
    return out
  readers = {
      "jsonl": lambda path: loaders.load_jsonl(path, kind=kind),
      "hf": lambda path: loaders.load_hf_dataset(path, kind=kind),
      "tfds": lambda name: loaders.load_tfds(name, data_dir=d.tfds_data_dir, kind=kind),
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
  return {"train": train, "heldout": heldout, "sft": [], "train_problems": train,
          "heldout_problems": heldout if kind == "answer" else []}


def make_optimizer(o, total_steps: int, **overrides):
  kwargs = dict(learning_rate=o.learning_rate, total_steps=total_steps,
                warmup_steps=min(o.warmup_steps, total_steps), schedule=o.schedule,
                weight_decay=o.weight_decay,
                b1=o.b1, b2=o.b2, max_grad_norm=o.max_grad_norm or None,
                grad_accum_steps=o.grad_accum_steps)
  return optim.make_optimizer(**{**kwargs, **overrides})


def loss_fn_for(config):
  a = config.algo
  if config.algorithm == "grpo":
    return functools.partial(
        losses_lib.grpo_loss, loss_type=a.loss_type, epsilon_low=a.epsilon_low,
        epsilon_high=a.epsilon_high, delta=a.delta or None, beta=a.beta,
        kl_estimator=a.kl_estimator, importance_sampling_level=a.importance_sampling_level,
        max_completion_length=config.rollout.max_new_tokens, entropy_coeff=a.entropy_coeff)
  if config.algorithm == "dpo":
    return functools.partial(losses_lib.dpo_loss, beta=a.beta, loss_type=a.loss_type,
                             label_smoothing=a.label_smoothing)
  return functools.partial(losses_lib.bradley_terry_loss, margin=None,
                           center_rewards_coefficient=a.center_rewards_coefficient or None)


# ---------------------------------------------------------------------------------------------
# State: born sharded.
# ---------------------------------------------------------------------------------------------
def state_layout(model_fn, tx, mesh, rng, *, with_ref: bool):
  """`(init, abstract_state, shardings)` of a TrainState, without allocating it.

  `model_fn(rngs)` builds the NNX module; `init(rng, params)` builds the state, from `params`
  (a pure dict: warm start or pretrained) or, when None, from a random initialisation.
  """
  graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))),
                                        nnx.Param)
  params_sharding = sharding.param_shardings(abstract_params, mesh)

  def init(rng, params):
    if params is None:
      params = nnx.to_pure_dict(nnx.split(model_fn(nnx.Rngs(rng)), nnx.Param)[1])
    # A copy, not an alias: donating a state whose two fields share buffers would fail.
    ref = jax.tree.map(jnp.copy, params) if with_ref else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=rng, ref_params=ref, graphdef=graphdef, tx=tx)

  abstract = jax.eval_shape(init, rng, None)
  return init, abstract, sharding.state_shardings(abstract, params_sharding, mesh)


def create_state(model_fn, tx, mesh, rng, *, params=None, with_ref: bool):
  """A TrainState born sharded: eval_shape -> shardings -> jit(init, out_shardings)."""
  init, _, shardings = state_layout(model_fn, tx, mesh, rng, with_ref=with_ref)
  if params is not None:
    params = jax.device_put(params, shardings.params)
  return jax.jit(init, out_shardings=shardings)(rng, params), shardings


def _saveable(state: TrainState) -> dict:
  return {"step": state.step, "params": state.params, "opt_state": state.opt_state,
          "rng": state.rng, "ref_params": state.ref_params}


def restore(manager, model_fn, tx, mesh, rng, *, with_ref: bool,
            config_fingerprint: str | None = None):
  """`(state, extra, state_sharding)` of the newest checkpoint in `manager`, bitwise, laid out
  as `create_state` would; state and extra are None when the manager holds no checkpoint."""
  _, abstract, shardings = state_layout(model_fn, tx, mesh, rng, with_ref=with_ref)
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        _saveable(abstract), _saveable(shardings))
  restored = checkpoint.restore_latest(manager, target, config_fingerprint=config_fingerprint)
  if restored is None:
    return None, None, shardings
  tree, extra = restored
  return abstract.replace(**tree), extra, shardings


def warm_start(graphdef, params, records, tokenizer, mesh, rng, writer, *, steps, batch_size,
               learning_rate, warmup_steps, bucket, max_prompt_length, max_completion_length,
               seed):
  """Supervised warm start (token-mean NLL of the completions); returns the new params."""
  tx = optim.make_optimizer(learning_rate=learning_rate, total_steps=steps,
                            warmup_steps=min(warmup_steps, steps), schedule="cosine", b2=0.99)
  state, shardings = create_state(lambda _: nnx.merge(graphdef, params), tx, mesh, rng,
                                  params=params, with_ref=False)
  step_fn = jax.jit(update.sft_update, out_shardings=(shardings, None),
                    donate_argnames=("state",))
  for step in range(steps):
    items = [records[i] for i in loaders.batch_indices(len(records), batch_size, seed=seed,
                                                        step=step).tolist()]
    batch = algorithms.sft_batch(items, tokenizer, mesh, bucket=bucket,
                                 max_prompt_length=max_prompt_length,
                                 max_completion_length=max_completion_length)
    state, metrics = step_fn(state, batch, rng)
    if (step + 1) % 50 == 0 or step + 1 == steps:
      writer.write(step + 1, metrics_lib.fetch(metrics), prefix="warmstart")
  return state.params


def evaluate(config, state, records, tokenizer, hooks, rng, ref_logps_fn, score_fn) -> dict:
  """Held-out metrics of the current params for the algorithm (and the recipe's extras)."""
  d, out = config.data, {}
  if config.algorithm == "reward_model":
    pairs = records["heldout"]
    scores = sharding.gather(score_fn(state.params, *_pair_tokens(config, tokenizer, pairs)))
    chosen, rejected = scores[:len(pairs)], scores[len(pairs):]
    return {"pair_accuracy": float(np.mean(chosen > rejected)),
            "reward_margin": float(np.mean(chosen - rejected))}
  if config.algorithm == "dpo":
    pairs = records["heldout"]
    tokens, attention_mask, loss_mask = _pair_tokens(config, tokenizer, pairs, loss_mask=True)
    policy = sharding.gather(ref_logps_fn(state.params, tokens, attention_mask, loss_mask))
    ref = sharding.gather(ref_logps_fn(state.ref_params, tokens, attention_mask, loss_mask))
    n = len(pairs)
    margin = config.algo.beta * ((policy[:n] - ref[:n]) - (policy[n:] - ref[n:]))
    out.update(preference_accuracy=float(np.mean(margin > 0)),
               implicit_reward_margin=float(np.mean(margin)))
  if records.get("heldout_problems"):
    out.update(accuracy.task_accuracy(
        state.graphdef, state.params, tokenizer, records["heldout_problems"], rng, fmt=d.fmt,
        max_new_tokens=config.rollout.max_new_tokens, batch_size=config.train.eval_batch_size,
        bucket=d.bucket, max_prompt_length=d.max_prompt_length))
  out.update(hooks.evaluate(state, tokenizer, rng))
  return out


def _pair_tokens(config, tokenizer, pairs, loss_mask=False):
  d = config.data
  tokens, attention_mask, target_mask = algorithms.pair_arrays(
      tokenizer, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs],
      [p["rejected"] for p in pairs], bucket=d.bucket, max_prompt_length=d.max_prompt_length,
      max_completion_length=d.max_completion_length)
  arrays = (tokens, attention_mask, target_mask) if loss_mask else (tokens, attention_mask)
  return sharding.feed(arrays)


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming from its last checkpoint; returns the summary."""
  if config.distributed.initialize:
    dist = config.distributed
    sharding.initialize_distributed(dist.coordinator_address, dist.num_processes,
                                    dist.process_id)
  if config.algorithm not in algorithms.ALGORITHMS:
    raise ValueError(f"algorithm={config.algorithm!r}; valid: {sorted(algorithms.ALGORITHMS)}")
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
  with jax.set_mesh(mesh):  # turns on the models' activation sharding constraints
    return _run_on_mesh(config, workdir, mesh)


def _run_on_mesh(config: ml_collections.ConfigDict, workdir: str, mesh) -> dict:
  # ===== Setup ================================================================================
  os.makedirs(workdir, exist_ok=True)
  is_rl, is_rm = config.algorithm == "grpo", config.algorithm == "reward_model"
  rows = config.train.batch_size * (config.rollout.num_generations if is_rl else 2)
  sharding.check_batch(rows // config.algo.num_minibatches, mesh, "rows per minibatch")
  rng = jax.random.key(config.seed)
  total_steps, d = config.train.steps, config.data

  # ===== Data =================================================================================
  tokenizer = load_tokenizer(config)
  records = load_records(config, tokenizer)
  hooks = recipes.load(config.recipe, config.recipe_args.to_dict(), records=records,
                       fmt=d.fmt, seed=config.seed)

  # ===== Model and optimizer ==================================================================
  mconfig = model_config(config, tokenizer)
  tokenizers.check_vocab(tokenizer, mconfig.vocab_size)
  lm_fn = lambda rngs: transformer.Transformer(mconfig, rngs=rngs)
  model_fn = (lambda rngs: heads.ScalarModel(mconfig, rngs=rngs)) if is_rm else lm_fn
  tx = make_optimizer(config.optim, total_steps * config.algo.num_iterations
                      * config.algo.num_minibatches)
  with_ref = config.algorithm == "dpo" or (is_rl and config.algo.beta > 0)

  # ===== State: restore the last checkpoint, or initialise (+ warm start) ====================
  manager = checkpoint.make_manager(workdir, max_to_keep=config.checkpoint.keep,
                                    save_interval_steps=config.checkpoint.every,
                                    async_save=config.checkpoint.async_save)
  fingerprint = checkpoint.config_fingerprint(config.to_dict())
  writer = metrics_lib.MetricsWriter(workdir, total_steps=total_steps)
  state, extra, state_sharding = restore(manager, model_fn, tx, mesh, rng, with_ref=with_ref,
                                         config_fingerprint=fingerprint)
  if state is not None:
    start_step = int(extra["step"])
    hooks.load_state(extra.get("recipe", {}))
    writer.print(f"resumed {workdir} at step {start_step}")
  else:
    params = None
    if config.model.checkpoint:
      params = nnx.to_pure_dict(nnx.split(hf.from_pretrained(
          config.model.checkpoint, dtype=mconfig.dtype, param_dtype=mconfig.param_dtype,
          attention_impl=mconfig.attention_impl), nnx.Param)[1])
    elif config.warmstart.steps:
      lm_graphdef, lm_params = nnx.split(lm_fn(nnx.Rngs(config.seed)), nnx.Param)
      params = warm_start(
          lm_graphdef, nnx.to_pure_dict(lm_params), records["sft"] + hooks.warmstart_examples(),
          tokenizer, mesh, rng, writer, steps=config.warmstart.steps,
          batch_size=config.warmstart.batch_size, learning_rate=config.warmstart.learning_rate,
          warmup_steps=config.warmstart.warmup_steps, bucket=d.bucket,
          max_prompt_length=d.max_prompt_length, max_completion_length=d.max_completion_length,
          seed=config.seed)
    if is_rm and params is not None:  # a reward model starts from the (warm) language model
      head = nnx.to_pure_dict(nnx.split(model_fn(nnx.Rngs(config.seed)), nnx.Param)[1])["head"]
      params = {"backbone": params, "head": head}
    state, state_sharding = create_state(model_fn, tx, mesh, rng, params=params,
                                         with_ref=with_ref)
    start_step = 0

  # ===== Jitted functions =====================================================================
  chunk = 1024
  score_fn = jax.jit(functools.partial(update.score_rollouts, graphdef=state.graphdef,
                                       completion_length=config.rollout.max_new_tokens,
                                       chunk_size=chunk))
  ref_logps_fn = jax.jit(lambda p, t, a, m: update.sequence_logps(
      nnx.merge(state.graphdef, p), t, a, m, chunk_size=chunk)[0])
  rm_score_fn = jax.jit(lambda p, t, a: nnx.merge(state.graphdef, p)(t, attention_mask=a))
  make_batch, update_fn = algorithms.ALGORITHMS[config.algorithm]
  stream = records["train"]

  def default_items_at(step, round_index):
    indices = loaders.batch_indices(len(stream), config.train.batch_size,
                                    seed=config.seed + 1000 * round_index, step=step)
    return [stream[i] for i in indices.tolist()]

  common = dict(tokenizer=tokenizer, mesh=mesh, bucket=d.bucket,
                max_prompt_length=d.max_prompt_length)
  if is_rl:
    r = config.rollout
    make_batch = functools.partial(
        make_batch, items_at=hooks.items_at(default_items_at),
        reward_fn=hooks.reward_fn(functools.partial(algorithms.verifier_rewards, fmt=d.fmt)),
        score_fn=lambda p, ref, t, a: score_fn(p, ref, tokens=t, attention_mask=a),
        group_size=r.num_generations, advantage=config.algo.advantage,
        scale_rewards=config.algo.scale_rewards, max_new_tokens=r.max_new_tokens,
        temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
        dynamic_sampling=config.algo.dynamic_sampling,
        max_resample_rounds=config.algo.max_resample_rounds,
        overlong_buffer=config.algo.overlong_buffer,
        overlong_penalty=config.algo.overlong_penalty, **common)
  elif config.algorithm == "dpo":
    make_batch = functools.partial(make_batch, items_at=default_items_at,
                                   ref_logps_fn=ref_logps_fn,
                                   max_completion_length=d.max_completion_length, **common)
  else:
    make_batch = functools.partial(make_batch, items_at=default_items_at,
                                   max_completion_length=d.max_completion_length, **common)
  update_kwargs = {} if is_rm else {"chunk_size": chunk}
  step_fn = None  # jitted on the first batch, when the batch layout is known

  def run_eval(step):
    eval_rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
    result = evaluate(config, state, records, tokenizer, hooks, eval_rng, ref_logps_fn,
                      rm_score_fn)
    writer.write(step, result, prefix="eval")
    return result

  def save(step, force):
    checkpoint.save(manager, step, _saveable(state), force=force,
                    extra={"step": step, "recipe": hooks.state_dict(),
                           "config": config.to_json(), checkpoint.FINGERPRINT_KEY: fingerprint})

  # ===== Loop =================================================================================
  if start_step == 0:
    save(0, force=True)  # a crash after the warm start resumes here instead of redoing it
  first_eval = run_eval(start_step) if start_step == 0 else {}
  pending = None
  for step in range(start_step, total_steps):
    step_rng = jax.random.fold_in(rng, step)
    batch, host_metrics, batch_records = make_batch(state, step, step_rng)
    hooks.after_batch(batch_records, step)
    if step_fn is None:
      batch_sharding = jax.tree.map(lambda x: sharding.batch_sharding(mesh, x.ndim), batch)
      if config.algo.num_minibatches > 1:
        batch_sharding = None  # minibatch slices keep the layout of the batch they come from
      step_fn = jax.jit(
          functools.partial(update_fn, loss_fn=loss_fn_for(config), **update_kwargs),
          in_shardings=(state_sharding, batch_sharding, sharding.replicated(mesh)),
          out_shardings=(state_sharding, sharding.replicated(mesh)),
          donate_argnames=("state",))
    for _ in range(config.algo.num_iterations):
      for minibatch in algorithms.minibatches(batch, config.algo.num_minibatches):
        with jax.transfer_guard("disallow"):
          state, step_metrics = step_fn(state, minibatch, step_rng)
    if pending is not None:  # fetch step t-1 after dispatching step t
      writer.write(pending[0], {**metrics_lib.fetch(pending[1]), **pending[2]})
    pending = (step + 1, step_metrics, host_metrics)
    if (step + 1) % config.train.eval_every == 0 and step + 1 < total_steps:
      run_eval(step + 1)
    save(step + 1, force=step + 1 == total_steps)
  if pending is not None:
    writer.write(pending[0], {**metrics_lib.fetch(pending[1]), **pending[2]})
  checkpoint.wait(manager)

  # ===== Final evaluation and export ==========================================================
  final_eval = run_eval(total_steps)
  if config.train.export_hf and not is_rm:
    host_params = sharding.gather(state.params)  # a collective: every process takes part
    if jax.process_index() == 0:
      hf.save_pretrained(nnx.merge(state.graphdef, host_params), os.path.join(workdir, "hf"))
      tokenizer.save_pretrained(os.path.join(workdir, "hf"))
  summary = {**{f"initial/{k}": v for k, v in first_eval.items()},
             **{f"final/{k}": v for k, v in final_eval.items()}, "steps": total_steps}
  writer.summary(summary)
  writer.close()
  manager.close()
  return summary
