"""Notebooks: each `notebooks/<name>.ipynb` (the file Colab opens) executes top to bottom with
nbclient on tiny settings, keeps an image, and is the jupytext twin of `notebooks/<name>.py`.

The `.py` files are jupytext percent scripts paired with their `.ipynb` (`formats:
ipynb,py:percent` in the header). After editing a `.py`, regenerate its twin with
`jupytext --sync notebooks/<name>.py` (`pip install -e ".[test]"` installs jupytext), or
execute it in full settings and keep the outputs in the `.ipynb` (what GitHub shows):
`python tests/notebooks_test.py grpo spark`.
"""

import contextlib
import os
import pathlib
import re
import sys

import jax
import jupytext
import nbclient
import nbformat
import pytest

from rewardjax import notebook

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
INSTALL_URL = "https://github.com/rewardjax/rewardjax.git"


def _cells(nb) -> list[tuple[str, str]]:
  return [(cell.cell_type, cell.source) for cell in nb.cells]


def test_every_notebook_has_its_twin_and_the_install_cell():
  assert len(NOTEBOOKS) >= 7, [p.name for p in NOTEBOOKS]
  for path in NOTEBOOKS:
    text = path.read_text(encoding="utf-8")
    assert "formats: ipynb,py:percent" in text, f"{path.name}: not paired by jupytext"
    assert INSTALL_URL in text and "notebook.setup(" in text, (
        f"{path.name}: lacks the Colab install cell or the settings cell")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_ipynb_in_sync(path):
  ipynb = path.with_suffix(".ipynb")
  hint = f"run `jupytext --sync notebooks/{path.name}`"
  assert ipynb.exists(), f"{ipynb.name} missing: {hint}"
  assert _cells(nbformat.read(ipynb, as_version=4)) == _cells(jupytext.read(path)), (
      f"{ipynb.name} is out of sync with {path.name}: {hint}")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_on_tiny_settings(path, tmp_path, monkeypatch):
  nb = nbformat.read(path.with_suffix(".ipynb"), as_version=4)
  # The kernel inherits this environment: tiny sizes, a workdir of the test's own, the test
  # session's compilation cache (the notebooks compile the programs the smoke tests compiled),
  # one CPU device unless the notebook asks for more, and the inline plot backend.
  monkeypatch.setenv(notebook.TINY_ENV, "1")
  monkeypatch.setenv(notebook.WORKDIR_ENV, str(tmp_path))
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir)
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
  try:
    execute(nb)
  except nbclient.exceptions.CellExecutionError as e:
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the kernel's traceback is coloured
    pytest.fail(f"{path.with_suffix('.ipynb').name}: {message[-4000:]}", pytrace=False)
  images = [output for cell in nb.cells if cell.cell_type == "code"
            for output in cell.outputs if "image/png" in output.get("data", {})]
  assert images, f"{path.with_suffix('.ipynb').name} drew no picture"


def execute(nb) -> None:
  """Runs `nb` in place in a fresh python3 kernel started in notebooks/, as Colab would (one
  CPU device unless the notebook asks for more, the inline plot backend)."""
  env = {**os.environ, "PYTHONPATH": str(ROOT),
         "JAX_PLATFORMS": "cpu"}  # libtpu (the aot extra) is installed here, no TPU
  for name in ("XLA_FLAGS", "MPLBACKEND"):
    env.pop(name, None)
  client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                                   resources={"metadata": {"path": str(ROOT / "notebooks")}})
  with _environment(env):
    client.execute()


@contextlib.contextmanager
def _environment(env):
  """The kernel inherits os.environ at its start: set it for the call, then restore it."""
  saved = dict(os.environ)
  os.environ.clear()
  os.environ.update(env)
  try:
    yield
  finally:
    os.environ.clear()
    os.environ.update(saved)


if __name__ == "__main__":
  for name in sys.argv[1:]:
    target = ROOT / "notebooks" / f"{name}.ipynb"
    notebook_ = jupytext.read(target.with_suffix(".py"))
    execute(notebook_)
    jupytext.write(notebook_, target)
    print("executed (full settings) and wrote", target)
