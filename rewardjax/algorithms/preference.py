"""Preference optimisation, DPO family: (prompt, chosen, rejected) pairs -> one update.

Stages: pair records (the built-in task's pairs, or a file's) -> `pair_arrays` (the stacked
(prompt|chosen; prompt|rejected) layout of `types.PreferenceBatch`) -> the objective's `prepare`
stage if it has one (extra rows or fields computed with the reference, e.g. KTO's KL rows) ->
reference log-probs -> the update. With a recipe that trains in rounds (`recipes.self_rewarding`)
the pair records are regenerated and judged at every round's start (`rewardjax.rounds`). The
objective is chosen by `loss_type` from `OBJECTIVES` (`algorithms/preference_objectives.py`):
every TRL `DPOTrainer` loss type and the seed papers' preference objectives.
"""

import functools
from collections.abc import Iterable, Sequence

import jax
import numpy as np
from flax import nnx

from rewardjax import losses, recipes, rounds, sharding, update
from rewardjax.algorithms import base, sft
from rewardjax.algorithms.preference_objectives import DEFAULTS, OBJECTIVES
from rewardjax.data import preference_data, tasks
from rewardjax.evaluation import reward_eval, scorers
from rewardjax.models import transformer
from rewardjax.types import PreferenceBatch


def pair_arrays(tokenizer, prompts: Sequence[str], first: Sequence[str], second: Sequence[str],
                *, data: base.DataOptions):
  """(tokens [2B, S+T], attention_mask [2B, S+T], loss_mask [2B, S+T-1]) of the rows
  (prompt_b | first_b) for b < B, then (prompt_b | second_b) (`sft.sequence_arrays` layout).
  """
  arrays = sft.sequence_arrays(tokenizer, list(prompts) * 2, list(first) + list(second), data)
  return arrays["tokens"], arrays["attention_mask"], arrays["loss_mask"].astype(np.int32)


def paired_prompt_length(tokens, attention_mask, loss_mask, pairs: int) -> int:
  """S_p when host rows b and b + pairs (b < pairs) are the chosen and rejected rows of one
  prompt that fills columns [0, S_p) of both (identical tokens and mask) and every completion
  starts at column S_p; else 0. With S_p the forward passes compute each prompt once per pair
  (`update.all_token_logprobs`): the 16-token prompts of `benchmarks/dpo_step.py`'s 48-token
  completions are 12% of its arithmetic.
  """
  tokens, attention_mask, loss_mask = map(np.asarray, (tokens, attention_mask, loss_mask))
  if tokens.shape[0] != 2 * pairs or not loss_mask.any():
    return 0
  start = int(np.argmax(loss_mask.any(axis=0))) + 1   # first column holding a completion token
  first = np.where(loss_mask.any(axis=1), np.argmax(loss_mask, axis=1) + 1, start)
  same = all((x[:pairs, :start] == x[pairs:, :start]).all() for x in (tokens, attention_mask))
  aligned = (first == start).all() and attention_mask[:, start - 1].all()
  return start if start > 1 and same and aligned else 0


def record_fields(items: Sequence[dict], names: Iterable[str]) -> dict:
  """Per-pair numeric fields of the records, one entry per row ([2B]: the pair's value on its
  chosen and its rejected row), so they split over the mesh like the rows (only those present).
  """
  return {n: np.tile(np.array([float(it[n]) for it in items], np.float32), 2) for n in names
          if items and all(n in it for it in items)}


def preference_batch(state, step: int, rng: jax.Array, *, setup: base.Setup, stream,
                     obj: base.Objective, options, ref_fn):
  """The `PreferenceBatch` of step `step` (on the mesh) and host metrics ({})."""
  items = stream.prompts(step)
  tokens, attention_mask, loss_mask = pair_arrays(
      setup.tokenizer, [it["prompt"] for it in items], [it["chosen"] for it in items],
      [it["rejected"] for it in items], data=setup.data)
  extra = record_fields(items, tuple(obj.needs))
  arrays, extra = base.place(
      obj, {"tokens": tokens, "attention_mask": attention_mask, "loss_mask": loss_mask}, extra,
      items, setup=setup, options=options, rng=jax.random.fold_in(rng, step))
  rows = (arrays["tokens"], arrays["attention_mask"], arrays["loss_mask"])
  # Rows a `prepare` stage rebuilt are not checked here: they keep the unshared passes. The B
  # prompt rows must split over the mesh's batch shards too, else every shard would compute all.
  paired = 0 if obj.prepare or len(items) % base.batch_shards(setup) else paired_prompt_length(
      tokens, attention_mask, loss_mask, len(items))
  if "ref_token_logps" in obj.needs:  # per-token reference log-probs of every row (T-REG)
    extra["ref_token_logps"] = ref_fn(state, *rows, per_token=True)
    ref_logps = extra["ref_token_logps"].sum(axis=1)
  else:
    ref_logps = ref_fn(state, *rows, paired_prompt=paired)
  base.check_fields(obj, extra, options.loss_type)
  return PreferenceBatch(ref_logps=ref_logps, extra=extra, paired_prompt=paired, **arrays), {}


