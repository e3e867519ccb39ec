"""Training in rounds: regenerate -> judge -> pair -> train S steps -> next round.

Iterated self-rewarding papers improve a model on data it generates and judges itself. Round r
starts at step r * S (`base.Rounds`, run by the loop before that step's batch): `begin_round`
takes the round's fresh question split (`RoundSource.round_questions`, disjoint across rounds
as the papers' per-iteration prompt partitions), samples K responses per question from the
round's starting model (`rollout.num_generations`, `rollout.temperature`), scores them with
the judge (the config's `rewards` composition: the model itself through a judge prompt, a
trained reward model, or the verifier as an oracle), builds the round's pair records by the
paper's rule (`RULES`), and updates the state: the reference becomes the round's starting
model (`refresh_reference`), Adam's moments restart (`reset_optimizer`: each iteration of
these papers is a fresh DPO run). The preference algorithm then trains S steps on the round's
pairs (`RoundSource.prompts`). The round's records live in the source's `state_dict`, saved
with every checkpoint, so a run killed mid-round resumes bitwise without regenerating them.

  rule            pairs (chosen, rejected) per question                    paper
  self_rewarding  highest vs lowest judge score; equal scores discarded    arXiv 2401.10020 §2.3
  cream           as above, soft label C = (tau + 1) / 2 between the       arXiv 2410.12735 §3
                  current and the previous iterate's rankings
  temporal        two phases per iteration: anchored rejection (the worst  arXiv 2508.06026 §3
                  of M_0's samples if worse than M_i's), then future-
                  guided chosen (M_f trained on phase 1 may replace it);
                  M_{i+1} restarts from M_i
  dno             every large-margin pair among K samples + the gold       arXiv 2404.03715 Alg. 2
                  response (positive >= pos_min, gap >= margin, or
                  student_margin for a policy positive)

Online DPO (TRL `OnlineDPOTrainer`) is `self_rewarding` with one step per round and the
reference kept fixed. The verifier reads the task's labels only for the logged agreement
metrics (and when it is the judge); `round/*` metrics are logged at each round's first step.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rewardjax import losses, sharding, update
from rewardjax.data import loaders, tasks
from rewardjax.rewards import composition, verifiers
from rewardjax.types import subtree

RULES = ("self_rewarding", "cream", "temporal", "dno")
MAX_SHOWN = 3   # raw judge outputs quoted by the error of a round without a usable score


@dataclasses.dataclass(frozen=True)
class RoundOptions:
  """How rounds run (the self_rewarding recipe's `recipe_args`).

  rule: a name of `RULES`.
  steps_per_round: S, training steps per round (Temporal SR: per phase).
  prompts_per_round: P, questions sampled per round.
  refresh_reference: the reference becomes the round's starting model (all four papers); off
    for online DPO (TRL keeps the initial model).
  reset_optimizer: fresh Adam moments at each round.
  min_gap: a pair's judge scores must differ by more than this (0: only ties are discarded).
  dno_pos_min, dno_margin, dno_student_margin: DNO's large-margin filter, in judge units.
  dno_gold: DNO adds the task's correct answer as the teacher response (its GPT-4 output).
  temporal_iterations: Temporal SR iterations whose M_0 samples are drawn at the start (the
    paper runs 2: iter0 and iter1); the run has 2 * S steps per iteration.
  """
  rule: str = "self_rewarding"
  steps_per_round: int = 40
  prompts_per_round: int = 512
  refresh_reference: bool = True
  reset_optimizer: bool = True
  min_gap: float = 0.0
  dno_pos_min: float = 0.5
  dno_margin: float = 0.5
  dno_student_margin: float = 0.25
  dno_gold: bool = True
  temporal_iterations: int = 2

  def __post_init__(self):
    if self.rule not in RULES:
      raise ValueError(f"recipe_args.rule={self.rule!r}; valid: {RULES}")
    if self.steps_per_round < 1 or self.prompts_per_round < 1:
      raise ValueError("recipe_args.steps_per_round and prompts_per_round must be >= 1, got "
                       f"{self.steps_per_round}, {self.prompts_per_round}")


# ---- pair rules: pure functions of judge scores [P, K] -------------------------------------
def best_worst(scores_PxK: np.ndarray, min_gap: float = 0.0):
  """Self-Rewarding LM's pairs: chosen = highest score, rejected = lowest (first on ties).

  Non-finite scores (an unparsed verdict) never enter a pair. Returns (chosen [P] int,
  rejected [P] int, valid [P] bool): valid when both exist and s_chosen - s_rejected > min_gap.

  >>> best_worst(np.array([[0.2, 0.9, 0.1], [0.5, 0.5, np.nan]]))
  (array([1, 0]), array([2, 0]), array([ True, False]))
  """
  s = np.asarray(scores_PxK, np.float64)
  finite = np.isfinite(s)
  chosen = np.argmax(np.where(finite, s, -np.inf), axis=1)
  rejected = np.argmin(np.where(finite, s, np.inf), axis=1)
  rows = np.arange(s.shape[0])
  gap = s[rows, chosen] - s[rows, rejected]
  return chosen, rejected, finite.any(axis=1) & (np.nan_to_num(gap, nan=-1.0) > min_gap)


def cream_labels(current_PxK: np.ndarray, previous_PxK: np.ndarray) -> np.ndarray:
  """CREAM's consistency C = (Kendall tau + 1) / 2 per question, ordinal ranks
  (`losses.cream_consistency`); non-finite scores are left out of the ranking."""
  mask = np.isfinite(current_PxK) & np.isfinite(previous_PxK)
  c = losses.cream_consistency(jnp.asarray(np.nan_to_num(current_PxK), jnp.float32),
                               jnp.asarray(np.nan_to_num(previous_PxK), jnp.float32),
                               jnp.asarray(mask))
  return np.asarray(c, np.float64)


def temporal_anchored(current_PxK: np.ndarray, anchor_PxK: np.ndarray):
  """Temporal SR phase 1 (anchored rejection): chosen = M_i's best; rejected = M_0's worst if
  min(s_0) < min(s_i), else M_i's worst; kept if s_chosen > s_rejected.

  Returns (chosen [P] index into M_i's samples, rejected [P] index, rejected_is_anchor [P]
  bool, valid [P] bool, s_chosen [P], s_rejected [P]).

  >>> temporal_anchored(np.array([[0.9, 0.4]]), np.array([[0.1, 0.8]]))[:4]
  (array([0]), array([0]), array([ True]), array([ True]))
  """
  s_i = np.where(np.isfinite(current_PxK), current_PxK, np.nan)
  s_0 = np.where(np.isfinite(anchor_PxK), anchor_PxK, np.nan)
  rows = np.arange(s_i.shape[0])
  chosen = np.argmax(np.nan_to_num(s_i, nan=-np.inf), axis=1)
  own_worst = np.argmin(np.nan_to_num(s_i, nan=np.inf), axis=1)
  anchor_worst = np.argmin(np.nan_to_num(s_0, nan=np.inf), axis=1)
  anchored = s_0[rows, anchor_worst] < s_i[rows, own_worst]
  anchored = np.where(np.isnan(s_i[rows, own_worst]), np.isfinite(s_0[rows, anchor_worst]),
                      anchored)
  rejected = np.where(anchored, anchor_worst, own_worst)
  s_chosen = s_i[rows, chosen]
  s_rejected = np.where(anchored, s_0[rows, anchor_worst], s_i[rows, own_worst])
  valid = np.nan_to_num(s_chosen - s_rejected, nan=-1.0) > 0
  return chosen, rejected, anchored, valid, s_chosen, s_rejected


def temporal_future(future_PxK: np.ndarray, s_chosen: np.ndarray, s_rejected: np.ndarray):
  """Temporal SR phase 2 (future-guided chosen): M_f's best sample replaces the chosen one
  when max(s_f) > the phase-1 chosen score (max(s_i)); kept if s_chosen > s_rejected.

  Returns (use_future [P] bool, future_index [P], valid [P] bool, s_chosen [P]).

  >>> temporal_future(np.array([[0.2, 0.95], [0.3, 0.1]]), np.array([0.9, 0.9]),
  ...                 np.array([0.1, 0.1]))
  (array([ True, False]), array([1, 0]), array([ True,  True]), array([0.95, 0.9 ]))
  """
  s_f = np.nan_to_num(np.asarray(future_PxK, np.float64), nan=-np.inf)
  best = np.argmax(s_f, axis=1)
  best_score = s_f[np.arange(s_f.shape[0]), best]
  use = best_score > np.nan_to_num(s_chosen, nan=-np.inf)
  chosen_score = np.where(use, best_score, s_chosen)
  return use, best, np.nan_to_num(chosen_score - s_rejected, nan=-1.0) > 0, chosen_score


def dno_pairs(scores_PxN: np.ndarray, is_student_N: np.ndarray, *, pos_min: float,
              margin: float, student_margin: float) -> list[tuple[int, int, int]]:
  """DNO-Prct's large-margin pairs (`losses.dno_pair_mask`) as (question, chosen, rejected)
  indices; non-finite scores are masked out.

  >>> dno_pairs(np.array([[6.0, 5.0, 3.0]]), np.array([False, True, True]), pos_min=5.0,
  ...           margin=2.0, student_margin=1.0)
  [(0, 0, 2), (0, 1, 2)]
  """
  s = np.asarray(scores_PxN, np.float32)
  keep = np.asarray(losses.dno_pair_mask(
      jnp.asarray(np.nan_to_num(s)), jnp.broadcast_to(jnp.asarray(is_student_N), s.shape),
      jnp.asarray(np.isfinite(s)), pos_min=pos_min, margin=margin,
      student_margin=student_margin))
  return [tuple(int(v) for v in idx) for idx in np.argwhere(keep)]


def ranking_agreement(scores_PxK: np.ndarray, correct_PxK: np.ndarray) -> float:
  """Judge-verifier agreement: over the pairs of one question's responses that the verifier
  separates (one right, one wrong), the fraction the judge orders the same way (ties count
  1/2, non-finite scores as the lowest); NaN when no pair is separated.

  >>> ranking_agreement(np.array([[0.9, 0.2, 0.2]]), np.array([[1, 0, 1]]))
  0.75
  """
  s = np.nan_to_num(np.asarray(scores_PxK, np.float64), nan=-np.inf)
  c = np.asarray(correct_PxK, np.float64)
  right_PxKxK = (c[:, :, None] > c[:, None, :])
  above, equal = s[:, :, None] > s[:, None, :], s[:, :, None] == s[:, None, :]
  agree = np.where(above, 1.0, np.where(equal, 0.5, 0.0))
  n = right_PxKxK.sum()
  return float((agree * right_PxKxK).sum() / n) if n else float("nan")


# ---- the round source ----------------------------------------------------------------------
class RoundSource:
  """The prompt source of a preference algorithm trained in rounds: step t of round r gives
  `batch_size` of the round's pair records (reshuffled every pass over them).

  `round_questions(i)` is question split i of a seeded permutation of the training questions
  (disjoint splits, wrapping around when they run out). `state_dict()` holds the round's
  records and what later phases read (Temporal SR's phase-1 pairs and M_0's samples).
  """

  def __init__(self, questions, *, options: RoundOptions, batch_size: int, seed: int):
    if not questions:
      raise ValueError("training in rounds needs training questions (data.source=arithmetic)")
    self.questions = list(questions)
    self.options, self.batch_size, self.seed = options, batch_size, seed
    self.order = np.random.default_rng([seed, 424242]).permutation(len(self.questions))
    self.round, self.records, self.memory = -1, [], {}

  def round_questions(self, split: int) -> list[dict]:
    p = self.options.prompts_per_round
    positions = (split * p + np.arange(p)) % len(self.questions)
    return [self.questions[i] for i in self.order[positions].tolist()]

  def start(self, round_index: int, records: list[dict]) -> None:
    self.round, self.records = round_index, list(records)

  def prompts(self, step: int, round_index: int = 0) -> list[dict]:
    del round_index
    if not self.records:
      raise RuntimeError(f"step {step}: no round has produced pair records yet")
    local = step - self.round * self.options.steps_per_round
    indices = loaders.batch_indices(len(self.records), self.batch_size,
                                    seed=self.seed + 7919 * self.round, step=local)
    return [self.records[i] for i in indices.tolist()]

  def observe(self, rollouts, step: int) -> None:
    del rollouts, step

  def followup(self, step: int) -> str:
    del step
    return ""

  def state_dict(self) -> dict:
    return {"round": self.round, "records": self.records, "memory": self.memory}

  def load_state(self, state: dict) -> None:
    self.round = int(state.get("round", -1))
    self.records = list(state.get("records", []))
    self.memory = dict(state.get("memory", {}))


# ---- one round -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RoundContext:
  """What `begin_round` reads besides the state: the run's setup, the round source, the judge
  (a reward composition), the options."""
  setup: object                    # algorithms.base.Setup
  source: RoundSource
  judge: composition.Composition
  options: RoundOptions


def sample(ctx: RoundContext, state, questions: list[dict], rng) -> tuple[list[list[str]], dict]:
  """K = `rollout.num_generations` responses per question from `state.params`: texts [P][K]
  and the rollouts' host arrays ([P*K] rows, question-major)."""
  from rewardjax.algorithms import grpo  # noqa: PLC0415 (algorithms import this module)

  arrays = grpo.sample(state, questions, rng, setup=ctx.setup)
  texts = grpo.decode(ctx.setup.tokenizer, arrays)
  k = ctx.setup.sampling.num_generations
  return [texts[p * k:(p + 1) * k] for p in range(len(questions))], arrays


def judge(ctx: RoundContext, judge_state, questions: list[dict], texts_PxK, *, round_index: int,
          arrays=None) -> tuple[np.ndarray, np.ndarray, dict]:
  """(scores [P, K], verifier correctness [P, K], the judge's metrics) of texts [P][K].

  `judge_state` is the model that judges (its `params`); `arrays` are the rollouts' host
  arrays when the texts are fresh samples (log-prob terms read them), else {}. Each distinct
  (question, response) is scored once, so the judge's own metrics ("reward/<term>" means) are
  over distinct responses; "distinct" counts them.

  Raises:
    ValueError: no response of the round got a finite score, with a few raw examples.
  """
  k = len(texts_PxK[0])
  rows = [q for q in questions for _ in range(k)]
  flat = [t for texts in texts_PxK for t in texts]
  # A pointwise judge gives a (question, response) the same score wherever it appears, and a
  # round's K samples repeat (most answers agree): each distinct one is judged once, in a
  # batch padded to one of at most 16 sizes (few compilations).
  first, inverse = {}, []
  for i, key in enumerate(zip((q["prompt"] for q in rows), flat)):
    inverse.append(first.setdefault(key, i))   # the first row with this response
  unique = list(dict.fromkeys(inverse))
  position = {row: j for j, row in enumerate(unique)}
  take = unique + [unique[0]] * (_bucket(len(unique), len(flat), ctx) - len(unique))
  values, metrics = ctx.judge.score(composition.Scored(
      [rows[i] for i in take], [flat[i] for i in take],
      {name: a[take] for name, a in (arrays or {}).items()}, judge_state))
  values = np.asarray(values, np.float64)[[position[i] for i in inverse]]
  metrics["distinct"] = float(len(unique))
  scores = values.reshape(len(questions), k)
  if not np.isfinite(scores).any():
    shown = "; ".join(f"{q['prompt']!r} -> {t!r}: {s}" for q, t, s in
                      list(zip(rows, flat, scores.ravel()))[:MAX_SHOWN])
    raise ValueError(f"round {round_index}: the judge ({[t.name for t in ctx.judge.terms]}) "
                     f"gave no usable score to any of the {len(flat)} responses, so the round "
                     f"has no pairs to train on. Examples: {shown}. Check rewards.terms and "
                     "rewards.judge_read, or the judge prompt the model was trained on.")
  fmt = ctx.setup.data.fmt
  correct = verifiers.verify_batch(flat, [q["answer"] for q in rows], fmt).reshape(scores.shape)
  return scores, correct, metrics


def _bucket(n: int, total: int, ctx: RoundContext) -> int:
  """Rows to judge for `n` distinct responses: a multiple of `total` / 16 (rounded to the
  mesh's batch multiple), at most `total` (the sampler's batch, which the mesh divides)."""
  mesh = getattr(ctx.setup, "mesh", None)
  multiple = 1 if mesh is None else sharding.batch_size_multiple(mesh)
  step = max(multiple, -(-(total // 16) // multiple) * multiple)
  return min(total, -(-n // step) * step)


def _judge_metrics(judged: dict) -> dict:
  """The judge composition's "reward/<term>[/<metric>]" as "scores/<term>[/<metric>]"."""
  return {"scores/" + k.removeprefix("reward/"): v for k, v in judged.items()}


def pair_record(question: dict, chosen: str, rejected: str, **fields) -> dict:
  return dict(prompt=question["prompt"], chosen=chosen, rejected=rejected,
              answer=question["answer"], question=question["question"], **fields)


def pair_metrics(records: list[dict], gaps: list[float], fmt: str) -> dict:
  """Pair statistics: count, verifier of chosen and rejected, label accuracy (among pairs the
  verifier separates, the fraction whose chosen response is the right one), score gap."""
  if not records:
    return {"pairs": 0.0}
  answers = [r["answer"] for r in records]
  chosen = verifiers.verify_batch([r["chosen"] for r in records], answers, fmt)
  rejected = verifiers.verify_batch([r["rejected"] for r in records], answers, fmt)
  separated = chosen != rejected
  return {"pairs": float(len(records)), "chosen_correct": float(chosen.mean()),
          "rejected_correct": float(rejected.mean()),
          "pair_label_accuracy": float(chosen[separated].mean()) if separated.any()
          else float("nan"),
          "score_gap": float(np.mean(gaps))}


def _round_self_rewarding(ctx, state, round_index, rng):
  """Self-Rewarding LM (and CREAM): best vs worst of K samples by the current judge."""
  questions = ctx.source.round_questions(round_index)
  texts, arrays = sample(ctx, state, questions, rng)
  scores, correct, judged = judge(ctx, state, questions, texts, round_index=round_index,
                                  arrays=arrays)
  chosen, rejected, valid = best_worst(scores, ctx.options.min_gap)
  fields = [{} for _ in questions]
  metrics = {}
  if ctx.options.rule == "cream":
    if round_index == 0 or state.ref_params is None:
      # No previous iterate yet: CREAM's rule for M0, the length-normalised log-likelihood
      # of each response under the starting model (the sampler's log-probs, temperature 1).
      mask = arrays["completion_mask"].astype(np.float64)
      previous = ((arrays["model_logprobs"] * mask).sum(1) / np.maximum(mask.sum(1), 1)
                  ).reshape(scores.shape)
    else:  # the previous iterate (this round's reference before the refresh) judges
      previous, _, _ = judge(ctx, state.replace(params=state.reference_params()), questions, texts,
                             round_index=round_index, arrays=arrays)
    consistency = cream_labels(scores, previous)
    fields = [{"consistency": float(c)} for c in consistency]
    metrics["consistency"] = float(consistency[valid].mean()) if valid.any() else float("nan")
  records = [pair_record(q, texts[p][chosen[p]], texts[p][rejected[p]], **fields[p])
             for p, q in enumerate(questions) if valid[p]]
  rows = np.arange(len(questions))
  metrics["_gaps"] = (scores[rows, chosen] - scores[rows, rejected])[valid].tolist()
  metrics.update(sample_accuracy=float(correct.mean()),
                 judge_verifier_agreement=ranking_agreement(scores, correct),
                 **_judge_metrics(judged))
  return records, metrics, dict(refresh=ctx.options.refresh_reference)


def _round_temporal(ctx, state, round_index, rng):
  """Temporal SR: even rounds anchored rejection (train M_f), odd rounds future-guided chosen
  (then M_{i+1} restarts from M_i, the reference)."""
  iteration, phase = divmod(round_index, 2)
  questions = ctx.source.round_questions(iteration)
  memory = ctx.source.memory
  if phase == 0:
    texts, arrays = sample(ctx, state, questions, rng)
    if iteration == 0:
      # M_0 is the starting model: its K anchor samples for every iteration's questions are
      # drawn now (no third copy of the params is kept), as texts in the source's state.
      memory["anchors"] = {
          str(i): sample(ctx, state, ctx.source.round_questions(i),
                         jax.random.fold_in(rng, 1_000 + i))[0]
          for i in range(ctx.options.temporal_iterations)}
    if str(iteration) not in memory.get("anchors", {}):
      raise ValueError(f"Temporal SR iteration {iteration} has no M_0 samples: they are drawn "
                       f"for recipe_args.temporal_iterations={ctx.options.temporal_iterations} "
                       "iterations; set it to train.steps / (2 * steps_per_round)")
    anchors = memory["anchors"][str(iteration)]
    scores, correct, judged = judge(ctx, state, questions, texts, round_index=round_index,
                                    arrays=arrays)
    anchor_scores, _, _ = judge(ctx, state, questions, anchors, round_index=round_index)
    chosen, rejected, anchored, valid, s_c, s_r = temporal_anchored(scores, anchor_scores)
    chosen_texts = [texts[p][chosen[p]] for p in range(len(questions))]
    rejected_texts = [(anchors if anchored[p] else texts)[p][rejected[p]]
                      for p in range(len(questions))]
    memory["phase1"] = dict(chosen=chosen_texts, rejected=rejected_texts,
                            s_chosen=s_c.tolist(), s_rejected=s_r.tolist())
    metrics = dict(sample_accuracy=float(correct.mean()),
                   judge_verifier_agreement=ranking_agreement(scores, correct),
                   anchored_rejected=float(anchored[valid].mean()) if valid.any() else 0.0,
                   **_judge_metrics(judged))
    ops = dict(refresh=True)
  else:
    phase1 = memory["phase1"]
    s_c, s_r = np.asarray(phase1["s_chosen"]), np.asarray(phase1["s_rejected"])
    texts, arrays = sample(ctx, state, questions, rng)   # from M_f, the current params
    # The judge is M_i (the reference), never M_f.
    scores, correct, judged = judge(ctx, state.replace(params=state.reference_params()),
                                    questions, texts, round_index=round_index, arrays=arrays)
    use, best, valid, s_c = temporal_future(scores, s_c, s_r)
    chosen_texts = [texts[p][best[p]] if use[p] else phase1["chosen"][p]
                    for p in range(len(questions))]
    rejected_texts = phase1["rejected"]
    metrics = dict(future_sample_accuracy=float(correct.mean()),
                   judge_verifier_agreement=ranking_agreement(scores, correct),
                   future_chosen=float(use[valid].mean()) if valid.any() else 0.0,
                   **_judge_metrics(judged))
    ops = dict(restart=True)
  records = [pair_record(q, chosen_texts[p], rejected_texts[p])
             for p, q in enumerate(questions) if valid[p]]
  metrics["phase"] = float(phase)
  metrics["_gaps"] = (s_c - s_r)[valid].tolist()
  return records, metrics, ops


def _round_dno(ctx, state, round_index, rng):
  """DNO-Prct: K policy samples (+ the gold response), every large-margin pair."""
  questions = ctx.source.round_questions(round_index)
  texts, arrays = sample(ctx, state, questions, rng)
  scores, correct, judged = judge(ctx, state, questions, texts, round_index=round_index,
                                  arrays=arrays)
  candidates, student = texts, [True] * len(texts[0])
  all_scores = scores
  if ctx.options.dno_gold:
    target = tasks.FORMATS[ctx.setup.data.fmt]["target"]
    gold = [[target.format(question=q["question"], answer=q["answer"])] for q in questions]
    gold_scores, _, _ = judge(ctx, state, questions, gold, round_index=round_index)
    candidates = [t + g for t, g in zip(texts, gold)]
    all_scores = np.concatenate([scores, gold_scores], axis=1)
    student = student + [False]
  o = ctx.options
  pairs = dno_pairs(all_scores, np.asarray(student), pos_min=o.dno_pos_min, margin=o.dno_margin,
                    student_margin=o.dno_student_margin)
  records = [pair_record(questions[p], candidates[p][i], candidates[p][j]) for p, i, j in pairs]
  teacher = [not student[i] for _, i, _ in pairs]
  metrics = dict(sample_accuracy=float(correct.mean()),
                 judge_verifier_agreement=ranking_agreement(scores, correct),
                 teacher_chosen=float(np.mean(teacher)) if pairs else 0.0,
                 student_over_teacher=float(sum(not student[j] for _, _, j in pairs)),
                 **_judge_metrics(judged))
  metrics["_gaps"] = [float(all_scores[p, i] - all_scores[p, j]) for p, i, j in pairs]
  return records, metrics, dict(refresh=ctx.options.refresh_reference)


ROUND_BUILDERS = {"self_rewarding": _round_self_rewarding, "cream": _round_self_rewarding,
                  "temporal": _round_temporal, "dno": _round_dno}


def _placed_like(new, old):
  """`new` copied onto `old`'s shardings (the jitted step expects the state's layout)."""
  return jax.tree.map(lambda n, o: jax.device_put(jnp.copy(n), o.sharding), new, old)


def begin_round(state, round_index: int, rng, *, ctx: RoundContext):
  """Round `round_index`'s data and state: `(state, metrics)`.

  Builds the round's pair records (the rule's builder), hands them to the source, then
  updates the state: reference <- params (refresh), params <- reference (Temporal SR's
  restart from M_i), fresh Adam moments (`reset_optimizer`).

  Raises:
    ValueError: the judge scored nothing, or the first round has no pair at all.
  """
  records, metrics, ops = ROUND_BUILDERS[ctx.options.rule](ctx, state, round_index, rng)
  gaps = metrics.pop("_gaps")
  if not records and not ctx.source.records:
    raise ValueError(f"round {round_index} produced no pairs and there is no earlier round to "
                     "train on: every question's responses got equal judge scores (or none "
                     "passed the rule's filter); raise rollout.num_generations or "
                     "rollout.temperature, or lower recipe_args.min_gap / the DNO margins")
  if records:
    ctx.source.start(round_index, records)
  else:  # keep training on the previous round's pairs, and say so in the metrics
    ctx.source.start(round_index, ctx.source.records)
  metrics.update(index=float(round_index), questions=float(ctx.options.prompts_per_round),
                 **pair_metrics(records, gaps or [0.0], ctx.setup.data.fmt))
  if ops.get("refresh") and state.ref_params is not None:
    # The reference's own leaves (all, or the LoRA adapters) take the policy's values.
    state = state.replace(ref_params=_placed_like(subtree(state.params, state.ref_params),
                                                  state.ref_params))
  if ops.get("restart"):
    state = state.replace(params=_placed_like(state.reference_params(), state.params))
  if ctx.options.reset_optimizer or ops.get("restart"):
    state = state.replace(opt_state=_placed_like(update.init_optimizer(state.tx, state.params),
                                                 state.opt_state))
  return state, metrics
