"""Analogical rewrites of the built-in task's questions: same answer, different surface.

Co-Reward (arXiv 2508.00410 v1, Eq. 6) pairs every training question x with a semantically
equivalent rephrasing x' and lets each view's majority vote reward the other. The paper asks a
stronger LLM (Qwen3-32B) for the rephrasing (official code tmlr-group/Co-Reward
`coreward/rewrite_questions.py`); here it is a pure, deterministic program over the task's
expression grammar (`tasks.make_problem`): number (op number)*, "*" binding tighter than "+" /
"-", with at most one bracketed pair. Styles (`STYLES`):

  "commute"  commutativity of + and *: the factors of every product are reversed, and the
             additive terms are reordered positives-reversed-first, then the subtracted ones
             ("47+38" -> "38+47", "12+3*4" -> "4*3+12", "12-3+4" -> "4+12-3",
             "(12+34)*5-6" -> "5*(34+12)-6"); inside brackets the same rule applies
  "spaced"   one space around every operator ("47+38" -> "47 + 38"): the char-level tokenizer
             has the space, but the shipped model never saw one (out of its distribution)
  "rebalance"  beyond the paper (an equivalent question, not a rephrasing): a two-operand sum
             whose ones digits carry moves the first operand to the next multiple of ten
             ("47+38" -> "50+35", no carry left); other questions are commuted. The commuted
             view keeps the ones digits that cause the shipped model's carry slip, so its errors
             are correlated with the original's; this view's are not

A question whose rewrite is itself (nothing commutes: "47-8", "5+5") has no analogical partner:
`pair_records` drops it and counts it, never an error.
"""

import re
from collections.abc import Sequence

from rewardjax.data import tasks

STYLES = ("commute", "spaced", "rebalance")
_TOKEN_RE = re.compile(r"\d+|[-+*()]")


def _tokens(question: str) -> list[str]:
  tokens = _TOKEN_RE.findall(question)
  if "".join(tokens) != question.replace(" ", ""):
    raise ValueError(f"not a task expression: {question!r}")
  return tokens


def _split_top(tokens: list[str], ops: str) -> tuple[list[list[str]], list[str]]:
  """Operands and operators at bracket depth 0, split at the operators in `ops`."""
  parts, signs, depth, current = [], [], 0, []
  for tok in tokens:
    depth += (tok == "(") - (tok == ")")
    if depth == 0 and tok in ops and current:
      parts.append(current)
      signs.append(tok)
      current = []
    else:
      current.append(tok)
  return parts + [current], signs


def _commute_factor(tokens: list[str]) -> str:
  if tokens[0] == "(" and tokens[-1] == ")":
    return "(" + _commute(tokens[1:-1]) + ")"
  return "".join(tokens)


def _commute(tokens: list[str]) -> str:
  terms, ops = _split_top(tokens, "+-")
  texts = []
  for term in terms:
    factors, _ = _split_top(term, "*")
    texts.append("*".join(_commute_factor(f) for f in reversed(factors)))
  signed = list(zip(["+"] + ops, texts))
  positives = [t for s, t in signed if s == "+"][::-1]
  negatives = [t for s, t in signed if s == "-"]
  return "+".join(positives) + "".join("-" + t for t in negatives)


def rewrite(question: str, style: str = "commute") -> str | None:
  """The analogical rewrite of a task question, or None when it has none.

  x' = the question rewritten by `style` (see the module docstring); the value is unchanged
  (`evaluate(x') == evaluate(x)`). None when x' == x (nothing to commute).

  Args:
    question: a task expression ("47+38"), as `tasks.make_problem` writes them.
    style: one of STYLES.

  Returns:
    The rewritten expression, or None.

  References:
    Co-Reward, arXiv 2508.00410 v1, Eq. 6 (analogy-invariant rephrasings).

  >>> rewrite("47+38"), rewrite("12+3*4"), rewrite("(12+34)*5-6"), rewrite("47-8")
  ('38+47', '4*3+12', '5*(34+12)-6', None)
  >>> rewrite("47-8", "spaced"), rewrite("47+38", "rebalance"), rewrite("41+38", "rebalance")
  ('47 - 8', '50+35', '38+41')
  """
  if style not in STYLES:
    raise ValueError(f"unknown rewrite style {style!r}; valid: {STYLES}")
  tokens = _tokens(question)
  a, plus, b = question.partition("+")
  if style == "rebalance" and plus and a.isdigit() and b.isdigit() and (
      int(a) % 10 + int(b) % 10 >= 10):
    shift = 10 - int(a) % 10  # b % 10 >= shift, so b - shift borrows nothing
    out = f"{int(a) + shift}+{int(b) - shift}"
  elif style == "spaced":
    out = "".join(f" {t} " if t in "+-*" else t for t in tokens).replace("( ", "(")
  else:
    out = _commute(tokens)
  return None if out == question else out


def evaluate(question: str) -> int:
  """The exact integer value of a task expression ("*" before "+" / "-", brackets first).

  >>> evaluate("4*3+12"), evaluate("5*(34+12)-6"), evaluate("4 + 12 - 3")
  (24, 224, 13)
  """
  terms, ops = _split_top(_tokens(question), "+-")
  total = 0
  for sign, term in zip(["+"] + ops, terms):
    value = 1
    for factor in _split_top(term, "*")[0]:
      value *= (evaluate("".join(factor[1:-1])) if factor[0] == "(" else int("".join(factor)))
    total += value if sign == "+" else -value
  return total


def pair_records(records: Sequence[dict], *, fmt: str = "short",
                 style: str = "commute") -> tuple[list[tuple[dict, dict]], int]:
  """(x, x') record pairs of the questions that have a rewrite, and how many were dropped.

  x' is x's record with "question" and "prompt" rewritten (the prompt in `fmt`, `tasks.FORMATS`)
  and "answer" unchanged; both carry "view" (0 = original, 1 = rewrite). A question without a
  rewrite is dropped and counted.

  >>> pairs, dropped = pair_records(tasks.problems(3, difficulty=6))
  >>> [(x["prompt"], y["prompt"]) for x, y in pairs], dropped
  ([('50+47=', '47+50='), ('96+85=', '85+96='), ('82+25=', '25+82=')], 0)
  """
  template = tasks.FORMATS[fmt]["prompt"] if fmt in tasks.FORMATS else None
  if template is None:
    raise ValueError(f"unknown answer format {fmt!r}; valid formats: {tuple(tasks.FORMATS)}")
  pairs, dropped = [], 0
  for record in records:
    other = rewrite(record["question"], style)
    if other is None:
      dropped += 1
      continue
    pairs.append((dict(record, view=0),
                  dict(record, question=other, prompt=template.format(question=other), view=1)))
  return pairs, dropped
