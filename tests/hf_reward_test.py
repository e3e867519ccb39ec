"""Reward models as Hugging Face `*ForSequenceClassification`: score parity with transformers.

Tiny random ScalarModels (Qwen2 with q/k/v biases and tied embeddings, Llama with untied ones)
are re-initialised with std 0.2 so scores are O(1) and an absolute tolerance means something,
saved once per module, and scored by `AutoModelForSequenceClassification` on a right-padded batch.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from rewardjax.models import hf as hf_lib
from rewardjax.models import hf_reward
from rewardjax.models.heads import ScalarModel
from rewardjax.models.transformer import ModelConfig

torch.set_num_threads(1)

PAD = 0
COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
              num_kv_heads=2, head_dim=8, pad_token_id=PAD, eos_token_id=1)
FAMILIES = {
    "qwen2": dict(architecture="Qwen2ForCausalLM", qkv_bias=True, tie_word_embeddings=True),
    "llama": dict(architecture="LlamaForCausalLM", tie_word_embeddings=False),
}
LENGTHS = (7, 4, 2)  # right-padded rows of unequal length, S = 7
TOL = 1e-5           # float32, max abs over the [B] scores


def _randomise(model, seed):
  """Std-0.2 weights and biases, norm scales 1 + 0.2 noise: init would give near-zero scores."""
  graphdef, params = nnx.split(model, nnx.Param)
  flat, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))
  keys = jax.random.split(jax.random.key(seed), len(flat))
  leaves = [(1.0 if "scale" in jax.tree_util.keystr(path) else 0.0)
            + 0.2 * jax.random.normal(key, x.shape, x.dtype) for (path, x), key in zip(flat, keys)]
  nnx.replace_by_pure_dict(params, jax.tree_util.tree_unflatten(treedef, leaves))
  return nnx.merge(graphdef, params)


def _model(name, *, bias=False, seed=0):
  config = ModelConfig(**COMMON, **FAMILIES[name])
  return _randomise(ScalarModel(config, bias=bias, rngs=nnx.Rngs(seed)), seed)


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(PAD + 1, COMMON["vocab_size"], (len(LENGTHS), max(LENGTHS)))
  mask = (np.arange(max(LENGTHS))[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
  return np.where(mask > 0, tokens, PAD), mask


def _params(model):
  return nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
  model = _model(request.param)
  directory = tmp_path_factory.mktemp(request.param) / "reward"
  hf_reward.save_reward_model(model, directory)
  return request.param, model, directory


def test_transformers_scores_equal_rewardjax(saved):
  _, model, directory = saved
  torch_model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert torch_model.config.num_labels == 1 and torch_model.config.pad_token_id == PAD
  tokens, mask = _batch()
  with torch.no_grad():
    expected = torch_model(input_ids=torch.tensor(tokens),
                           attention_mask=torch.tensor(mask)).logits[:, 0].numpy()
  scores = np.asarray(model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)))
  assert np.abs(expected).max() > 0.1  # O(1) scores, so TOL is a real test
  np.testing.assert_allclose(scores, expected, atol=TOL, rtol=0)


def test_config_and_tensors(saved):
  name, model, directory = saved
  with open(directory / "config.json") as f:
    config = json.load(f)
  prefix = {"qwen2": "Qwen2", "llama": "Llama"}[name]
  assert config["architectures"] == [prefix + "ForSequenceClassification"]
  assert config["num_labels"] == 1 and config["pad_token_id"] == PAD
  state = load_file(directory / "model.safetensors")
  assert "lm_head.weight" not in state
  np.testing.assert_array_equal(state["score.weight"], np.asarray(model.head.w_d[...])[None])


def test_round_trip(saved):
  name, model, directory = saved
  loaded = hf_reward.load_reward_model(directory)
  assert loaded.pool == "last" and not hasattr(loaded.head, "b")
  expected, got = _params(model), _params(loaded)
  if name == "llama":  # untied: the unused unembedding comes back as zeros
    assert not np.any(got["backbone"].pop("lm_head_dv"))
    expected["backbone"].pop("lm_head_dv")
  jax.tree.map(np.testing.assert_array_equal, got, expected)
  tokens, mask = _batch()
  np.testing.assert_array_equal(loaded(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)),
                                model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)))


def test_workdir_resolves_to_hf(saved, tmp_path):
  _, model, directory = saved
  shutil.copytree(directory, tmp_path / "hf")
  assert hf_reward.resolve_reward_model_dir(tmp_path) == os.path.join(tmp_path, "hf")
  assert hf_reward.resolve_reward_model_dir(directory) == str(directory)
  loaded = hf_reward.load_reward_model(tmp_path)
  np.testing.assert_array_equal(loaded.head.w_d[...], model.head.w_d[...])
  with pytest.raises(FileNotFoundError, match="training workdir"):
    hf_reward.resolve_reward_model_dir(tmp_path / "hf" / "missing")


def test_language_model_directory_is_refused(saved, tmp_path):
  _, model, _ = saved
  hf_lib.save_pretrained(model.backbone, tmp_path)
  with pytest.raises(ValueError, match=r"model\.safetensors has no score\.weight: this is a "
                     r"language model \((Qwen2|Llama)ForCausalLM\)"):
    hf_reward.load_reward_model(tmp_path)


def test_two_label_score_is_refused(saved, tmp_path):
  _, _, directory = saved
  shutil.copy(directory / "config.json", tmp_path / "config.json")
  state = load_file(directory / "model.safetensors")
  state["score.weight"] = np.concatenate([state["score.weight"]] * 2)
  save_file(state, tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match=r"not scalar: score\.weight has shape \(2, 32\) "
                     r"\(num_labels=2\)"):
    hf_reward.load_reward_model(tmp_path)


def test_non_zero_bias_and_value_model_are_refused(tmp_path):
  model = _model("qwen2", bias=True)
  model.head.b[...] = 0.0
  hf_reward.save_reward_model(model, tmp_path / "zero")  # a zero bias is exact without one
  model.head.b[...] = 0.5
  with pytest.raises(ValueError, match="bias=False"):
    hf_reward.save_reward_model(model, tmp_path / "biased")
  value_model = ScalarModel(ModelConfig(**COMMON), pool="none", bias=False, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="pool='none'"):
    hf_reward.save_reward_model(value_model, tmp_path / "value")
