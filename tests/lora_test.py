"""LoRA adapters (`models/lora.py`): the adapted model, its gradient, the train state (adapters
alone trained and in the optimizer, the reference without a copy of the weights), the smoke
GRPO and DPO steps through the config path, checkpoints and the merged export."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common
from rewardjax import checkpoint, train, train_state, update
from rewardjax.models import hf, lora, transformer
from rewardjax.types import overlay, subtree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny shapes; B * S = 10 rows differ from every weight dimension (64, 256, 4 * 16), so a dot
# whose output has a weight's [in, out] shape is a weight gradient.
CONFIG = transformer.ModelConfig(vocab_size=32, hidden_size=64, intermediate_size=256,
                                 num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)
LORA = dataclasses.replace(CONFIG, lora_rank=4, lora_alpha=8.0)


def _params(model):
  return nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])


def _perturbed(params, seed=0):
  """The adapters set to random values (B != 0), the base weights untouched."""
  trainable, frozen = lora.split_trainable(params)
  keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(trainable))))
  moved = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape), trainable)
  return overlay(frozen, moved)


@pytest.fixture(scope="module")
def models():
  """(LoRA graphdef, LoRA params with moved adapters, base model with the same weights)."""
  adapted = transformer.Transformer(LORA, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(adapted, nnx.Param)
  params = nnx.to_pure_dict(params)
  base = transformer.Transformer(CONFIG, rngs=nnx.Rngs(1))
  nnx.update(base, lora.split_trainable(params)[1])
  return graphdef, params, base


@pytest.fixture(scope="module")
def tokens():
  return jax.random.randint(jax.random.key(3), (2, 5), 0, CONFIG.vocab_size)


def test_no_lora_keeps_the_params_pytree():
  plain = _params(transformer.Transformer(CONFIG, rngs=nnx.Rngs(0)))
  assert not lora.has_adapters(plain)
  assert lora.split_trainable(plain) == (plain, None)


def test_zero_initialised_adapters_give_the_base_logits(models, tokens):
  graphdef, params, base = models
  adapted = nnx.merge(graphdef, params)
  np.testing.assert_array_equal(adapted(tokens), base(tokens))
  b_leaves = [x for p, x in jax.tree_util.tree_leaves_with_path(params) if p[-1].key == "b"]
  assert len(b_leaves) == 7 * CONFIG.num_layers and all(not x.any() for x in b_leaves)


def test_adapter_term_and_gradient_match_numpy():
  """One projection, y = x W + s (x A) B, against hand-written numpy values and gradients."""
  rng = np.random.default_rng(0)
  mlp = transformer.MLP(LORA, rngs=nnx.Rngs(0))
  adapter = mlp.down_lora
  a, b = rng.normal(size=adapter.a[...].shape), rng.normal(size=adapter.b[...].shape)
  adapter.a[...], adapter.b[...] = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  x = rng.normal(size=(3, 256)).astype(np.float32)
  w = rng.normal(size=(3, 64)).astype(np.float32)   # d loss / d y
  s = LORA.lora_alpha / LORA.lora_rank
  y = lora.add(mlp, "down", jnp.zeros((3, 64)), jnp.asarray(x), jnp.float32)
  np.testing.assert_allclose(y, s * (x @ a) @ b, rtol=1e-4, atol=1e-4)

  graphdef, state = nnx.split(mlp, nnx.Param)

  def loss(ab):
    p = nnx.to_pure_dict(state)
    p["down_lora"] = {"a": ab[0], "b": ab[1]}
    module = nnx.merge(graphdef, p)
    return jnp.sum(w * lora.add(module, "down", jnp.zeros((3, 64)), jnp.asarray(x), jnp.float32))

  ga, gb = jax.grad(loss)((jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
  np.testing.assert_allclose(ga, s * x.T @ (w @ b.T), rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(gb, s * (x @ a).T @ w, rtol=1e-4, atol=1e-3)


def _dots(jaxpr):
  """Output shapes of every dot_general in a closed jaxpr and its sub-jaxprs."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      out.append(tuple(eqn.outvars[0].aval.shape))
    for value in eqn.params.values():
      inner = getattr(value, "jaxpr", None)
      if inner is not None and hasattr(inner, "eqns"):
        out += _dots(inner)
  return out