def make_step(options, *, chunk_size: int = 1024):
  """The pure DPO-family update `(state, PreferenceBatch, rng) -> (state, metrics)`.

  The one place the preference step is wired (trainer, benchmarks and tests call it).
  """
  obj = base.objective(OBJECTIVES, options["loss_type"], "dpo")
  return functools.partial(update.update, loss=functools.partial(base.bind(obj, options),
                                                                 chunk_size=chunk_size))


def reference_scorer(chunk_size: int):
  """`ref_fn(state, tokens, attention_mask, loss_mask, per_token=False, paired_prompt=0)` ->
  summed reference log-probs [R], or masked per-token ones [R, L-1] with `per_token` (zeros
  without a reference: reference-free objectives never read them); `paired_prompt`: see
  `update.all_token_logprobs`."""
  @functools.partial(jax.jit, static_argnames=("graphdef", "per_token", "paired_prompt"))
  def score(params, tokens, attention_mask, loss_mask, *, graphdef, per_token, paired_prompt):
    logps_RxL = update.all_token_logprobs(nnx.merge(graphdef, params), tokens, attention_mask,
                                          chunk_size=chunk_size,
                                          paired_prompt=paired_prompt) * loss_mask
    return jax.lax.stop_gradient(logps_RxL if per_token else logps_RxL.sum(axis=1))

  def ref_fn(state, tokens, attention_mask, loss_mask, params=None, per_token=False,
             paired_prompt=0):
    params = state.reference_params() if params is None else params
    if params is None:
      zeros = np.zeros(loss_mask.shape if per_token else tokens.shape[:1], np.float32)
      mesh = getattr(tokens.sharding, "mesh", None)
      # Placed like the rows: the jitted step's in_shardings expect batch-sharded ref_logps.
      return jax.device_put(zeros, None if mesh is None else
                            sharding.batch_sharding(mesh, zeros.ndim))
    return score(params, tokens, attention_mask, loss_mask, graphdef=state.graphdef,
                 per_token=per_token, paired_prompt=paired_prompt)

  return ref_fn


def validate(options, sizes: base.RunSizes) -> None:
  """Checks the DPO-family block against the run's sizes; one `base.ConfigError` listing every
  problem (the objective and its options' names and sizes, the rows per update (pairs x the
  objective's rows per pair) split over the mesh's shards)."""
  p = base.objective_problems(OBJECTIVES, options["loss_type"], "dpo")
  p += base.at_least("algo.pairs_per_question", options["pairs_per_question"], 1)
  p += base.at_least("algo.responses_per_question", options["responses_per_question"], 2,
                     "CREAM ranks and DNO plays at least a chosen and a rejected response")
  p += base.choice("algo.treg_token_reduction", options["treg_token_reduction"],
                   losses.TREG_TOKEN_REDUCTIONS)
  labels = len(preference_data.CLASS_LABELS) - 1
  if not 1 <= options["sspo_max_removed"] <= labels:
    p.append(base.problem("algo.sspo_max_removed", options["sspo_max_removed"],
                          f"SPO's degree classes 0..K need 1 <= K <= {labels}, e.g. 2"))
  eps, loss_type = options["label_smoothing"], options["loss_type"]
  # `losses.dpo_loss`'s ranges of eps.
  ok, valid = {"robust": (0.0 <= eps < 0.5, "[0, 0.5)"),
               "exo_pair": (0.0 < eps < 1.0, "(0, 1)")}.get(loss_type, (0.0 <= eps <= 1.0,
                                                                       "[0, 1]"))
  if not ok:
    p.append(base.problem("algo.label_smoothing", eps,
                          f"must be in {valid} for loss_type={loss_type!r}, e.g. 0.1"))
  if loss_type == "kto" and sizes.batch_size < 2:
    p.append(base.problem("train.batch_size", sizes.batch_size,
                          "loss_type='kto' puts each completion under another pair's prompt "
                          "(its KL rows): use >= 2 pairs per step"))
  if loss_type in OBJECTIVES:
    p += base.update_problems(options, sizes, OBJECTIVES[loss_type].rows_per_record)
  base.raise_problems(p, "dpo")


