"""Trains a rewardjax config: `python launch/train.py --config=configs/spark.py`.

Overrides: `--config.train.steps=10`; paper variants: `--config=configs/grpo.py:variant=dapo`.
Unknown config keys fail (the config is locked). All logic lives in `rewardjax.train.run`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/spark.py", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory (checkpoints, metrics); an "
                               "existing one is resumed. Default: runs/<config name>.")


def load_config(config_arg: str, overrides: dict | None = None):
  """The locked config of "configs/<name>.py[:arg]", as `--config=` builds it, with dotted
  `overrides` ({"train.steps": 2}) applied like `--config.train.steps=2`."""
  import importlib.util  # noqa: PLC0415

  path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("rewardjax_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split(".")
    block = config
    for name in parents:
      block = block[name]
    if leaf not in block:
      raise KeyError(f"--config.{key}: no such field; fields here: {sorted(block)}")
    block[leaf] = value
  config.lock()
  return config


def train_config(config, workdir: str) -> dict:
  """What `main` runs after flag parsing: multi-host init, a device line, `train.run`."""
  import jax  # noqa: PLC0415 (after flag parsing, so --help is fast)

  from rewardjax import sharding, train  # noqa: PLC0415

  if config.distributed.initialize:  # must precede every other jax call, even jax.devices()
    dist = config.distributed
    sharding.initialize_distributed(dist.coordinator_address, dist.num_processes,
                                    dist.process_id)
  logging.info("JAX devices: %s", jax.devices())
  print(f"rewardjax: {jax.device_count()} {jax.default_backend()} device(s), workdir {workdir}")
  return train.run(config, workdir)


def main(argv):
  del argv
  # orbax logs every checkpoint step at INFO; the progress display already says what happens.
  logging.set_verbosity(logging.WARNING)
  workdir = _WORKDIR.value or os.path.join(
      "runs", os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0])
  train_config(_CONFIG.value, workdir)


if __name__ == "__main__":
  app.run(main)
