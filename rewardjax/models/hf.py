"""Load and save Hugging Face checkpoints (Llama / Qwen2 / Qwen3 `*ForCausalLM`, safetensors only).

Weights are read with `safetensors` (never pickle): `model.safetensors`, or shards listed in
`model.safetensors.index.json`. The directory written by `save_pretrained` loads back into
`transformers.AutoModelForCausalLM.from_pretrained` with identical logits.

Tensor layout: a torch `Linear` stores [out, in]; rewardjax stores [in, out] split into heads, so
`q_proj.weight` [H*K, D] becomes `q_dhk` = W.T.reshape(D, H, K) and `o_proj.weight` [D, H*K]
becomes `o_hkd` = W.T.reshape(H, K, D).

Strictness: a missing tensor, a shape that disagrees with config.json, or an unexpected tensor
raises ValueError naming the tensor. Unexpected tensors raise rather than warn because they mean
the checkpoint has parts this model would silently drop (e.g. an MLP bias). Tolerated: a tied
model's `lm_head.weight` (transformers ignores it too) and legacy `rotary_emb.inv_freq` buffers.
Biases HF always has but the rewardjax config lacks (Qwen2 without `qkv_bias`, Llama/Qwen3
`o_proj.bias` under `attention_bias`) are written as zeros and must be zero on load.

Damaged files: a safetensors file cut short (an interrupted download or copy) or with a garbled
header, and an unparsable config.json or shard index, raise ValueError naming the file and the
fix (re-download / re-export) before any tensor is read; safetensors alone says only "Error
while deserializing header".
"""

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from rewardjax.models import lora
from rewardjax.models.transformer import ModelConfig, Transformer


@dataclasses.dataclass(frozen=True)
class _Family:
  model_type: str
  max_position_embeddings: int               # transformers' config-class default
  default_head_dim: int | None = None        # None: hidden_size // num_attention_heads
  always_qkv_bias: bool = False              # Qwen2 projections always carry q/k/v biases
  qk_norm: bool = False
  has_attention_bias: bool = False           # `attention_bias` adds q/k/v AND o_proj biases
  has_sliding_window: bool = False


FAMILIES = {
    "LlamaForCausalLM": _Family("llama", 2048, has_attention_bias=True),
    "Qwen2ForCausalLM": _Family("qwen2", 32768, always_qkv_bias=True, has_sliding_window=True),
    "Qwen3ForCausalLM": _Family("qwen3", 32768, default_head_dim=128, qk_norm=True,
                                has_attention_bias=True, has_sliding_window=True),
}
_ARCH_BY_MODEL_TYPE = {f.model_type: arch for arch, f in FAMILIES.items()}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads")
_DEFAULT_THETA = 10_000.0                   # transformers' default_theta for all three families
_TOLERATED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SHARD_FILE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_REFETCH = "re-download it or re-export the model (save_pretrained)"
_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def _first(token_id):
  # Llama 3.1 lists several eos ids; ModelConfig keeps one (stop lists belong to generation).
  return int(token_id[0]) if isinstance(token_id, list | tuple) else token_id


def _sliding_window(hf: Mapping[str, Any], num_layers: int) -> int | None:
  """The one window used by every layer, or None; mixed full/sliding layers are unsupported."""
  if not hf.get("use_sliding_window") or hf.get("sliding_window") is None:
    return None
  layer_types = hf.get("layer_types") or [
      "sliding_attention" if i >= hf.get("max_window_layers", 28) else "full_attention"
      for i in range(num_layers)]
  if all(t == "full_attention" for t in layer_types):
    return None
  if all(t == "sliding_attention" for t in layer_types):
    return int(hf["sliding_window"])
  raise ValueError(f"layer_types={layer_types} mixes full and sliding-window layers, which "
                   "rewardjax does not support; set max_window_layers to 0 (all sliding) or "
                   "use_sliding_window=false")


