"""Built-in verifiable arithmetic tasks: RL prompts, SFT warm-start, preference pairs, rankings.

A problem is an integer expression such as "12+7" (question) with its exact value (answer).
`difficulty` indexes `LEVELS`, which sets the operators, the digit counts, the number of terms
and whether parentheses appear; problem `index` under `(seed, difficulty)` is a pure function
of those three numbers, so every list below is reproducible.

Train / held-out split: a problem is held out iff blake2b(question) / 2^64 < heldout_fraction.
The hash ignores the seed and the format, so no question is ever in both splits, whichever
seeds and formats the two sides used.

Formats (`FORMATS`; verifiers in `rewardjax.rewards.verifiers` share the names):

    "short"  prompt "12+7="                                        target "19"
    "boxed"  prompt "What is 12+7? ... within \\boxed{}."         target "12+7 = \\boxed{19}"
    "steps"  prompt "47+8-15:"   target "47+8=55\n55-15=40\n40"   (`rewardjax.data.steps`)

"short" suits the char-level tiny models (one token per character); "boxed" suits instruction
models (wrap the prompt with `loaders.format_prompts` to apply the chat template).
"""

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Level:
  """How one difficulty level draws an expression."""
  ops: str                          # operators drawn uniformly
  digits: tuple[int, int]           # digit count of each number, uniform in [lo, hi]
  terms: tuple[int, int]            # number of operands, uniform in [lo, hi]
  mul_digits: int = 1               # cap on digits of an operand next to "*"
  parens: bool = False              # with probability 1/2, bracket one adjacent pair


LEVELS = (
    Level(ops="+", digits=(1, 1), terms=(2, 2)),                               # 3+5
    Level(ops="+-", digits=(1, 2), terms=(2, 2)),                              # 47-8
    Level(ops="+-", digits=(1, 3), terms=(2, 2)),                              # 512-89
    Level(ops="+-*", digits=(1, 2), terms=(2, 2)),                             # 23*7
    Level(ops="+-*", digits=(1, 2), terms=(3, 3)),                             # 12+3*4
    Level(ops="+-*", digits=(1, 3), terms=(3, 4), mul_digits=2, parens=True),  # (12+34)*5-6
    # A drill outside the ladder: exactly two 2-digit addends, so about half the questions carry
    # (see `carry_slip`); the RL demo of configs/grpo.py trains on it.
    Level(ops="+", digits=(2, 2), terms=(2, 2)),                               # 47+38
    # Chains worked one operation per line in format "steps" (`rewardjax.data.steps`).
    Level(ops="+-", digits=(1, 2), terms=(3, 3)),                              # 47+8-15
)

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
FORMATS = {
    "short": dict(prompt="{question}=", target="{answer}"),
    "boxed": dict(prompt="What is {question}? " + BOXED_INSTRUCTION.replace("{}", "{{}}"),
                  target="{question} = \\boxed{{{answer}}}"),
    # One operation per line, then the answer (`rewardjax.data.steps.solution` writes targets).
    "steps": dict(prompt="{question}:", target=None),
}


def _format(fmt: str) -> dict:
  if fmt not in FORMATS:
    raise ValueError(f"unknown answer format {fmt!r}; valid formats: {tuple(FORMATS)}")
  return FORMATS[fmt]


def _target_format(fmt: str) -> dict:
  """FORMATS[fmt] for builders of fixed-answer targets ("steps" has worked solutions)."""
  if fmt == "steps":
    raise ValueError("format 'steps' has no fixed answer targets to pair; its records are "
                     "step-labelled solutions (rewardjax.data.steps.prm_records)")
  return _format(fmt)


def _level(difficulty: int) -> Level:
  if not 0 <= difficulty < len(LEVELS):
    raise ValueError(f"difficulty must be in 0..{len(LEVELS) - 1}, got {difficulty}")
  return LEVELS[difficulty]


def _number(rng: np.random.Generator, lo: int, hi: int) -> int:
  n_digits = int(rng.integers(lo, hi + 1))
  return int(rng.integers(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits))


def _sum_of_products(nums: list[int], ops: list[str]) -> int:
  """Evaluates with "*" binding tighter than "+" and "-", left to right."""
  total, product, sign = 0, nums[0], 1
  for op, x in zip(ops, nums[1:]):
    if op == "*":
      product *= x
    else:
      total, product, sign = total + sign * product, x, (1 if op == "+" else -1)
  return total + sign * product