def test_gradient_is_taken_wrt_adapters_only(models, tokens):
  """No [in, out] weight-gradient matmul for the frozen base, fewer FLOPs, and a finite
  difference of one adapter entry matches the gradient."""
  graphdef, params, _ = models
  params = _perturbed(params)
  probe = jax.random.normal(jax.random.key(5), (*tokens.shape, CONFIG.vocab_size))

  def loss_of(p):
    return jnp.sum(probe * nnx.merge(graphdef, p)(tokens)), {}

  def full(p):  # every leaf differentiated: what training without LoRA does
    return jax.value_and_grad(loss_of, has_aux=True)(p)

  (_, _), grads = update.value_and_grad(loss_of, params)
  assert jax.tree.structure(grads) == jax.tree.structure(lora.trainable(params))
  # Flattened [in, out] shapes of the fused and single base projections and the embedding;
  # XLA may form a weight gradient as [out, in].
  d, f, hk = CONFIG.hidden_size, CONFIG.intermediate_size, CONFIG.num_heads * CONFIG.head_dim
  kv, v = CONFIG.num_kv_heads * CONFIG.head_dim, CONFIG.vocab_size
  weights = [(d, hk + 2 * kv), (hk, d), (d, 2 * f), (f, d), (v, d)]
  lora_dots = set(_dots(jax.make_jaxpr(
      lambda p: update.value_and_grad(loss_of, p))(params).jaxpr))
  full_dots = set(_dots(jax.make_jaxpr(full)(params).jaxpr))
  for shape in weights:
    both = {shape, shape[::-1]}
    assert both & full_dots, shape            # the check sees weight gradients ...
    assert not both & lora_dots, shape        # ... and LoRA forms none
  costs = [jax.jit(fn).lower(params).compile().cost_analysis()
           for fn in (lambda p: update.value_and_grad(loss_of, p), full)]
  flops = [(c[0] if isinstance(c, list) else c)["flops"] for c in costs]
  assert flops[0] < 0.85 * flops[1]
  # Finite difference of one entry of layer 0's v adapter B.
  eps = 1e-2
  b = params["layers"][0]["attention"]["v_lora"]["b"]

  def at(delta):
    moved = jax.tree.map(lambda x: x, params)
    moved["layers"][0]["attention"]["v_lora"]["b"] = b.at[1, 0, 3].add(delta)
    return float(loss_of(moved)[0])

  numeric = (at(eps) - at(-eps)) / (2 * eps)
  analytic = float(grads["layers"][0]["attention"]["v_lora"]["b"][1, 0, 3])
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=2e-3)


@pytest.fixture(scope="module")
def lora_state():
  mesh = train.sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh):
    tx = train.make_optimizer(common.load_config(os.path.join(REPO, "configs/grpo.py"),
                                                 {}).optim, 10)
    model_fn = lambda rngs: transformer.Transformer(LORA, rngs=rngs)  # noqa: E731
    plain = _params(transformer.Transformer(CONFIG, rngs=nnx.Rngs(7)))
    state, _ = train_state.create_state(model_fn, tx, mesh, jax.random.key(0), params=plain,
                                        with_ref=True)
  return state, plain


def test_state_optimizer_and_reference_hold_only_adapters(lora_state):
  state, plain = lora_state
  trainable = lora.trainable(state.params)
  adapter_shapes = {x.shape for x in jax.tree.leaves(trainable)}
  moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim]
  assert moments and {x.shape for x in moments} <= adapter_shapes
  assert sum(x.size for x in moments) == 2 * sum(x.size for x in jax.tree.leaves(trainable))
  assert jax.tree.structure(state.ref_params) == jax.tree.structure(trainable)
  # The pretrained weights were kept, the adapters added around them.
  frozen = lora.split_trainable(state.params)[1]
  jax.tree.map(np.testing.assert_array_equal, frozen, plain)


def test_reference_logprobs_under_lora_equal_the_base_model(lora_state, tokens):
  state, plain = lora_state
  state = state.replace(params=_perturbed(state.params))
  mask = jnp.ones(tokens.shape, jnp.int32)
  policy, ref = update.score_rollouts(state.params, state.reference_params(), state.graphdef,
                                      tokens, mask, 3)
  base = transformer.Transformer(CONFIG, rngs=nnx.Rngs(0))
  nnx.update(base, plain)
  base_logps, _ = update.token_logprobs(base, tokens, mask, 2, 3)
  np.testing.assert_array_equal(ref, base_logps)
  assert np.abs(np.asarray(policy) - np.asarray(base_logps)).max() > 1e-3


