"""Tests for rewardjax.rewards.verifiers: answer extraction and exact numeric comparison."""

import math
import sys
from fractions import Fraction

import numpy as np
import pytest

from rewardjax.rewards import verifiers


@pytest.mark.parametrize("text, expected", [
    (r"\boxed{19}", "19"),
    (r"first \boxed{1} then \boxed{2}", "2"),                  # last occurrence wins
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),                   # nested braces
    (r"\boxed{\boxed{7}}", "7"),                                 # the innermost is the last start
    (r"\box{Yes}", "Yes"),                                       # SPARK judge spelling
    (r"\boxed{3} and \box{4}", "4"),                             # both spellings, last wins
    (r"\boxed {  5 }", "5"),                                     # space before the brace, padding
    (r"\boxed{}", ""),
    (r"\boxed{1} \boxed{2", None),                               # truncated last box: no answer
    (r"\boxplus{3}", None),                                      # other macros are not boxes
    ("19", None),
    ("", None),
])
def test_extract_boxed(text, expected):
  assert verifiers.extract_boxed(text) == expected


def test_extract_answer_formats():
  assert verifiers.extract_answer("  42\nmore text", "short") == "42"
  assert verifiers.extract_answer("   \n", "short") is None
  assert verifiers.extract_answer(r"so \boxed{42}.", "boxed") == "42"
  with pytest.raises(ValueError, match="valid formats.*boxed.*short"):
    verifiers.extract_answer("42", "latex")


@pytest.mark.parametrize("text, expected", [
    ("19", Fraction(19)),
    ("-7", Fraction(-7)),
    ("+7", Fraction(7)),
    ("\u22125", Fraction(-5)),                                   # unicode minus
    ("1,000", Fraction(1000)),
    ("-12,345,678.5", Fraction(-24691357, 2)),
    ("2.50", Fraction(5, 2)),
    ("19.", Fraction(19)),                                       # a sentence's full stop
    ("$19$", Fraction(19)),
    (r"\text{19}", Fraction(19)),
    ("3/4", Fraction(3, 4)),
    ("-6/8", Fraction(-3, 4)),
    ("0.5/2", Fraction(1, 4)),
    (r"\frac{1}{2}", Fraction(1, 2)),
    (r"-\dfrac{3}{6}", Fraction(-1, 2)),
    (r"\frac{-3}{4}", Fraction(-3, 4)),
    ("1e3", Fraction(1000)),
    ("1/0", None),
    (r"\frac{1}{0}", None),
    (r"\frac{x}{2}", None),
    ("1,2", None),                                               # not a thousands separator
    ("12,34", None),
    ("1.2.3", None),
    ("abc", None),
    ("", None),
    ("inf", None),
])
def test_parse_number(text, expected):
  assert verifiers.parse_number(text) == expected


@pytest.mark.parametrize("completion, answer, fmt, expected", [
    (r"12+7 = \boxed{19}", "19", "boxed", 1.0),
    (r"\boxed{19}", 19, "boxed", 1.0),                            # integer label
    (r"\boxed{19.0}", "19", "boxed", 1.0),
    (r"\boxed{1,000}", "1000", "boxed", 1.0),
    (r"\boxed{-1,000}", "-1000", "boxed", 1.0),
    (r"\boxed{-3}", "3", "boxed", 0.0),                           # sign matters
    (r"\boxed{\frac{1}{2}}", "0.5", "boxed", 1.0),
    (r"\boxed{2/4}", r"\frac{1}{2}", "boxed", 1.0),
    (r"\boxed{0.3333}", "1/3", "boxed", 0.0),                     # exact, no tolerance
    (r"\boxed{0.1}", 0.1, "boxed", 1.0),                           # float label, exact decimal
    (r"\boxed{1000001}", "1000000", "boxed", 0.0),
    (r"\boxed{18}", "19", "boxed", 0.0),
    (r"\boxed{19} no wait \boxed{18}", "19", "boxed", 0.0),       # last box decides
    (r"\boxed{18} no wait \box{19}", "19", "boxed", 1.0),
    ("19", "19", "boxed", 0.0),                                   # no box, no reward
    (r"\boxed{19", "19", "boxed", 0.0),
    (r"\boxed{}", "19", "boxed", 0.0),
    (r"\boxed{nineteen}", "19", "boxed", 0.0),                    # text vs number
    (r"\box{Yes}", "Yes", "boxed", 1.0),                          # judge labels: string match
    (r"\boxed{yes}", "Yes", "boxed", 1.0),
    (r"\boxed{No}", "Yes", "boxed", 0.0),
    (r"\boxed{(A)}", "A", "boxed", 1.0),
    (r"\boxed{\text{B}}", "B", "boxed", 1.0),
    ("19", "19", "short", 1.0),
    (" -62\n", "-62", "short", 1.0),
    ("19\n20", "19", "short", 1.0),                               # first line only
    ("20\n19", "19", "short", 0.0),
    ("", "19", "short", 0.0),
])
def test_math_verify(completion, answer, fmt, expected):
  assert verifiers.math_verify(completion, answer, fmt) == expected


