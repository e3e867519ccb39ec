"""Rule-based verifiers: extract a final answer from a completion and compare it to the label.

Two answer formats (`ANSWER_FORMATS`), matching `rewardjax.data.tasks.FORMATS`:

* "boxed": the content of the LAST `\\boxed{...}` or `\\box{...}` (nested braces allowed). SPARK's
  judge templates ask for `\\box{}` while its parser only reads `\\boxed{`, so a literal model
  gets reward 0 there (official code InternLM/Spark `math_verify_2.py`); both spellings count
  here.
* "short": the first line of the completion, the form the tiny char-level models emit ("19").

`math_verify` compares numerically and exactly (`fractions.Fraction`: "1,000" == "1000.0",
"1/2" == "0.5" == "\\frac{1}{2}"); labels that are not numbers ("Yes", "B") are compared as
case-folded strings, the fallback that decides SPARK's judge items. It is a small,
dependency-free stand-in for the `math-verify` package: no symbolic algebra, no sets or intervals.
"""

import re
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from jaxtyping import Float

ANSWER_FORMATS = ("boxed", "short", "steps")

# `\box{` and `\boxed{` (with optional spaces before the brace); `\boxplus` etc. do not match.
_BOX_RE = re.compile(r"\\box(?:ed)?\s*\{")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRAC_RE = re.compile(r"([+-]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")
_RATIO_RE = re.compile(r"([+-]?[\d.]+)/([+-]?[\d.]+)")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")


