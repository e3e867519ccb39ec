"""Tests for VPL (arXiv 2408.10075): rewardjax.losses.vpl, rewardjax.models.vpl,
rewardjax.data.users and the "vpl" / "user_bt" reward-model objectives.

The loss against a numpy reference written from the formula (loops), gradients with
`check_grads`, masking; the annealing schedule and the renormalisation by hand; the user records
on hand-built cases; the model's dependence on z and on the context; the objective against
the losses function on independently computed pieces (one tiny model, jitted once).
"""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from rewardjax import losses, sharding
from rewardjax.algorithms import base, reward_model
from rewardjax.algorithms import reward_model_objectives as rmo
from rewardjax.algorithms import reward_model_records as rmr
from rewardjax.algorithms import vpl as vpl_algo
from rewardjax.data import tasks, tokenizers, users
from rewardjax.models import transformer
from rewardjax.models import vpl as vpl_model
from rewardjax.types import SequenceBatch

B, L, C = 4, 3, 2


def nls(x):
  return float(np.log1p(np.exp(-x)))


def ref_vpl(c, r, mu, logvar, beta, w):
  idx = [i for i in range(len(c)) if w[i]]
  if not idx:
    return 0.0
  recon = np.mean([nls(c[i] - r[i]) for i in idx])
  kls = [-0.5 * sum(1 + logvar[i, d] - mu[i, d] ** 2 - np.exp(logvar[i, d])
                    for d in range(mu.shape[1])) for i in idx]
  return recon + beta * np.mean(kls)


@pytest.fixture(scope="module")
def pieces():
  rng = np.random.default_rng(0)
  return (rng.normal(size=B).astype(np.float32), rng.normal(size=B).astype(np.float32),
          rng.normal(size=(B, L)).astype(np.float32),
          rng.normal(size=(B, L)).astype(np.float32) * 0.5)


# ---------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("mask", [None, [1, 0, 1, 1], [0, 0, 0, 0]])
def test_vpl_loss_matches_numpy(pieces, mask):
  c, r, mu, logvar = pieces
  w = np.ones(B) if mask is None else np.array(mask)
  loss, metrics = jax.jit(lambda *a: losses.vpl_loss(
      *a, kl_weight=0.3, mask=None if mask is None else jnp.array(mask, jnp.float32)))(
          c, r, mu, logvar)
  np.testing.assert_allclose(float(loss), ref_vpl(c, r, mu, logvar, 0.3, w), rtol=1e-5,
                             atol=1e-6)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  if mask is None:
    np.testing.assert_allclose(float(metrics["kl"]), ref_vpl(c, c, mu, logvar, 1.0, w) - np.log(2),
                               rtol=1e-5)
    assert float(metrics["accuracy"]) == np.mean(c > r)
    np.testing.assert_allclose(float(metrics["mean_norm"]), np.linalg.norm(mu, axis=1).mean(),
                               rtol=1e-5)


def test_vpl_loss_gradients(pieces):
  check_grads(jax.jit(lambda *a: losses.vpl_loss(*a, kl_weight=0.7)[0]),
              tuple(jnp.asarray(x) for x in pieces), order=1, modes=["rev"])


def test_gaussian_kl_zero_only_at_the_prior():
  assert float(losses.gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0
  # σ² = e: −½ (1 + 1 − e) per dim
  np.testing.assert_allclose(float(losses.gaussian_kl(jnp.zeros((1, 2)), jnp.ones((1, 2)))[0]),
                             -(2 - np.e), rtol=1e-6)


def test_kl_annealing_cyclical_cosine_by_hand():
  period = 100
  values = [float(losses.kl_annealing(t, period=period)) for t in (0, 25, 50, 99, 100, 150)]
  y = lambda t: (np.cos(np.pi * (t / period - 1)) + 1) / 2 * 0.9 + 0.1  # noqa: E731
  np.testing.assert_allclose(values, [0.1, y(25), 0.55, y(99), 0.1, 0.55], rtol=1e-5)
  assert 0.99 < y(99) < 1.0
  assert float(losses.kl_annealing(7, period=0)) == 1.0  # off
  # A traced step (the batch's "step" field) gives the same values under jit.
  np.testing.assert_allclose(float(jax.jit(lambda t: losses.kl_annealing(t, period=period))(
      jnp.int32(25))), y(25), rtol=1e-5)


def test_reparameterize_renormalises_to_radius_sqrt_l():
  mean, log_var = jnp.full((5, 16), 3.0), jnp.zeros((5, 16))
  z = losses.reparameterize(mean, log_var, jax.random.key(0))
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 4.0, rtol=1e-5)  # √16
  raw = losses.reparameterize(mean, log_var, jax.random.key(0), renormalize=False)
  np.testing.assert_allclose(z, 4.0 * raw / np.linalg.norm(raw, axis=1, keepdims=True),
                             rtol=1e-5)
  # σ → 0: z → μ (then renormalised), and the sample is finite at μ = 0, σ → 0.
  tight = losses.reparameterize(mean, jnp.full((5, 16), -40.0), jax.random.key(1),
                                renormalize=False)
  np.testing.assert_allclose(tight, mean, atol=1e-6)
  assert bool(jnp.isfinite(losses.reparameterize(jnp.zeros((1, 4)), jnp.full((1, 4), -200.0),
                                                 jax.random.key(2))).all())