@pytest.mark.parametrize("completion, fmt, expected", [
    (r"reasoning ... \boxed{19}", "boxed", 1.0),
    (r"\box{Yes}", "boxed", 1.0),
    (r"\boxed{}", "boxed", 0.0),
    (r"\boxed{19", "boxed", 0.0),
    ("19", "boxed", 0.0),
    ("19", "short", 1.0),
    (" -1,000 ", "short", 1.0),
    ("19 apples", "short", 0.0),
    ("19\n20", "short", 0.0),                                     # stricter than extraction
    ("", "short", 0.0),
])
def test_format_reward(completion, fmt, expected):
  assert verifiers.format_reward(completion, fmt) == expected


def test_verify_batch_matches_scalar_and_checks_lengths():
  completions = [r"\boxed{2}", r"\boxed{3}", "nothing", r"\box{2.0}"]
  rewards = verifiers.verify_batch(completions, ["2"] * 4)
  assert rewards.dtype == np.float32
  np.testing.assert_array_equal(rewards, [1.0, 0.0, 0.0, 1.0])
  with pytest.raises(ValueError, match="4 completions but 3 answers"):
    verifiers.verify_batch(completions, ["2"] * 3)


# ---- inputs that must not hang: the work is counted, not timed --------------------------------
# A call's cost is bounded by counts instead of a wall clock (which flakes on a loaded machine):
# * Python line events (`sys.settrace`) stay under LINE_BUDGET. CPython runs some 10^7 simple
#   lines a second, so the budget is ~2 ms of Python; the old per-character brace scan took
#   600,000 events on the nested box below.
# * No big int is built: every Fraction made from text is vetted BEFORE it is made (its digits
#   and exponent within the caps), so a regression fails here instead of hanging on 10**10**8,
#   and every numerator / denominator made or returned stays under MAX_BITS.
# Not counted: C-level scans (regexes, str.strip / replace), linear in the input (a few ms per
# megabyte; `_LAST_BOX_RE` is anchored so that its backtracking is one pass, not quadratic).
LINE_BUDGET = 20_000
MAX_BITS = math.ceil((verifiers.MAX_DIGITS + verifiers.MAX_EXPONENT) * math.log2(10))
MEGA = 10**6

