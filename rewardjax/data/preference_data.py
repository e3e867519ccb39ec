"""Built-in-task data for the DPO-family objectives that need more than a (chosen, rejected) pair.

Host side and numpy only. Each function takes pair records `{"prompt", "chosen", "rejected",
"answer"}` (`tasks.preference_pairs`) and returns the strings or score arrays that an objective's
`prepare` stage turns into batch rows or fields (`algorithms/preference_objectives.py`):

  mismatched_prompts  KTO: the KL rows' prompts, each completion under another pair's prompt
  question_values     the N responses of a pair's question that CREAM ranks and DNO plays
  cream_scores        CREAM stand-in: two scorers of those N responses (two rankings)
  dno_preferences     DNO: the oracle's pairwise preferences among those N responses
  degrade_pairs       SPO: responses with k digits of their final answer removed, labels k

A response's value is read by the task's verifier (`verifiers.extract_answer`, `parse_number`);
a response without an integer answer has value None and loses every comparison. Random choices
tied to a question (its other wrong answers, their order) come from a hash of the prompt, so a
question gets the same responses in every batch and on every host.
"""

import hashlib
import re
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float, Int

from rewardjax.data import tasks
from rewardjax.rewards import verifiers

_DIGITS = re.compile(r"\d+")


def mismatched_prompts(prompts: Sequence[str]) -> list[str]:
  """The prompts rotated by one: pair b's completions go under pair (b + 1) mod B's prompt.

  TRL's `KTOTrainer` builds its KL rows by shifting completions by one within the batch; rotating
  the prompts pairs the same way. With B = 1 nothing is mismatched (TRL needs batch > 1 too).

  >>> mismatched_prompts(["1+1=", "2+5=", "3+3="])
  ['2+5=', '3+3=', '1+1=']
  """
  return list(prompts[1:]) + list(prompts[:1])


def response_value(text: str, fmt: str) -> int | None:
  """The integer final answer of a response in answer format `fmt`, or None.

  >>> response_value("12+7 = \\\\boxed{19}", "boxed"), response_value("-4", "short")
  (19, -4)
  """
  answer = verifiers.extract_answer(text, fmt)
  number = None if answer is None else verifiers.parse_number(answer)
  return None if number is None or number.denominator != 1 else int(number)


def _prompt_rng(prompt: str) -> np.random.Generator:
  digest = hashlib.blake2b(prompt.encode("utf-8"), digest_size=8).digest()
  return np.random.default_rng(int.from_bytes(digest, "big"))


def question_values(item: dict, n: int, *, fmt: str) -> list[int | None]:
  """The values of n responses to a pair's question: chosen's, rejected's, then n - 2 others.

  The others are plausible wrong answers (`tasks.wrong_answers`) other than the pair's two, in
  an order drawn from the prompt's hash (a stand-in for N sampled responses).

  >>> question_values({"prompt": "8+6=", "chosen": "14", "rejected": "4", "answer": "14"}, 4,
  ...                 fmt="short")
  [14, 4, 12, 15]
  """
  if n < 2:
    raise ValueError(f"a question needs n >= 2 responses (the pair's two), got {n}")
  answer = int(item["answer"])
  chosen, rejected = response_value(item["chosen"], fmt), response_value(item["rejected"], fmt)
  rng = _prompt_rng(item["prompt"])
  pool = [w for w in tasks.wrong_answers(answer, n, rng) if w not in (chosen, rejected)][:n - 2]
  return [chosen, rejected] + [pool[i] for i in rng.permutation(len(pool)).tolist()]


def closeness(value: int | None, answer: int) -> float:
  """The task's graded score 1 / (1 + |value - answer|) (`tasks.ranked_responses`); 0 for None."""
  # Integer true division: a huge value (a policy's "1e400" parsed exactly) gives 0.0, where
  # a float sum would overflow.
  return 0.0 if value is None else 1 / (1 + abs(value - answer))


def edit_distance(a: str, b: str) -> int:
  """Levenshtein distance (unit insert, delete, substitute).

  >>> edit_distance("19", "9"), edit_distance("19", "-19"), edit_distance("19", "17")
  (1, 1, 1)
  """
  row = list(range(len(b) + 1))
  for i, ca in enumerate(a, 1):
    prev, row[0] = row[0], i
    for j, cb in enumerate(b, 1):
      # prev is the old row[j-1]: the substitution (or match) predecessor.
      prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
  return row[-1]


def surface_similarity(value: int | None, answer: int) -> float:
  """Minus the edit distance between the decimal strings; None scores below every string."""
  if value is None:
    return -float(len(str(answer)) + 1)
  return float(-edit_distance(str(value), str(answer)))  # int negation: 0.0, not -0.0


