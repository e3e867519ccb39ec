"""Copies a run's exported model into the package as a shipped model.

    python launch/train.py --config=configs/pretrain.py --workdir=/tmp/pretrain
    python launch/ship_pretrained.py --workdir=/tmp/pretrain
    python launch/train.py --config=configs/reward_model.py --workdir=/tmp/rm
    python launch/ship_pretrained.py --model=arith_rm --workdir=/tmp/rm
    python launch/train.py --config=configs/prm.py --workdir=/tmp/prm
    python launch/ship_pretrained.py --model=arith_prm --workdir=/tmp/prm

Writes `rewardjax/pretrained/<model>/` (the run's `<workdir>/hf` files) and its manifest: each
file's sha256, the config's fingerprint, its held-out results, and the losses of a short re-run
of the config's first steps (`first_steps`), which `tests/pretrained_test.py` repeats.
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


# Shipped model -> the config that makes it.
CONFIGS = {"arith": "pretrain.py", "arith_rm": "reward_model.py", "arith_prm": "prm.py"}


def pretrain_config(overrides: dict | None = None, model: str = "arith"):
  """The locked config that makes `model` with dotted `overrides` ({"train.steps": 3})."""
  from configs import common  # noqa: PLC0415 (the repository root is on sys.path)

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  overrides = dict(overrides or {})
  if model != "arith":  # only the pretraining config has a recipe
    overrides.pop("recipe_args.eval_problems", None)
  return common.load_config(os.path.join(root, "configs", CONFIGS[model]), overrides)


def shipped_fingerprint(config) -> str:
  """The config's fingerprint with a shipped model's path written relative to the package, so
  that it does not depend on where rewardjax is installed (the reward model's config starts
  from `pretrained.ARITH`)."""
  from rewardjax import checkpoint, pretrained  # noqa: PLC0415

  values = config.to_dict()
  root = os.path.dirname(pretrained.ARITH)
  if values["model"]["checkpoint"].startswith(root):
    values["model"]["checkpoint"] = os.path.relpath(values["model"]["checkpoint"], root)
  return checkpoint.config_fingerprint(values, None)


def first_steps(workdir: str, model: str = "arith") -> dict:
  """Runs the first `FIRST_STEPS` steps of `model`'s config into `workdir`; returns
  {"step -> loss"} of the training metrics."""
  from rewardjax import train  # noqa: PLC0415

  train.run(pretrain_config(FIRST_STEPS_OVERRIDES, model), workdir)
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
  parser.add_argument("--workdir", default="/tmp/pretrain", help="The config's run.")
  parser.add_argument("--model", default="arith", choices=sorted(CONFIGS))
  args = parser.parse_args()
  workdir, model = args.workdir, args.model
  from rewardjax import pretrained  # noqa: PLC0415

  source = os.path.join(workdir, "hf")
  if not os.path.exists(os.path.join(source, "model.safetensors")):
    raise SystemExit(f"{source} has no model.safetensors: run configs/{CONFIGS[model]} into "
                     f"--workdir={workdir} first")
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  losses = first_steps(tempfile.mkdtemp(prefix="pretrain_first_steps_"), model)
  config = pretrain_config(model=model)
  if summary.get("steps") != config.train.steps:
    raise SystemExit(f"the run has {summary.get('steps')} steps, configs/{CONFIGS[model]} "
                     f"{config.train.steps}: re-run it")
  target = os.path.join(os.path.dirname(pretrained.ARITH), model)
  if os.path.exists(target):
    shutil.rmtree(target)
  shutil.copytree(source, target)
  rebuild = (f"python launch/train.py --config=configs/{CONFIGS[model]} --workdir={workdir} && "
             f"python launch/ship_pretrained.py --model={model} --workdir={workdir}")
  manifest = pretrained.write_manifest(
      target, rebuild=rebuild,
      config_fingerprint=shipped_fingerprint(config),
      steps=config.train.steps, first_losses=losses,
      heldout={k: v for k, v in summary.items() if k.startswith("final/")})
  print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
  main()
