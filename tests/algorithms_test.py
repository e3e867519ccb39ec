"""The trunk's glue, each with a value: sampler/trainer ratio, pair layout, minibatches,
dynamic sampling, per-item weights, and one update's exact parameter change."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import grpo as grpo_config
from rewardjax import losses, optim, train, train_state, update
from rewardjax.algorithms import base, grpo, preference, sft
from rewardjax.data import tokenizers
from rewardjax.models import transformer
from rewardjax.types import SequenceBatch, TrainState


@pytest.fixture(scope="module")
def grpo_job():
  config = grpo_config.get_config("smoke")
  mesh = train.sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh):
    job = train.make_job(config, mesh)
    state, _ = train_state.create_state(job.program.model_fn, train.make_optimizer(config.optim, 2),
                                        mesh, jax.random.key(0), with_ref=job.program.with_ref)
    batch, _ = job.program.make_batch(state, 0, jax.random.key(1))
    _, metrics = jax.jit(job.program.step)(state, batch, jax.random.key(2))
  return batch, jax.device_get(metrics)


def test_sampler_and_trainer_logprobs_agree_on_a_fresh_batch(grpo_job):
  _, metrics = grpo_job
  assert abs(float(metrics["sampler/ratio_mean"]) - 1.0) < 1e-4
  assert float(metrics["sampler/ratio_max_deviation"]) < 1e-4


def test_rollout_batch_rows_and_advantages_are_group_normalised(grpo_job):
  batch, _ = grpo_job
  adv = np.asarray(batch.advantages).reshape(-1, 2)  # smoke: G = 2
  np.testing.assert_allclose(adv.sum(axis=1), 0.0, atol=1e-5)  # each group's mean removed


def test_pair_layout_equals_a_hand_built_one():
  tok = tokenizers.char_tokenizer()
  data = base.DataOptions(bucket=4, max_prompt_length=8, max_completion_length=8)
  tokens, attention, loss_mask = preference.pair_arrays(tok, ["1+2="], ["3"], ["4"], data=data)
  bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tokenizers.pad_token_id(tok)
  enc = lambda s: tok.convert_tokens_to_ids(list(s))
  prompt = [bos] + enc("1+2=")                     # 5 tokens, left-padded to 8
  want = np.array([[pad] * 3 + prompt + enc("3") + [eos] + [pad] * 2,
                   [pad] * 3 + prompt + enc("4") + [eos] + [pad] * 2])
  np.testing.assert_array_equal(tokens, want)
  np.testing.assert_array_equal(attention, (want != pad).astype(int))
  # loss_mask[j] = 1 where token j+1 is a completion token: the answer and its EOS.
  want_loss = np.zeros((2, 11), int)
  want_loss[:, 7:9] = 1
  np.testing.assert_array_equal(loss_mask, want_loss)


def test_minibatches_are_contiguous_equal_slices():
  batch = {"x": jnp.arange(12).reshape(6, 2), "y": jnp.arange(6)}
  parts = train.minibatches(batch, 3)
  assert [p["y"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
  with pytest.raises(ValueError, match="num_minibatches=4"):
    train.minibatches(batch, 4)


def _group(rewards, weight=1.0):
  g = len(rewards)
  return dict(rewards=np.array(rewards, np.float32), finite=np.ones(g, bool),
              items=[{"prompt": "p", "weight": weight}] * g, texts=[""] * g,
              tokens=np.ones((g, 5), np.int32), prompt_mask=np.ones((g, 3), np.int32),
              completion_mask=np.ones((g, 2), np.int32),
              model_logprobs=np.zeros((g, 2), np.float32))


def test_dynamic_sampling_refills_to_p_groups_whose_rewards_differ():
  rounds = {0: [_group([1, 1]), _group([0, 1])], 1: [_group([0, 0]), _group([1, 0])],
            2: [_group([1, 0]), _group([1, 0])]}
  drawn = []

  def draw(r):
    drawn.append(r)
    return rounds[r], {"reward": float(r)}

  groups, metrics = grpo.dynamic_sampling(draw, num_prompts=2, max_rounds=4)
  assert drawn == [0, 1]                              # stops once 2 informative groups exist
  assert [g["rewards"].tolist() for g in groups] == [[0, 1], [1, 0]]
  assert metrics == {"reward": 0.0, "kept_groups": 2.0}
  groups, metrics = grpo.dynamic_sampling(lambda r: ([_group([1, 1])] * 2, {}), 2, 1)
  assert metrics["kept_groups"] == 0.0 and len(groups) == 2  # filled with the others


def test_an_item_weight_scales_exactly_its_rows_loss():
  host = grpo.assemble([_group([0, 1], weight=0.5), _group([1, 0])], pad_id=0,
                       max_new_tokens=2)
  adv = grpo.advantages(jnp.asarray(host["rewards"]), jnp.asarray(host["row_weights"]),
                        None, None, None, options=grpo.AdvantageOptions(
                            estimator="grpo", group_size=2, scale_rewards="group"))
  np.testing.assert_allclose(adv[:2], -0.5 * np.asarray(adv[2:]), rtol=1e-6)
  logps = jnp.log(jnp.array([[0.3, 0.6]] * 4))
  loss_of = lambda a, rows: losses.grpo_loss(logps[rows], logps[rows] - 0.1, None, a[rows],
                                             jnp.ones((2, 2)), beta=0.0)[0]
  np.testing.assert_allclose(loss_of(adv, slice(0, 2)),
                             0.5 * loss_of(adv * jnp.array([2.0, 2, 1, 1]), slice(0, 2)),
                             rtol=1e-6)


def test_one_update_moves_params_by_the_first_adam_step():
  """First AdamW step (bias-corrected): delta = -lr * g / (|g| + eps), whatever the clip."""
  cfg = transformer.ModelConfig(vocab_size=128, hidden_size=16, intermediate_size=32,
                                num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8)
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  lr, eps = 1e-2, 1e-8
  tx = optim.make_optimizer(optim.AdamW(learning_rate=lr, schedule="constant", eps=eps),
                            total_steps=10)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                     rng=jax.random.key(0), graphdef=graphdef, tx=tx)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, 100, (2, 6)), jnp.int32)
  batch = SequenceBatch(tokens=tokens, attention_mask=jnp.ones((2, 6), jnp.int32),
                                  loss_mask=jnp.asarray([[0, 0, 1, 1, 1]] * 2, jnp.int32))
  step = sft.make_step(sft.DEFAULTS, chunk_size=64)
  new_state, metrics = jax.jit(step)(state, batch, jax.random.key(0))
  grads = jax.grad(lambda p: sft.nll_objective(nnx.merge(graphdef, p), batch,
                                               chunk_size=64)[0])(params)
  # Independently: the gradient of the NLL written out with full logits.
  logits = nnx.merge(graphdef, params)(tokens)
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
  nll = -(jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0] * batch.loss_mask).sum() / 6
  np.testing.assert_allclose(float(metrics["loss"]), float(nll), rtol=1e-5)
  clip = min(1.0, 1.0 / float(optax.global_norm(grads)))
  for new, old, g in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(params),
                         jax.tree.leaves(grads)):
    g = np.asarray(g) * clip
    np.testing.assert_allclose(np.asarray(new) - np.asarray(old),
                               -lr * g / (np.abs(g) + eps), rtol=1e-4, atol=1e-9)
  assert int(new_state.step) == 1


def test_a_batch_without_a_needed_field_names_it_and_its_source():
  obj = base.Objective(loss=sft.nll_objective, needs={"is_tie": "tie pairs (tasks.tie_pairs, or an "
                                                   "'is_tie' column in the data)"})
  with pytest.raises(ValueError, match=r"needs the batch field 'is_tie'.*tie pairs"):
    base.check_fields(obj, {"margin": np.zeros(2)}, "win_tie")
  base.check_fields(obj, {"is_tie": np.zeros(2)}, "win_tie")  # present: no error


def test_an_unknown_algorithm_or_algo_field_lists_the_valid_ones():
  from rewardjax import algorithms  # noqa: PLC0415
  with pytest.raises(ValueError,
                     match=r"valid: \['dpo', 'grpo', 'ppo', 'reward_model', 'self_distillation',"
                           r" 'sft'\]"):
    algorithms.get("a2c")
  config = grpo_config.get_config("smoke")
  with config.unlocked():
    config.algo.label_smoothing = 0.1   # a DPO field: GRPO does not read it
  with pytest.raises(ValueError, match="label_smoothing.*does not read"):
    train.make_job(config, train.sharding.make_mesh(-1, 1, 1))


def test_tis_weights_each_tokens_surrogate_by_the_capped_trainer_sampler_ratio():
  """policy_objective with tis_cap: equals grpo_loss with A_t * min(pi_old / pi_sampler, cap)."""
  cfg = transformer.ModelConfig(vocab_size=128, hidden_size=16, intermediate_size=32,
                                num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8)
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(4, 100, (2, 7)), jnp.int32)
  logps, _ = update.token_logprobs(model, tokens, jnp.ones((2, 7), jnp.int32), 4, 3)
  old = logps + 0.05
  sampler = old - jnp.asarray([[0.0, 0.3, -0.2], [1.0, 0.1, 0.0]])   # ratios e^0, e^.3, ...
  batch = grpo.RolloutBatch(
      tokens=tokens, attention_mask=jnp.ones((2, 7), jnp.int32),
      completion_mask=jnp.ones((2, 3), jnp.int32), old_logprobs=old, ref_logprobs=old,
      advantages=jnp.array([1.0, -0.5]), sampler_logprobs=sampler)
  options = dict(loss_type="grpo", beta=0.0, epsilon_low=0.2, epsilon_high=0.2)
  loss, metrics = grpo.policy_objective(model, batch, tis_cap=1.5, max_completion_length=3,
                                        chunk_size=64, **options)
  weight = np.minimum(np.exp(np.asarray(old - sampler)), 1.5)   # the e^1 entry is capped
  want, _ = losses.grpo_loss(logps, old, old, jnp.asarray(
      np.array([[1.0], [-0.5]]) * weight), jnp.ones((2, 3)), **options)
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["sampler/tis_weight_mean"]), weight.mean(), rtol=1e-6)
  # Off (cap 0): the plain loss, and the ratio metrics compare the trainer with the sampler.
  plain, metrics = grpo.policy_objective(model, batch, tis_cap=0.0, max_completion_length=3,
                                         chunk_size=64, **options)
  assert float(plain) != float(loss)
  np.testing.assert_allclose(float(metrics["sampler/ratio_max_deviation"]),
                             np.abs(np.exp(np.asarray(logps - sampler)) - 1).max(), rtol=1e-5)