def build(options, setup: base.Setup) -> base.Program:
  """The DPO-family program (see `base.Program`)."""
  validate(options, base.sizes_of(setup))
  obj = base.objective(OBJECTIVES, options.loss_type, "dpo")
  task = bool(setup.problems.get("train"))
  round_options = getattr(setup.recipe, "rounds", None)   # benchmarks build without a recipe
  program_rounds = None
  if round_options is not None:
    # Iterated self-rewarding: the pairs come from the recipe's rounds (generated and judged
    # from the current model at each round's start), not from fixed records.
    stream = setup.recipe.source
    program_rounds = base.Rounds(round_options.steps_per_round, functools.partial(
        rounds.begin_round, ctx=rounds.RoundContext(setup, stream, setup.recipe.rewards,
                                                    round_options)))
  else:
    # Every DPO-family objective trains on the task's pairs (or the file's); objectives that
    # need more rows or fields add them in their `prepare` stage.
    train = (tasks.preference_pairs(setup.problems["train"], fmt=setup.data.fmt,
                                    seed=setup.seed, pairs_per_question=options.pairs_per_question)
             if task else setup.records["train"])
    stream = recipes.RecordStream(train, setup.batch_size, setup.seed)
  heldout = (tasks.preference_pairs(setup.problems["heldout"], fmt=setup.data.fmt,
                                    seed=setup.seed + 1) if task else setup.records["heldout"])
  ref_fn = reference_scorer(setup.chunk_size)
  problems = list(setup.problems.get("heldout") or [])

  # The RewardBench-style benchmark and best-of-N on the implicit reward (config `reward_eval`).
  reward_evaluation = reward_eval.program_evaluation(
      setup, lambda state: scorers.implicit_reward(state.graphdef, state.params,
                                                   state.reference_params(), setup,
                                                   beta=options.beta),
      problems)

  def evaluate(state, rng):
    out = reward_evaluation(state, rng)
    if heldout:
      tokens, attention_mask, loss_mask = sharding.feed(pair_arrays(
          setup.tokenizer, [p["prompt"] for p in heldout], [p["chosen"] for p in heldout],
          [p["rejected"] for p in heldout], data=setup.data))
      policy = sharding.gather(ref_fn(state, tokens, attention_mask, loss_mask,
                                      params=state.params))
      ref = sharding.gather(ref_fn(state, tokens, attention_mask, loss_mask))
      n = len(heldout)
      margin = (policy[:n] - ref[:n]) - (policy[n:] - ref[n:])
      # Implicit reward margin beta * (log-ratio_w - log-ratio_l); reference-free objectives
      # (no reference) use the policy's log-prob margin.
      margin = margin * (options.beta if state.ref_params is not None else 1.0)
      out.update(preference_accuracy=float(np.mean(margin > 0)),
                 implicit_reward_margin=float(np.mean(margin)))
    return {**out, **base.task_accuracy(setup, problems, state, rng)}

  return base.Program(
      model_fn=lambda rngs: transformer.Transformer(setup.model, rngs=rngs),
      init_params=base.language_model_params,
      make_batch=functools.partial(preference_batch, setup=setup, stream=stream, obj=obj,
                                   options=options, ref_fn=ref_fn),
      step=make_step(options, chunk_size=setup.chunk_size), evaluate=evaluate,
      with_ref=obj.uses_ref, rows_per_update=obj.rows_per_record * setup.batch_size,
      rounds=program_rounds)


ALGORITHM = base.Algorithm(name="dpo", defaults=DEFAULTS, objectives=OBJECTIVES,
                           record_kind="preference", build=build, validate=validate)
