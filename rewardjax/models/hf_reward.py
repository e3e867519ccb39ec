"""Reward models to and from Hugging Face `*ForSequenceClassification` directories.

A `ScalarModel(pool="last")` is exported as the sequence-classification variant of its backbone's
family (Llama / Qwen2 / Qwen3): config.json is the causal one (`hf.config_to_hf`) with
`architectures` renamed and `num_labels: 1`, and model.safetensors holds the backbone's `model.*`
tensors plus `score.weight` [1, D]. `transformers.AutoModelForSequenceClassification` then gives
`.logits[:, 0]` equal to rewardjax's scores.

Pooling differs in how the last token is found: transformers takes the rightmost token whose id
is not `pad_token_id`; rewardjax takes the last token with attention_mask 1. The two agree when
the pad id never ends a real sequence, so a tokenizer whose pad id equals its eos id must not
score sequences that end with eos (transformers would score the token before it).

HF score heads have no bias, so a model with a non-zero head bias cannot be exported: train
reward models for export with `ScalarModel(..., bias=False)`. An untied backbone's unembedding
(`lm_head.weight`) is not written, since transformers' classifier has none.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rewardjax.models import hf
from rewardjax.models.heads import ScalarModel

_SEQ_CLS = {arch: arch.replace("ForCausalLM", "ForSequenceClassification")
            for arch in hf.FAMILIES}
_CAUSAL = {seq_cls: causal for causal, seq_cls in _SEQ_CLS.items()}


def resolve_reward_model_dir(path: str | os.PathLike) -> str:
  """The Hugging Face directory of `path`: `path/hf` for a training workdir, else `path`.

  Raises:
    FileNotFoundError: neither `path/hf/config.json` nor `path/config.json` exists.
  """
  path = os.fspath(path)
  if os.path.exists(os.path.join(path, "hf", "config.json")):
    return os.path.join(path, "hf")
  if os.path.exists(os.path.join(path, "config.json")):
    return path
  raise FileNotFoundError(
      f"{path} is neither a Hugging Face model directory (config.json + model.safetensors) nor a "
      "training workdir holding one in hf/ (hf/config.json)")


def save_reward_model(model: ScalarModel, directory: str | os.PathLike, *,
                      pad_token_id: int | None = None) -> None:
  """Writes config.json and model.safetensors that transformers loads as *ForSequenceClassification.

  Args:
    model: a reward model (`pool="last"`) whose head has no bias or a zero one; tensors are
      written in the backbone's `param_dtype`.
    directory: created if needed; stale model*.safetensors / index files there are removed.
    pad_token_id: written to config.json instead of the backbone config's; transformers needs
      one to find the last token of each row of a padded batch.

  Raises:
    ValueError: `pool != "last"`, a non-zero head bias, no pad_token_id, or an architecture
      `hf.config_to_hf` rejects.
  """
  if model.pool != "last":
    raise ValueError(f"pool={model.pool!r} is a value model (a score per token); only reward "
                     "models (pool='last') export as *ForSequenceClassification")
  bias = getattr(model.head, "b", None)
  if bias is not None and np.any(np.asarray(jax.device_get(bias[...]))):
    raise ValueError(f"the score head has bias {float(bias[...]):.6g}, but Hugging Face "
                     "*ForSequenceClassification score heads have none; train the reward model "
                     "with ScalarModel(..., bias=False)")
  config = model.backbone.config
  pad_token_id = config.pad_token_id if pad_token_id is None else pad_token_id
  if pad_token_id is None:
    raise ValueError("no pad_token_id: transformers pools at the rightmost non-pad token and "
                     "refuses batches without one; pass save_reward_model(..., pad_token_id=) "
                     "(the tokenizer's pad id)")
  hf_config = hf.config_to_hf(config)
  hf_config.update(architectures=[_SEQ_CLS[config.architecture]], num_labels=1,
                   id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0},
                   pad_token_id=int(pad_token_id))
  state = hf.hf_state_from_params(nnx.split(model.backbone, nnx.Param)[1], config)
  state.pop("lm_head.weight", None)
  w_d = np.asarray(jax.device_get(model.head.w_d[...]))
  state["score.weight"] = np.ascontiguousarray(w_d.astype(jnp.dtype(config.param_dtype))[None])
  directory = os.fspath(directory)
  os.makedirs(directory, exist_ok=True)
  for file in os.listdir(directory):
    if file in (hf.SINGLE_FILE, hf.INDEX_FILE) or hf._SHARD_FILE.fullmatch(file):
      os.remove(os.path.join(directory, file))
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2, sort_keys=True)
  # One file: transformers reads any size, and the tag says torch layout as in save_pretrained.
  hf.write_safetensors(state, os.path.join(directory, hf.SINGLE_FILE), {"format": "pt"})


def load_reward_model(directory: str | os.PathLike, *, dtype: Any = None,
                      param_dtype: Any = None, attention_impl: str = "xla") -> ScalarModel:
  """Builds a reward model (`ScalarModel(pool="last", bias=False)`) from a Hugging Face directory.

  Args:
    directory: a `*ForSequenceClassification` directory (config.json + safetensors with
      `score.weight` [1, D]) or a training workdir holding one in hf/.
    dtype: compute dtype; default `param_dtype`.
    param_dtype: parameter dtype; default the checkpoint's `dtype`/`torch_dtype`, else float32.
    attention_impl: "xla" | "cudnn" | "pallas", see `rewardjax.kernels.attention`.

  Returns:
    The model, whose `model(tokens, attention_mask=mask)` equals transformers' `.logits[:, 0]`
    on right-padded batches.

  Raises:
    FileNotFoundError: see `resolve_reward_model_dir` and `hf.from_pretrained`.
    ValueError: naming the file: no `score.weight` (a language model), a non-scalar score head,
      or the errors of `hf.config_from_hf` / `hf.params_from_hf_state`.
  """
  directory = resolve_reward_model_dir(directory)
  config_path = os.path.join(directory, "config.json")
  hf_config = hf.read_json(config_path)  # a corrupt file is named
  archs = hf_config.get("architectures") or [hf_config.get("model_type")]
  try:
    config = hf.config_from_hf({**hf_config, "architectures": [_CAUSAL.get(archs[0], archs[0])]})
  except ValueError as e:
    raise ValueError(f"{config_path}: {e}") from None
  param_dtype = jnp.dtype(param_dtype or hf_config.get("dtype") or hf_config.get("torch_dtype")
                          or "float32").name
  config = dataclasses.replace(config, param_dtype=param_dtype,
                               dtype=jnp.dtype(dtype or param_dtype).name,
                               attention_impl=attention_impl)
  files = hf._weight_files(directory)
  weights = os.path.join(directory, hf.SINGLE_FILE if os.path.exists(
      os.path.join(directory, hf.SINGLE_FILE)) else hf.INDEX_FILE)
  if "score.weight" not in files:
    raise ValueError(f"{weights} has no score.weight: this is a language model ({archs[0]}), "
                     "not a reward model; train one with configs/reward_model.py or pass a "
                     "*ForSequenceClassification directory")
  state = hf._read_state(files)
  score_LxD = state.pop("score.weight")
  if score_LxD.ndim != 2 or score_LxD.shape[0] != 1:
    raise ValueError(f"{weights}: the score head is not scalar: score.weight has shape "
                     f"{tuple(score_LxD.shape)} (num_labels={score_LxD.shape[0]}); rewardjax "
                     "reward models need num_labels=1")
  if score_LxD.shape[1] != config.hidden_size:
    raise ValueError(f"{weights}: score.weight has shape {tuple(score_LxD.shape)} but "
                     f"{config_path} has hidden_size={config.hidden_size}")
  if not config.tie_word_embeddings and "lm_head.weight" not in state:
    # The untied backbone owns an unembedding a reward model never uses (scores come from the
    # hidden states); zeros make that visible rather than pretending to be a language model.
    state["lm_head.weight"] = np.zeros((config.vocab_size, config.hidden_size), score_LxD.dtype)
  try:
    backbone = hf.params_from_hf_state(state, config)
  except ValueError as e:
    raise ValueError(f"{weights} vs config.json: {e}") from None
  # Build abstractly so no random init is spent on weights that are overwritten at once.
  abstract = nnx.eval_shape(
      lambda: ScalarModel(config, pool="last", bias=False, rngs=nnx.Rngs(0)))
  graphdef, model_state = nnx.split(abstract)
  params = {"backbone": backbone, "head": {"w_d": score_LxD[0]}}
  nnx.replace_by_pure_dict(model_state,
                           jax.tree.map(lambda x: jnp.asarray(x, param_dtype), params))
  return nnx.merge(graphdef, model_state)
