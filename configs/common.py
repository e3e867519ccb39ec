"""Config helpers: `parse_arg` for "variant=drgrpo,smoke" strings, `load_config` and the model
size table."""

import importlib.util

import ml_collections

_QWEN2_5 = dict(qkv_bias=True, qk_norm=False, rope_theta=1_000_000.0, rms_norm_eps=1e-6)
_LLAMA3_1 = dict(vocab_size=128_256, num_kv_heads=8, head_dim=128, tie_word_embeddings=False,
                 qkv_bias=False, qk_norm=False, rope_theta=500_000.0, rms_norm_eps=1e-5,
                 rope_type="llama3", rope_factor=8.0, rope_low_freq_factor=1.0,
                 rope_high_freq_factor=4.0, rope_original_max_position=8192)

# Model sizes. "tiny" is the embedded CPU default (char tokenizer, trained from scratch); the
# others name Hugging Face checkpoints and expect --config.model.checkpoint=/local/hf/dir.
MODELS = {
    "tiny": dict(vocab_size=128, hidden_size=128, intermediate_size=384, num_layers=3,
                 num_heads=4, num_kv_heads=2, head_dim=32, tie_word_embeddings=True,
                 qkv_bias=False, qk_norm=False),
    "smoke": dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=2, num_kv_heads=1, head_dim=16, tie_word_embeddings=True,
                  qkv_bias=False, qk_norm=False),
    # Architectures from each checkpoint's config.json, so `launch/compile.py` (rewardjax.aot)
    # needs no download; a run still loads the weights from --config.model.checkpoint.
    "qwen2_5_0_5b": dict(checkpoint_name="Qwen/Qwen2.5-0.5B-Instruct", **_QWEN2_5,
                         vocab_size=151_936, hidden_size=896, intermediate_size=4864,
                         num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64,
                         tie_word_embeddings=True),
    "qwen2_5_1_5b": dict(checkpoint_name="Qwen/Qwen2.5-1.5B-Instruct", **_QWEN2_5,
                         vocab_size=151_936, hidden_size=1536, intermediate_size=8960,
                         num_layers=28, num_heads=12, num_kv_heads=2, head_dim=128,
                         tie_word_embeddings=True),
    "qwen2_5_7b": dict(checkpoint_name="Qwen/Qwen2.5-7B-Instruct", **_QWEN2_5,
                       vocab_size=152_064, hidden_size=3584, intermediate_size=18_944,
                       num_layers=28, num_heads=28, num_kv_heads=4, head_dim=128,
                       tie_word_embeddings=False),
    "qwen2_5_32b": dict(checkpoint_name="Qwen/Qwen2.5-32B-Instruct", **_QWEN2_5,
                        vocab_size=152_064, hidden_size=5120, intermediate_size=27_648,
                        num_layers=64, num_heads=40, num_kv_heads=8, head_dim=128,
                        tie_word_embeddings=False),
    "llama3_1_8b": dict(checkpoint_name="meta-llama/Llama-3.1-8B-Instruct", **_LLAMA3_1,
                        hidden_size=4096, intermediate_size=14_336, num_layers=32,
                        num_heads=32),
    "llama3_1_70b": dict(checkpoint_name="meta-llama/Llama-3.1-70B-Instruct", **_LLAMA3_1,
                         hidden_size=8192, intermediate_size=28_672, num_layers=80,
                         num_heads=64),
    "llama3_2_1b": dict(checkpoint_name="meta-llama/Llama-3.2-1B-Instruct"),
}

# Pod presets (`pod_config`): bf16 parameters and compute, the Pallas flash kernel (no
# [B, H, S, S] scores), every Block rematerialised, GRPO at 1k prompt + 4k completion tokens.
POD_SIZES = ("qwen2_5_7b", "qwen2_5_32b", "llama3_1_8b", "llama3_1_70b")
POD = dict(param_dtype="bfloat16", dtype="bfloat16", attention_impl="pallas", remat="block")
POD_BATCH = {"grpo": 32, "dpo": 128}   # prompts (x G = 8) or pairs (x 2): 256 rows per step


def pod_config(c: ml_collections.ConfigDict, size: str) -> None:
  """Turns `c` into its pod preset when `size` is one of POD_SIZES (in place)."""
  if size not in POD_SIZES:
    return
  c.model.update(POD)
  c.data.update(max_prompt_length=1024, max_completion_length=4096)
  c.rollout.update(num_generations=8, max_new_tokens=4096)
  c.train.batch_size = POD_BATCH.get(c.algorithm, c.train.batch_size)


def parse_arg(arg: str | None, choices: dict | None = None, **defaults):
  """Parses "variant=dapo,size=tiny,smoke" into a ConfigDict over `defaults` (big_vision style).

  A bare word sets a bool default to True ("smoke"), or the key whose `choices` contain it
  ("qwen2_5_0_5b" -> size, "dapo" -> variant). Unknown keys or values raise, listing valid ones.
  """
  choices = choices or {}
  result = ml_collections.ConfigDict(dict(defaults))
  for part in filter(None, (arg or "").split(",")):
    key, eq, value = part.partition("=")
    if not eq:
      value = part
      if isinstance(defaults.get(part), bool):
        key, value = part, "true"
      else:
        keys = [k for k, valid in choices.items() if part in valid]
        if not keys:
          flags = sorted(k for k, v in defaults.items() if isinstance(v, bool))
          values = {k: sorted(v) for k, v in choices.items()}
          raise ValueError(f"config argument {part!r} is neither a flag {flags} nor a value "
                           f"of {values}")
        key = keys[0]
    if key not in defaults:
      raise ValueError(f"config argument {key!r} is not one of {sorted(defaults)}")
    if key in choices and value not in choices[key]:
      raise ValueError(f"{key}={value!r} is not one of {sorted(choices[key])}")
    default = defaults[key]
    result[key] = (value.lower() in ("1", "true", "yes") if isinstance(default, bool)
                   else type(default)(value))
  return result


def load_config(config_arg: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """The locked config of "configs/<name>.py[:arg]", as `--config=` builds it, with dotted
  `overrides` ({"train.steps": 2}) applied like `--config.train.steps=2`."""
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
