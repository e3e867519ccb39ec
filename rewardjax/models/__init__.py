"""Decoder LMs (Llama 3 / Qwen2 / Qwen3), scalar heads and Hugging Face checkpoint I/O."""

import importlib

from rewardjax.models.heads import ScalarHead, ScalarModel, last_token_pool
from rewardjax.models.transformer import KVCache, ModelConfig, Transformer, init_cache

_HF_NAMES = ("config_from_hf", "from_pretrained", "save_pretrained")
_HF_REWARD_NAMES = ("load_reward_model", "save_reward_model")

__all__ = ["KVCache", "ModelConfig", "ScalarHead", "ScalarModel", "Transformer",
           "init_cache", "last_token_pool", *_HF_NAMES, *_HF_REWARD_NAMES]


def __getattr__(name):
  # Checkpoint I/O pulls in safetensors and json handling only when used.
  if name in _HF_NAMES:
    return getattr(importlib.import_module("rewardjax.models.hf"), name)
  if name in _HF_REWARD_NAMES:
    return getattr(importlib.import_module("rewardjax.models.hf_reward"), name)
  raise AttributeError(f"module 'rewardjax.models' has no attribute {name!r}")
