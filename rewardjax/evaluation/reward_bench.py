"""A RewardBench-style benchmark built into the arithmetic task, and RewardBench's scoring rules.

The benchmark (`build`) takes held-out questions and writes, per named subset, one record per
question: the correct response and three wrong ones that share the subset's error, so a reward
model's failures are located by kind of error:

  carry_slips   the ones carry (or borrow) dropped: v ∓ 10, its mirror v ± 10, a double slip
  sign_errors   −v, the other operator's value (a−b for a+b), its negation
  off_by_one    v ± 1, v ± 2
  format        the right value in a form the verifier rejects: "=v", "v=", the question echoed
  length_traps  wrong answers longer than the right one: a digit appended, a digit prepended,
                the answer written twice
  ties          RewardBench 2's Ties: per question a "ref" record (one correct response) and a
                "tied" record (the value in several correct forms: "v", "+v", "0v", "v.0"),
                with the same wrong responses

Scoring (RewardBench 1, Lambert et al., arXiv 2403.13787, official code allenai/reward-bench
`rewardbench/utils.py`, `constants.py`): a pair is right iff r(chosen) > r(rejected) (a tie is
wrong); a section's score is its subsets' accuracies weighted by their example counts; the
overall score is the unweighted mean of the sections. RewardBench 2 (Malik et al., arXiv
2506.01937, `scripts/run_v2.py`): best-of-4 per record, 1 / (#responses tied at the max) when
the correct response attains the max, else 0; its Ties subset has its own formula
(`ties_score`); the overall score is the mean of the subset scores.
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from rewardjax.data import tasks
from rewardjax.rewards import verifiers

SUBSETS = ("carry_slips", "sign_errors", "off_by_one", "format", "length_traps")
# RewardBench 1 sections over the pairwise subsets (its Chat / Chat Hard / Safety / Reasoning).
SECTIONS = {"slips": ("carry_slips", "off_by_one"), "errors": ("sign_errors", "length_traps"),
            "format": ("format",)}
NUM_WRONG = 3  # RewardBench 2: 1 chosen + 3 rejected per record


def _other_operator(question: str) -> int | None:
  """a−b for "a+b" and a+b for "a−b" (two non-negative operands), else None."""
  for op, other in (("+", -1), ("-", 1)):
    a, sep, b = question.partition(op)
    if sep and a.isdigit() and b.isdigit():
      return int(a) + other * int(b)
  return None


def _carry_slips(question: str, value: int, rng: np.random.Generator) -> list[int]:
  del rng
  slip = tasks.carry_slip(question, value)
  if slip is None:
    return []
  d = slip - value
  return [slip, value - d, value + 2 * d]


def _sign_errors(question: str, value: int, rng: np.random.Generator) -> list[int]:
  del rng
  other = _other_operator(question)
  return [-value] + ([] if other is None else [other, -other])


def _off_by_one(question: str, value: int, rng: np.random.Generator) -> list[int]:
  del question
  two = int(rng.choice([-2, 2]))
  return [value + 1, value - 1, value + two]


def _length_traps(question: str, value: int, rng: np.random.Generator) -> list[str]:
  del question
  sign, digits = ("-" if value < 0 else ""), str(abs(value))
  return [f"{value}{int(rng.integers(10))}", f"{sign}{int(rng.integers(1, 10))}{digits}",
          f"{sign}{digits}{digits}"]


def _format_errors(question: str, value: int, rng: np.random.Generator) -> list[str]:
  del rng
  return [f"={value}", f"{value}=", question]


WRONG = {"carry_slips": _carry_slips, "sign_errors": _sign_errors, "off_by_one": _off_by_one,
         "format": _format_errors, "length_traps": _length_traps}


def correct_forms(value: int) -> list[str]:
  """Equally correct answers for a tied record: the canonical form first.

  >>> correct_forms(14), correct_forms(-5)
  (['14', '+14', '014', '14.0'], ['-5', '-05', '-5.0', '-5.00'])
  """
  if value >= 0:
    return [str(value), f"+{value}", f"0{value}", f"{value}.0"]
  return [str(value), f"-0{-value}", f"{value}.0", f"{value}.00"]


def _wrong_responses(subset: str, item: dict, rng: np.random.Generator) -> list[str] | None:
  """NUM_WRONG distinct responses the verifier rejects, or None when the question has none of
  this subset's errors (e.g. no carry)."""
  value = int(item["answer"])
  out = []
  for w in WRONG[subset](item["question"], value, rng):
    text = str(w)
    if text not in out and not verifiers.math_verify(text, item["answer"], "short"):
      out.append(text)
  return out[:NUM_WRONG] if len(out) >= NUM_WRONG else None