def make_problem(index: int, *, difficulty: int, seed: int) -> tuple[str, int]:
  """The `index`-th expression of `(seed, difficulty)` and its exact integer value.

  >>> make_problem(0, difficulty=0, seed=0)
  ('8+6', 14)
  """
  level = _level(difficulty)
  rng = np.random.default_rng([seed, difficulty, index])
  n_terms = int(rng.integers(level.terms[0], level.terms[1] + 1))
  ops = [level.ops[i] for i in rng.integers(len(level.ops), size=n_terms - 1).tolist()]
  nums = []
  for i in range(n_terms):
    next_to_mul = (i > 0 and ops[i - 1] == "*") or (i < n_terms - 1 and ops[i] == "*")
    hi = min(level.digits[1], level.mul_digits) if next_to_mul else level.digits[1]
    nums.append(_number(rng, min(level.digits[0], hi), hi))
  texts = [str(x) for x in nums]
  if level.parens and n_terms > 2 and rng.random() < 0.5:
    # Bracketing collapses the pair into one operand before precedence applies.
    p = int(rng.integers(0, n_terms - 1))
    inner = _sum_of_products(nums[p:p + 2], ops[p:p + 1])
    texts[p:p + 2] = [f"({texts[p]}{ops[p]}{texts[p + 1]})"]
    nums[p:p + 2] = [inner]
    del ops[p]
  question = texts[0] + "".join(op + t for op, t in zip(ops, texts[1:]))
  return question, _sum_of_products(nums, ops)


def heldout_bucket(question: str) -> float:
  """A uniform number in [0, 1) fixed by the question text alone (blake2b, 64 bits)."""
  digest = hashlib.blake2b(question.encode("utf-8"), digest_size=8).digest()
  return int.from_bytes(digest, "big") / 2.0**64


def problems(
    n: int,
    *,
    difficulty: int = 1,
    seed: int = 0,
    split: str = "train",
    fmt: str = "short",
    heldout_fraction: float = 0.1,
    unique: bool = False,
) -> list[dict]:
  """n verifiable prompts `{"prompt", "answer", "question"}` from one split.

  Args:
    n: number of problems.
    difficulty: index into LEVELS.
    seed: picks the sequence of problems; not the split.
    split: "train" or "heldout".
    fmt: prompt format, a key of FORMATS.
    heldout_fraction: share of the question space held out (by hash, see module doc).
    unique: no repeated question (small levels have few: level 0 has 100 in total).

  Returns:
    n dicts; "answer" is the decimal string of the exact value.

  >>> [p["prompt"] + p["answer"] for p in problems(3, difficulty=1, seed=0)]
  ['99-37=62', '83-9=74', '36-5=31']
  """
  if split not in ("train", "heldout"):
    raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
  template = _format(fmt)["prompt"]
  out, seen = [], set()
  # Enough draws for any split fraction >= 1%; only a too-small unique pool exhausts them.
  max_draws = 1000 + 200 * n
  for index in range(max_draws):
    if len(out) == n:
      break
    question, value = make_problem(index, difficulty=difficulty, seed=seed)
    if (heldout_bucket(question) < heldout_fraction) != (split == "heldout"):
      continue
    if unique and question in seen:
      continue
    seen.add(question)
    out.append(dict(prompt=template.format(question=question), answer=str(value),
                    question=question))
  if len(out) < n:
    raise ValueError(f"only {len(out)} {'unique ' if unique else ''}{split} problems at "
                     f"difficulty={difficulty} (heldout_fraction={heldout_fraction}) after "
                     f"{max_draws} draws; ask for fewer, raise the difficulty or pass unique=False")
  return out


def carry_slip(question: str, value: int) -> int | None:
  """The answer of a demonstrator who forgets the carry (or borrow) of the ones digit.

  Defined for two-operand "a+b" / "a-b" questions whose ones digits carry (a%10 + b%10 >= 10)
  or borrow (a%10 < b%10); None for every other question.

  >>> carry_slip("18+7", 25), carry_slip("42-7", 35), carry_slip("12+3", 15)
  (15, 45, None)
  """
  for op in "+-":
    a, sep, b = question.partition(op)
    if sep and a.isdigit() and b.isdigit():
      a, b = int(a), int(b)
      if op == "+" and a % 10 + b % 10 >= 10:
        return value - 10
      if op == "-" and a % 10 < b % 10 and a > b:
        return value + 10
  return None


