"""Trains a rewardjax config: `python launch/train.py --config=configs/spark.py`.

Overrides: `--config.train.steps=10`; paper variants: `--config=configs/grpo.py:variant=dapo`.
Unknown config keys fail (the config is locked). All logic lives in `rewardjax.train.run`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from configs import common  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/spark.py", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory (checkpoints, metrics); an "
                               "existing one is resumed. Default: runs/<config name>.")


# Loads "configs/<name>.py[:arg]" with dotted overrides, as `--config=` does (tests use it).
load_config = common.load_config


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
  from rewardjax import guards  # noqa: PLC0415

  try:
    train_config(_CONFIG.value, workdir)
  except guards.Preempted as stopped:  # saved; the scheduler's convention: 128 + signal
    print(f"rewardjax: {stopped}", file=sys.stderr)
    sys.exit(128 + stopped.signum)
  except (guards.Diverged, guards.WorkdirLockedError) as error:  # the message says it all
    print(f"rewardjax: {error}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