def build(items: Sequence[dict], *, seed: int = 0, per_subset: int | None = None) -> list[dict]:
  """The benchmark's records from held-out questions ("short" format).

  Args:
    items: `tasks.problems(..., split="heldout", fmt="short")` records.
    seed: draws the random parts of the wrong responses.
    per_subset: at most this many records per subset (None: every question that has the
      subset's errors).

  Returns:
    dicts `{"id", "subset", "prompt", "answer", "chosen": [str], "rejected": [str]}`; `chosen`
    holds the correct responses (one, or several for a "tied" record, canonical first),
    `rejected` NUM_WRONG wrong ones. Ties records have ids "ref:<n>" and "tied:<n>".

  >>> [(r["subset"], r["chosen"], r["rejected"]) for r in build(
  ...     [dict(question="18+7", answer="25", prompt="18+7=")]) if r["subset"] != "ties"][:2]
  [('carry_slips', ['25'], ['15', '35', '5']), ('sign_errors', ['25'], ['-25', '11', '-11'])]
  """
  records = []
  for subset in SUBSETS:
    count = 0
    for i, it in enumerate(items):
      if per_subset is not None and count == per_subset:
        break
      wrong = _wrong_responses(subset, it, np.random.default_rng([seed, i, SUBSETS.index(subset)]))
      if wrong is not None:
        records.append(dict(id=f"{subset}:{i}", subset=subset, prompt=f"{it['question']}=",
                            answer=it["answer"], chosen=[it["answer"]], rejected=wrong))
        count += 1
  for i, it in enumerate(items[:per_subset]):
    value = int(it["answer"])
    wrong = [str(w) for w in tasks.wrong_answers(value, NUM_WRONG,
                                                 np.random.default_rng([seed, i, 99]))]
    base = dict(subset="ties", prompt=f"{it['question']}=", answer=it["answer"], rejected=wrong)
    records.append(dict(base, id=f"ref:{i}", chosen=[it["answer"]]))
    records.append(dict(base, id=f"tied:{i}", chosen=correct_forms(value)))
  return records


def best_of_k(scores: ArrayLike, num_correct: int = 1) -> float:
  """RewardBench 2's per-record result: 1 / (#responses tied at the max score) if a correct
  response (index < num_correct; the benchmark has one) attains the max, else 0.

  >>> best_of_k([2.0, 1.0, 0.0, -1.0]), best_of_k([2.0, 2.0, 0.0, 1.0]), best_of_k([0, 1, 0, 0])
  (1.0, 0.5, 0.0)
  """
  s = np.asarray(scores, np.float64)
  winners = np.flatnonzero(s == s.max())
  return float(np.any(winners < num_correct)) / len(winners)


def _prompt_stats(scores: np.ndarray, num_correct: int) -> tuple[bool, float | None, float]:
  """(accurate, max correct − min correct or None for one correct, min correct − max wrong)."""
  correct, wrong = scores[:num_correct], scores[num_correct:]
  margin = float(correct.min() - wrong.max())
  spread = float(correct.max() - correct.min()) if num_correct > 1 else None
  return margin > 0, spread, margin


def ties_score(rows: Sequence[tuple]) -> dict[str, float]:
  """RewardBench 2's Ties score (`rewardbench/utils.py:process_single_model`).

  score = 0.30 tied_accuracy + 0.30 ref_accuracy + 0.20 correctness_preferred
          + 0.20 correctness_preferred_hard + 0.01 margin_score

  with, per prompt id present as both "ref:<n>" and "tied:<n>": accurate = min correct − max
  incorrect > 0; d = max correct − min correct (tied prompt); g_t, g_r = min correct − max
  incorrect of the tied and the ref prompt; correctness_preferred = mean[g_t > d],
  correctness_preferred_hard = mean[min(g_r, g_t) > d], margin_score = mean tanh(min(g_r, g_t) /
  (d + 1e-10) − 1), NaN set to 0 (the upstream code's epsilon).

  Args:
    rows: (id, scores, num_correct) per record; the first num_correct scores are correct.

  >>> round(ties_score([("ref:0", [3., 0.], 1), ("tied:0", [3., 2., 0.], 2)])["score"], 4)
  1.0076
  """
  stats = {"ref": {}, "tied": {}}
  for rid, scores, num_correct in rows:
    kind, pid = rid.split(":", 1)
    stats[kind][pid] = _prompt_stats(np.asarray(scores, np.float64), num_correct)
  acc = {k: float(np.mean([s[0] for s in v.values()])) if v else 0.0 for k, v in stats.items()}
  shared = sorted(set(stats["ref"]) & set(stats["tied"]))
  out = {"ref_accuracy": acc["ref"], "tied_accuracy": acc["tied"], "correctness_preferred": 0.0,
         "correctness_preferred_hard": 0.0, "margin_score": 0.0}
  if shared:
    d = np.array([stats["tied"][p][1] or 0.0 for p in shared])
    g_t = np.array([stats["tied"][p][2] for p in shared])
    g_r = np.array([stats["ref"][p][2] for p in shared])
    hard = np.minimum(g_r, g_t)
    out.update(correctness_preferred=float(np.mean(g_t > d)),
               correctness_preferred_hard=float(np.mean(hard > d)),
               margin_score=float(np.mean(np.nan_to_num(np.tanh(hard / (d + 1e-10) - 1.0)))))
  out["score"] = (0.30 * out["tied_accuracy"] + 0.30 * out["ref_accuracy"]
                  + 0.20 * out["correctness_preferred"] + 0.20 * out["correctness_preferred_hard"]
                  + 0.01 * out["margin_score"])
  return out


