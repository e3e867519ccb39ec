"""The built-in task with intermediate steps: chained operations, one result per line.

A chain question "47+8-15" (`tasks.LEVELS[CHAIN_LEVEL]`) is worked left to right, one
operation per line, then the final answer on its own line (format "steps"):

    prompt  "47+8-15:"
    target  "47+8=55\\n55-15=40\\n40"

A *step* is a line ended by the separator "\\n"; the text after the last separator is the
final answer. A completion without any separator is one step that is also its own answer (never
an error, never zero steps).

The task labels every step, the way a process-reward labeller would (PRM800K's first-error
convention): step k is correct iff steps 1..k are all *valid*, a valid step being a true
equation "a op b = c" whose operands a and b are numbers the solver has (the question's
operands or an earlier step's result). Restating a correct step is valid, so a reward that
sums per-step scores pays for repetition: the hack Clip and Delta remove (Gao et al.,
arXiv 2410.15115).
"""

import re
from collections.abc import Sequence

import numpy as np

from rewardjax.data import tasks

SEPARATOR = "\n"
CHAIN_LEVEL = 7            # index of the chain level in tasks.LEVELS: "47+8-15"
# How often the demonstrator restates a step it has just written (a verbose solver): what
# gives RL on a per-step reward a repetition to amplify.
REPEAT_RATE = 0.1
# At most 1000 digits a number (as `rewards.verifiers.MAX_DIGITS`): int() of a longer run is
# slow, and past Python's 4300-digit limit raises, so a policy's digit flood is "not a step".
_INT = r"-?\d{1,1000}"
_STEP_RE = re.compile(rf"^\s*({_INT})\s*([+*-])\s*({_INT})\s*=\s*({_INT})\s*$")


def _operands(question: str) -> tuple[list[int], list[str]]:
  """Numbers and operators of a chain, e.g. "47+8-15" -> ([47, 8, 15], ["+", "-"])."""
  if not re.fullmatch(r"\d+([+-]\d+)*", question):
    raise ValueError(f"format 'steps' works chains of + and - left to right (data.difficulty="
                     f"{CHAIN_LEVEL}); {question!r} is not one")
  tokens = re.findall(r"\d+|[+-]", question)
  return [int(t) for t in tokens[::2]], tokens[1::2]