def _rope_fields(hf: Mapping[str, Any]) -> dict[str, Any]:
  """ModelConfig rope fields from `rope_parameters` (transformers 5) or `rope_scaling` (older)."""
  rope = {k: v for k, v in (hf.get("rope_parameters") or hf.get("rope_scaling") or {}).items()
          if v is not None}
  if any(isinstance(v, dict) for v in rope.values()):
    raise ValueError(f"per-layer-type rope_parameters {rope} are not supported")
  if float(rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))) != 1.0:
    raise ValueError("partial_rotary_factor != 1 is not supported")
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  fields = {"rope_theta": float(rope.get("rope_theta", hf.get("rope_theta", _DEFAULT_THETA))),
            "rope_type": rope_type}
  if rope_type == "linear":
    fields["rope_factor"] = float(rope["factor"])
  elif rope_type == "llama3":
    fields.update(
        rope_factor=float(rope["factor"]),
        rope_low_freq_factor=float(rope["low_freq_factor"]),
        rope_high_freq_factor=float(rope["high_freq_factor"]),
        rope_original_max_position=int(rope.get("original_max_position_embeddings",
                                                hf.get("max_position_embeddings"))))
  elif rope_type != "default":
    raise ValueError(f"rope_type={rope_type!r} is not supported; use one of "
                     "('default', 'linear', 'llama3')")
  return fields