# (id, text, its parse_number value); 19 is the label of the comparisons below.
ADVERSARIAL = [
    ("huge_exponent", "9e99999999", None),
    ("tiny_exponent", "1e-99999999", None),
    ("million_digit_exponent", "1e" + "9" * MEGA, None),
    ("million_digits", "1" * MEGA, None),
    ("million_decimals", "0." + "0" * MEGA + "1", None),
    ("huge_denominator", "1/" + "9" * MEGA, None),
    ("frac_huge_denominator", r"\frac{1}{" + "9" * MEGA + "}", None),
    ("frac_huge_exponents", r"\frac{9e99999999}{1e-99999999}", None),
    ("nested_braces_box", r"\boxed{" + "{" * 10**5 + "19" + "}" * 10**5 + "}", None),
    ("unclosed_boxes", r"\boxed{" * 10**5, None),
    ("thousands_run", "1" + ",000" * 300_000, None),
    ("broken_thousands", "1,000," * 10**5, None),
    ("unclosed_text", r"\text{" * 10**5 + "19", None),
    ("box_then_spaces", r"\boxed" + " " * MEGA, None),
    ("latex_spacing", r"\," * 10**5 + "19", None),        # 19 once stripped, but over the cap
    ("million_lines", "1\n" * (MEGA // 2), None),
    ("arabic_indic_run", "\u0663" * MEGA, None),             # "٣٣٣...": a million decimal digits
    ("arabic_indic_19", "\u0661\u0669", Fraction(19)),       # "١٩": Unicode decimal digits
    ("fullwidth_19", "\uff11\uff19", Fraction(19)),          # "１９"
    ("superscript_19", "\u00b9\u2079", None),                # "¹⁹": isdigit, not isdecimal
]


def _vetted_fraction(*args):
  """`Fraction`, refusing (before building anything) text over the caps; checks the result."""
  for arg in args:
    if isinstance(arg, str):
      mantissa, _, exponent = arg.lower().partition("e")
      assert sum(c.isdecimal() for c in mantissa) <= verifiers.MAX_DIGITS, arg[:50]
      assert len(exponent) < 8 and abs(int(exponent or 0)) <= verifiers.MAX_EXPONENT, arg[:50]
  value = Fraction(*args)
  assert max(value.numerator.bit_length(), value.denominator.bit_length()) <= MAX_BITS
  return value


def _counted(fn, *args):
  """(fn(*args), Python line events it ran), the count stopped past LINE_BUDGET."""
  events = 0

  def trace(frame, event, arg):
    nonlocal events
    if frame.f_code.co_filename == __file__:  # this file's vetting is not the code under test
      return None
    if event == "line":
      events += 1
      if events > LINE_BUDGET:  # raising from a trace function unsets it and fails the call
        raise AssertionError(f"{fn.__name__} ran more than {LINE_BUDGET} lines")
    return trace

  previous = sys.gettrace()
  sys.settrace(trace)
  try:
    result = fn(*args)
  finally:
    sys.settrace(previous)
  return result, events


@pytest.mark.parametrize("text, value", [(t, v) for _, t, v in ADVERSARIAL],
                         ids=[name for name, _, _ in ADVERSARIAL])
def test_adversarial_inputs_cost_bounded_work(monkeypatch, text, value):
  monkeypatch.setattr(verifiers, "Fraction", _vetted_fraction)
  right = float(value == 19)
  boxed = rf"\boxed{{{text}}}"
  calls = [
      # as a completion: raw in each format, and boxed
      (verifiers.parse_number, (text,), value),
      (verifiers.math_verify, (text, "19", "boxed"), 0.0),           # no closed box to read
      (verifiers.math_verify, (text, "19", "short"), right),
      (verifiers.math_verify, (text, "19", "steps"), right),
      (verifiers.math_verify, (boxed, "19", "boxed"), right),
      (verifiers.format_reward, (text, "short"), float(value is not None)),
      (verifiers.format_reward, (text, "boxed"), 0.0),
      # as the label
      (verifiers.math_verify, (r"\boxed{19}", text, "boxed"), right),
      (verifiers.math_verify, ("19", text, "short"), right),
  ]
  for fn, args, expected in calls:
    result, events = _counted(fn, *args)
    assert result == expected, (fn.__name__, [a[:40] for a in args])
    assert events <= LINE_BUDGET
    if isinstance(result, Fraction):
      assert max(result.numerator.bit_length(), result.denominator.bit_length()) <= MAX_BITS


def test_the_counts_see_the_work_they_bound():
  # The brace scan is counted (~3 lines a brace) and stops at MAX_ANSWER_CHARS: a 10^5-deep
  # nest costs exactly what a 10^4-deep one does.
  few = _counted(verifiers.extract_boxed, r"\boxed{" + "{}" * 10 + "}")[1]
  many = _counted(verifiers.extract_boxed, r"\boxed{" + "{}" * 1000 + "}")[1]
  assert many - few > 5000
  deep, deeper = (_counted(verifiers.extract_boxed, r"\boxed{" + "{" * n)[1]
                  for n in (10**4, 10**5))
  assert deep == deeper <= LINE_BUDGET
  # A Fraction over the caps is refused before it is built.
  with pytest.raises(AssertionError):
    _vetted_fraction("9e99999999")


N, E, A = verifiers.MAX_DIGITS, verifiers.MAX_EXPONENT, verifiers.MAX_ANSWER_CHARS


@pytest.mark.parametrize("text, expected", [
    ("1" * N, Fraction(int("1" * N))),                            # at the digit cap
    ("1" * (N + 1), None),
    ("0." + "0" * (N - 2) + "1", Fraction(1, 10 ** (N - 1))),     # leading zeros are digits
    ("1" * N + ".0", None),                                       # so are trailing ones
    ("1e1000", Fraction(10**E)),                                  # at the exponent cap
    ("-1e-1000", Fraction(-1, 10**E)),
    ("1e1001", None),
    ("1e-1001", None),
    ("1/" + "7" * N, Fraction(1, int("7" * N))),                  # each side within the cap
    (r"\frac{1e1000}{1e-1000}", Fraction(10 ** (2 * E))),
    ("\u0663", Fraction(3)),                                      # "٣" Arabic-Indic
    ("\uff13/\uff14", Fraction(3, 4)),                            # "３/４" fullwidth
    ("\u00b2", None),                                             # "²" superscript
    ("2\u00b2", None),
    ("\u2460", None),                                             # "①" circled
    ("1_000", None),                                              # "_" is a subscript
    ("1010_2", None),
    (" " * A + "1", None),                                        # longer than MAX_ANSWER_CHARS
])
def test_parse_number_caps_and_digits(text, expected):
  assert verifiers.parse_number(text) == expected


@pytest.mark.parametrize("completion, answer, expected", [
    (r"\boxed{1e1000}", "10e999", 1.0),           # within the caps: numeric comparison
    (r"\boxed{1e1001}", "1e1001", 1.0),           # over: not a number; the same text matches
    (r"\boxed{1e1001}", "10e1000", 0.0),          # but no other spelling of it
    (r"\boxed{9e99999999}", "9e99999999", 1.0),
    (r"\boxed{9e99999999}", "9.0e99999999", 0.0),
    (r"\boxed{9e99999999}", "9", 0.0),
    (r"\boxed{19}", "9e99999999", 0.0),
    (r"\boxed{" + "x" * A + "}", "x" * A, 1.0),   # the longest answer read
    (r"\boxed{" + "x" * (A + 1) + "}", "x" * (A + 1), 0.0),
    ("x" * (A + 1), "x" * (A + 1), 0.0),
])
def test_math_verify_over_the_caps(completion, answer, expected):
  fmt = "short" if completion.startswith("x") else "boxed"
  assert verifiers.math_verify(completion, answer, fmt) == expected


def test_extract_boxed_reads_within_max_answer_chars():
  assert verifiers.extract_boxed(r"\boxed{" + "{}" * (A // 2) + "}") == "{}" * (A // 2)
  assert verifiers.extract_boxed(r"\boxed{" + "x" * (A + 1) + "}") is None
  assert verifiers.extract_boxed(r"\boxed{1}" + r"\boxed{" + "{" * 10**5) is None


def test_parse_number_under_a_lowered_int_digit_limit():
  # int() refuses digit strings over sys.get_int_max_str_digits(); within the caps that is a
  # user's lowered limit, and parsing says "not a number" rather than raising.
  previous = sys.get_int_max_str_digits()
  sys.set_int_max_str_digits(640)
  try:
    assert verifiers.parse_number("1" * 700) is None
    assert verifiers.parse_number("1" * 600) == int("1" * 600)
  finally:
    sys.set_int_max_str_digits(previous)