def test_merged_export_equals_the_adapted_model(models, tokens, tmp_path):
  graphdef, params, _ = models
  adapted = nnx.merge(graphdef, _perturbed(params))
  hf.save_pretrained(adapted, tmp_path)
  loaded = hf.from_pretrained(tmp_path)
  assert not lora.has_adapters(_params(loaded))
  np.testing.assert_allclose(loaded(tokens), adapted(tokens), rtol=1e-4, atol=1e-4)


def test_default_lora_fields_keep_fingerprints():
  config = common.load_config(os.path.join(REPO, "configs/grpo.py"), {}).to_dict()
  older = dict(config, model={k: v for k, v in config["model"].items()
                              if not k.startswith("lora_")})
  for keys in (None, checkpoint.FINGERPRINT_KEYS):
    assert checkpoint.config_fingerprint(config, keys) == checkpoint.config_fingerprint(
        older, keys)
  config["model"]["lora_rank"] = 4
  assert checkpoint.config_fingerprint(config) != checkpoint.config_fingerprint(older)


def _two_steps(config_arg):
  """State before and after two updates of `config_arg` (smoke) with lora_rank=4."""
  config = common.load_config(os.path.join(REPO, config_arg), {
      "model.lora_rank": 4, "warmstart.steps": 0, "train.export_hf": False})
  mesh = train.sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh):
    job = train.make_job(config, mesh)
    program = job.program
    state, shardings = train_state.create_state(
        program.model_fn, train.make_optimizer(config.optim, 2), mesh, jax.random.key(0),
        with_ref=program.with_ref)
    before = jax.device_get(state.params)
    step = None
    for i in range(2):
      batch, _ = program.make_batch(state, i, jax.random.key(i))
      step = step or train.jit_step(program, shardings, batch, mesh)
      state, metrics = step(state, batch, jax.random.key(i))
      assert np.isfinite(float(metrics["loss"]))
  return program, before, jax.device_get(state.params), jax.device_get(state.ref_params)


@pytest.mark.parametrize("config_arg", ["configs/grpo.py:smoke", "configs/dpo.py:smoke"])
def test_smoke_step_moves_adapters_only(config_arg):
  program, before, after, ref = _two_steps(config_arg)
  assert program.with_ref
  trained, frozen = lora.split_trainable(after)
  jax.tree.map(np.testing.assert_array_equal, frozen, lora.split_trainable(before)[1])
  moved = jax.tree.map(lambda x, y: float(np.abs(x - y).max()), trained, lora.trainable(before))
  assert max(jax.tree.leaves(moved)) > 0
  # The reference is the starting adapters (B = 0: the base model), not the trained ones.
  jax.tree.map(np.testing.assert_array_equal, ref, subtree(before, ref))


def test_run_checkpoints_resumes_and_exports_with_lora(tmp_path):
  config_arg = os.path.join(REPO, "configs/grpo.py:smoke")
  overrides = {"model.lora_rank": 4, "warmstart.steps": 0, "checkpoint.async_save": False}
  workdir = str(tmp_path)
  train.run(common.load_config(config_arg, overrides), workdir)
  summary = train.run(common.load_config(config_arg, overrides | {"train.steps": 3}), workdir)
  assert summary["steps"] == 3
  loaded = hf.from_pretrained(os.path.join(workdir, "hf"))
  assert not lora.has_adapters(_params(loaded))


def test_adapters_shard_like_their_weights():
  """A takes its weight's input axes, B its output axes; the rank axis is replicated."""
  mesh = train.sharding.make_mesh(2, 2, 2)
  abstract = nnx.split(nnx.eval_shape(lambda: transformer.Transformer(LORA, rngs=nnx.Rngs(0))),
                       nnx.Param)[1]
  specs = jax.tree.map(lambda s: tuple(s.spec), train.sharding.param_shardings(abstract, mesh))
  attention, mlp = specs["layers"][0]["attention"], specs["layers"][0]["mlp"]
  assert attention["q_lora"]["a"] == ("fsdp", None)
  assert attention["q_lora"]["b"] == (None, "tensor", None)
  assert attention["o_lora"]["a"] == ("tensor", None, None)
  assert mlp["down_lora"]["a"] == ("tensor", None) and mlp["down_lora"]["b"] == (None, "fsdp")
