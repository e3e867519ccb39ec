"""The shipped embedded model, and the integrity check of any model directory with a manifest.

`ARITH` is a Hugging Face model directory (config.json, model.safetensors, tokenizer files)
that `configs/pretrain.py` produces: a char-level Qwen2-architecture model pretrained on the
built-in arithmetic task and the SPARK judge / reflection formats, the stand-in for an instruct
checkpoint. Every embedded default config starts from it through `--config.model.checkpoint`.
Its `MANIFEST` file records each file's sha256, the pretraining config's fingerprint and the
command that rebuilds it, so a missing or corrupted file is named before any work starts.
`verify` also checks any other model directory for config.json and complete safetensors
weights, so a wrong path or a truncated download fails at once, not at the first forward pass.
"""

import hashlib
import json
import os

ARITH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "arith")
# The shipped reward model: configs/reward_model.py from ARITH, exported as
# Qwen2ForSequenceClassification (the RL-from-a-reward-model configs score with it).
ARITH_RM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "arith_rm")
# The shipped process reward model: configs/prm.py from ARITH, on the "steps" task.
ARITH_PRM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "arith_prm")
MANIFEST = "rewardjax_manifest.json"
_CHECKPOINT_FIX = ("point --config.model.checkpoint at a Hugging Face model directory (config.json "
                   "+ model.safetensors), or leave it empty to start from the config's sizes")
REBUILD = ("python launch/train.py --config=configs/pretrain.py --workdir=/tmp/pretrain && "
           "python launch/ship_pretrained.py --workdir=/tmp/pretrain")


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def write_manifest(directory: str, rebuild: str = REBUILD, **fields) -> dict:
  """Writes `<directory>/MANIFEST`: {"files": {name: sha256}, "rebuild": rebuild, **fields}."""
  files = {name: sha256(os.path.join(directory, name)) for name in sorted(os.listdir(directory))
           if name != MANIFEST and os.path.isfile(os.path.join(directory, name))}
  manifest = {"files": files, "rebuild": rebuild, **fields}
  with open(os.path.join(directory, MANIFEST), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write("\n")
  return manifest


def _check_model_files(directory: str) -> None:
  """config.json and complete safetensors weights (see `hf.check_safetensors`) are present."""
  from rewardjax.models import hf  # noqa: PLC0415 (jax; configs import this module cheaply)

  if not os.path.isdir(directory):
    raise FileNotFoundError(f"model directory {directory} does not exist; {_CHECKPOINT_FIX}")
  if not os.path.isfile(os.path.join(directory, "config.json")):
    raise FileNotFoundError(
        f"{directory} has no config.json, so it is not a Hugging Face model directory (files: "
        f"{sorted(os.listdir(directory))}); {_CHECKPOINT_FIX}")
  hf._weight_files(directory)  # missing weights: FileNotFoundError; truncated: ValueError


def verify(directory: str) -> dict | None:
  """Checks a model directory before it is loaded; returns its manifest (None if it has none).

  The shipped directory must exist and hold its manifest; a directory with a manifest must hold
  every listed file with the listed sha256. Every directory must hold config.json and complete
  safetensors weights (a cut-short file is named as truncated with the fix).

  Raises:
    FileNotFoundError / ValueError: naming the missing, truncated or corrupted file and, for a
      directory with a manifest, the command that rebuilds it.
  """
  shipped = os.path.realpath(directory) in tuple(map(os.path.realpath, (ARITH, ARITH_RM,
                                                                        ARITH_PRM)))
  manifest_path = os.path.join(directory, MANIFEST)
  if not os.path.exists(manifest_path):
    if shipped:
      raise FileNotFoundError(
          f"the shipped model is missing: {manifest_path} does not exist. Rebuild it with: "
          f"{REBUILD}  (or reinstall rewardjax)")
    _check_model_files(directory)
    return None
  try:
    with open(manifest_path, encoding="utf-8") as f:
      manifest = json.load(f)
    files = dict(manifest["files"])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{manifest_path} is corrupted ({e}). Rebuild the model with: "
                     f"{REBUILD}") from None
  rebuild = manifest.get("rebuild", REBUILD)
  for name, digest in files.items():
    path = os.path.join(directory, name)
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path} is missing (listed in {MANIFEST}). Rebuild the model "
                              f"with: {rebuild}")
    if sha256(path) != digest:
      raise ValueError(f"{path} is corrupted: its sha256 differs from {MANIFEST}'s. Rebuild the "
                       f"model with: {rebuild}")
  _check_model_files(directory)
  return manifest