def cream_scores(items: Sequence[dict], n: int, *,
                 fmt: str) -> tuple[Float[np.ndarray, "B N"], Float[np.ndarray, "B N"]]:
  """CREAM stand-in: two scorings `(current, previous)` [B, N] of each question's n responses.

  current = `closeness` (the graded verifier; like CREAM's current model it is the scorer that
  labels the pair, its arg max being the correct chosen response); previous = `surface_similarity`
  (a cruder judge that reads how the answer looks, not what it is worth). Their Kendall tau
  (`losses.cream_consistency`) is high where plausible wrong answers that look close also are
  close, low where they disagree (sign flips, carry slips: "-19" and "9" look like "19").

  >>> cur, prev = cream_scores([{"prompt": "8+6=", "chosen": "14", "rejected": "4",
  ...                            "answer": "14"}], 4, fmt="short")   # values [14, 4, 12, 15]
  >>> [round(x, 4) for x in cur[0].tolist()], prev[0].tolist()
  ([1.0, 0.0909, 0.3333, 0.5], [0.0, -1.0, -1.0, -1.0])
  """
  current, previous = [], []
  for it in items:
    answer = int(it["answer"])
    values = question_values(it, n, fmt=fmt)
    current.append([closeness(v, answer) for v in values])
    previous.append([surface_similarity(v, answer) for v in values])
  return np.asarray(current, np.float32), np.asarray(previous, np.float32)


def dno_preferences(items: Sequence[dict], n: int, *, fmt: str) -> Float[np.ndarray, "B N N"]:
  """DNO's preference oracle on each question's n responses (chosen at 0, rejected at 1).

  P[b, i, j] = P(y_i > y_j): 1 if y_i is closer to the answer, 1/2 if as close, 0 otherwise
  (a hard comparator, the graded verifier standing in for DNO's judge). Diagonal 1/2 (ignored
  by `losses.win_rate_rewards`).

  >>> p = dno_preferences([{"prompt": "8+6=", "chosen": "14", "rejected": "4",
  ...                       "answer": "14"}], 4, fmt="short")   # values [14, 4, 12, 15]
  >>> p[0].tolist()
  [[0.5, 1.0, 1.0, 1.0], [0.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.5, 0.0], [0.0, 1.0, 1.0, 0.5]]
  """
  out = []
  for it in items:
    answer = int(it["answer"])
    s_N = np.array([closeness(v, answer) for v in question_values(it, n, fmt=fmt)])
    out.append((s_N[:, None] > s_N[None, :]) + 0.5 * (s_N[:, None] == s_N[None, :]))
  return np.asarray(out, np.float32)


def answer_digits(text: str) -> int:
  """How many digits the final answer (the last run of digits) of `text` has (0 if none)."""
  runs = _DIGITS.findall(text)
  return len(runs[-1]) if runs else 0


def degrade_answer(text: str, k: int, rng: np.random.Generator) -> str:
  """`text` without k digits of its final answer (its last run of digits), positions drawn.

  SPO removes key content in varying amounts; on the arithmetic task an answer's key content is
  its digits.

  >>> degrade_answer("12+7 = \\\\boxed{19}", 2, np.random.default_rng(0))
  '12+7 = \\\\boxed{}'
  >>> degrade_answer("-140", 0, np.random.default_rng(0))
  '-140'
  """
  runs = list(_DIGITS.finditer(text))
  if k > (len(runs[-1].group()) if runs else 0):
    raise ValueError(f"cannot remove {k} digits from the final answer of {text!r}")
  if k == 0:
    return text
  run = runs[-1]
  drop = set((run.start() + rng.choice(len(run.group()), size=k, replace=False)).tolist())
  return "".join(ch for i, ch in enumerate(text) if i not in drop)


def degrade_pairs(items: Sequence[dict], max_removed: int, rng: np.random.Generator
                  ) -> tuple[list[str], list[str], Int[np.ndarray, " R"]]:
  """SPO's degraded responses: each chosen and rejected loses k answer digits, k its class.

  k is uniform in 0 .. min(max_removed, digits of that answer), one draw per response.

  Returns:
    (degraded chosen [B], degraded rejected [B], labels int32 [2B]: chosen's k then rejected's).
  """
  texts, labels = [], []
  for text in [it["chosen"] for it in items] + [it["rejected"] for it in items]:
    k = int(rng.integers(0, min(max_removed, answer_digits(text)) + 1))
    texts.append(degrade_answer(text, k, rng))
    labels.append(k)
  b = len(items)
  return texts[:b], texts[b:], np.asarray(labels, np.int32)


# SPO's preference-degree classes are read from the LM head at these characters: ones the task
# and its judge formats never write, so the class rows of the (tied) unembedding act as the
# paper's separate head W and training them leaves the digits the policy answers with alone.
CLASS_LABELS = "@^|~$%"


def class_token_ids(tokenizer, max_class: int) -> Int[np.ndarray, " C"]:
  """Token ids [max_class + 1] of `CLASS_LABELS[:max_class + 1]` (one token each).

  >>> from rewardjax.data import tokenizers
  >>> len(class_token_ids(tokenizers.char_tokenizer(), 2))
  3
  """
  if not 0 < max_class < len(CLASS_LABELS):
    raise ValueError(f"SPO classes 0..K need 1 <= K <= {len(CLASS_LABELS) - 1}, got K={max_class}")
  ids = [tokenizer.encode(c, add_special_tokens=False) for c in CLASS_LABELS[:max_class + 1]]
  if any(len(i) != 1 for i in ids):
    raise ValueError(f"the tokenizer splits a class label into several tokens: {ids}")
  return np.asarray([i[0] for i in ids], np.int32)
