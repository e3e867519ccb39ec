"""Copies a `configs/pretrain.py` run's exported model into the package as the shipped model.

    python launch/train.py --config=configs/pretrain.py --workdir=/tmp/pretrain
    python launch/ship_pretrained.py --workdir=/tmp/pretrain

Writes `rewardjax/pretrained/arith/` (the run's `<workdir>/hf` files) and its manifest: each
file's sha256, the pretraining config's fingerprint, its held-out results, and the losses of
a short re-run of the config's first steps (`first_steps`), which `tests/pretrained_test.py`
repeats.
"""

import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIRST_STEPS = 3   # losses recorded for the re-run test
# The re-run changes only what is evaluated, never what is trained.
FIRST_STEPS_OVERRIDES = {"train.steps": FIRST_STEPS, "train.eval_every": 1000,
                         "train.export_hf": False, "data.num_eval": 8,
                         "train.eval_batch_size": 8, "recipe_args.eval_problems": 2}


def pretrain_config(overrides: dict | None = None):
  """configs/pretrain.py's locked config with dotted `overrides` ({"train.steps": 3})."""
  from configs import common  # noqa: PLC0415 (the repository root is on sys.path)

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return common.load_config(os.path.join(root, "configs", "pretrain.py"), overrides)


def first_steps(workdir: str) -> dict:
  """Runs the first `FIRST_STEPS` steps of configs/pretrain.py into `workdir`; returns
  {"step -> loss"} of the training metrics."""
  from rewardjax import train  # noqa: PLC0415

  train.run(pretrain_config(FIRST_STEPS_OVERRIDES), workdir)
  losses = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      if "train/loss" in record:
        losses[str(record["step"])] = record["train/loss"]
  return losses


def main():
  import argparse  # noqa: PLC0415

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/pretrain", help="The configs/pretrain.py run.")
  workdir = parser.parse_args().workdir
  from rewardjax import checkpoint, pretrained  # noqa: PLC0415

  source = os.path.join(workdir, "hf")
  if not os.path.exists(os.path.join(source, "model.safetensors")):
    raise SystemExit(f"{source} has no model.safetensors: run configs/pretrain.py into "
                     f"--workdir={workdir} first")
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  losses = first_steps(tempfile.mkdtemp(prefix="pretrain_first_steps_"))
  config = pretrain_config()
  if summary.get("steps") != config.train.steps:
    raise SystemExit(f"the run has {summary.get('steps')} steps, configs/pretrain.py "
                     f"{config.train.steps}: re-run it")
  if os.path.exists(pretrained.ARITH):
    shutil.rmtree(pretrained.ARITH)
  shutil.copytree(source, pretrained.ARITH)
  manifest = pretrained.write_manifest(
      pretrained.ARITH, config_fingerprint=checkpoint.config_fingerprint(config.to_dict(), None),
      steps=config.train.steps, first_losses=losses,
      heldout={k: v for k, v in summary.items() if k.startswith("final/")})
  print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
  main()
