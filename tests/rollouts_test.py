"""Rollouts: greedy parity with transformers, stop tokens and masks, sampling filters, layout."""

import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from rewardjax import rollouts
from rewardjax.models.transformer import ModelConfig, Transformer

VOCAB, PAD, T = 64, 0, 12
# Unequal prompt lengths 5, 9, 3, left-padded to S = 9 (bucketed to 16 inside `generate`).
PROMPTS = np.array([[0, 0, 0, 0, 11, 12, 13, 14, 15],
                    [21, 22, 23, 24, 25, 26, 27, 28, 29],
                    [0, 0, 0, 0, 0, 0, 31, 32, 33]], np.int32)
MASK = (np.arange(9)[None, :] >= np.array([[4], [0], [6]])).astype(np.int32)


def _copy_qwen2(hf_model, config: ModelConfig) -> Transformer:
  """A rewardjax Transformer holding the weights of a transformers Qwen2ForCausalLM."""
  sd = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  d, h, kv, k = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
  model = Transformer(config, rngs=nnx.Rngs(0))
  model.embed_vd[...] = jnp.asarray(sd["model.embed_tokens.weight"])
  model.lm_head_dv[...] = jnp.asarray(sd["lm_head.weight"].T)
  model.final_norm.scale[...] = jnp.asarray(sd["model.norm.weight"])
  for i, layer in enumerate(model.layers):
    p, attn = f"model.layers.{i}.", layer.attention
    layer.input_norm.scale[...] = jnp.asarray(sd[p + "input_layernorm.weight"])
    layer.post_attention_norm.scale[...] = jnp.asarray(sd[p + "post_attention_layernorm.weight"])
    for name, heads in (("q", h), ("k", kv), ("v", kv)):
      getattr(attn, f"{name}_dhk")[...] = jnp.asarray(
          sd[p + f"self_attn.{name}_proj.weight"].T.reshape(d, heads, k))
      getattr(attn, f"{name}_bias_hk")[...] = jnp.asarray(
          sd[p + f"self_attn.{name}_proj.bias"].reshape(heads, k))
    attn.o_hkd[...] = jnp.asarray(sd[p + "self_attn.o_proj.weight"].T.reshape(h, k, d))
    layer.mlp.gate_df[...] = jnp.asarray(sd[p + "mlp.gate_proj.weight"].T)
    layer.mlp.up_df[...] = jnp.asarray(sd[p + "mlp.up_proj.weight"].T)
    layer.mlp.down_fd[...] = jnp.asarray(sd[p + "mlp.down_proj.weight"].T)
  return model


@pytest.fixture(scope="module")
def models():
  torch.set_num_threads(1)
  torch.manual_seed(0)
  # initializer_range 0.2 makes next-token distributions peaked, so greedy choices are not
  # decided by float rounding (random biases too: the HF init sets them to zero).
  hf_config = transformers.Qwen2Config(
      vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
      initializer_range=0.2, max_position_embeddings=128)
  hf_model = transformers.Qwen2ForCausalLM(hf_config).eval()
  with torch.no_grad():
    for name, param in hf_model.named_parameters():
      if name.endswith("bias"):
        param.normal_(0.0, 0.2)
  config = ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2,
                       num_heads=4, num_kv_heads=2, head_dim=8, qkv_bias=True,
                       tie_word_embeddings=False, rms_norm_eps=hf_config.rms_norm_eps)
  model = _copy_qwen2(hf_model, config)
  return hf_model, nnx.split(model, nnx.Param)


def _hf_greedy(hf_model, eos_token_id):
  with torch.no_grad():
    out = hf_model.generate(
        input_ids=torch.from_numpy(PROMPTS).long(), attention_mask=torch.from_numpy(MASK).long(),
        do_sample=False, max_new_tokens=T, eos_token_id=eos_token_id, pad_token_id=PAD)
  return out[:, PROMPTS.shape[1]:].numpy()


KEY = jax.random.key(0)


def _greedy(split, prompts=PROMPTS, mask=MASK, **kw):
  kw.setdefault("eos_token_id", None)
  return rollouts.generate(split, prompts, mask, KEY, max_new_tokens=T,
                           decoding=rollouts.Decoding(temperature=0.0, pad_token_id=PAD, **kw))


@pytest.fixture(scope="module")
def greedy(models):
  return _greedy(models[1])


