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

Extraction, `parse_number` and `math_verify` run in time linear in their input, whatever a
completion or a label holds (`tests/verifiers_test.py` counts the work on adversarial inputs):
numbers are built only within `MAX_DIGITS` / `MAX_EXPONENT`, a final answer is read within
`MAX_ANSWER_CHARS`, and no regex backtracks more than linearly. A number over a cap is not a
number: it compares as text, so it earns 0 against any numeric label and matches only the same
text ("9e99999999" matches "9e99999999", not "9.0e99999999").

Digits are Unicode decimal digits (`str.isdecimal`, what `int()` and `Fraction` accept and what
a regex's `\\d` matches): "١٩" (Arabic-Indic) and "１９" (fullwidth) are 19. Characters that are
`str.isdigit` but not decimal, superscripts "²" and circled "①", are not digits ("2²" is not a
number). Python's digit separator "_" is not read either: in LaTeX it is a subscript ("1010_2").
"""

import re
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
from jaxtyping import Float

ANSWER_FORMATS = ("boxed", "short", "steps")

# Caps that keep a completion (or a bad label) from stalling training. Fraction("9e99999999")
# computes 10**99999999, a 330-million-bit int, inside one C call that no signal interrupts, and
# int() of a long digit string is quadratic. The caps sit far above any answer a verifier
# compares (100! has 158 digits; a double's exponent is at most 308), and at them a number is a
# (MAX_DIGITS + MAX_EXPONENT) * log2(10) ~ 6,600-bit int: microseconds to build and compare.
MAX_DIGITS = 1000         # digits of a number's mantissa (integer and fraction parts together)
MAX_EXPONENT = 1000       # |e| of scientific notation ("1e-5"), after any sign
# The longest final answer read: a box still open this many characters after `\boxed{` counts
# as unclosed, and a longer text is not parsed as a number (room for MAX_DIGITS digits with
# "1,000" separators, `\frac{}{}` and LaTeX spacing). It bounds the Python-level brace scan.
MAX_ANSWER_CHARS = 4000

# The LAST `\box{` or `\boxed{` (optional spaces before the brace; `\boxplus` etc. do not
# match): the greedy `.*`, anchored by `match`, backtracks from the end once, so the search is
# linear (`search` would restart it at every position: quadratic when there is no box).
_LAST_BOX_RE = re.compile(r".*\\box(?:ed)?\s*\{", re.DOTALL)
_BRACE_RE = re.compile(r"[{}]")
# What str.splitlines splits on (the "short" format reads the first line without splitting all).
_LINE_BREAK_RE = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
# sign, integer digits, optional fraction digits, optional exponent: `Fraction`'s decimal form
# without its "_" separators and whitespace; one of the two digit runs must be non-empty.
_DECIMAL_RE = re.compile(r"[+-]?(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?")
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
    truncated completion does not fall back to an earlier box); a box not closed within
    `MAX_ANSWER_CHARS` counts as never closed, so a 10^5-deep nest costs a bounded scan.

  >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} or rather \\box{ 3 }")
  '3'
  >>> print(extract_boxed(r"\\boxed{\\frac{1}{2}}"))
  \\frac{1}{2}
  >>> extract_boxed(r"\\boxed{1} \\boxed{2"), extract_boxed("19")
  (None, None)
  """
  last_box = _LAST_BOX_RE.match(text)
  if last_box is None:
    return None
  start, depth = last_box.end(), 1
  # Only the braces are visited, and only within MAX_ANSWER_CHARS: the rest is C-speed regex.
  for brace in _BRACE_RE.finditer(text, start, start + MAX_ANSWER_CHARS + 1):
    depth += 1 if brace.group() == "{" else -1
    if depth == 0:
      return text[start:brace.start()].strip()
  return None


def extract_answer(text: str, fmt: str) -> str | None:
  """Final answer of a completion in answer format `fmt` (one of ANSWER_FORMATS).

  >>> extract_answer("The sum is \\\\boxed{19}.", "boxed"), extract_answer(" 19\\nok", "short")
  ('19', '19')
  """
  if fmt == "boxed":
    return extract_boxed(text)
  if fmt == "short":  # the first line, as `text.strip().splitlines()[0]` without the list
    stripped = text.strip()
    line_break = _LINE_BREAK_RE.search(stripped)
    answer = (stripped if line_break is None else stripped[:line_break.start()]).strip()
    return answer or None
  if fmt == "steps":  # the last line (`rewardjax.data.steps`)
    answer = text.rpartition("\n")[2].strip()
    return answer or None
  raise ValueError(f"unknown answer format {fmt!r}; valid formats: {ANSWER_FORMATS}")


def _strip_latex(text: str) -> str:
  s = _TEXT_RE.sub(r"\1", text.strip())
  for junk in ("$", "\\!", "\\,", "\\;", "\\ ", "\\left", "\\right", " "):
    s = s.replace(junk, "")
  # Unicode minus, and a sentence's final period ("19.") which is not a decimal point.
  return s.replace("\u2212", "-").rstrip(".")


def _decimal(s: str) -> Fraction | None:
  """`Fraction(s)` of a decimal "-1.5e3" within MAX_DIGITS and MAX_EXPONENT, else None."""
  number = _DECIMAL_RE.fullmatch(s)
  if number is None:
    return None
  whole, fraction, exponent = number.groups(default="")
  digits = len(whole) + len(fraction)
  # int(exponent) is safe: the whole text is at most MAX_ANSWER_CHARS long.
  if not 0 < digits <= MAX_DIGITS or (exponent and abs(int(exponent)) > MAX_EXPONENT):
    return None
  return Fraction(s)


def parse_number(text: str) -> Fraction | None:
  """Parses an integer, decimal, "1,000"-style, "a/b" or `\\frac{a}{b}` number exactly.

  Args:
    text: an extracted answer; `$`, spaces, LaTeX spacing and `\\text{}` wrappers are ignored.

  Returns:
    The value as a Fraction, or None if `text` is not a single number, or is one over the caps:
    longer than MAX_ANSWER_CHARS, or with a mantissa (numerator or denominator) of more than
    MAX_DIGITS digits or an exponent beyond +-MAX_EXPONENT.

  >>> [str(parse_number(s)) for s in ["-1,000", "2.50", "-3/4", "\\\\frac{6}{8}", "1e3", "x"]]
  ['-1000', '5/2', '-3/4', '3/4', '1000', 'None']
  >>> parse_number("9e99999999"), parse_number("1e-1001"), parse_number("2²")
  (None, None, None)
  """
  if len(text) > MAX_ANSWER_CHARS:
    return None
  s = _strip_latex(text)
  if _THOUSANDS_RE.fullmatch(s):
    s = s.replace(",", "")
  parts = _FRAC_RE.fullmatch(s) or _RATIO_RE.fullmatch(s)
  try:
    if parts is None:
      return _decimal(s)
    if len(parts.groups()) == 3:
      sign, num, den = parts.groups()
      value = parse_number(num) / parse_number(den)
      return -value if sign == "-" else value
    return _decimal(parts.group(1)) / _decimal(parts.group(2))
  except (ValueError, TypeError, ZeroDivisionError):
    # TypeError: a part that is itself not a number (None / x). ValueError: int() refusing a
    # digit string over `sys.get_int_max_str_digits()` when a user lowered it below the caps.
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
    1.0 or 0.0; 0.0 when no answer can be extracted, or when the answer or the label is longer
    than MAX_ANSWER_CHARS (never compared: a megabyte of text costs no more than a short one).

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
  if len(predicted) > MAX_ANSWER_CHARS or len(label) > MAX_ANSWER_CHARS:
    return 0.0
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
