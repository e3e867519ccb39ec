"""Config helpers: `parse_arg` for "variant=drgrpo,smoke" strings, `load_config` and the model
size table."""

import importlib.util

import ml_collections

# Model sizes. "tiny" is the embedded CPU default (char tokenizer, trained from scratch); the
# others name Hugging Face checkpoints and expect --config.model.checkpoint=/local/hf/dir.
MODELS = {
    "tiny": dict(vocab_size=128, hidden_size=128, intermediate_size=384, num_layers=3,
                 num_heads=4, num_kv_heads=2, head_dim=32, tie_word_embeddings=True,
                 qkv_bias=False, qk_norm=False),
    "smoke": dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=2, num_kv_heads=1, head_dim=16, tie_word_embeddings=True,
                  qkv_bias=False, qk_norm=False),
    "qwen2_5_0_5b": dict(checkpoint_name="Qwen/Qwen2.5-0.5B-Instruct"),
    "qwen2_5_1_5b": dict(checkpoint_name="Qwen/Qwen2.5-1.5B-Instruct"),
    "llama3_2_1b": dict(checkpoint_name="meta-llama/Llama-3.2-1B-Instruct"),
}


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