def test_greedy_matches_transformers(models, greedy):
  """Left-padded prompts of lengths 5, 9, 3: the same T = 12 tokens as HF greedy search."""
  np.testing.assert_array_equal(np.asarray(greedy.completion_tokens), _hf_greedy(models[0], None))
  # Prompts come back left-padded to the 16-token bucket.
  assert greedy.prompt_length == 16 and greedy.tokens.shape == (3, 16 + T)
  np.testing.assert_array_equal(np.asarray(greedy.tokens[:, 7:16]), PROMPTS)
  np.testing.assert_array_equal(np.asarray(greedy.prompt_mask[:, 7:]), MASK)
  assert int(greedy.prompt_mask[:, :7].sum()) == 0
  assert greedy.lengths.tolist() == [T] * 3
  # Greedy decoding samples from a point mass: its log-prob is 0.
  assert float(jnp.abs(greedy.logprobs).max()) == 0.0


def test_greedy_matches_transformers_as_the_cache_grows(models):
  """T = 40 decodes in several segments, each over a longer cache: same tokens as HF."""
  assert len(rollouts._segment_ends(40)) > 1
  with torch.no_grad():
    ref = models[0].generate(
        input_ids=torch.from_numpy(PROMPTS).long(), attention_mask=torch.from_numpy(MASK).long(),
        do_sample=False, max_new_tokens=40, eos_token_id=None, pad_token_id=PAD)
  out = rollouts.generate(models[1], PROMPTS, MASK, KEY, max_new_tokens=40,
                          decoding=rollouts.Decoding(temperature=0.0, eos_token_id=None,
                                                     pad_token_id=PAD))
  np.testing.assert_array_equal(np.asarray(out.completion_tokens),
                                ref[:, PROMPTS.shape[1]:].numpy())


def _first_index(row, ids):
  hits = [t for t, tok in enumerate(row) if tok in ids]
  return hits[0] if hits else None


def test_eos_stops_rows_and_masks(models, greedy):
  """EOS = row 0's 5th token: each row keeps tokens up to its first EOS, then pad / mask 0."""
  tokens = np.asarray(greedy.completion_tokens)
  eos = int(tokens[0, 4])
  out = _greedy(models[1], eos_token_id=eos)
  ref = _hf_greedy(models[0], eos)  # HF stops once all rows are done: ref may be shorter
  got = np.asarray(out.completion_tokens)
  np.testing.assert_array_equal(got[:, :ref.shape[1]], ref)
  assert np.all(got[:, ref.shape[1]:] == PAD)
  for row, length in zip(tokens, out.lengths.tolist()):
    first = _first_index(row, {eos})
    assert length == (T if first is None else first + 1)
  mask = np.asarray(out.completion_mask)
  np.testing.assert_array_equal(mask, np.arange(T)[None] < np.asarray(out.lengths)[:, None])
  np.testing.assert_array_equal(got * mask, tokens * mask)
  assert np.all(np.where(mask == 0, got, PAD) == PAD)
  assert float(jnp.abs(out.model_logprobs * (1 - mask)).max()) == 0.0


def test_stop_token_ids(models, greedy):
  """A row stops at the first of EOS or any stop id; once every row has, decoding ends."""
  tokens = np.asarray(greedy.completion_tokens)
  eos, stops = int(tokens[1, 7]), (int(tokens[2, 2]), int(tokens[0, 2]))
  out = _greedy(models[1], eos_token_id=eos, stop_token_ids=stops)
  for row, length in zip(tokens, out.lengths.tolist()):
    first = _first_index(row, {eos, *stops})
    assert length == (T if first is None else first + 1)
  assert max(out.lengths.tolist()) < T  # every row stopped early: the loop exited early
  ref = _hf_greedy(models[0], [eos, *stops])
  got = np.asarray(out.completion_tokens)
  np.testing.assert_array_equal(got[:, :ref.shape[1]], ref)
  assert np.all(got[:, ref.shape[1]:] == PAD)
  # Stop ids alone, without EOS, behave the same way.
  alone = _greedy(models[1], stop_token_ids=(eos, *stops))
  np.testing.assert_array_equal(np.asarray(alone.completion_tokens), got)


def test_top_k_1_equals_greedy(models, greedy):
  out = rollouts.generate(models[1], PROMPTS, MASK, jax.random.key(3), max_new_tokens=T,
                          decoding=rollouts.Decoding(eos_token_id=None, temperature=1.0, top_k=1))
  np.testing.assert_array_equal(np.asarray(out.completion_tokens),
                                np.asarray(greedy.completion_tokens))
  assert float(jnp.abs(out.logprobs).max()) == 0.0  # one token kept: probability 1
  np.testing.assert_allclose(out.model_logprobs, greedy.model_logprobs, atol=1e-6)