def test_clamp_posterior():
  mean, log_var = losses.clamp_posterior(jnp.array([[-3.0, 0.5]]), jnp.array([[2.0, -0.2]]))
  np.testing.assert_allclose(mean, [[-1.0, 0.5]])
  np.testing.assert_allclose(log_var, [[1.0, -0.2]])


# ---------------------------------------------------------------------------------- records


ITEMS = [dict(question="47-8", answer="39"), dict(question="3+4", answer="7"),
         dict(question="12+30", answer="42")]


def test_user_preferences_agree_on_correctness_and_disagree_on_style():
  for user in users.USERS:
    for wa in (False, True):
      for wb in (False, True):
        assert users.prefers(user, (True, wa), (False, wb))
        assert not users.prefers(user, (False, wa), (True, wb))
  assert users.prefers("concise", (True, False), (True, True))
  assert users.prefers("working", (True, True), (True, False))
  assert not users.prefers("working", (True, True), (True, True))  # equal: no preference


def test_style_and_correctness_comparisons_on_a_hand_built_question():
  rng = np.random.default_rng(0)
  concise = users.comparison(ITEMS[0], "concise", rng, style=True)
  working = users.comparison(ITEMS[0], "working", rng, style=True)
  assert concise == dict(prompt="47-8=", chosen="39", rejected="47-8=39\n39", style=1)
  assert working == dict(prompt="47-8=", chosen="47-8=39\n39", rejected="39", style=1)
  for user in users.USERS:
    for _ in range(10):
      pair = users.comparison(ITEMS[0], user, rng, style=False)
      assert pair["style"] == 0
      assert pair["chosen"].split("\n")[-1] == "39" != pair["rejected"].split("\n")[-1]
      for text in (pair["chosen"], pair["rejected"]):  # bare, or "47-8=v\nv"
        answer = text.split("\n")[-1]
        assert text in (answer, users.worked("47-8", answer))


def test_user_pairs_records_have_a_same_user_context_from_other_questions():
  options = users.UserPairOptions(context_size=5, style_fraction=1.0)
  records = users.user_pairs(ITEMS, options)
  assert [r["user"] for r in records] == [0, 1, 0]  # users alternate
  for i, r in enumerate(records):
    assert set(r) == {"prompt", "chosen", "rejected", "user", "style", "answer", "context"}
    assert len(r["context"]) == 5
    assert r["prompt"] == ITEMS[i]["question"] + "="
    bare_wins = users.USERS[r["user"]] == "concise"
    for pair in [r] + r["context"]:  # all style pairs: the label is the record's user's
      assert pair["style"] == 1
      assert ("\n" not in pair["chosen"]) == bare_wins
    assert all(c["prompt"] != r["prompt"] for c in r["context"])
  plain = users.user_pairs(ITEMS, users.UserPairOptions(context_size=2, style_fraction=0.0))
  assert all(p["style"] == 0 for r in plain for p in [r] + r["context"])
  assert users.user_pairs(ITEMS, options) == records  # reproducible
  with pytest.raises(ValueError, match="format 'short'"):
    users.user_pairs(ITEMS, options, fmt="boxed")


def test_style_fraction_of_the_builtin_records():
  items = tasks.problems(400, difficulty=1, seed=0)
  records = users.user_pairs(items, users.UserPairOptions(context_size=4, style_fraction=0.3))
  assert abs(np.mean([r["style"] for r in records]) - 0.3) < 0.06
  assert abs(np.mean([c["style"] for r in records for c in r["context"]]) - 0.3) < 0.04