def config_from_hf(hf_config: Mapping[str, Any]) -> ModelConfig:
  """The `ModelConfig` of a transformers `config.json` dict (Llama, Qwen2 or Qwen3 CausalLM).

  Missing optional fields take the transformers defaults of that family (e.g. Qwen3 head_dim
  128, rope_theta 10000). A list of eos ids keeps the first.

  Args:
    hf_config: the parsed config.json; `architectures[0]` (or `model_type`) picks the family.

  Returns:
    A ModelConfig with `architecture` set, so `save_pretrained` writes the same family back.

  Raises:
    ValueError: unsupported architecture (lists the supported ones), a missing required field,
      or a feature rewardjax lacks (mlp_bias, partial rotary, yarn rope, mixed sliding layers).

  >>> c = config_from_hf({"architectures": ["Qwen2ForCausalLM"], "vocab_size": 64,
  ...                     "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
  ...                     "num_attention_heads": 4, "num_key_value_heads": 2})
  >>> c.head_dim, c.qkv_bias, c.qk_norm, c.rope_theta, c.sliding_window
  (8, True, False, 10000.0, None)
  """
  archs = hf_config.get("architectures") or [
      _ARCH_BY_MODEL_TYPE.get(hf_config.get("model_type"), hf_config.get("model_type"))]
  arch = archs[0]
  if arch not in FAMILIES:
    raise ValueError(f"architecture {arch!r} is not supported; supported: {sorted(FAMILIES)}")
  family = FAMILIES[arch]
  missing = [k for k in _REQUIRED if hf_config.get(k) is None]
  if missing:
    raise ValueError(f"{arch} config is missing required field(s) {missing}")
  if hf_config.get("hidden_act", "silu") != "silu":
    raise ValueError(f"hidden_act={hf_config['hidden_act']!r} is not supported; only 'silu'")
  if hf_config.get("mlp_bias"):
    raise ValueError("mlp_bias=true is not supported (the MLP has no biases)")
  num_heads = int(hf_config["num_attention_heads"])
  num_layers = int(hf_config["num_hidden_layers"])
  head_dim = hf_config.get("head_dim") or family.default_head_dim or (
      int(hf_config["hidden_size"]) // num_heads)
  attention_bias = family.has_attention_bias and bool(hf_config.get("attention_bias", False))
  return ModelConfig(
      vocab_size=int(hf_config["vocab_size"]),
      hidden_size=int(hf_config["hidden_size"]),
      intermediate_size=int(hf_config["intermediate_size"]),
      num_layers=num_layers,
      num_heads=num_heads,
      num_kv_heads=int(hf_config.get("num_key_value_heads") or num_heads),
      head_dim=int(head_dim),
      max_position_embeddings=int(hf_config.get("max_position_embeddings",
                                                family.max_position_embeddings)),
      rms_norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
      tie_word_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
      qkv_bias=family.always_qkv_bias or attention_bias,
      qk_norm=family.qk_norm,
      sliding_window=_sliding_window(hf_config, num_layers) if family.has_sliding_window else None,
      architecture=arch,
      bos_token_id=_first(hf_config.get("bos_token_id")),
      eos_token_id=_first(hf_config.get("eos_token_id")),
      pad_token_id=_first(hf_config.get("pad_token_id")),
      **_rope_fields(hf_config))


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
  """The transformers config.json dict of `config`; inverse of `config_from_hf`.

  Writes both `rope_parameters` (transformers 5) and `rope_theta`/`rope_scaling` (4.x), and both
  `dtype` and `torch_dtype`, so either major version reads it.

  >>> d = config_to_hf(ModelConfig(architecture="LlamaForCausalLM", tie_word_embeddings=False))
  >>> d["model_type"], d["head_dim"], d["rope_parameters"]["rope_type"]
  ('llama', 16, 'default')
  """
  family = _family(config)
  rope = {"rope_type": config.rope_type, "rope_theta": config.rope_theta}
  if config.rope_type in ("linear", "llama3"):
    rope["factor"] = config.rope_factor
  if config.rope_type == "llama3":
    rope.update(low_freq_factor=config.rope_low_freq_factor,
                high_freq_factor=config.rope_high_freq_factor,
                original_max_position_embeddings=config.rope_original_max_position)
  hf = {
      "architectures": [config.architecture], "model_type": family.model_type,
      "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
      "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim, "hidden_act": "silu",
      "max_position_embeddings": config.max_position_embeddings,
      "rms_norm_eps": config.rms_norm_eps, "tie_word_embeddings": config.tie_word_embeddings,
      "rope_parameters": rope, "rope_theta": config.rope_theta,
      "rope_scaling": None if config.rope_type == "default" else dict(rope),
      "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True,
      "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
      "pad_token_id": config.pad_token_id,
      "dtype": config.param_dtype, "torch_dtype": config.param_dtype,
  }
  if family.has_attention_bias:
    hf.update(attention_bias=config.qkv_bias)
  if config.architecture == "LlamaForCausalLM":
    hf.update(mlp_bias=False, pretraining_tp=1)
  if family.has_sliding_window:
    window = config.sliding_window
    hf.update(use_sliding_window=window is not None, sliding_window=window,
              max_window_layers=0 if window is not None else config.num_layers)
  elif config.sliding_window is not None:
    raise ValueError(f"{config.architecture} has no sliding window; set sliding_window=None or "
                     "architecture='Qwen2ForCausalLM'")
  return hf


def _family(config: ModelConfig) -> _Family:
  if config.architecture not in FAMILIES:
    raise ValueError(f"architecture {config.architecture!r} is not supported; "
                     f"supported: {sorted(FAMILIES)}")
  family = FAMILIES[config.architecture]
  if config.qk_norm != family.qk_norm:
    raise ValueError(f"{config.architecture} needs qk_norm={family.qk_norm}; set architecture="
                     f"{'Qwen3ForCausalLM' if config.qk_norm else 'Qwen2ForCausalLM'!r}")
  return family


def _tensor_table(config: ModelConfig) -> list[tuple[str, tuple, tuple | None, tuple, bool]]:
  """Rows (hf_name, hf_shape, params_path or None for must-be-zero, params_shape, transpose)."""
  c, family = config, _family(config)
  D, F, V, K = c.hidden_size, c.intermediate_size, c.vocab_size, c.head_dim
  H, G = c.num_heads, c.num_kv_heads
  rows = [("model.embed_tokens.weight", (V, D), ("embed_vd",), (V, D), False),
          ("model.norm.weight", (D,), ("final_norm", "scale"), (D,), False)]
  if not c.tie_word_embeddings:
    rows.append(("lm_head.weight", (V, D), ("lm_head_dv",), (D, V), True))
  for i in range(c.num_layers):
    p, a = f"model.layers.{i}.", ("layers", i, "attention")
    rows += [
        (p + "input_layernorm.weight", (D,), ("layers", i, "input_norm", "scale"), (D,), False),
        (p + "post_attention_layernorm.weight", (D,),
         ("layers", i, "post_attention_norm", "scale"), (D,), False),
        (p + "self_attn.q_proj.weight", (H * K, D), a + ("q_dhk",), (D, H, K), True),
        (p + "self_attn.k_proj.weight", (G * K, D), a + ("k_dhk",), (D, G, K), True),
        (p + "self_attn.v_proj.weight", (G * K, D), a + ("v_dhk",), (D, G, K), True),
        (p + "self_attn.o_proj.weight", (D, H * K), a + ("o_hkd",), (H, K, D), True),
        (p + "mlp.gate_proj.weight", (F, D), ("layers", i, "mlp", "gate_df"), (D, F), True),
        (p + "mlp.up_proj.weight", (F, D), ("layers", i, "mlp", "up_df"), (D, F), True),
        (p + "mlp.down_proj.weight", (D, F), ("layers", i, "mlp", "down_fd"), (F, D), True)]
    if c.qkv_bias or family.always_qkv_bias:
      for name, heads in (("q", H), ("k", G), ("v", G)):
        path = a + (f"{name}_bias_hk",) if c.qkv_bias else None
        rows.append((p + f"self_attn.{name}_proj.bias", (heads * K,), path, (heads, K), False))
    if c.qkv_bias and family.has_attention_bias:
      rows.append((p + "self_attn.o_proj.bias", (D,), None, (D,), False))
    if c.qk_norm:
      rows += [(p + "self_attn.q_norm.weight", (K,), a + ("q_norm", "scale"), (K,), False),
               (p + "self_attn.k_norm.weight", (K,), a + ("k_norm", "scale"), (K,), False)]
  return rows


def params_from_hf_state(state_dict: Mapping[str, Any], config: ModelConfig) -> dict:
  """Maps HF tensor names to the rewardjax parameter tree (pure: transposes and reshapes only).

  Args:
    state_dict: HF name -> numpy array (or array-like), e.g. read from safetensors.
    config: the target architecture; every tensor's shape is checked against it.

  Returns:
    A nested dict shaped like `nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])` (layers
    keyed by int), holding numpy arrays in the checkpoint dtype.

  Raises:
    ValueError: naming the missing, mis-shaped (both shapes), non-zero must-be-zero, or
      unexpected tensor(s).

  >>> import numpy as np
  >>> c = ModelConfig(vocab_size=8, hidden_size=4, intermediate_size=8, num_layers=1,
  ...                 num_heads=2, num_kv_heads=1, head_dim=2)
  >>> abstract = nnx.eval_shape(lambda: Transformer(c, rngs=nnx.Rngs(0)))
  >>> params = jax.tree.map(lambda x: np.ones(x.shape, x.dtype),
  ...                       nnx.to_pure_dict(nnx.split(abstract, nnx.Param)[1]))
  >>> hf = hf_state_from_params(params, c)
  >>> hf["model.layers.0.self_attn.q_proj.bias"].shape   # Qwen2 always has biases: zeros
  (4,)
  >>> params_from_hf_state(hf, c)["layers"][0]["attention"]["q_dhk"].shape
  (4, 2, 2)
  """
  params: dict = {}
  expected = set()
  for hf_name, hf_shape, path, shape, transpose in _tensor_table(config):
    expected.add(hf_name)
    if hf_name not in state_dict:
      raise ValueError(f"checkpoint is missing tensor {hf_name!r} (shape {hf_shape}) required by "
                       f"{config.architecture} with this config; the weights are incomplete or "
                       "config.json describes another model")
    x = np.asarray(state_dict[hf_name])
    if x.shape != hf_shape:
      raise ValueError(f"tensor {hf_name!r} has shape {x.shape} but the config implies "
                       f"{hf_shape}; fix that config.json field or use the matching weights")
    if path is None:
      if np.any(x):
        raise ValueError(f"tensor {hf_name!r} is non-zero, but rewardjax has no such parameter "
                         "(o_proj bias, or q/k/v bias with qkv_bias=False)")
      continue
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = (x.T if transpose else x).reshape(shape)
  tolerated = {"lm_head.weight"} if config.tie_word_embeddings else set()
  extra = sorted(k for k in state_dict
                 if k not in expected and k not in tolerated and not _TOLERATED.fullmatch(k))
  if extra:
    raise ValueError(f"checkpoint has {len(extra)} tensor(s) {config.architecture} with this "
                     f"config does not use, e.g. {extra[:5]}; the architecture or config differs")
  return params


def hf_state_from_params(params: Any, config: ModelConfig) -> dict[str, np.ndarray]:
  """HF name -> numpy array (C-contiguous) of a parameter tree; inverse of params_from_hf_state.

  Args:
    params: `nnx.State` from `nnx.split(model, nnx.Param)` or its `nnx.to_pure_dict`.
    config: the model's config; picks names, shapes and the implied zero biases.

  Returns:
    The transformers state dict (no `lm_head.weight` when embeddings are tied), in param dtype.
  """
  if isinstance(params, nnx.State):
    params = nnx.to_pure_dict(params)
  dtype = jnp.dtype(config.param_dtype)
  out = {}
  for hf_name, hf_shape, path, _, transpose in _tensor_table(config):
    if path is None:
      out[hf_name] = np.zeros(hf_shape, dtype)
      continue
    x = params
    for key in path:
      x = x[key]
    x = np.asarray(jax.device_get(x))
    x = x.reshape(hf_shape[::-1]).T if transpose else x.reshape(hf_shape)
    out[hf_name] = np.ascontiguousarray(x)
  return out


def check_safetensors(path: str) -> None:
  """Raises ValueError naming `path` if it is not a complete safetensors file.

  Reads only the header: 8 bytes little-endian N, N bytes of JSON whose tensors'
  `data_offsets` [begin, end] index the data that follows, so a complete file has exactly
  8 + N + max(end) bytes. Fewer means it was cut short (an interrupted download or copy).

  Raises:
    ValueError: "<path> is truncated ..." or "<path> is corrupt ...", with the fix.
  """
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    header_len = int.from_bytes(head, "little")
    if len(head) < 8 or 8 + header_len > size:
      raise ValueError(f"{path} is truncated or corrupt: {size} bytes, too few for its safetensors "
                       f"header; {_REFETCH}")
    try:
      header = json.loads(f.read(header_len))
      ends = [int(entry["data_offsets"][1]) for name, entry in header.items()
              if name != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
      raise ValueError(f"{path} is corrupt: its safetensors header is unreadable ({e}); "
                       f"{_REFETCH}") from None
  expected = 8 + header_len + max(ends, default=0)
  if size < expected:
    raise ValueError(f"{path} is truncated: {size} of the {expected} bytes its header describes "
                     f"({100 * size // expected}%); {_REFETCH}")
  if size > expected:
    raise ValueError(f"{path} is corrupt: {size} bytes, but its header describes {expected}; "
                     f"{_REFETCH}")


def read_json(path: str) -> Any:
  """`json.load` of `path`; a parse error names the file (json's own message does not)."""
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
      raise ValueError(f"{path} is corrupt: not valid JSON ({e}); {_REFETCH}") from None


def _weight_files(directory: str) -> dict[str, str]:
  """Tensor name -> safetensors file, from the single file or the shard index.

  Every file is checked with `check_safetensors` first, so damage is named before any read.
  """
  single, index = os.path.join(directory, SINGLE_FILE), os.path.join(directory, INDEX_FILE)
  if os.path.exists(single):
    check_safetensors(single)
    with safe_open(single, framework="numpy") as f:
      return {name: single for name in f.keys()}
  if os.path.exists(index):
    index_json = read_json(index)
    if not isinstance(index_json, dict) or not isinstance(index_json.get("weight_map"), dict):
      raise ValueError(f"{index} is corrupt: it has no \"weight_map\" object; {_REFETCH}")
    files = {name: os.path.join(directory, file)
             for name, file in index_json["weight_map"].items()}
    for file in sorted(set(files.values())):
      if not os.path.exists(file):
        raise FileNotFoundError(f"{index} lists shard {os.path.basename(file)!r}, which is "
                                f"missing from {directory}")
      check_safetensors(file)
    return files
  present = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
  if any(f.startswith("pytorch_model") and f.endswith((".bin", ".bin.index.json"))
         for f in present):
    raise FileNotFoundError(
        f"{directory} holds only pytorch_model*.bin (pickle), which rewardjax never loads; convert "
        "it once with transformers: AutoModelForCausalLM.from_pretrained(dir)"
        ".save_pretrained(dir, safe_serialization=True)")
  raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {directory} (files: {present})")


def _read_state(files: Mapping[str, str]) -> dict[str, np.ndarray]:
  """Tensor name -> numpy array of every tensor in `files` (from `_weight_files`)."""
  state_dict = {}
  for file in sorted(set(files.values())):
    with safe_open(file, framework="numpy") as f:
      for name in f.keys():
        if files.get(name) == file:
          state_dict[name] = f.get_tensor(name)
  return state_dict


def from_pretrained(directory: str | os.PathLike, *, dtype: Any = None, param_dtype: Any = None,
                    attention_impl: str = "xla") -> Transformer:
  """Builds a `Transformer` from a Hugging Face directory (config.json + safetensors).

  Args:
    directory: holds config.json and model.safetensors or model.safetensors.index.json + shards.
    dtype: compute dtype; default `param_dtype`.
    param_dtype: parameter dtype; default the checkpoint's `dtype`/`torch_dtype` field (like
      transformers' dtype="auto"), float32 if absent. Pass "float32" for f32 master weights.
    attention_impl: "xla" | "cudnn" | "pallas", see `rewardjax.kernels.attention`.

  Returns:
    The model, parameters on the default device (shard them with `rewardjax.sharding`).

  Raises:
    FileNotFoundError: no config.json, no safetensors (pytorch .bin only: says how to convert),
      or a shard listed in the index is absent.
    ValueError: prefixed with the offending file: a truncated or corrupt safetensors file (see
      `check_safetensors`), config.json or index; see `config_from_hf`, `params_from_hf_state`.
  """
  directory = os.fspath(directory)
  config_path = os.path.join(directory, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"no config.json in {directory}; expected a Hugging Face model dir")
  hf_config = read_json(config_path)
  try:
    config = config_from_hf(hf_config)
  except ValueError as e:
    raise ValueError(f"{config_path}: {e}") from None
  param_dtype = param_dtype or hf_config.get("dtype") or hf_config.get("torch_dtype") or "float32"
  param_dtype = jnp.dtype(param_dtype).name
  config = dataclasses.replace(config, param_dtype=param_dtype,
                               dtype=jnp.dtype(dtype or param_dtype).name,
                               attention_impl=attention_impl)
  files = _weight_files(directory)
  state_dict = _read_state(files)
  try:
    params = params_from_hf_state(state_dict, config)
  except ValueError as e:
    names = sorted({os.path.basename(p) for p in files.values()})
    raise ValueError(f"{directory} ({', '.join(names)}) vs config.json: {e}") from None
  # Build abstractly so no random init is spent on weights that are overwritten at once.
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: jnp.asarray(x, param_dtype), params))
  return nnx.merge(graphdef, state)