@pytest.mark.parametrize("options, expected", [
    # nucleus of [.5, .3, .15, .05] at 0.7: mass above each token is [0, .5, .8, .95] -> {0, 1}
    (dict(top_p=0.7), [0.625, 0.375, 0.0, 0.0]),
    (dict(top_p=0.85), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
    # temperature 0.5 squares the probabilities; top-k 2 keeps {0, 1}: [.25, .09] / .34
    (dict(temperature=0.5, top_k=2), [0.25 / 0.34, 0.09 / 0.34, 0.0, 0.0]),
])
def test_sampling_filters_statistics(options, expected):
  """20,000 draws from a fixed distribution: frequencies within 0.015 (> 4 std errors)."""
  logits = jnp.tile(jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]])), (20_000, 1))
  tokens, logps = jax.jit(lambda x, k: rollouts.sample_logits(x, k, **options))(
      logits, jax.random.key(1))
  freq = np.bincount(np.asarray(tokens), minlength=4) / tokens.shape[0]
  np.testing.assert_allclose(freq, expected, atol=0.015)
  assert np.all(freq[np.asarray(expected) == 0] == 0)
  np.testing.assert_allclose(np.exp(logps), np.asarray(expected)[np.asarray(tokens)], rtol=1e-5)


@pytest.fixture(scope="module")
def sampled(models):
  return rollouts.generate(models[1], PROMPTS[:2], MASK[:2], jax.random.key(7),
                           max_new_tokens=T, num_samples=3,
                           decoding=rollouts.Decoding(eos_token_id=5, temperature=0.7))


def test_num_samples_layout(sampled):
  """Rows [p*G, (p+1)*G) hold prompt p; the G samples of a prompt differ."""
  tokens = np.asarray(sampled.tokens)
  assert tokens.shape == (6, 16 + T) and sampled.completion_tokens.shape == (6, T)
  np.testing.assert_array_equal(tokens[:, 7:16], np.repeat(PROMPTS[:2], 3, axis=0))
  np.testing.assert_array_equal(sampled.prompt_mask[:, 7:], np.repeat(MASK[:2], 3, axis=0))
  for p in range(2):
    group = tokens[3 * p:3 * p + 3, 16:]
    assert len({tuple(row) for row in group}) == 3
  np.testing.assert_array_equal(sampled.lengths, np.asarray(sampled.completion_mask).sum(1))


def test_logprobs_equal_teacher_forcing(models, sampled):
  """Sampling log-probs (τ = 0.7, no filters) and model log-probs (τ = 1) are recomputed."""
  mask = jnp.concatenate([sampled.prompt_mask, sampled.completion_mask], axis=1)
  for temperature, field in ((0.7, sampled.logprobs), (1.0, sampled.model_logprobs)):
    recomputed = rollouts.token_logprobs(models[1], sampled.tokens, mask,
                                         sampled.prompt_length, temperature=temperature)
    np.testing.assert_allclose(recomputed, field, atol=2e-5)
  assert float(jnp.abs(sampled.logprobs - sampled.model_logprobs).max()) > 1e-2


def test_no_recompilation_nor_implicit_transfers(models, greedy, sampled):
  """Prompt lengths 9 and 16 share a bucket; new contents, keys and stop ids reuse the program.

  The calls also run under transfer_guard("disallow"), as `train.py` does.
  """
  prompts_16 = np.concatenate([np.zeros((3, 7), np.int32), PROMPTS], axis=1)
  mask_16 = np.concatenate([np.zeros((3, 7), np.int32), MASK], axis=1)
  full_mask = jax.device_put(1 - np.concatenate([sampled.prompt_mask, sampled.completion_mask], 1))
  sizes = []
  with jax.transfer_guard("disallow"):
    for i, (prompts, mask) in enumerate([(PROMPTS, MASK), (prompts_16, mask_16),
                                         (PROMPTS[:, ::-1].copy(), MASK),
                                         (jax.device_put(prompts_16), jax.device_put(mask_16))]):
      out = _greedy(models[1], prompts, mask, eos_token_id=i, stop_token_ids=(7,) * i)
      assert out.tokens.shape == (3, 16 + T)
      sizes.append(rollouts._generate._cache_size())
    for _ in range(2):
      rollouts.token_logprobs(models[1], sampled.tokens, full_mask, 16)
      sizes.append(rollouts._token_logprobs._cache_size())
  assert sizes[:4] == sizes[:1] * 4 and sizes[-1] == sizes[-2]


def test_bad_inputs_raise(models):
  # Under the test suite's jaxtyping hook the annotation check fires before the ValueError.
  with pytest.raises((ValueError, jaxtyping.TypeCheckError)):
    rollouts.generate(models[1], PROMPTS, MASK[:, 1:], jax.random.key(0), max_new_tokens=2)
  with pytest.raises(ValueError, match="top_p"):
    rollouts.generate(models[1], PROMPTS, MASK, jax.random.key(0), max_new_tokens=2,
                      decoding=rollouts.Decoding(top_p=0.0))
  with pytest.raises(ValueError, match="left-padded"):
    rollouts.generate(models[1], PROMPTS, MASK[:, ::-1].copy(), jax.random.key(0),
                      max_new_tokens=2)
