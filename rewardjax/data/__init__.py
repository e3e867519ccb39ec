"""Prompts in: tokenizers, built-in verifiable tasks, JSONL / HF datasets / TFDS loaders.

Records are plain dicts with Hugging Face TRL's column names, whatever their source:

    {"prompt", "answer"}               verifiable RL prompts (GRPO, SPARK, ...)
    {"prompt", "completion"}           supervised warm-start
    {"prompt", "chosen", "rejected"}   preference pairs (DPO, Bradley-Terry reward models)
    {"prompt", "responses", "scores"}  K responses ranked best first (listwise reward models)

Submodules load on first attribute access, so `import rewardjax.data.tasks` needs neither
transformers nor tokenizers.
"""

import importlib

_SUBMODULES = ("loaders", "tasks", "tokenizers")


def __getattr__(name):
  if name in _SUBMODULES:
    return importlib.import_module(f"rewardjax.data.{name}")
  raise AttributeError(f"module 'rewardjax.data' has no attribute {name!r}")