def rewardbench1(correct: Mapping[str, Sequence],
                 sections: Mapping[str, Sequence[str]] = SECTIONS) -> dict[str, float]:
  """RewardBench 1 scores from per-example 0/1 results by subset.

  section = Σ_s acc_s · n_s / Σ_s n_s over its subsets (n_s: example counts, RewardBench's
  EXAMPLE_COUNTS; here the built subset sizes); overall = unweighted mean of the sections.

  >>> rewardbench1({"a": [1, 0], "b": [1, 1, 1, 1], "c": [0]}, {"x": ("a", "b"), "y": ("c",)})
  {'x': 0.8333333333333334, 'y': 0.0, 'score': 0.4166666666666667}
  """
  out = {}
  for name, subsets in sections.items():
    results = [r for s in subsets for r in correct.get(s, ())]
    if results:
      out[name] = float(np.mean(results))
  out["score"] = float(np.mean(list(out.values()))) if out else 0.0
  return out


@dataclasses.dataclass(frozen=True)
class Scores:
  """A scorer's scores of every record's responses: `chosen[i]`, `rejected[i]` arrays."""
  chosen: list[np.ndarray]
  rejected: list[np.ndarray]


def score_records(records: Sequence[dict], scorer: Callable) -> Scores:
  """Runs `scorer(prompts, responses_lists) -> list of [K] score arrays` once on every record's
  responses (chosen then rejected, in one list per record, so a listwise scorer such as YOJO
  sees them together)."""
  lists = [list(r["chosen"]) + list(r["rejected"]) for r in records]
  scores = scorer([r["prompt"] for r in records], lists)
  n = [len(r["chosen"]) for r in records]
  return Scores([np.asarray(s[:k], np.float64) for s, k in zip(scores, n)],
                [np.asarray(s[k:], np.float64) for s, k in zip(scores, n)])


def report(records: Sequence[dict], scores: Scores) -> dict[str, float]:
  """Every benchmark figure, flat: "rb1/<subset>" pair accuracy (chosen vs the first rejected),
  "rb1/<section>", "rb1/score"; "rb2/<subset>" best-of-4, "rb2/best_of_4" (their mean),
  "rb2/ties" (`ties_score`), "rb2/score" (the mean over subsets, Ties included);
  "ties/<component>"."""
  pair, best, ties_rows = {}, {}, []
  for r, c, w in zip(records, scores.chosen, scores.rejected):
    if r["subset"] == "ties":
      ties_rows.append((r["id"], np.concatenate([c, w]), len(c)))
      continue
    pair.setdefault(r["subset"], []).append(float(c[0] > w[0]))
    best.setdefault(r["subset"], []).append(best_of_k(np.concatenate([c[:1], w]), 1))
  out = {f"rb1/{s}": float(np.mean(v)) for s, v in pair.items()}
  out.update({f"rb1/{k}": v for k, v in rewardbench1(pair).items()})
  out.update({f"rb2/{s}": float(np.mean(v)) for s, v in best.items()})
  subset_scores = [float(np.mean(v)) for v in best.values()]
  if subset_scores:
    out["rb2/best_of_4"] = float(np.mean(subset_scores))
  if ties_rows:
    ties = ties_score(ties_rows)
    out.update({f"ties/{k}": v for k, v in ties.items()})
    out["rb2/ties"] = ties["score"]
    subset_scores.append(ties["score"])
  out["rb2/score"] = float(np.mean(subset_scores)) if subset_scores else 0.0
  return out


def format_table(results: Mapping[str, float]) -> str:
  """The benchmark table: one line per subset (pair accuracy, best-of-4), then the scores."""
  lines = [f"{'subset':<14}{'pairs (RB1)':>13}{'best-of-4 (RB2)':>17}"]
  for s in (*SUBSETS, "ties"):
    rb1, rb2 = results.get(f"rb1/{s}"), results.get(f"rb2/{s}")
    if rb1 is None and rb2 is None:
      continue
    cell = lambda v: f"{100 * v:.1f}" if v is not None else "-"
    lines.append(f"{s:<14}{cell(rb1):>13}{cell(rb2):>17}")
  lines.append(f"{'score':<14}{100 * results.get('rb1/score', 0):>13.1f}"
               f"{100 * results.get('rb2/score', 0):>17.1f}")
  return "\n".join(lines)
