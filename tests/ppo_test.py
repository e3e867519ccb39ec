"""PPO with a critic companion (`rewardjax.algorithms.ppo`).

* One jitted `ppo.make_step` update with plain SGD on a hand-built `CoupledBatch` moves the
  policy params by exactly -lr * grad of the clipped policy loss and the critic params by
  -lr * grad of the clipped value loss, both written here from a direct full-logits / full-values
  forward (not through `update.py` or the log-prob kernel); "loss" and "critic/loss" are those
  losses' values. KL in the reward (beta = 0 in the loss) and KL in the loss (k3, beta = kl_coef).
* `ppo.advantages` equals a numpy GAE written as an explicit backwards loop: KL-in-reward token
  rewards -kl_coef (old - ref) on every completion token, the sequence reward at the last one,
  whitening with ddof=1 over the completion tokens, row weights, one row padded.
* `train.run` of configs/ppo.py:smoke (variants ppo, kl_in_loss) for 2 steps: finite metrics,
  "train/critic/loss" logged; a run stopped after step 1 and resumed to step 2 ends with the
  same params, critic included, bit for bit, as the uninterrupted run.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import common
from rewardjax import advantages, train
from rewardjax.algorithms import ppo
from rewardjax.models import heads, transformer
from rewardjax.types import CoupledBatch, ModelState, RolloutBatch, TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2,
              num_kv_heads=1, head_dim=8)
B, S, T = 4, 4, 3          # rows, prompt tokens, completion tokens
LR, CRITIC_LR = 0.5, 0.3   # plain SGD: new = old - lr * grad
EPS, CLIP_V = 0.2, 0.2


def _randomise(model, seed, std=0.3):
  """Std-`std` weights (norm scales 1 + noise): logits and values are O(1), ratios not ~1."""
  graphdef, params = nnx.split(model, nnx.Param)
  flat, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))
  keys = jax.random.split(jax.random.key(seed), len(flat))
  leaves = [(1.0 if "scale" in jax.tree_util.keystr(path) else 0.0)
            + std * jax.random.normal(key, x.shape, x.dtype) for (path, x), key in zip(flat, keys)]
  nnx.replace_by_pure_dict(params, jax.tree_util.tree_unflatten(treedef, leaves))
  return nnx.merge(graphdef, params)


def _pure(model):
  return nnx.split(model, nnx.Param)


@pytest.fixture(scope="module")
def setup():
  """Policy and critic (split), and the hand-built rollout rows (one prompt left-padded, one
  completion right-padded, completion masks of 3, 2, 3, 1 tokens)."""
  config = transformer.ModelConfig(**CONFIG)
  policy = _randomise(transformer.Transformer(config, rngs=nnx.Rngs(0)), 1)
  critic = _randomise(heads.ScalarModel(config, pool="none", rngs=nnx.Rngs(2)), 3)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, CONFIG["vocab_size"], (B, S + T)).astype(np.int32)
  prompt_mask = np.ones((B, S), np.int32)
  prompt_mask[1, :2] = 0                       # a left-padded prompt
  completion_mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]], np.int32)
  tokens[:, :S] = np.where(prompt_mask > 0, tokens[:, :S], 0)
  tokens[:, S:] = np.where(completion_mask > 0, tokens[:, S:], 0)
  attention_mask = np.concatenate([prompt_mask, completion_mask], axis=1)
  return dict(policy=_pure(policy), critic=_pure(critic), tokens=tokens,
              attention_mask=attention_mask, completion_mask=completion_mask, rng=rng)


def _direct_logps(graphdef, params, tokens, attention_mask):
  """Completion-token log-probs [B, T] from the full [B, S+T, V] logits."""
  logits = nnx.merge(graphdef, params)(tokens, attention_mask=attention_mask)
  logp = jax.nn.log_softmax(logits[:, S - 1:S + T - 1].astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, tokens[:, S:, None], axis=-1)[..., 0]


def _direct_values(graphdef, params, tokens, attention_mask):
  """Critic values of the states before each completion token: positions S-1 .. S+T-2."""
  return nnx.merge(graphdef, params)(tokens, attention_mask=attention_mask)[:, S - 1:S + T - 1]


def _direct_policy_loss(params, graphdef, batch, beta):
  """Clipped surrogate + beta k3, token mean over every completion token of the batch."""
  logp = _direct_logps(graphdef, params, batch.tokens, batch.attention_mask)
  m = batch.completion_mask.astype(jnp.float32)
  ratio = jnp.exp(logp - batch.old_logprobs)
  a = batch.advantages
  per_token = -jnp.minimum(ratio * a, jnp.clip(ratio, 1 - EPS, 1 + EPS) * a)
  d = batch.ref_logprobs - logp
  per_token = per_token + beta * (jnp.exp(d) - d - 1.0)
  return jnp.sum(jnp.where(m > 0, per_token, 0.0)) / jnp.sum(m)


def _direct_value_loss(params, graphdef, rows):
  """1/2 max((V - G)^2, (old + clip(V - old, -c, c) - G)^2), token mean."""
  v = _direct_values(graphdef, params, rows["tokens"], rows["attention_mask"])
  old, g = rows["old_values"], rows["returns"]
  m = rows["completion_mask"].astype(jnp.float32)
  v_clip = old + jnp.clip(v - old, -CLIP_V, CLIP_V)
  per_token = jnp.maximum((v - g) ** 2, (v_clip - g) ** 2)
  return 0.5 * jnp.sum(jnp.where(m > 0, per_token, 0.0)) / jnp.sum(m)


@pytest.mark.parametrize("kl_in", ["reward", "loss"])
def test_one_update_moves_policy_and_critic_by_their_own_gradients(setup, kl_in):
  policy_graphdef, policy_state = setup["policy"]
  critic_graphdef, critic_state = setup["critic"]
  params = nnx.to_pure_dict(policy_state)
  critic_params = nnx.to_pure_dict(critic_state)
  tokens = jnp.asarray(setup["tokens"])
  attention_mask = jnp.asarray(setup["attention_mask"])
  completion_mask = jnp.asarray(setup["completion_mask"])
  rng = np.random.default_rng(1)
  logp = _direct_logps(policy_graphdef, params, tokens, attention_mask)
  # Old log-probs 0.4 away in either direction: some ratios leave [0.8, 1.2] (clipped).
  old = logp + jnp.asarray(rng.choice([-0.4, 0.05, 0.4], (B, T)), jnp.float32)
  ref = logp + jnp.asarray(rng.normal(0.0, 0.3, (B, T)), jnp.float32)
  advantages = jnp.asarray(rng.normal(0.0, 1.0, (B, T)), jnp.float32)
  values = _direct_values(critic_graphdef, critic_params, tokens, attention_mask)
  # Old values 0.5 away from the current ones on some tokens, so the value clip is active.
  old_values = values + jnp.asarray(rng.choice([-0.5, 0.0, 0.5], (B, T)), jnp.float32)
  returns = jnp.asarray(rng.normal(0.0, 1.0, (B, T)), jnp.float32)
  policy_batch = RolloutBatch(tokens=tokens, attention_mask=attention_mask,
                              completion_mask=completion_mask, old_logprobs=old,
                              ref_logprobs=ref, advantages=advantages, sampler_logprobs=old)
  critic_rows = dict(tokens=tokens, attention_mask=attention_mask,
                     completion_mask=completion_mask, old_values=old_values, returns=returns)
  batch = CoupledBatch(policy=policy_batch, companion=critic_rows)

  tx, critic_tx = optax.sgd(LR), optax.sgd(CRITIC_LR)
  state = TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      rng=jax.random.key(0), ref_params=None, graphdef=policy_graphdef, tx=tx,
      companion=ModelState(params=critic_params, opt_state=critic_tx.init(critic_params),
                           graphdef=critic_graphdef, tx=critic_tx))
  options = dict(ppo.DEFAULTS, kl_in=kl_in, loss_type="dapo", epsilon_low=EPS,
                 epsilon_high=EPS, cliprange_value=CLIP_V, kl_coef=0.1,
                 kl_estimator="low_var_kl")
  step = jax.jit(ppo.make_step(options, max_completion_length=T, chunk_size=16))
  new_state, metrics = step(state, batch, jax.random.key(1))

  beta = 0.1 if kl_in == "loss" else 0.0
  policy_loss, policy_grads = jax.value_and_grad(_direct_policy_loss)(
      params, policy_graphdef, policy_batch, beta)
  value_loss, value_grads = jax.value_and_grad(_direct_value_loss)(
      critic_params, critic_graphdef, critic_rows)
  # The hand-built batch exercises both clips (else the test would not see them).
  ratio = np.exp(np.asarray(logp - old))
  m = setup["completion_mask"] > 0
  assert np.any(m & (np.abs(ratio - 1) > EPS)) and np.any(m & (np.abs(ratio - 1) < EPS))
  assert 0.0 < float(metrics["critic/vf_clipfrac"]) < 1.0

  np.testing.assert_allclose(metrics["loss"], policy_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["critic/loss"], value_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["critic/grad_norm"], optax.global_norm(value_grads),
                             rtol=1e-5)
  assert int(new_state.step) == 1

  def check(new, old_params, grads, lr):
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads))
    assert scale > 0.01  # the step is not trivially zero
    moved = jax.tree.map(lambda n, o: n - o, new, old_params)
    expected = jax.tree.map(lambda g: -lr * g, grads)
    # float32 forwards along two code paths (chunked log-prob kernel vs full log_softmax).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * lr * scale),
                 moved, expected)

  check(new_state.params, params, policy_grads, LR)
  check(new_state.companion.params, critic_params, value_grads, CRITIC_LR)


def np_ppo_advantages(rewards, weights, old, ref, values, mask, kl_coef, gamma, lam):
  """Explicit loops: token rewards, GAE backwards over each row's completion tokens, whitening
  (ddof=1, eps=1e-8) over every completion token of the batch, row weights."""
  rows, length = mask.shape
  adv = np.zeros((rows, length))
  returns = np.zeros((rows, length))
  for b in range(rows):
    n = int(mask[b].sum())                       # a contiguous run 0 .. n-1
    r = [-kl_coef * (old[b, t] - ref[b, t]) for t in range(n)]
    r[n - 1] += rewards[b]
    next_value, next_adv = 0.0, 0.0
    for t in reversed(range(n)):
      delta = r[t] + gamma * next_value - values[b, t]
      next_adv = delta + gamma * lam * next_adv
      next_value = values[b, t]
      adv[b, t] = next_adv
      returns[b, t] = next_adv + values[b, t]
  valid = [adv[b, t] for b in range(rows) for t in range(length) if mask[b, t]]
  mean = sum(valid) / len(valid)
  var = sum((x - mean) ** 2 for x in valid) / (len(valid) - 1)
  for b in range(rows):
    for t in range(length):
      adv[b, t] = (adv[b, t] - mean) / np.sqrt(var + 1e-8) * weights[b] if mask[b, t] else 0.0
  kl = sum(old[b, t] - ref[b, t] for b in range(rows) for t in range(length) if mask[b, t])
  return adv, returns, kl / mask.sum()


def test_advantages_equal_numpy_gae_with_kl_in_reward():
  rng = np.random.default_rng(3)
  mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], np.int32)  # row 1 padded
  rewards = np.array([1.0, 0.0, -0.5], np.float32)
  weights = np.array([1.0, 1.0, 0.5], np.float32)
  old = rng.normal(-1.0, 0.5, mask.shape).astype(np.float32)
  ref = rng.normal(-1.0, 0.5, mask.shape).astype(np.float32)
  values = rng.normal(0.0, 0.5, mask.shape).astype(np.float32)
  # Garbage under the mask must not leak into anything.
  old[1, 2:], ref[1, 2:], values[1, 2:] = 7.0, -7.0, 9.0
  kw = dict(kl_coef=0.05, gamma=0.9, lam=0.8)
  adv, returns, kl = jax.jit(lambda *a: ppo.advantages(
      *a, options=ppo.GaeOptions(whiten=True, **kw)))(
      rewards, weights, old, ref, values, mask)
  adv_np, returns_np, kl_np = np_ppo_advantages(rewards, weights, old.astype(np.float64),
                                                ref.astype(np.float64),
                                                values.astype(np.float64), mask, **kw)
  np.testing.assert_allclose(adv, adv_np, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(returns, returns_np, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(kl, kl_np, rtol=1e-5)
  assert np.all(np.asarray(adv)[mask == 0] == 0) and np.all(np.asarray(returns)[mask == 0] == 0)
  # Token rewards: R at the last completion token only, the KL term on every one.
  r = np.asarray(advantages.token_rewards(rewards, old, ref, mask, kl_coef=0.0))
  np.testing.assert_array_equal(r, [[0, 0, 0, 1.0], [0, 0, 0, 0], [0, 0, 0, -0.5]])


# ---- train.run ------------------------------------------------------------------------------
OVERRIDES = {"checkpoint.async_save": False, "train.export_hf": False, "train.eval_every": 100}


def _config(variant, **overrides):
  return common.load_config(os.path.join(REPO, "configs", "ppo.py") + f":variant={variant},smoke",
                            {**OVERRIDES, **overrides})


def _final_state(workdir, step=None):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step() if step is None else step
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored["state"]


@pytest.fixture(scope="module")
def ppo_runs(tmp_path_factory):
  """Uninterrupted 2-step runs of both variants, saving only steps 0 and 2. "kl_in_loss" keeps
  the smoke warm start (the critic then starts from the warm-started policy's backbone); "ppo"
  starts from scratch (a random critic), which is faster, and is the resume test's baseline."""
  runs = {}
  for variant, warmstart in (("ppo", 0), ("kl_in_loss", 2)):
    workdir = str(tmp_path_factory.mktemp(variant))
    train.run(_config(variant, **{"warmstart.steps": warmstart, "checkpoint.every": 2}), workdir)
    runs[variant] = workdir
  return runs


@pytest.mark.parametrize("variant", ["ppo", "kl_in_loss"])
def test_smoke_run_logs_finite_policy_and_critic_metrics(ppo_runs, variant):
  lines = [json.loads(line) for line in open(os.path.join(ppo_runs[variant], "metrics.jsonl"))]
  train_lines = [line for line in lines if "train/loss" in line]
  assert [line["step"] for line in train_lines] == [1, 2]
  for line in train_lines:
    for key in ("train/loss", "train/critic/loss", "train/critic/grad_norm",
                "train/critic/vf_clipfrac", "train/kl_in_reward", "train/reward"):
      assert key in line and np.isfinite(line[key]), (key, line)
    assert all(np.isfinite(v) for k, v in line.items() if isinstance(v, float)), line
  if variant == "kl_in_loss":
    assert "train/kl" in train_lines[0]     # the k3 term is in the loss
  _, state = _final_state(ppo_runs[variant])
  # Critic and reference were checkpointed with the policy.
  assert set(state["companion"]) == {"params", "opt_state"}
  assert state["ref_params"] is not None
  if variant == "kl_in_loss":
    # After the warm start the critic's backbone is a copy of the policy (a fresh value head).
    _, initial = _final_state(ppo_runs[variant], step=0)
    jax.tree.map(np.testing.assert_array_equal, initial["companion"]["params"]["backbone"],
                 initial["params"])


def test_stopped_and_resumed_run_equals_uninterrupted_bitwise(ppo_runs, tmp_path):
  workdir = str(tmp_path / "resumed")
  train.run(_config("ppo", **{"train.steps": 1, "warmstart.steps": 0}), workdir)
  assert _final_state(workdir)[0] == 1
  train.run(_config("ppo", **{"warmstart.steps": 0}), workdir)
  step_a, straight = _final_state(ppo_runs["ppo"])
  step_b, resumed = _final_state(workdir)
  assert step_a == step_b == 2
  for name in ("params", "companion", "opt_state"):
    a, b = jax.tree.leaves(straight[name]), jax.tree.leaves(resumed[name])
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
      np.testing.assert_array_equal(x, y)