def sft_examples(items: Sequence[dict], *, fmt: str = "short", slip_rate: float = 0.0,
                 seed: int = 0) -> list[dict]:
  """Supervised warm-start pairs `{"prompt", "completion", "answer"}`.

  With `slip_rate` > 0 the demonstrator is imperfect in one systematic way: on questions with a
  carry or borrow it writes the `carry_slip` answer with that probability. Imitation then learns
  the slip; a verifier-based reward does not reward it, which is what RL has to fix.

  Args:
    items: records from `problems` (their "question" and "answer" are used).
    fmt: a key of FORMATS; the prompt is rebuilt in this format.
    slip_rate: probability of a carry slip on questions that have a carry.
    seed: draws the slips.

  >>> sft_examples(problems(1, difficulty=0), fmt="boxed")[0]["completion"]
  '8+6 = \\\\boxed{14}'
  """
  f = _format(fmt)
  if fmt == "steps":
    from rewardjax.data import steps  # noqa: PLC0415 (steps imports this module)

    return steps.sft_examples(items, slip_rate=slip_rate, seed=seed)
  rng = np.random.default_rng([seed, 7])
  examples = []
  for it in items:
    shown = it["answer"]
    slip = carry_slip(it["question"], int(it["answer"])) if slip_rate else None
    if slip is not None and rng.random() < slip_rate:
      shown = str(slip)
    examples.append(dict(prompt=f["prompt"].format(question=it["question"]),
                         completion=f["target"].format(question=it["question"], answer=shown),
                         answer=it["answer"]))
  return examples


def wrong_answers(value: int, k: int, rng: np.random.Generator) -> list[int]:
  """k distinct plausible wrong answers, at pairwise distinct distances |w - value|, nearest first.

  Candidates mimic arithmetic slips: off by 1 or 2, a carry/borrow error (±10, ±100 when |value| has
  that digit), one digit
  changed, a sign flip; further ones are value ± d for the smallest unused distances d.

  >>> wrong_answers(19, 3, np.random.default_rng(0))  # 19-2, a borrow slip, a sign flip
  [17, 9, -19]
  """
  digits = str(abs(value))
  pos = int(rng.integers(len(digits)))
  new_digit = str((int(digits[pos]) + int(rng.integers(1, 10))) % 10)
  digit_slip = int(digits[:pos] + new_digit + digits[pos + 1:]) * (-1 if value < 0 else 1)
  # Carry slips only where the digit exists: 114 is no plausible slip for 14.
  steps = [d for d in (1, 2, 10, 100) if d < 10 or abs(value) >= d]
  candidates = [value + s * d for d in steps for s in (1, -1)] + [digit_slip, -value]
  candidates = [candidates[i] for i in rng.permutation(len(candidates))]
  chosen, distances = [], set()
  for c in candidates:
    if c != value and abs(c - value) not in distances and len(chosen) < k:
      chosen.append(c)
      distances.add(abs(c - value))
  d = 1
  while len(chosen) < k:
    if d not in distances:
      chosen.append(value + d * (1 if rng.random() < 0.5 else -1))
      distances.add(d)
    d += 1
  return sorted(chosen, key=lambda c: abs(c - value))


def preference_pairs(items: Sequence[dict], *, fmt: str = "short", seed: int = 0,
                     pairs_per_question: int = 1) -> list[dict]:
  """DPO / reward-model pairs `{"prompt", "chosen", "rejected", "answer"}`.

  chosen is the correct target, rejected the same target with a plausible wrong answer
  (`wrong_answers`, rng default_rng([seed, i]) for item i). With `pairs_per_question` = k > 1,
  item i gives k consecutive pairs whose rejected answers are k distinct wrong answers: more
  distinct pairs from a finite pool of questions, so a reward model learns to verify rather
  than to remember which answer of a pair it saw rejected.

  Args:
    items: records from `problems`.
    fmt: a key of FORMATS.
    seed: picks the wrong answers.
    pairs_per_question: pairs per item, >= 1.

  >>> pair = preference_pairs(problems(1, difficulty=0))[0]
  >>> pair["prompt"], pair["chosen"], pair["rejected"]
  ('8+6=', '14', '4')
  >>> [p["rejected"] for p in preference_pairs(problems(1, difficulty=0), pairs_per_question=3)]
  ['12', '4', '-14']
  """
  if pairs_per_question < 1:
    raise ValueError(f"pairs_per_question must be >= 1, got {pairs_per_question}")
  f = _target_format(fmt)
  pairs = []
  for i, it in enumerate(items):
    rng = np.random.default_rng([seed, i])
    wrong = wrong_answers(int(it["answer"]), pairs_per_question, rng)
    target = lambda a, q=it["question"]: f["target"].format(question=q, answer=a)
    pairs.extend(dict(prompt=f["prompt"].format(question=it["question"]),
                      chosen=target(it["answer"]), rejected=target(w), answer=it["answer"])
                 for w in wrong)
  return pairs