def _apply(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


def chain(question: str) -> list[tuple[int, str, int, int]]:
  """The left-to-right steps (a, op, b, a op b) of a chain question.

  >>> chain("47+8-15")
  [(47, '+', 8, 55), (55, '-', 15, 40)]
  """
  nums, ops = _operands(question)
  steps, acc = [], nums[0]
  for op, b in zip(ops, nums[1:]):
    steps.append((acc, op, b, _apply(acc, op, b)))
    acc = steps[-1][3]
  return steps


def solution(question: str, *, rng: np.random.Generator | None = None, slip_rate: float = 0.0,
             repeat_rate: float = 0.0) -> str:
  """A worked solution in format "steps", from a demonstrator that may slip and repeat.

  With `slip_rate`, a step whose operation carries or borrows gets `tasks.carry_slip`'s wrong
  result (later steps then work correctly from it); with `repeat_rate`, one step is written
  twice.

  >>> print(solution("47+8-15"))
  47+8=55
  55-15=40
  40
  """
  lines = []
  nums, ops = _operands(question)
  acc = nums[0]
  for op, b in zip(ops, nums[1:]):
    value = _apply(acc, op, b)
    slip = tasks.carry_slip(f"{acc}{op}{b}", value) if acc >= 0 and slip_rate else None
    if slip is not None and rng is not None and rng.random() < slip_rate:
      value = slip
    lines.append(f"{acc}{op}{b}={value}")
    acc = value
  if rng is not None and repeat_rate and rng.random() < repeat_rate:
    k = int(rng.integers(len(lines)))
    lines.insert(k + 1, lines[k])
  return SEPARATOR.join(lines + [str(acc)])


def split_steps(text: str) -> tuple[list[str], str]:
  """(step lines, final answer text) of a completion; no separator -> one step, itself.

  >>> split_steps("1+2=3\\n3+4=7\\n7"), split_steps("7")
  ((['1+2=3', '3+4=7'], '7'), (['7'], '7'))
  """
  parts = text.split(SEPARATOR)
  if len(parts) == 1:
    return [text], text
  return parts[:-1], parts[-1]


def final_answer(text: str) -> str | None:
  """The stripped last line, or None if it is empty."""
  answer = text.split(SEPARATOR)[-1].strip()
  return answer or None


def parse_step(line: str) -> tuple[int, str, int, int] | None:
  """(a, op, b, c) of a step line "a op b = c", or None if it is not one."""
  m = _STEP_RE.match(line)
  return None if m is None else (int(m[1]), m[2], int(m[3]), int(m[4]))


def step_labels(question: str, text: str) -> list[int]:
  """Per-step correctness (1/0) of a completion, first-error convention (module doc).

  >>> step_labels("47+8-15", "47+8=55\\n47+8=55\\n55-15=40\\n40")   # a repeat is valid
  [1, 1, 1]
  >>> step_labels("47+8-15", "47+8=45\\n45-15=30\\n30")             # slip, then all 0
  [0, 0]
  >>> step_labels("47+8-15", "40")                                   # no separator
  [0]
  """
  lines, _ = split_steps(text)
  have = set(_operands(question)[0])
  labels, ok = [], True
  for line in lines:
    step = parse_step(line)
    valid = (step is not None and step[0] in have and step[2] in have
             and _apply(step[0], step[1], step[2]) == step[3])
    ok = ok and valid
    labels.append(int(ok))
    if step is not None and valid:
      have.add(step[3])
  return labels


def consistency(text: str) -> int:
  """+1 if the final answer equals the last step's stated result, -1 if it differs, 0 if no
  step states a result (the consistency check of R1-Reward, arXiv 2505.02835 §3.2, with the
  last reasoning line standing in for the judged reasoning).

  >>> consistency("1+2=3\\n3"), consistency("1+2=3\\n4"), consistency("3")
  (1, -1, 0)
  """
  if SEPARATOR not in text:
    return 0
  lines, answer = split_steps(text)
  results = [step[3] for step in map(parse_step, lines) if step is not None]
  if not results:
    return 0
  answer = answer.strip()
  value = int(answer) if re.fullmatch(_INT, answer) else None
  return 1 if value == results[-1] else -1


def well_formed(text: str) -> bool:
  """At least one step, every step line "a op b = c", and an integer final answer.

  >>> well_formed("1+2=3\\n3"), well_formed("1+2=3\\nso 3"), well_formed("3")
  (True, False, False)
  """
  if SEPARATOR not in text:
    return False
  lines, answer = split_steps(text)
  return (all(parse_step(line) is not None for line in lines)
          and re.fullmatch(r"\s*-?\d+\s*", answer) is not None)


def sft_examples(items: Sequence[dict], *, slip_rate: float = 0.0, seed: int = 0) -> list[dict]:
  """Warm-start demonstrations {"prompt", "completion", "answer"} in format "steps"
  (`solution` with `slip_rate` and `REPEAT_RATE`)."""
  rng = np.random.default_rng([seed, 11])
  prompt = tasks.FORMATS["steps"]["prompt"]
  return [dict(prompt=prompt.format(question=it["question"]), answer=it["answer"],
               completion=solution(it["question"], rng=rng, slip_rate=slip_rate,
                                   repeat_rate=REPEAT_RATE)) for it in items]


def prm_records(items: Sequence[dict], *, seed: int = 0, slip_rate: float = 0.5,
                corrupt_rate: float = 0.3) -> list[dict]:
  """Step-labelled completions {"prompt", "completion", "step_labels", "answer"} to train a
  process reward model: the demonstrator's solutions (slips at `slip_rate`, repeats at
  `REPEAT_RATE`), a `corrupt_rate` share with one step's result replaced by a plausible
  wrong value (`tasks.wrong_answers`), labelled by `step_labels`.
  """
  rng = np.random.default_rng([seed, 13])
  prompt = tasks.FORMATS["steps"]["prompt"]
  out = []
  for it in items:
    text = solution(it["question"], rng=rng, slip_rate=slip_rate, repeat_rate=REPEAT_RATE)
    lines, answer = split_steps(text)
    if rng.random() < corrupt_rate:
      k = int(rng.integers(len(lines)))
      a, op, b, c = parse_step(lines[k])
      wrong = tasks.wrong_answers(c, 1, rng)[0]
      lines[k] = f"{a}{op}{b}={wrong}"
      if k == len(lines) - 1:
        answer = str(wrong)
      text = SEPARATOR.join(lines + [answer])
    out.append(dict(prompt=prompt.format(question=it["question"]), completion=text,
                    step_labels=step_labels(it["question"], text), answer=it["answer"]))
  return out
