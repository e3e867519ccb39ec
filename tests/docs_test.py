"""docs/losses.md is generated from the loss docstrings and cannot drift from them."""

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

import rewardjax.losses

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def table():
  spec = importlib.util.spec_from_file_location("make_losses_table",
                                                ROOT / "docs" / "make_losses_table.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _public_names() -> set:
  """What `from rewardjax.losses import *` users see: every non-module public attribute."""
  return {n for n, v in vars(rewardjax.losses).items()
          if not n.startswith("_") and not isinstance(v, types.ModuleType)}


def test_losses_md_is_up_to_date(table):
  on_disk = (ROOT / "docs" / "losses.md").read_text(encoding="utf-8")
  assert table.render() == on_disk, "stale docs/losses.md: run python docs/make_losses_table.py"


def test_every_public_name_appears_and_every_function_has_a_full_row(table):
  text = (ROOT / "docs" / "losses.md").read_text(encoding="utf-8")
  missing = sorted(n for n in _public_names() if f"`{n}`" not in text)
  assert not missing, f"public names absent from docs/losses.md: {missing}"
  rows = [row for _, rows, _ in table.collect_rows().values() for row in rows]
  functions = {n for n in _public_names() if callable(getattr(rewardjax.losses, n))
               and not isinstance(getattr(rewardjax.losses, n), type)}
  assert {row["name"] for row in rows} == functions
  for row in rows:  # collect_rows raises on a missing field; belt and braces for empty ones
    assert all(row[f].strip() for f in ("summary", "formula", "paper", "trl")), row


def test_docstring_sections_are_parsed_inline_and_as_blocks(table):
  doc = '''Summary line.

  Equation:
    L = a + b
    + c

  Args:
    x: TRL: not a section (indented).

  TRL: RewardTrainer
    Prose about differences is ignored.

  References:
    arXiv:0000.00000 eq. 1;
    second line.
  '''
  assert table.parse_docstring(doc) == {
    "summary": "Summary line.", "formula": "L = a + b; + c", "trl": "RewardTrainer",
    "paper": "arXiv:0000.00000 eq. 1; second line."}


def test_metadata_for_a_missing_function_or_a_duplicated_field_is_an_error(table, monkeypatch):
  monkeypatch.setitem(table.METADATA, "no_such_loss", {"trl": "none"})
  with pytest.raises(ValueError, match="no_such_loss"):
    table.collect_rows()
  monkeypatch.delitem(table.METADATA, "no_such_loss")
  monkeypatch.setitem(table.METADATA, "bradley_terry_loss", {"trl": "RewardTrainer"})
  with pytest.raises(ValueError, match="repeats the docstring"):
    table.collect_rows()


def test_importing_losses_pulls_in_no_heavy_framework():
  code = ("import rewardjax.losses, sys; "
          "assert not {'flax', 'transformers', 'torch'} & set(sys.modules), "
          "sorted({'flax', 'transformers', 'torch'} & set(sys.modules))")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr
