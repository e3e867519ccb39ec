"""Hugging Face checkpoint I/O: logits parity with transformers on tiny random models built here.

Nothing is downloaded: each family (Qwen2 with qkv biases, Llama 3 rope scaling with untied
embeddings, Qwen3 with q/k norm and an explicit head_dim) is built from a transformers config,
re-initialised with std 0.2 so logits are O(1) (the default std 0.02 gives logits ~0.1, which
would make an absolute tolerance meaningless), and saved to a temporary directory.
"""

import functools
import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file

from rewardjax.models import hf as hf_lib
from rewardjax.models import hf_reward
from rewardjax.models.transformer import ModelConfig, Transformer, rope_frequencies

torch.set_num_threads(1)

COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-6, pad_token_id=0)
# Llama 3 scaling at head_dim 8, theta 1e4: inverse frequencies 1, 0.1, 0.01, 0.001 have
# wavelengths 6.3, 63, 628, 6283; with original_max 64 and low/high freq factors 1/4 the cut-offs
# are 64 and 16, so the first is kept, the second interpolated and the last two divided by 4.
LLAMA3_ROPE = dict(rope_type="llama3", rope_theta=10_000.0, factor=4.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=64)
FAMILIES = {
    "qwen2": ("Qwen2", dict(tie_word_embeddings=True)),
    "llama3": ("Llama", dict(tie_word_embeddings=False, rope_parameters=LLAMA3_ROPE)),
    "qwen3": ("Qwen3", dict(tie_word_embeddings=True, head_dim=16)),
    "qwen2_sliding": ("Qwen2", dict(tie_word_embeddings=False, use_sliding_window=True,
                                    sliding_window=3, max_window_layers=0)),
}
PARITY_TOL = 1e-4  # float32, max abs over real-token logits
LENGTHS = (10, 6, 3)  # left-padded rows of unequal length, S = 10


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 64, (len(LENGTHS), max(LENGTHS)))
  mask = np.zeros_like(tokens)
  for row, length in enumerate(LENGTHS):
    mask[row, max(LENGTHS) - length:] = 1
  # Same convention as generate(): RoPE positions count real tokens only.
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  return tokens * mask, mask, positions


def _torch_logits(model, tokens, mask, positions):
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(positions)).logits.float().numpy()


def _max_real_diff(a, b, mask):
  return float(np.abs(np.asarray(a) - np.asarray(b))[mask.astype(bool)].max())


def _make(name, directory):
  """Builds, randomises and saves one tiny HF model; returns it with reference logits."""
  prefix, extra = FAMILIES[name]
  torch.manual_seed(0)
  config = getattr(transformers, prefix + "Config")(**COMMON, **extra)
  config._attn_implementation = "eager"
  model = getattr(transformers, prefix + "ForCausalLM")(config).eval()
  with torch.no_grad():
    for param_name, p in model.named_parameters():
      if param_name.endswith("norm.weight"):  # RMSNorm scales init to 1; q/k norm included
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      else:  # biases init to 0; weights get std 0.2 so logits are O(1)
        p.normal_(0.0, 0.2)
  model.save_pretrained(directory)
  tokens, mask, positions = _batch()
  return dict(name=name, dir=directory, torch_model=model, tokens=tokens, mask=mask,
              positions=positions, logits=_torch_logits(model, tokens, mask, positions))


@pytest.fixture(scope="module")
def build(tmp_path_factory):
  """name -> saved family, each built once per module."""
  cache = {}

  def get(name):
    if name not in cache:
      cache[name] = _make(name, tmp_path_factory.mktemp(name))
    return cache[name]
  return get


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, build):
  return build(request.param)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, tokens, mask):
  return nnx.merge(graphdef, params)(tokens, attention_mask=mask)


def _jax_logits(model, f):
  # One compile per architecture; eager NNX would compile every op separately (much slower).
  graphdef, params = nnx.split(model)
  return np.asarray(_forward(graphdef, params, jnp.asarray(f["tokens"]),
                             jnp.asarray(f["mask"])))


def test_logits_match_transformers(family):
  """from_pretrained reproduces the torch logits of every real token to <= 1e-4 (float32)."""
  model = hf_lib.from_pretrained(family["dir"])
  logits = _jax_logits(model, family)
  assert logits.dtype == np.float32 and model.config.param_dtype == "float32"
  assert float(np.abs(family["logits"]).max()) > 1.0  # the comparison is not vacuous
  diff = _max_real_diff(logits, family["logits"], family["mask"])
  print(f"\n{family['name']}: max abs logit diff {diff:.2e}")
  assert diff <= PARITY_TOL


def test_config_flags(family):
  """The family-specific switches are read from config.json."""
  with open(family["dir"] / "config.json") as f:
    config = hf_lib.config_from_hf(json.load(f))
  expected = {
      "qwen2": dict(qkv_bias=True, qk_norm=False, tie_word_embeddings=True, head_dim=8),
      "llama3": dict(qkv_bias=False, qk_norm=False, tie_word_embeddings=False, head_dim=8,
                     rope_type="llama3", rope_original_max_position=64),
      "qwen3": dict(qkv_bias=False, qk_norm=True, tie_word_embeddings=True, head_dim=16),
      "qwen2_sliding": dict(qkv_bias=True, sliding_window=3, tie_word_embeddings=False),
  }[family["name"]]
  assert {k: getattr(config, k) for k in expected} == expected
  assert hf_lib.config_from_hf(hf_lib.config_to_hf(config)) == config


def test_llama3_scaling_changes_frequencies():
  """At head_dim 8 the chosen rope parameters change 3 of the 4 inverse frequencies."""
  base = dict(head_dim=8, num_heads=4, num_kv_heads=2)
  plain = np.asarray(rope_frequencies(ModelConfig(**base)))
  scaled = np.asarray(rope_frequencies(ModelConfig(
      **base, rope_type="llama3", rope_factor=4.0, rope_low_freq_factor=1.0,
      rope_high_freq_factor=4.0, rope_original_max_position=64)))
  np.testing.assert_allclose(plain, [1.0, 0.1, 0.01, 0.001], rtol=1e-5)
  assert scaled[0] == plain[0]
  np.testing.assert_allclose(scaled[2:], plain[2:] / 4.0, rtol=1e-6)
  assert plain[1] / 4.0 < scaled[1] < plain[1]  # interpolated band


def test_save_pretrained_loads_in_transformers(family, tmp_path):
  """rewardjax -> save_pretrained -> transformers gives back the same weights and logits."""
  model = hf_lib.from_pretrained(family["dir"])
  hf_lib.save_pretrained(model, tmp_path)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, attn_implementation="eager").eval()
  assert type(reloaded) is type(family["torch_model"])
  original = family["torch_model"].state_dict()
  for name, x in reloaded.state_dict().items():
    assert torch.equal(x, original[name]), name
  logits = _torch_logits(reloaded, family["tokens"], family["mask"], family["positions"])
  assert _max_real_diff(logits, family["logits"], family["mask"]) == 0.0


def test_sharded_index_round_trip(build, tmp_path):
  """A tiny max_shard_size writes an index + shards that both libraries load unchanged."""
  f = build("llama3")
  model = hf_lib.from_pretrained(f["dir"])
  hf_lib.save_pretrained(model, tmp_path, max_shard_size="20KB")  # one layer is ~17 KB
  with open(tmp_path / hf_lib.INDEX_FILE) as index_file:
    index = json.load(index_file)
  shards = sorted(set(index["weight_map"].values()))
  assert len(shards) > 2 and not (tmp_path / hf_lib.SINGLE_FILE).exists()
  assert index["metadata"]["total_size"] == sum(
      x.nbytes for s in shards for x in load_file(tmp_path / s).values())
  np.testing.assert_array_equal(_jax_logits(hf_lib.from_pretrained(tmp_path), f),
                                _jax_logits(model, f))
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, attn_implementation="eager").eval()
  logits = _torch_logits(torch_model, f["tokens"], f["mask"], f["positions"])
  assert _max_real_diff(logits, f["logits"], f["mask"]) == 0.0
  # A missing shard is named; re-saving unsharded removes the stale shards and index.
  (tmp_path / shards[1]).rename(tmp_path / "moved")
  with pytest.raises(FileNotFoundError, match=f"lists shard '{shards[1]}', which is missing"):
    hf_lib.from_pretrained(tmp_path)
  hf_lib.save_pretrained(model, tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "config.json", hf_lib.SINGLE_FILE, "moved"]


def test_bf16_smoke(build, tmp_path):
  """bf16 compute stays finite and within bf16 rounding of float32; bf16 params save as BF16.

  bf16 keeps 8 significant bits (relative rounding 2**-9 per op); a few dozen roundings compound
  over two layers and the vocab projection, so |logits_bf16 - logits_f32| <= 2**-4 * max|logits|
  is a loose bound (measured ~0.02 * max|logits|). It must also be > 0, i.e. bf16 really ran.
  """
  f = build("qwen2")
  model = hf_lib.from_pretrained(f["dir"], dtype="bfloat16")
  assert model.config.dtype == "bfloat16" and model.embed_vd[...].dtype == jnp.float32
  logits = _jax_logits(model, f)
  assert logits.dtype == np.float32 and np.isfinite(logits).all()
  diff = _max_real_diff(logits, f["logits"], f["mask"])
  print(f"\nbf16 compute: max abs diff {diff:.3f}, max |logit| {np.abs(f['logits']).max():.2f}")
  assert 0.0 < diff <= 2**-4 * np.abs(f["logits"]).max()
  bf16_params = hf_lib.from_pretrained(f["dir"], param_dtype=jnp.bfloat16)
  assert bf16_params.config.dtype == "bfloat16"
  assert bf16_params.layers[0].attention.q_bias_hk[...].dtype == jnp.bfloat16
  hf_lib.save_pretrained(bf16_params, tmp_path)
  assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
  assert {x.dtype.name for x in load_file(tmp_path / hf_lib.SINGLE_FILE).values()} == {"bfloat16"}
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
  assert next(torch_model.parameters()).dtype == torch.bfloat16


def _copy_with_config(f, tmp_path, **changes):
  shutil.copytree(f["dir"], tmp_path / "model")
  config = json.loads((tmp_path / "model" / "config.json").read_text())
  for key, value in changes.items():
    if value is None:
      config.pop(key, None)
    else:
      config[key] = value
  (tmp_path / "model" / "config.json").write_text(json.dumps(config))
  return tmp_path / "model"


def test_error_missing_files(build, tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json in"):
    hf_lib.from_pretrained(tmp_path)
  shutil.copy(build("qwen2")["dir"] / "config.json", tmp_path)
  with pytest.raises(FileNotFoundError,
                     match=r"no model.safetensors or model.safetensors.index.json in .*"
                           r"\(files: \['config.json'\]\)"):
    hf_lib.from_pretrained(tmp_path)
  # An empty .bin: any attempt to unpickle it would fail with a different error.
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match=r"only pytorch_model\*\.bin .*convert.*"
                                              r"safe_serialization=True"):
    hf_lib.from_pretrained(tmp_path)


def _cut_to_half(path):
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 2)


FIX = "re-download it or re-export the model"


def test_error_truncated_or_corrupt_weights_name_the_file_and_the_fix(build, tmp_path):
  """safetensors alone says "Error while deserializing header", naming no file."""
  directory = _copy_with_config(build("qwen2"), tmp_path)
  weights = directory / hf_lib.SINGLE_FILE
  intact = weights.read_bytes()
  _cut_to_half(weights)
  truncated = rf"{re.escape(str(weights))} is truncated: \d+ of the \d+ bytes its header " \
              rf"describes \(\d+%\); {FIX}"
  for load in (hf_lib.from_pretrained, hf_reward.load_reward_model):
    with pytest.raises(ValueError, match=truncated):
      load(directory)
  weights.write_bytes(intact[:8] + b"garbage!" + intact[16:])         # a garbled header
  with pytest.raises(ValueError, match=rf"{re.escape(str(weights))} is corrupt: its safetensors "
                                       rf"header is unreadable .*; {FIX}"):
    hf_lib.from_pretrained(directory)
  weights.write_bytes(intact + b"\0")                                 # a stray trailing byte
  with pytest.raises(ValueError, match=rf"is corrupt: {len(intact) + 1} bytes, but its header "
                                       rf"describes {len(intact)}"):
    hf_lib.from_pretrained(directory)
  weights.write_bytes(intact)
  (directory / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"],')
  with pytest.raises(ValueError, match=rf"config\.json is corrupt: not valid JSON .*; {FIX}"):
    hf_lib.from_pretrained(directory)


def test_error_truncated_shard_or_corrupt_index_is_named(build, tmp_path):
  hf_lib.save_pretrained(hf_lib.from_pretrained(build("llama3")["dir"]), tmp_path,
                         max_shard_size="20KB")
  index = tmp_path / hf_lib.INDEX_FILE
  shard = tmp_path / sorted(set(json.loads(index.read_text())["weight_map"].values()))[1]
  _cut_to_half(shard)
  with pytest.raises(ValueError, match=rf"{re.escape(str(shard))} is truncated: .*; {FIX}"):
    hf_lib.from_pretrained(tmp_path)
  index.write_text('{"metadata": {}}')
  with pytest.raises(ValueError, match=rf"{hf_lib.INDEX_FILE} is corrupt: it has no "
                                       rf"\"weight_map\" object; {FIX}"):
    hf_lib.from_pretrained(tmp_path)


def test_error_unsupported_architecture(build, tmp_path):
  directory = _copy_with_config(build("qwen2"), tmp_path, architectures=["GPT2LMHeadModel"])
  with pytest.raises(ValueError, match=r"config.json: architecture 'GPT2LMHeadModel' is not "
                     r"supported; supported: \['LlamaForCausalLM', 'Qwen2ForCausalLM', "
                     r"'Qwen3ForCausalLM'\]"):
    hf_lib.from_pretrained(directory)


def test_error_config_weight_shape_mismatch(build, tmp_path):
  directory = _copy_with_config(build("qwen2"), tmp_path, intermediate_size=48)
  with pytest.raises(ValueError, match=r"model.safetensors\) vs config.json: tensor "
                     r"'model.layers.0.mlp.gate_proj.weight' has shape \(64, 32\) but the "
                     r"config implies \(48, 32\)"):
    hf_lib.from_pretrained(directory)


def test_error_missing_and_unexpected_tensors(build):
  f = build("qwen2")
  state = load_file(f["dir"] / hf_lib.SINGLE_FILE)
  config = hf_lib.from_pretrained(f["dir"]).config
  missing = {k: v for k, v in state.items() if k != "model.layers.1.mlp.up_proj.weight"}
  with pytest.raises(ValueError, match=r"missing tensor 'model.layers.1.mlp.up_proj.weight' "
                                       r"\(shape \(64, 32\)\)"):
    hf_lib.params_from_hf_state(missing, config)
  extra = {**state, "model.layers.0.mlp.gate_proj.bias": np.ones(64, np.float32)}
  with pytest.raises(ValueError, match=r"1 tensor\(s\) .* does not use, e.g. "
                                       r"\['model.layers.0.mlp.gate_proj.bias'\]"):
    hf_lib.params_from_hf_state(extra, config)
  # Tolerated: a tied model's redundant lm_head (transformers ignores it) and legacy rope buffers.
  tolerated = {**state, "lm_head.weight": state["model.embed_tokens.weight"],
               "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4, np.float32)}
  params = hf_lib.params_from_hf_state(tolerated, config)
  np.testing.assert_array_equal(params["embed_vd"], state["model.embed_tokens.weight"])


def _random_params(config):
  """Random pure-dict params without running the NNX initialisers (no per-op compiles)."""
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype),
                      nnx.to_pure_dict(nnx.split(abstract, nnx.Param)[1]))


def test_implied_zero_biases():
  """Biases HF always has but rewardjax lacks are written as zeros and must be zero on load."""
  qwen2 = ModelConfig(vocab_size=8, hidden_size=4, intermediate_size=8, num_layers=1,
                      num_heads=2, num_kv_heads=1, head_dim=2, qkv_bias=False)
  params = _random_params(qwen2)
  state = hf_lib.hf_state_from_params(params, qwen2)
  assert not state["model.layers.0.self_attn.k_proj.bias"].any()
  restored = hf_lib.params_from_hf_state(state, qwen2)
  assert jax.tree.all(jax.tree.map(np.array_equal, restored, params))
  state["model.layers.0.self_attn.k_proj.bias"] = np.ones(2, np.float32)
  with pytest.raises(ValueError, match="'model.layers.0.self_attn.k_proj.bias' is non-zero"):
    hf_lib.params_from_hf_state(state, qwen2)
  # Llama attention_bias=True biases q, k, v and o; only an all-zero o_proj bias is representable.
  llama = hf_lib.config_from_hf({"architectures": ["LlamaForCausalLM"], **COMMON,
                                 "attention_bias": True})
  assert llama.qkv_bias
  params = _random_params(llama)
  state = hf_lib.hf_state_from_params(params, llama)
  state["model.layers.1.self_attn.o_proj.bias"] = np.full(32, 0.5, np.float32)
  with pytest.raises(ValueError, match="'model.layers.1.self_attn.o_proj.bias' is non-zero"):
    hf_lib.params_from_hf_state(state, llama)


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=None), r"missing required field\(s\) \['hidden_size'\]"),
    (dict(rope_parameters=dict(rope_type="yarn", factor=4.0)),
     r"rope_type='yarn' is not supported; use one of \('default', 'linear', 'llama3'\)"),
    (dict(use_sliding_window=True, sliding_window=4, max_window_layers=1),
     r"mixes full and sliding-window layers"),
    (dict(hidden_act="gelu"), r"hidden_act='gelu' is not supported"),
])
def test_error_config_fields(changes, message):
  config = {"architectures": ["Qwen2ForCausalLM"], **COMMON, **changes}
  with pytest.raises(ValueError, match=message):
    hf_lib.config_from_hf({k: v for k, v in config.items() if v is not None})


def test_legacy_rope_scaling_and_defaults():
  """transformers 4 configs: top-level rope_theta + rope_scaling with "type" or "rope_type"."""
  base = {"architectures": ["LlamaForCausalLM"], **COMMON}
  linear = hf_lib.config_from_hf({**base, "rope_theta": 5e5,
                                  "rope_scaling": {"type": "linear", "factor": 2.0}})
  assert (linear.rope_type, linear.rope_factor, linear.rope_theta) == ("linear", 2.0, 5e5)
  llama3 = hf_lib.config_from_hf({**base, "rope_theta": 5e5, "max_position_embeddings": 99,
                                  "rope_scaling": {**LLAMA3_ROPE, "rope_theta": None,
                                                   "original_max_position_embeddings": None}})
  assert (llama3.rope_type, llama3.rope_theta, llama3.rope_original_max_position) == (
      "llama3", 5e5, 99)
  qwen3 = hf_lib.config_from_hf({"model_type": "qwen3", **COMMON, "eos_token_id": [5, 6]})
  assert (qwen3.architecture, qwen3.head_dim, qwen3.eos_token_id) == (
      "Qwen3ForCausalLM", 128, 5)


def test_save_rejects_unrepresentable_config(tmp_path):
  config = ModelConfig(qk_norm=True, architecture="LlamaForCausalLM")
  with pytest.raises(ValueError, match="LlamaForCausalLM needs qk_norm=False; set "
                                       "architecture='Qwen3ForCausalLM'"):
    hf_lib.config_to_hf(config)
  with pytest.raises(ValueError, match=r"max_shard_size='5 bytes': use bytes"):
    hf_lib.save_pretrained(nnx.eval_shape(lambda: Transformer(ModelConfig(), rngs=nnx.Rngs(0))),
                           tmp_path, max_shard_size="5 bytes")