def extract_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` / `\\box{...}` in `text`, braces balanced.

  Args:
    text: a completion.

  Returns:
    The stripped content, or None when there is no box or the last one is never closed (a
    truncated completion does not fall back to an earlier box).

  >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} or rather \\box{ 3 }")
  '3'
  >>> print(extract_boxed(r"\\boxed{\\frac{1}{2}}"))
  \\frac{1}{2}
  >>> extract_boxed(r"\\boxed{1} \\boxed{2"), extract_boxed("19")
  (None, None)
  """
  starts = [m.end() for m in _BOX_RE.finditer(text)]
  if not starts:
    return None
  depth = 1
  for i in range(starts[-1], len(text)):
    depth += {"{": 1, "}": -1}.get(text[i], 0)
    if depth == 0:
      return text[starts[-1]:i].strip()
  return None


def extract_answer(text: str, fmt: str) -> str | None:
  """Final answer of a completion in answer format `fmt` (one of ANSWER_FORMATS).

  >>> extract_answer("The sum is \\\\boxed{19}.", "boxed"), extract_answer(" 19\\nok", "short")
  ('19', '19')
  """
  if fmt == "boxed":
    return extract_boxed(text)
  if fmt == "short":
    lines = text.strip().splitlines()
    return lines[0].strip() if lines and lines[0].strip() else None
  if fmt == "steps":  # the last line (`rewardjax.data.steps`)
    answer = text.split("\n")[-1].strip()
    return answer or None
  raise ValueError(f"unknown answer format {fmt!r}; valid formats: {ANSWER_FORMATS}")


def _strip_latex(text: str) -> str:
  s = _TEXT_RE.sub(r"\1", text.strip())
  for junk in ("$", "\\!", "\\,", "\\;", "\\ ", "\\left", "\\right", " "):
    s = s.replace(junk, "")
  # Unicode minus, and a sentence's final period ("19.") which is not a decimal point.
  return s.replace("\u2212", "-").rstrip(".")


def parse_number(text: str) -> Fraction | None:
  """Parses an integer, decimal, "1,000"-style, "a/b" or `\\frac{a}{b}` number exactly.

  Args:
    text: an extracted answer; `$`, spaces, LaTeX spacing and `\\text{}` wrappers are ignored.

  Returns:
    The value as a Fraction, or None if `text` is not a single number.

  >>> [str(parse_number(s)) for s in ["-1,000", "2.50", "-3/4", "\\\\frac{6}{8}", "1e3", "x"]]
  ['-1000', '5/2', '-3/4', '3/4', '1000', 'None']
  """
  s = _strip_latex(text)
  if _THOUSANDS_RE.fullmatch(s):
    s = s.replace(",", "")
  parts = _FRAC_RE.fullmatch(s) or _RATIO_RE.fullmatch(s)
  try:
    if parts is None:
      return Fraction(s)
    if len(parts.groups()) == 3:
      sign, num, den = parts.groups()
      value = parse_number(num) / parse_number(den)
      return -value if sign == "-" else value
    return Fraction(parts.group(1)) / Fraction(parts.group(2))
  except (ValueError, TypeError, ZeroDivisionError):
    # TypeError: a \frac part that is itself not a number (None / x).
    return None


def _normalize_label(text: str) -> str:
  s = _strip_latex(text).casefold()
  # "(A)" and "A" are the same verdict.
  return s[1:-1] if len(s) == 3 and s[0] == "(" and s[-1] == ")" else s


def math_verify(completion: str, answer: str | int | float, fmt: str = "boxed") -> float:
  """Verifiable 0/1 reward: 1.0 if the completion's final answer equals the label.

  r = 1[parse(extract(completion)) == parse(answer)], exact rational comparison; when neither
  side is a number, case-folded string equality (judge labels "Yes"/"No"/"A"/"B").

  Args:
    completion: the decoded completion (prompt excluded).
    answer: the ground-truth label.
    fmt: answer format of the completion, one of ANSWER_FORMATS.

  Returns:
    1.0 or 0.0; 0.0 when no answer can be extracted.

  References:
    SPARK, arXiv 2509.22624, verifiable reward (official code InternLM/Spark
    `math_verify_2.py`).

  >>> math_verify("12+7 = \\\\boxed{19}", "19"), math_verify("\\\\box{1,000}", 1000)
  (1.0, 1.0)
  >>> math_verify("\\\\boxed{0.5}", "1/2"), math_verify("-3", "-3", fmt="short")
  (1.0, 1.0)
  >>> math_verify("\\\\boxed{18}", "19"), math_verify("19", "19")
  (0.0, 0.0)
  >>> math_verify("\\\\box{yes}", "Yes"), math_verify("\\\\boxed{(B)}", "B")
  (1.0, 1.0)
  """
  predicted = extract_answer(completion, fmt)
  if predicted is None:
    return 0.0
  label = str(answer)
  predicted_value, label_value = parse_number(predicted), parse_number(label)
  if predicted_value is not None and label_value is not None:
    return float(predicted_value == label_value)
  if predicted_value is None and label_value is None:
    return float(_normalize_label(predicted) == _normalize_label(label))
  return 0.0


def format_reward(completion: str, fmt: str = "boxed") -> float:
  """1.0 if the completion states a final answer in format `fmt`, else 0.0.

  "boxed": a closed, non-empty last box. "short": the whole stripped completion is one number
  (stricter than `extract_answer`, which reads only the first line).

  >>> format_reward("so \\\\boxed{19}"), format_reward("\\\\boxed{}"), format_reward("19")
  (1.0, 0.0, 0.0)
  >>> format_reward(" 19 ", "short"), format_reward("19 apples", "short")
  (1.0, 0.0)
  """
  if fmt == "short":
    return float(parse_number(completion) is not None)
  if fmt == "steps":
    from rewardjax.data import steps  # noqa: PLC0415 (data imports no rewards module)

    return float(steps.well_formed(completion))
  return float(bool(extract_answer(completion, fmt)))


def verify_batch(completions: Sequence[str], answers: Sequence[str | int | float],
                 fmt: str = "boxed") -> Float[np.ndarray, " B"]:
  """`math_verify` over B completions and their B labels (repeat labels G times for groups).

  Returns:
    float32 `[B]` rewards in {0, 1}.

  >>> verify_batch(["\\\\boxed{2}", "\\\\boxed{3}"], ["2", "2"]).tolist()
  [1.0, 0.0]
  """
  if len(completions) != len(answers):
    raise ValueError(f"{len(completions)} completions but {len(answers)} answers")
  return np.array([math_verify(c, a, fmt) for c, a in zip(completions, answers)], np.float32)
