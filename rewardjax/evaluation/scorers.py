"""Reward functions as scorers: how a trained model scores candidate responses for evaluation.

A scorer is `score(prompts, lists, references) -> scores`: for prompt i, `lists[i]` are its
candidate responses and `scores[i]` a [len(lists[i])] array (higher = better); `references[i]`
is a gold response, read only by scorers that compare against one (POLAR). Every evaluation of
`rewardjax.evaluation.reward_eval` (the RewardBench-style benchmark, best-of-N) takes a scorer,
so one protocol ranks a reward model's head, a DPO policy's implicit reward and a language
model's endogenous reward alike.

Rows are scored in fixed chunks of `CHUNK` rows (the last one padded) with bucketed lengths, so
repeated evaluations reuse a few compiled programs.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rewardjax import sharding
from rewardjax.algorithms import reward_model_records as rmr
from rewardjax.rewards import logprob, sources

Scorer = Callable[[Sequence[str], Sequence[Sequence[str]], Sequence[str]], list[np.ndarray]]
CHUNK = 256


def _split(flat: np.ndarray, lists: Sequence[Sequence[str]]) -> list[np.ndarray]:
  ends = np.cumsum([len(x) for x in lists])
  return [np.asarray(s, np.float64) for s in np.split(np.asarray(flat), ends[:-1])]


def _chunked(score_rows: Callable, *columns: Sequence[str]) -> np.ndarray:
  """`score_rows(*columns) -> [n]` over chunks of CHUNK rows (the last one padded with copies
  of its first row); `columns` are equal-length lists (prompts, responses, ...)."""
  out = []
  for start in range(0, len(columns[0]), CHUNK):
    chunk = [list(c[start:start + CHUNK]) for c in columns]
    real = len(chunk[0])
    chunk = [c + [c[0]] * (CHUNK - real) for c in chunk]
    out.append(np.asarray(score_rows(*chunk))[:real])
  return np.concatenate(out) if out else np.zeros((0,))


def pointwise(score_rows: Callable) -> Scorer:
  """A scorer from `score_rows(prompts, responses) -> [n]` that scores each response alone."""

  def score(prompts, lists, references):
    del references
    flat_p = [p for p, xs in zip(prompts, lists) for _ in xs]
    flat_r = [x for xs in lists for x in xs]
    return _split(_chunked(score_rows, flat_p, flat_r), lists)

  return score


_head_scores = jax.jit(lambda graphdef, params, tokens, attention_mask: nnx.merge(
    graphdef, params)(tokens, attention_mask=attention_mask), static_argnums=0)


def reward_model(graphdef, params, setup, *, records: str = "pairs") -> Scorer:
  """The scalar head of a reward model trained on `records` (its row layout).

  "polar" rows pack the reference before the candidate (POLAR, arXiv 2507.05197 §3.4: the
  gold response is the reference); "packed" rows put all of a prompt's candidates in one row
  and read each at its last token (YOJO, arXiv 2604.10966); every other kind scores
  `prompt | response` rows one by one.
  """
  if records == "packed":
    return _yojo(graphdef, params, setup)

  def rows(prompts, responses, references=None):
    if references is not None:
      prompts = [rmr.polar_prompt(p, ref) for p, ref in zip(prompts, references)]
    arrays = rmr.response_rows(setup, prompts, responses)
    return sharding.gather(_head_scores(graphdef, params, *sharding.feed(
        (arrays["tokens"], arrays["attention_mask"]))))

  if records != "polar":
    return pointwise(rows)

  def score(prompts, lists, references):
    flat_p = [p for p, xs in zip(prompts, lists) for _ in xs]
    flat_ref = [ref for ref, xs in zip(references, lists) for _ in xs]
    return _split(_chunked(rows, flat_p, [x for xs in lists for x in xs], flat_ref), lists)

  return score


_position_scores = jax.jit(lambda graphdef, params, tokens, attention_mask, positions: (
    lambda model: model.head(jnp.take_along_axis(
        model.backbone.hidden_states(tokens, attention_mask=attention_mask)[0],
        positions[:, :, None], axis=1)))(nnx.merge(graphdef, params)), static_argnums=0)


def _yojo(graphdef, params, setup) -> Scorer:
  """YOJO: a prompt's candidates packed in one row, each read at its last token; the row in
  its given order and reversed, the two scores averaged (training shows both orders)."""

  def rows(prompts, lists):
    # One batch of packed rows for lists of one length K (rows 2i: order, 2i + 1: reversed).
    items = [dict(prompt=p, responses=list(xs), scores=[0.0] * len(xs))
             for p, xs in zip(prompts, lists)]
    arrays, extra = rmr.packed_arrays(items, setup=setup)
    s_RxK = np.asarray(sharding.gather(_position_scores(
        graphdef, params, *sharding.feed((arrays["tokens"], arrays["attention_mask"],
                                          extra["end_positions"])))))
    return (s_RxK[0::2] + s_RxK[1::2, ::-1]) / 2.0

  def score(prompts, lists, references):
    del references
    out = [None] * len(lists)
    for k in sorted({len(xs) for xs in lists}):  # packed rows need one K per batch
      index = [i for i, xs in enumerate(lists) if len(xs) == k]
      for start in range(0, len(index), CHUNK // 2):
        chunk = index[start:start + CHUNK // 2]
        padded = chunk + [chunk[0]] * (CHUNK // 2 - len(chunk))  # one shape per K
        scores_NxK = rows([prompts[i] for i in padded], [lists[i] for i in padded])
        for i, s in zip(chunk, scores_NxK):
          out[i] = np.asarray(s, np.float64)
    return out

  return score


def _logps(graphdef, params, tokens, attention, completion_length, alpha=1.0):
  logps, first_value = sources.completion_logps(
      graphdef, params, *sharding.feed((tokens, attention)), completion_length=completion_length,
      alpha=alpha)
  return np.asarray(sharding.gather(logps)), np.asarray(sharding.gather(first_value))


def implicit_reward(graphdef, params, ref_params, setup, *, beta: float) -> Scorer:
  """DPO's implicit reward β [Σ_t log π_θ(y_t|x, y<t) − Σ_t log π_ref(y_t|x, y<t)] (EOS included;
  RewardBench's DPO scoring, arXiv 2403.13787 §4; Rafailov et al., arXiv 2305.18290 §5).
  Without a reference (reference-free objectives) RewardBench's "avg": the mean token log-prob.
  """

  def rows(prompts, responses):
    tokens, attention, mask = rmr.prompt_completion_arrays(setup, prompts, responses)
    policy, _ = _logps(graphdef, params, tokens, attention, mask.shape[1])
    if ref_params is None:
      return (policy * mask).sum(1) / np.maximum(mask.sum(1), 1)
    ref, _ = _logps(graphdef, ref_params, tokens, attention, mask.shape[1])
    return beta * ((policy - ref) * mask).sum(1)

  return pointwise(rows)


def endogenous(graphdef, params, setup, *, alpha: float = 1.0) -> Scorer:
  """The endogenous reward α Σ_t log π_α(y_t|s_t) + V(s_1) of a language model, training-free
  (Li et al., "Generalist Reward Models: Found Inside LLMs", arXiv 2506.23235 §3, Eq. 12)."""

  def rows(prompts, responses):
    tokens, attention, mask = rmr.prompt_completion_arrays(setup, prompts, responses)
    logps, first_value = _logps(graphdef, params, tokens, attention, mask.shape[1], alpha)
    return np.asarray(logprob.endogenous_reward(jnp.asarray(logps), jnp.asarray(mask),
                                                jnp.asarray(first_value), alpha=alpha))

  return pointwise(rows)