# ------------------------------------------------------------------ model, rows, objective


@pytest.fixture(scope="module")
def setup():
  return types.SimpleNamespace(tokenizer=tokenizers.char_tokenizer(), data=base.DataOptions())


@pytest.fixture(scope="module")
def options():
  return ml_collections.ConfigDict(dict(rmo.DEFAULTS, loss_type="vpl", context_size=C,
                                        latent_dim=L, latent_hidden_dim=8))


@pytest.fixture(scope="module")
def model_config():
  return transformer.ModelConfig(vocab_size=128, hidden_size=16, intermediate_size=32,
                                 num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8)


@pytest.fixture(scope="module")
def model(model_config, options):
  return vpl_algo.model_fn(model_config, options, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def records(options):
  items = tasks.problems(B, difficulty=1, seed=0, unique=True)
  return vpl_algo.user_records(items, fmt="short", seed=0, options=options)


def test_context_rows_layout(records, setup, options):
  arrays, extra = vpl_algo.context_arrays(records, setup=setup)
  rows = rmr.RECORDS["user_pairs"].rows(B, options)
  assert rows == 2 * B * (1 + C)
  assert {k: v.shape[0] for k, v in {**arrays, **extra}.items()} == dict.fromkeys(
      {**arrays, **extra}, rows)
  texts = setup.tokenizer.batch_decode(arrays["tokens"], skip_special_tokens=True)
  for b, r in enumerate(records):
    assert texts[b] == r["prompt"] + r["chosen"]
    assert texts[B + b] == r["prompt"] + r["rejected"]
    for k, c in enumerate(r["context"]):
      assert texts[2 * B + b * C + k] == c["prompt"] + c["chosen"]
      assert texts[2 * B + B * C + b * C + k] == c["prompt"] + c["rejected"]
      assert extra["user"][2 * B + b * C + k] == r["user"]
      assert extra["style"][2 * B + b * C + k] == c["style"]
    assert extra["user"][b] == extra["user"][B + b] == r["user"]
  target, target_extra = vpl_algo.target_arrays(records, setup=setup)
  assert target["tokens"].shape[0] == 2 * B and set(target_extra) == {"user", "style"}


def test_model_reward_depends_on_z_and_on_the_context(model, records, setup):
  arrays, _ = vpl_algo.context_arrays(records, setup=setup)
  tokens, mask = jnp.asarray(arrays["tokens"]), jnp.asarray(arrays["attention_mask"])

  @jax.jit
  def run(tokens, mask):
    features, mean, log_var = vpl_algo.posterior(model, tokens, mask, context_size=C)
    swapped = jnp.concatenate([tokens[:2 * B], tokens[2 * B + B * C:], tokens[2 * B:2 * B + B * C]])
    swapped_mask = jnp.concatenate([mask[:2 * B], mask[2 * B + B * C:], mask[2 * B:2 * B + B * C]])
    _, mean_swapped, _ = vpl_algo.posterior(model, swapped, swapped_mask, context_size=C)
    z = jnp.concatenate([mean, mean])
    return (model.reward(features, z), model.reward(features, -z), mean, log_var, mean_swapped,
            model(tokens[:2 * B], attention_mask=mask[:2 * B], z=z))

  r, r_flipped, mean, log_var, mean_swapped, r_call = run(tokens, mask)
  assert mean.shape == log_var.shape == (B, L)
  assert float(jnp.abs(mean).max()) <= 1.0 and float(jnp.abs(log_var).max()) <= 1.0  # clamped
  assert not np.allclose(r, r_flipped)                 # the reward reads z
  assert not np.allclose(mean, mean_swapped)           # z reads the context (labels swapped)
  np.testing.assert_allclose(r_call, r, rtol=1e-5, atol=1e-6)


def test_vpl_objective_matches_its_loss_and_leaves_the_context_path_frozen(
    model, records, setup, options):
  arrays, extra = vpl_algo.context_arrays(records, setup=setup)
  arrays, extra = rmo.add_step_key(arrays, extra, records, setup=setup, options=options,
                                   rng=jax.random.key(3))
  extra["step"] = np.full(arrays["tokens"].shape[0], 5, np.int32)
  base.check_fields(rmo.OBJECTIVES["vpl"], extra, "vpl")
  batch = SequenceBatch(extra=jax.tree.map(jnp.asarray, extra), **jax.tree.map(jnp.asarray, arrays))
  graphdef, params = nnx.split(model, nnx.Param)
  loss_fn = base.bind(rmo.OBJECTIVES["vpl"], options)

  @jax.jit
  def run(params):
    (loss, metrics), grads = jax.value_and_grad(
        lambda p: loss_fn(nnx.merge(graphdef, p), batch), has_aux=True)(params)
    m = nnx.merge(graphdef, params)
    features, mean, log_var = vpl_algo.posterior(m, batch.tokens, batch.attention_mask,
                                                 context_size=C)
    z = losses.reparameterize(mean, log_var, jax.random.key(3))
    scores = m.reward(features, jnp.concatenate([z, z]))
    beta = options.kl_weight * losses.kl_annealing(5, period=options.kl_anneal_period)
    ref, _ = losses.vpl_loss(scores[:B], scores[B:], mean, log_var, kl_weight=beta)
    # The gradient through the context only (targets' rows stopped) must be zero.
    def context_only(p):
      m = nnx.merge(graphdef, p)
      _, mean, _ = vpl_algo.posterior(m, batch.tokens, batch.attention_mask, context_size=C)
      return jnp.sum(mean)
    context_grads = jax.grad(context_only)(params)
    return loss, metrics, grads, ref, context_grads

  loss, metrics, grads, ref, context_grads = run(params)
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-5, atol=1e-6)
  assert {"kl", "kl_weight", "reconstruction_loss", "mean_norm", "style_accuracy"} <= set(metrics)
  for part in ("backbone", "encoder", "decoder"):
    leaves = jax.tree.leaves(grads[part])
    assert all(bool(jnp.isfinite(g).all()) for g in leaves), part
    assert float(sum(jnp.sum(jnp.square(g)) for g in leaves)) > 0.0, part
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(context_grads["backbone"]))


