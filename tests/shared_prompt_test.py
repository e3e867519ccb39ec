"""Shared-prompt passes: each prompt computed once per group (GRPO) or pair (DPO), with the
same log-probs and gradients as the unshared [B, S+T] pass; rollouts prefill once per prompt.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from rewardjax import optim, rollouts, update
from rewardjax.algorithms import grpo, preference
from rewardjax.models import transformer
from rewardjax.types import RolloutBatch, TrainState

P, G, S, T = 3, 4, 6, 5
CONFIG = transformer.ModelConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                                 num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                 qkv_bias=True)


@pytest.fixture(scope="module")
def model():
  return nnx.split(transformer.Transformer(CONFIG, rngs=nnx.Rngs(0)), nnx.Param)


@pytest.fixture(scope="module")
def group_batch():
  """P left-padded prompts of different lengths, G ragged completions each (one empty)."""
  rng = np.random.default_rng(0)
  prompt_mask = np.ones((P, S), np.int32)
  prompt_mask[0, :2] = 0
  prompt_mask[1, :1] = 0
  prompt = np.where(prompt_mask > 0, rng.integers(4, 32, (P, S)), 0)
  lengths = rng.integers(1, T + 1, P * G)
  lengths[3] = 0   # a row whose group was dropped (completion mask all 0)
  completion_mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
  completion = np.where(completion_mask > 0, rng.integers(4, 32, (P * G, T)), 0)
  tokens = np.concatenate([np.repeat(prompt, G, axis=0), completion], axis=1)
  attention_mask = np.concatenate([np.repeat(prompt_mask, G, axis=0), completion_mask], axis=1)
  return jnp.asarray(tokens), jnp.asarray(attention_mask), jnp.asarray(completion_mask)


def _logps(graphdef, params, tokens, attention_mask, group_size):
  logps, _ = update.token_logprobs(nnx.merge(graphdef, params), tokens, attention_mask, S, T,
                                   group_size=group_size)
  return logps


def test_grouped_logprobs_and_gradients_equal_unshared(model, group_batch):
  graphdef, params = model
  tokens, attention_mask, completion_mask = group_batch
  mask = np.asarray(completion_mask, np.float32)
  shared = _logps(graphdef, params, tokens, attention_mask, G)
  unshared = _logps(graphdef, params, tokens, attention_mask, 1)
  np.testing.assert_allclose(np.asarray(shared) * mask, np.asarray(unshared) * mask, atol=2e-6)

  def total(p, group_size):
    return (_logps(graphdef, p, tokens, attention_mask, group_size) * mask).sum()

  grads_shared = jax.grad(total)(params, G)
  grads_unshared = jax.grad(total)(params, 1)
  for a, b in zip(jax.tree.leaves(grads_shared), jax.tree.leaves(grads_unshared)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)
  # Sub-groups of a group share the prompt too (minibatches of gcd(G, rows) rows).
  half = _logps(graphdef, params, tokens, attention_mask, G // 2)
  np.testing.assert_allclose(np.asarray(half) * mask, np.asarray(unshared) * mask, atol=2e-6)


def test_grpo_step_with_shared_prompts_equals_unshared(model, group_batch):
  graphdef, params = model
  tokens, attention_mask, completion_mask = group_batch
  params = nnx.to_pure_dict(params)
  logps = _logps(graphdef, params, tokens, attention_mask, 1) * completion_mask
  batch = RolloutBatch(tokens=tokens, attention_mask=attention_mask,
                       completion_mask=completion_mask, old_logprobs=logps - 0.05,
                       ref_logprobs=logps + 0.1,
                       advantages=jnp.linspace(-1.0, 1.0, P * G),
                       sampler_logprobs=logps - 0.05)
  tx = optim.make_optimizer(optim.AdamW(learning_rate=1e-2, schedule="constant"), total_steps=10)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.key(0), graphdef=graphdef, tx=tx)
  options = ml_collections.ConfigDict(dict(grpo.DEFAULTS, loss_type="grpo", beta=0.04))
  new = {}
  for group in (1, G):
    step = jax.jit(grpo.make_step(options, max_completion_length=T, prompt_group=group))
    new[group], metrics = step(state, batch, jax.random.key(0))
    assert np.isfinite(float(metrics["loss"]))
  for a, b in zip(jax.tree.leaves(new[G].params), jax.tree.leaves(new[1].params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_shared_prompt_check_refuses_differing_prompts(group_batch):
  tokens, attention_mask, _ = map(np.asarray, group_batch)
  update.check_shared_prompts(tokens, attention_mask, S, G)   # the real layout passes
  bad = tokens.copy()
  bad[1, S - 1] += 1   # row 1 is in prompt 0's group
  with pytest.raises(ValueError, match="must share the prompt"):
    update.check_shared_prompts(bad, attention_mask, S, G)


def test_grpo_prompt_groups_follow_minibatches_and_turns():
  options = ml_collections.ConfigDict(dict(turns=1, num_minibatches=4))
  assert grpo.prompt_groups(options, 8, 6) == 4      # 12-row minibatches: sub-groups of 4
  assert grpo.prompt_groups(options, 8, 6, minibatch=False) == 8
  # 32 prompts x 8 over 64 batch shards: each device's 4 rows share their prompt, so the
  # prompt rows (64) split over the shards instead of being computed on every one.
  options.num_minibatches = 1
  assert grpo.prompt_groups(options, 8, 32, shards=64) == 4
  assert grpo.prompt_groups(options, 8, 32, shards=256) == 1
  assert grpo.prompt_groups(options, 8, 8, shards=1) == 8
  options.turns = 2
  assert grpo.prompt_groups(options, 8, 6) == 1


@pytest.fixture(scope="module")
def pair_batch():
  """4 pairs: left-padded prompts (width 8), right-padded completions of different lengths."""
  rng = np.random.default_rng(1)
  pairs, prompt_len, completion_len = 4, 8, 6
  prompt_mask = (np.arange(prompt_len)[None] >= rng.integers(0, 4, pairs)[:, None])
  prompt = np.where(prompt_mask, rng.integers(4, 32, (pairs, prompt_len)), 0)
  lengths = rng.integers(1, completion_len + 1, 2 * pairs)
  completion_mask = np.arange(completion_len)[None] < lengths[:, None]
  completion = np.where(completion_mask, rng.integers(4, 32, (2 * pairs, completion_len)), 0)
  tokens = np.concatenate([np.tile(prompt, (2, 1)), completion], axis=1).astype(np.int32)
  attention_mask = np.concatenate([np.tile(prompt_mask, (2, 1)), completion_mask],
                                  axis=1).astype(np.int32)
  loss_mask = np.concatenate([np.zeros((2 * pairs, prompt_len)), completion_mask], axis=1)[:, 1:]
  return tokens, attention_mask, loss_mask.astype(np.int32), prompt_len


def test_paired_prompt_sequence_logps_and_gradients_equal_unshared(model, pair_batch):
  graphdef, params = model
  tokens, attention_mask, loss_mask, prompt_len = pair_batch
  assert preference.paired_prompt_length(tokens, attention_mask, loss_mask, 4) == prompt_len

  def logps(p, paired):
    total, _ = update.sequence_logps(nnx.merge(graphdef, p), jnp.asarray(tokens),
                                     jnp.asarray(attention_mask), jnp.asarray(loss_mask),
                                     paired_prompt=paired)
    return total

  np.testing.assert_allclose(np.asarray(logps(params, prompt_len)), np.asarray(logps(params, 0)),
                             rtol=1e-5, atol=1e-5)
  weights = jnp.linspace(-1.0, 1.0, 8)
  grads = [jax.grad(lambda p, k=k: (logps(p, k) * weights).sum())(params)
           for k in (prompt_len, 0)]
  for a, b in zip(*map(jax.tree.leaves, grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-5)


def test_paired_prompt_length_is_zero_unless_the_layout_holds(pair_batch):
  tokens, attention_mask, loss_mask, _ = pair_batch
  other = tokens.copy()
  other[5, 7] += 1   # pair 1's rejected row has another prompt
  assert preference.paired_prompt_length(other, attention_mask, loss_mask, 4) == 0
  assert preference.paired_prompt_length(tokens, attention_mask, loss_mask, 3) == 0
  shifted = np.roll(loss_mask, 1, axis=1)   # a completion starting one column late
  assert preference.paired_prompt_length(tokens, attention_mask, shifted, 4) == 0


def test_prefill_once_rollouts_equal_per_row_prefill_greedy(model):
  """G greedy samples of a prompt (prefilled once, cache copied) equal G copies of the prompt
  decoded one sample each (each row prefilled on its own)."""
  graphdef, params = model
  rng = np.random.default_rng(2)
  prompt = rng.integers(4, 32, (2, 7))
  mask = np.ones((2, 7), np.int32)
  mask[1, :3] = 0
  decoding = rollouts.Decoding(temperature=0.0, eos_token_id=None)
  once = rollouts.generate((graphdef, params), prompt, mask, jax.random.key(0),
                           max_new_tokens=9, num_samples=3, decoding=decoding)
  per_row = rollouts.generate((graphdef, params), np.repeat(prompt, 3, axis=0),
                              np.repeat(mask, 3, axis=0), jax.random.key(0), max_new_tokens=9,
                              num_samples=1, decoding=decoding)
  np.testing.assert_array_equal(np.asarray(once.tokens), np.asarray(per_row.tokens))
  np.testing.assert_allclose(np.asarray(once.model_logprobs),
                             np.asarray(per_row.model_logprobs), atol=1e-5)
