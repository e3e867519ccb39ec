"""The settings cell of the notebooks under `notebooks/`, shared by Colab, Jupyter and CI.

    settings = notebook.setup("grpo")   # after the install cell
    if settings.tiny: ...               # CI's seconds-long sizes (REWARDJAX_NOTEBOOK_TINY=1)

The notebooks import `configs/` (plain files at the repo root, not an installed package) as
`launch/train.py` does; `setup` puts the repo root on `sys.path`, so a notebook runs from
`notebooks/`, from the repo root, or from Colab after its install cell cloned the repo.
"""

import dataclasses
import os
import sys
import tempfile

TINY_ENV = "REWARDJAX_NOTEBOOK_TINY"        # "1": the tiny settings CI executes
WORKDIR_ENV = "REWARDJAX_NOTEBOOK_WORKDIR"  # where runs write (default: a new temp dir)


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a notebook reads from its environment.

  Attributes:
    tiny: run the seconds-long sizes (CI) instead of the notebook's own (a few minutes on a
      CPU runtime).
    workdir: directory for the notebook's runs (checkpoints, metrics.jsonl, curves.png).
    repo: the repo root (holds `configs/`, `notebooks/`).
  """
  tiny: bool
  workdir: str
  repo: str


def setup(name: str, cpu_devices: int | None = None) -> Settings:
  """Makes `configs` importable, reads the tiny switch, picks a workdir and prints the machine.

  Args:
    name: the notebook's name (prefix of its temp workdir).
    cpu_devices: emulate this many CPU devices (for sharding demos); must come before
      anything touches a JAX device, so call `setup` first.

  Returns:
    The `Settings`.
  """
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if not os.path.isfile(os.path.join(repo, "configs", "base.py")):
    raise RuntimeError(f"rewardjax is installed from {repo}, which has no configs/: the "
                       "notebooks need a clone (`git clone ... && pip install -e rewardjax`), "
                       "as their install cell does, not a wheel.")
  if repo not in sys.path:
    sys.path.insert(0, repo)
  import jax  # noqa: PLC0415 (after the repo is on the path; before any device is touched)

  if cpu_devices:
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  from rewardjax import machine  # noqa: PLC0415

  tiny = os.environ.get(TINY_ENV) == "1"
  workdir = os.environ.get(WORKDIR_ENV) or tempfile.mkdtemp(prefix=f"rewardjax_{name}_")
  os.makedirs(workdir, exist_ok=True)
  devices = jax.devices()
  print(f"jax {jax.__version__}: {len(devices)} {devices[0].platform} device(s); cpu "
        f"{machine.cpu_model()} ({machine.machine_class(machine.cpu_flags())}, "
        f"{os.cpu_count()} cores); workdir {workdir}" + ("; tiny settings" if tiny else ""))
  return Settings(tiny=tiny, workdir=os.path.abspath(workdir), repo=repo)
