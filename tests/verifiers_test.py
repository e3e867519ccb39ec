"""Tests for rewardjax.rewards.verifiers: answer extraction and exact numeric comparison."""

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