def test_program_builds_the_vpl_model_without_an_export(options, setup, model_config):
  run_setup = base.Setup(
      tokenizer=setup.tokenizer, mesh=sharding.make_mesh(), model=model_config, data=setup.data,
      sampling=base.SamplingOptions(), recipe=None, records={}, batch_size=B, eval_batch_size=8,
      seed=0, problems={"train": tasks.problems(8), "heldout": tasks.problems(2, split="heldout")})
  program = reward_model.build(options, run_setup)
  assert not program.export_hf
  assert isinstance(program.model_fn(nnx.Rngs(0)), vpl_model.VPLModel)
  lm = nnx.to_pure_dict(nnx.split(transformer.Transformer(model_config, rngs=nnx.Rngs(1)),
                                  nnx.Param)[1])
  params = program.init_params(lm, 0)
  assert set(params) == {"backbone", "encoder", "decoder"} and params["backbone"] is lm
  bt = reward_model.build(ml_collections.ConfigDict(dict(options.to_dict(), loss_type="bt",
                                                   records="user_target_pairs")),
                          run_setup)
  assert bt.export_hf and set(bt.init_params(lm, 0)) == {"backbone", "head"}
  assert bt.rows_per_update == 2 * B and program.rows_per_update == 2 * B * (1 + C)
  batch, _ = program.make_batch(None, 7, jax.random.key(0))  # records -> rows -> mesh
  assert batch.tokens.shape[0] == program.rows_per_update
  assert (np.asarray(batch.extra["step"]) == 7).all()      # the KL annealing's step
  assert set(rmo.OBJECTIVES["vpl"].needs) <= set(batch.extra)
  bt_batch, _ = bt.make_batch(None, 7, jax.random.key(0))
  assert "step" not in bt_batch.extra and bt_batch.tokens.shape[0] == 2 * B


def test_user_metrics_by_hand():
  items = [dict(user=0, style=1), dict(user=1, style=1), dict(user=0, style=0),
           dict(user=1, style=0)]
  m = vpl_algo.user_metrics(np.array([1.0, 0.0, 2.0, 1.0]), np.array([0.0, 1.0, 1.0, 0.0]), items)
  assert m["pair_accuracy"] == 0.75 and m["style_accuracy"] == 0.5
  assert m["correctness_accuracy"] == 1.0
  assert m["concise_accuracy"] == 1.0 and m["working_accuracy"] == 0.5
  assert m["concise_style_accuracy"] == 1.0 and m["working_style_accuracy"] == 0.0
