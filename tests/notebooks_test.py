"""Notebooks: each `notebooks/<name>.py` runs on tiny settings and its `.ipynb` is in sync.

The `.py` files are jupytext percent format (`# %%` code cells, `# %% [markdown]` cells whose
lines start with "# "). `to_ipynb` is the small converter that writes the `.ipynb` twins;
regenerate them after editing a notebook with `python tests/notebooks_test.py`.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
TINY_ENV = {"REWARDJAX_NOTEBOOK_TINY": "1"}  # notebooks read it to pick tiny settings
METADATA = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"}}


def _cell(kind: str, lines: list[str]) -> dict | None:
  while lines and not lines[0].strip():
    lines = lines[1:]
  while lines and not lines[-1].strip():
    lines = lines[:-1]
  if not lines:
    return None
  if kind == "markdown":
    lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]
  source = [line + "\n" for line in lines[:-1]] + [lines[-1]]
  cell = {"cell_type": kind, "metadata": {}, "source": source}
  if kind == "code":
    cell.update(execution_count=None, outputs=[])
  return cell


def to_ipynb(text: str) -> dict:
  """The notebook (nbformat 4) of a percent-format script; a leading `# ---` header is dropped."""
  lines = text.splitlines()
  if lines and lines[0] == "# ---":
    lines = lines[lines.index("# ---", 1) + 1:]
  cells, kind, current = [], "code", []
  for line in lines:
    if line.startswith("# %%"):
      cells.append(_cell(kind, current))
      kind, current = ("markdown" if "[markdown]" in line else "code"), []
    else:
      current.append(line)
  cells.append(_cell(kind, current))
  return {"cells": [c for c in cells if c is not None], "metadata": METADATA,
          "nbformat": 4, "nbformat_minor": 4}


def _dump(notebook: dict) -> str:
  return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def test_converter_splits_cells():
  nb = to_ipynb("# %% [markdown]\n# # Title\n# text\n\n# %%\nx = 1\n\ny = 2\n")
  assert [c["cell_type"] for c in nb["cells"]] == ["markdown", "code"]
  assert nb["cells"][0]["source"] == ["# Title\n", "text"]
  assert nb["cells"][1]["source"] == ["x = 1\n", "\n", "y = 2"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ipynb_in_sync(path):
  ipynb = path.with_suffix(".ipynb")
  assert ipynb.exists(), f"{ipynb.name} missing: run `python tests/notebooks_test.py`"
  assert ipynb.read_text(encoding="utf-8") == _dump(to_ipynb(path.read_text(encoding="utf-8"))), (
      f"{ipynb.name} is out of sync with {path.name}: run `python tests/notebooks_test.py`")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_tiny_settings(path, tmp_path):
  env = {**os.environ, **TINY_ENV, "PYTHONPATH": str(ROOT),
         "REWARDJAX_NOTEBOOK_WORKDIR": str(tmp_path)}
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


if __name__ == "__main__":
  for notebook in NOTEBOOKS:
    notebook.with_suffix(".ipynb").write_text(
        _dump(to_ipynb(notebook.read_text(encoding="utf-8"))), encoding="utf-8")
    print("wrote", notebook.with_suffix(".ipynb"))