def ranked_responses(items: Sequence[dict], k: int = 4, *, fmt: str = "short",
                     seed: int = 0) -> list[dict]:
  """K-response ranked lists `{"prompt", "responses", "scores", "answer"}`, best first.

  responses[0] is correct; the K-1 wrong ones follow by increasing distance from the answer.
  score = 1 / (1 + |response value - answer|): 1.0 for the correct one, strictly decreasing
  (distances are distinct), so there are no ties.

  Args:
    items: records from `problems`.
    k: responses per prompt, >= 2.
    fmt: a key of FORMATS.
    seed: picks the wrong answers.

  >>> r = ranked_responses(problems(1, difficulty=0), k=3)[0]
  >>> r["responses"], [round(s, 4) for s in r["scores"]]
  (['14', '12', '4'], [1.0, 0.3333, 0.0909])
  """
  if k < 2:
    raise ValueError(f"a ranking needs k >= 2 responses, got {k}")
  f = _target_format(fmt)
  lists = []
  for i, it in enumerate(items):
    value = int(it["answer"])
    values = [value] + wrong_answers(value, k - 1, np.random.default_rng([seed, i]))
    lists.append(dict(
        prompt=f["prompt"].format(question=it["question"]),
        responses=[f["target"].format(question=it["question"], answer=v) for v in values],
        scores=[1.0 / (1.0 + abs(v - value)) for v in values], answer=it["answer"]))
  return lists


# Reward-model record kinds: built-in records for the objectives beyond plain pairs
# (`rewardjax/algorithms/reward_model_records.py`). Each reuses the wrong answers of
# `preference_pairs` (rng default_rng([seed, i]) for item i), so a kind's pairs are the plain
# pairs plus its own field.

# Llama 2's "small" preference-rating margins (arXiv 2307.09288 §3.2.2), keyed here by how far the
# rejected answer is from the true value: (largest distance of the rating, margin).
RATING_MARGINS = ((0, 0.0),          # negligibly better / unsure
                  (2, 1.0 / 3.0),    # slightly better: off by one or two
                  (10, 2.0 / 3.0),   # better: up to one carry slip
                  (None, 1.0))       # significantly better: further off (sign flips, ±100)


def rating_margin(distance: int) -> float:
  """The Llama 2 margin of a pair whose rejected answer is `distance` from the true value.

  >>> [round(rating_margin(d), 4) for d in (0, 1, 2, 3, 10, 11, 28)]
  [0.0, 0.3333, 0.3333, 0.6667, 0.6667, 1.0, 1.0]
  """
  for largest, margin in RATING_MARGINS:
    if largest is None or abs(distance) <= largest:
      return margin
  raise AssertionError("unreachable: the last rating has no bound")


def _wrong_values(items: Sequence[dict], seed: int, k: int) -> list[list[int]]:
  """The wrong answers `preference_pairs(items, seed=seed, pairs_per_question=k)` uses."""
  return [wrong_answers(int(it["answer"]), k, np.random.default_rng([seed, i]))
          for i, it in enumerate(items)]


def rated_preference_pairs(items: Sequence[dict], *, fmt: str = "short", seed: int = 0,
                           pairs_per_question: int = 1) -> list[dict]:
  """`preference_pairs` plus a per-pair "margin": the Llama 2 rating of how wrong the rejected
  answer is (`rating_margin(|rejected - answer|)`, in {1/3, 2/3, 1}: wrong answers are never
  "negligibly" worse).

  >>> [round(p["margin"], 4) for p in rated_preference_pairs(problems(1, difficulty=0),
  ...                                                        pairs_per_question=3)]
  [0.3333, 0.6667, 1.0]
  """
  pairs = preference_pairs(items, fmt=fmt, seed=seed, pairs_per_question=pairs_per_question)
  wrong = [w for values in _wrong_values(items, seed, pairs_per_question) for w in values]
  return [dict(p, margin=rating_margin(w - int(p["answer"]))) for p, w in zip(pairs, wrong)]


def noisy_preference_pairs(items: Sequence[dict], *, fmt: str = "short", seed: int = 0,
                           pairs_per_question: int = 1, label_noise: float = 0.2,
                           num_scorers: int = 10, scorer_error: float = 0.25) -> list[dict]:
  """Preference pairs with label noise, and each pair's margins under an ensemble of scorers.

  The data MOSS-RLHF II's denoising works on (arXiv 2401.06080), built from the task:

  * label noise: each pair of `preference_pairs` has chosen and rejected swapped with
    probability `label_noise` ("mislabelled": True), like the ~25% of HH-RLHF pairs the paper
    finds with negative preference strength;
  * the ensemble stands in for the paper's M reward models trained on the same data: scorer m
    believes question i's answer is v_mi, the true value or, with probability `scorer_error`,
    one of its three nearest plausible slips (`wrong_answers`), and scores a response y by
    r_m(y) = -log10(1 + |y - v_mi|) (how many orders of magnitude it is off). "scorer_margins"
    holds d_m = r_m(chosen) - r_m(rejected) for the `num_scorers` scorers; their mean is the
    preference strength (`losses.ensemble_preference_strength`), negative on most mislabelled
    pairs and small on near misses.

  Args:
    items: records from `problems`.
    fmt: a key of FORMATS.
    seed: picks the wrong answers (as `preference_pairs`), the swaps and the scorers' beliefs.
    pairs_per_question: pairs per item, >= 1.
    label_noise: probability that a pair's labels are swapped.
    num_scorers: M, scorers in the ensemble.
    scorer_error: probability that a scorer misjudges a question.

  Returns:
    dicts `{"prompt", "chosen", "rejected", "answer", "mislabelled", "scorer_margins"}`.

  >>> p = noisy_preference_pairs(problems(1, difficulty=0), label_noise=0.0, scorer_error=0.0,
  ...                            num_scorers=2)[0]
  >>> p["chosen"], p["rejected"], [round(d, 4) for d in p["scorer_margins"]]  # log10(1 + 10)
  ('14', '4', [1.0414, 1.0414])
  """
  pairs = preference_pairs(items, fmt=fmt, seed=seed, pairs_per_question=pairs_per_question)
  wrong = _wrong_values(items, seed, pairs_per_question)
  out = []
  for i, it in enumerate(items):
    value = int(it["answer"])
    rng = np.random.default_rng([seed, i, 1])
    slips = wrong_answers(value, 3, np.random.default_rng([seed, i, 2]))
    beliefs_M = np.where(rng.random(num_scorers) < scorer_error,
                         np.array(slips)[rng.integers(len(slips), size=num_scorers)], value)
    for j, w in enumerate(wrong[i]):
      pair = pairs[i * pairs_per_question + j]
      swap = bool(rng.random() < label_noise)
      chosen_value, rejected_value = (w, value) if swap else (value, w)
      # r_m(c) - r_m(r), with r_m(y) = -log10(1 + |y - v_m|)
      margins = np.log10(1.0 + np.abs(rejected_value - beliefs_M)) - np.log10(
          1.0 + np.abs(chosen_value - beliefs_M))
      out.append(dict(pair, chosen=pair["rejected"] if swap else pair["chosen"],
                      rejected=pair["chosen"] if swap else pair["rejected"], mislabelled=swap,
                      scorer_margins=[float(d) for d in margins]))
  return out


def polar_triplets(items: Sequence[dict], *, fmt: str = "short", seed: int = 0) -> list[dict]:
  """POLAR fine-tuning triplets: two candidates scored against one reference trajectory.

  From `ranked_responses(k=3)` (correct ≻ nearer wrong ≻ farther wrong; arXiv 2507.05197
  §3.4): reference = the top-ranked response, positive = the second, negative = the third.
  The pre-training triplets (same policy vs another policy, no labels) are
  `reward_data.policy_triplets`.

  Returns:
    dicts `{"prompt", "reference", "positive", "negative", "answer"}`.

  >>> [(t["reference"], t["positive"], t["negative"]) for t in polar_triplets(
  ...     problems(2, difficulty=0))]
  [('14', '12', '4'), ('12', '11', '2')]
  """
  return [dict(prompt=r["prompt"], reference=r["responses"][0], positive=r["responses"][1],
               negative=r["responses"][2], answer=r["answer"])
          for r in ranked_responses(items, k=3, fmt=fmt, seed=seed)]
