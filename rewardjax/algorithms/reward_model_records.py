"""The records a reward model trains on (`RECORDS`): how the built-in task makes each kind and
how a kind becomes token rows; the objectives that read them are in
`reward_model_objectives.py`. Row layouts, R = rows of the batch, B = records per step:

  pair kinds     R = 2B: chosen rows [0, B), rejected rows [B, 2B) (`_pair_arrays`)
  "ranked"       R = B*K: the K responses of record b are rows [bK, (b+1)K)
  "packed"       R = 2B: record b's K responses packed in one row, in its order (row 2b) and
                 reversed (row 2b+1) (YOJO)
  "polar"        R = 2B: (reference | positive) rows, then (reference | negative) rows
  "user_pairs"   R = 2B(1 + C): target rows, then each record's C context pairs (VPL)

Every `extra` field has one entry per row (leading dim R, like the token arrays), because the
batch is split over the mesh by rows; per-pair fields are stored on both rows of the pair and
read from the chosen half.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewardjax import losses
from rewardjax.algorithms import process_reward_model as prm
from rewardjax.algorithms import vpl
from rewardjax.data import reward_data, tasks, tokenizers
from rewardjax.models import heads

# YOJO joins the K responses of a packed row with this text (the paper registers a special
# `<|resp_sep|>` token; the char tokenizer has one token per character, so any unused one works).
YOJO_SEPARATOR = "|"


def prompt_completion_arrays(setup, prompts: Sequence[str], completions: Sequence[str]):
  """(tokens [R, S + T], attention_mask [R, S + T], completion_mask [R, T]) of the rows
  (prompt_i | completion_i): prompts left-padded to S, completions right-padded to T with EOS
  appended, the layout of a rollout (the completion is the last T columns)."""
  d = setup.data
  prompt_tokens, prompt_mask = tokenizers.encode_prompts(
      setup.tokenizer, list(prompts), bucket=d.bucket, max_length=d.max_prompt_length)
  completion_tokens, completion_mask = tokenizers.encode_completions(
      setup.tokenizer, list(completions), bucket=d.bucket, max_length=d.max_completion_length)
  return (np.concatenate([prompt_tokens, completion_tokens], axis=1),
          np.concatenate([prompt_mask, completion_mask], axis=1), completion_mask)


def response_rows(setup, prompts: Sequence[str], completions: Sequence[str]) -> dict:
  """Token arrays of the rows (prompt_i | completion_i) (`prompt_completion_arrays`), as
  `preference.pair_arrays` lays them out; loss_mask[j] = 1 where token j+1 is a completion
  token."""
  tokens, attention_mask, completion_mask = prompt_completion_arrays(setup, prompts, completions)
  target_mask = np.zeros_like(attention_mask)
  target_mask[:, tokens.shape[1] - completion_mask.shape[1]:] = completion_mask
  return {"tokens": tokens, "attention_mask": attention_mask,
          "loss_mask": target_mask[:, 1:].astype(np.int32)}


# Per-pair record fields copied to both rows of the pair.
PAIR_FIELDS = ("margin", "is_tie", "preference_strength")


def _pair_arrays(items, *, setup):
  """Chosen rows then rejected rows (a record's "rejected_prompt", if any, is the rejected row's
  prompt: cross-prompt pairs); extra: PAIR_FIELDS the records have, and "labels" (chosen_label
  then rejected_label), one entry per row."""
  prompts = [it["prompt"] for it in items]
  rejected_prompts = [it.get("rejected_prompt", it["prompt"]) for it in items]
  arrays = response_rows(setup, prompts + rejected_prompts,
                 [it["chosen"] for it in items] + [it["rejected"] for it in items])

  def has(*names):
    return bool(items) and all(n in it for it in items for n in names)

  extra = {n: np.tile(np.array([float(it[n]) for it in items], np.float32), 2)
           for n in PAIR_FIELDS if has(n)}
  if has("chosen_label", "rejected_label"):
    extra["labels"] = np.array([float(it["chosen_label"]) for it in items]
                               + [float(it["rejected_label"]) for it in items], np.float32)
  return arrays, extra


def scalar_model(config, options, *, rngs):
  """The reward model: the backbone and a bias-free scalar head on the last token, as
  transformers' *ForSequenceClassification score (the export's format)."""
  del options
  return heads.ScalarModel(config, rngs=rngs, bias=False)


@dataclasses.dataclass(frozen=True)
class Records:
  """One kind of reward-model records.

  builtin: `builtin(problems, *, fmt, seed, options) -> records` from the built-in task.
  arrays: `arrays(items, *, setup) -> (token arrays dict, extra dict)` on the host; every array
    has leading dim R = `rows(len(items), options)`.
  rows: `rows(batch_size, options) -> rows per update`.
  heldout_arrays: `heldout_arrays(pairs, *, setup) -> (arrays, extra)`, the rows (chosen rows,
    then rejected rows) in which a model trained on this kind scores held-out pairs
    `{"prompt", "chosen", "rejected"}`; plain pair rows unless the kind packs more (POLAR's
    reference).
  evaluate: `evaluate(setup, heldout_problems, state, rng, *, options) -> dict`, the kind's
    own held-out metrics (None: pair accuracy on `heldout_arrays` rows).
  pretrain: `pretrain(problems, *, seed) -> records` of this kind made without labels, for the
    first `pretrain_steps` steps (POLAR's policy-discrimination triplets), or None.
  model_fn: `model_fn(model_config, options, *, rngs)`, the NNX module trained on this kind;
    it has a `backbone` (the language model) and its other params are fresh.
  no_export: why the model has no Hugging Face export ("" = a scalar-head model, exported as
    *ForSequenceClassification, and scored by `evaluation.scorers.reward_model`).
  """
  builtin: Callable
  arrays: Callable
  rows: Callable
  heldout_arrays: Callable = _pair_arrays
  evaluate: Callable | None = None
  pretrain: Callable | None = None
  model_fn: Callable = scalar_model
  no_export: str = ""


def _pair_rows(batch_size, options):
  del options
  return 2 * batch_size


def _dense_ranks(scores: Sequence[float]) -> list[int]:
  """Rank of each score, 0 = best; equal scores share a rank (the number of distinct better
  scores)."""
  distinct = sorted(set(scores), reverse=True)
  return [distinct.index(s) for s in scores]


def _pair_records(problems, *, fmt, seed, options):
  return tasks.preference_pairs(problems, fmt=fmt, seed=seed,
                                pairs_per_question=options["pairs_per_question"])


def _rated_records(problems, *, fmt, seed, options):
  return tasks.rated_preference_pairs(problems, fmt=fmt, seed=seed,
                                      pairs_per_question=options["pairs_per_question"])


def _noisy_records(problems, *, fmt, seed, options):
  """`tasks.noisy_preference_pairs` with "preference_strength" = the ensemble mean μ̂ of the
  scorer margins (and "preference_std" = σ̂; `losses.ensemble_preference_strength`)."""
  pairs = tasks.noisy_preference_pairs(
      problems, fmt=fmt, seed=seed, pairs_per_question=options["pairs_per_question"],
      label_noise=options["label_noise"], num_scorers=options["ensemble_size"],
      scorer_error=options["ensemble_error"])
  margins_MxN = jnp.asarray(np.array([p["scorer_margins"] for p in pairs], np.float32).T)
  mu_N, sigma_N = jax.device_get(losses.ensemble_preference_strength(margins_MxN))
  return [dict(p, preference_strength=float(mu), preference_std=float(sigma))
          for p, mu, sigma in zip(pairs, mu_N, sigma_N)]


def _win_tie_records(problems, *, fmt, seed, options):
  del fmt  # "short" answers: the correct forms are numbers
  return reward_data.tie_pairs(problems, seed=seed, tie_fraction=options["tie_fraction"],
                               wrong_tie_fraction=options["wrong_tie_fraction"],
                               pairs_per_question=options["pairs_per_question"])


def _tree_records(problems, *, fmt, seed, options):
  del fmt
  return reward_data.tree_pairs(problems, seed=seed,
                                pairs_per_question=options["pairs_per_question"])


def _chain_records(problems, *, fmt, seed, options):
  del fmt
  return reward_data.chain_pairs(problems, seed=seed,
                                 pairs_per_question=options["pairs_per_question"])


def _labelled_records(problems, *, fmt, seed, options):
  """Pairs whose rows carry absolute labels: 1 for the correct response, 0 for the wrong one."""
  return [dict(p, chosen_label=1.0, rejected_label=0.0)
          for p in _pair_records(problems, fmt=fmt, seed=seed, options=options)]


def _ranked_records(problems, *, fmt, seed, options):
  return tasks.ranked_responses(problems, k=options["num_responses"], fmt=fmt, seed=seed)


def _ranked_arrays(items, *, setup):
  """Rows (prompt_b | response_bk), record-major; extra "ranks" [B*K] (0 = best, from
  "scores"; equal scores tie)."""
  arrays = response_rows(setup, [it["prompt"] for it in items for _ in it["responses"]],
                 [r for it in items for r in it["responses"]])
  ranks = [rank for it in items for rank in _dense_ranks(it["scores"])]
  return arrays, {"ranks": np.array(ranks, np.float32)}


def _ranked_rows(batch_size, options):
  return batch_size * options["num_responses"]


def _packed_records(problems, *, fmt, seed, options):
  """Ranked lists in a random order per record (the best response is never always first: a
  causal model could learn the position instead of the content: YOJO's position bias, arXiv
  2604.10966)."""
  lists = _ranked_records(problems, fmt=fmt, seed=seed, options=options)
  out = []
  for i, it in enumerate(lists):
    order = np.random.default_rng([seed, i, 4]).permutation(len(it["responses"])).tolist()
    out.append(dict(it, responses=[it["responses"][j] for j in order],
                    scores=[it["scores"][j] for j in order]))
  return out


def packed_arrays(items, *, setup):
  """YOJO rows: prompt | r_1 SEP r_2 ... SEP r_K EOS, two rows per record (its order, then
  reversed, so each response is read at two positions).

  Responses are tokenized one by one (at most max_completion_length tokens each) and joined as
  ids, so end positions are exact for any tokenizer. extra: "end_positions" [R, K] (the index in
  the row of response k's last token; the EOS for the last response), "best_index" [R] (first
  response of best score), "response_ranks" [R, K].
  """
  tok, d = setup.tokenizer, setup.data
  orders = []  # (responses, scores) of each row
  for it in items:
    orders += [(it["responses"], it["scores"]), (it["responses"][::-1], it["scores"][::-1])]
  prompt_tokens, prompt_mask = tokenizers.encode_prompts(
      tok, [it["prompt"] for it in items for _ in range(2)], bucket=d.bucket,
      max_length=d.max_prompt_length)
  separator = tok(YOJO_SEPARATOR, add_special_tokens=False)["input_ids"]
  completions, ends = [], []
  for responses, _ in orders:
    ids, row_ends = [], []
    for k, response_ids in enumerate(tok(list(responses), add_special_tokens=False)["input_ids"]):
      ids += (separator if k else []) + response_ids[:d.max_completion_length]
      row_ends.append(len(ids) - 1)
    ids.append(tok.eos_token_id)
    row_ends[-1] = len(ids) - 1
    completions.append(ids)
    ends.append(row_ends)
  length = tokenizers.bucketed_length(max(len(c) for c in completions), d.bucket)
  completion_tokens = np.full((len(completions), length), tokenizers.pad_token_id(tok), np.int32)
  completion_mask = np.zeros((len(completions), length), np.int32)
  for r, ids in enumerate(completions):
    completion_tokens[r, :len(ids)] = ids
    completion_mask[r, :len(ids)] = 1
  target_mask = np.concatenate([np.zeros_like(prompt_mask), completion_mask], axis=1)
  arrays = {"tokens": np.concatenate([prompt_tokens, completion_tokens], axis=1),
            "attention_mask": np.concatenate([prompt_mask, completion_mask], axis=1),
            "loss_mask": target_mask[:, 1:].astype(np.int32)}
  scores = [s for _, s in orders]
  return arrays, {
      "end_positions": prompt_tokens.shape[1] + np.array(ends, np.int32),
      "best_index": np.array([int(np.argmax(s)) for s in scores], np.int32),
      "response_ranks": np.array([_dense_ranks(s) for s in scores], np.float32)}


def polar_prompt(prompt: str, reference: str) -> str:
  """POLAR's packing of the reference before the candidate (arXiv 2507.05197): prompt +
  reference, a newline, the prompt again; the candidate is the completion and its reward is
  read at its EOS."""
  return f"{prompt}{reference}\n{prompt}"


def _polar_records(problems, *, fmt, seed, options):
  del options
  return tasks.polar_triplets(problems, fmt=fmt, seed=seed)


def _polar_arrays(items, *, setup):
  prompts = [polar_prompt(it["prompt"], it["reference"]) for it in items] * 2
  return response_rows(setup, prompts, [it["positive"] for it in items]
               + [it["negative"] for it in items]), {}


def _polar_heldout_arrays(pairs, *, setup):
  """Held-out pairs scored against the correct response as the reference (POLAR's RL-time use:
  the reference is a high-quality response)."""
  return _polar_arrays([dict(p, reference=p["chosen"], positive=p["chosen"],
                             negative=p["rejected"]) for p in pairs], setup=setup)


RECORDS = {
    "pairs": Records(_pair_records, _pair_arrays, _pair_rows),
    "rated_pairs": Records(_rated_records, _pair_arrays, _pair_rows),
    "noisy_pairs": Records(_noisy_records, _pair_arrays, _pair_rows),
    "win_tie_pairs": Records(_win_tie_records, _pair_arrays, _pair_rows),
    "labelled_pairs": Records(_labelled_records, _pair_arrays, _pair_rows),
    "ranked": Records(_ranked_records, _ranked_arrays, _ranked_rows),
    "packed": Records(_packed_records, packed_arrays, _pair_rows),
    "polar": Records(_polar_records, _polar_arrays, _pair_rows, _polar_heldout_arrays,
                     pretrain=reward_data.policy_triplets),
    "tree_pairs": Records(_tree_records, _pair_arrays, _pair_rows),
    "chain_pairs": Records(_chain_records, _pair_arrays, _pair_rows),
    "steps": Records(prm.step_records, prm.step_arrays, prm.step_rows,
                     evaluate=prm.evaluate),
    "user_pairs": Records(
        vpl.user_records, vpl.context_arrays, vpl.context_rows, model_fn=vpl.model_fn,
        evaluate=functools.partial(vpl.evaluate, with_context=True),
        no_export="a VPL reward depends on a user latent z through an MLP decoder, which no "
                  "transformers *ForSequenceClassification directory can hold"),
    "user_target_pairs": Records(vpl.user_records, vpl.target_arrays, vpl.target_rows,
                                 evaluate=functools.partial(vpl.evaluate, with_context=False)),
}