def _parse_size(size: int | str) -> int:
  if isinstance(size, int):
    return size
  match = re.fullmatch(r"\s*(\d+)\s*([KMG]I?B)\s*", size.upper())
  if not match:
    raise ValueError(f"max_shard_size={size!r}: use bytes (int) or e.g. '500MB', '5GB', '2GiB'")
  return int(match[1]) * _UNITS[match[2]]


def write_safetensors(tensors: dict, path: str, metadata: dict) -> None:
  """`safetensors.numpy.save_file`, readable like any file the process writes: safetensors
  creates it with mode 0600 whatever the umask, which hides a shared export from its group."""
  save_file(tensors, path, metadata=metadata)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)


def save_pretrained(model: Transformer, directory: str | os.PathLike, *,
                    max_shard_size: int | str = "5GB") -> None:
  """Writes config.json and safetensors that `transformers` loads with identical logits.

  Args:
    model: the model; tensors are written in `config.param_dtype`.
    directory: created if needed; stale model*.safetensors / index files there are removed.
    max_shard_size: above this many bytes (int, or "500MB", "5GB", "2GiB") the weights are split
      into model-0000i-of-0000n.safetensors plus model.safetensors.index.json, greedily in
      tensor order as transformers does; one tensor larger than the limit gets its own shard.
  """
  directory = os.fspath(directory)
  limit = _parse_size(max_shard_size)
  config = model.config
  hf_config = config_to_hf(config)
  # LoRA adapters are folded into their weights: the export is the adapted model, plain.
  state = hf_state_from_params(lora.merged_params(model), config)
  shards, size = [{}], 0
  for name, x in state.items():
    if shards[-1] and size + x.nbytes > limit:
      shards.append({})
      size = 0
    shards[-1][name] = x
    size += x.nbytes
  os.makedirs(directory, exist_ok=True)
  for file in os.listdir(directory):
    if file in (SINGLE_FILE, INDEX_FILE) or _SHARD_FILE.fullmatch(file):
      os.remove(os.path.join(directory, file))
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
  metadata = {"format": "pt"}  # transformers expects the torch-format tag
  if len(shards) == 1:
    write_safetensors(shards[0], os.path.join(directory, SINGLE_FILE), metadata)
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    write_safetensors(shard, os.path.join(directory, file), metadata)
    weight_map.update(dict.fromkeys(shard, file))
  index = {"metadata": {"total_size": sum(x.nbytes for x in state.values())},
           "weight_map": weight_map}
  with open(os.path.join(directory, INDEX_FILE), "w") as f:
    json.dump(index, f, indent=2, sort_keys=True)
