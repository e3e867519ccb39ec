"""The DPO family's objective table: each new entry, from built-in pairs through its `prepare`
stage to a loss, equals its `rewardjax.losses` function on independently computed log-probs.

Independent log-probs come from the full [R, L, V] logits (`log_softmax` of `model(tokens)`),
not from the chunked kernel the objectives use. One tiny model (D=16, N=1, V=128); each
objective's value-and-grad is compiled once.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from rewardjax import losses
from rewardjax.algorithms import base, preference
from rewardjax.algorithms.preference_objectives import DEFAULTS, OBJECTIVES, degree_logits
from rewardjax.data import preference_data, tasks, tokenizers
from rewardjax.models.transformer import ModelConfig, Transformer
from rewardjax.types import PreferenceBatch

CONFIG = ModelConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_layers=1,
                     num_heads=2, num_kv_heads=1, head_dim=8)
DATA = base.DataOptions(fmt="short", bucket=8, max_prompt_length=32, max_completion_length=8)
TOK = tokenizers.char_tokenizer()
ITEMS = tasks.preference_pairs(tasks.problems(2, difficulty=1, seed=0))   # B = 2 pairs
NEW = ("simpo", "orpo", "kto", "cream", "treg", "dno", "sspo")


def f64(x):
  return np.asarray(x, np.float64)


@pytest.fixture(scope="module")
def setup():
  return base.Setup(tokenizer=TOK, mesh=None, model=CONFIG, data=DATA,
                    sampling=base.SamplingOptions(), problems={}, records={}, recipe=None,
                    batch_size=len(ITEMS), eval_batch_size=len(ITEMS), seed=0)


@pytest.fixture(scope="module")
def models():
  """(graphdef, policy params, reference params): two different inits, so log-ratios != 0."""
  graphdef, params = nnx.split(Transformer(CONFIG, rngs=nnx.Rngs(0)))
  _, ref_params = nnx.split(Transformer(CONFIG, rngs=nnx.Rngs(1)))
  return graphdef, params, ref_params


@functools.partial(jax.jit, static_argnames="graphdef")
def full_token_logps(params, tokens, attention_mask, loss_mask, *, graphdef):
  """Masked token log-probs [R, L-1] from the full logits (independent of the chunked kernel)."""
  logits = nnx.merge(graphdef, params)(tokens, attention_mask=attention_mask)
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0] * loss_mask


def options_for(loss_type, **overrides):
  return ml_collections.ConfigDict(dict(DEFAULTS, loss_type=loss_type, **overrides))


def build(loss_type, setup, models, items=ITEMS, **overrides):
  """The step's batch as `preference.preference_batch` builds it, without the mesh."""
  graphdef, _, ref_params = models
  obj, options = OBJECTIVES[loss_type], options_for(loss_type, **overrides)
  tokens, attention_mask, loss_mask = preference.pair_arrays(
      TOK, [it["prompt"] for it in items], [it["chosen"] for it in items],
      [it["rejected"] for it in items], data=DATA)
  arrays = dict(tokens=tokens, attention_mask=attention_mask, loss_mask=loss_mask)
  # tuple(): record_fields is annotated Sequence[str]; preference_batch passes the dict itself.
  extra = preference.record_fields(items, tuple(obj.needs))
  if obj.prepare is not None:
    arrays, extra = obj.prepare(arrays, extra, items, setup=setup, options=options,
                                rng=jax.random.key(3))
  assert arrays["tokens"].shape[0] == obj.rows_per_record * len(items)
  arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
  ref_tok = full_token_logps(ref_params, **arrays, graphdef=graphdef)
  if "ref_token_logps" in obj.needs:   # what the proposed per-token reference pass provides
    extra["ref_token_logps"] = ref_tok
  base.check_fields(obj, extra, loss_type)
  # Per-row fields shard with the rows (a [B] field would not divide the data axes for every B).
  assert all(np.shape(v)[0] == arrays["tokens"].shape[0] for v in extra.values())
  ref_logps = ref_tok.sum(1) if obj.uses_ref else jnp.zeros(ref_tok.shape[:1])
  return PreferenceBatch(ref_logps=ref_logps, extra={k: jnp.asarray(v) for k, v in extra.items()},
                         **arrays), options


def run(loss_type, batch, options, models):
  """(loss, metrics, grads) of the bound objective, jitted once."""
  graphdef, params, _ = models
  loss_fn = functools.partial(base.bind(OBJECTIVES[loss_type], options), chunk_size=8)

  @jax.jit
  def value_and_grad(p, b):
    return jax.value_and_grad(lambda q: loss_fn(nnx.merge(graphdef, q), b), has_aux=True)(p)

  (loss, metrics), grads = value_and_grad(params, batch)
  return loss, metrics, grads


def policy_logps(batch, models):
  graphdef, params, _ = models
  return full_token_logps(params, batch.tokens, batch.attention_mask, batch.loss_mask,
                          graphdef=graphdef)


def check(out, want):
  """Finite loss equal to the direct call, the same metric names and values, finite nonzero
  gradients."""
  loss, metrics, grads = out
  want_loss, want_metrics = want
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-5, atol=1e-6)
  assert set(metrics) == set(want_metrics)
  for k in want_metrics:
    np.testing.assert_allclose(float(metrics[k]), float(want_metrics[k]), rtol=1e-5, atol=1e-6,
                               err_msg=k)
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert float(sum(jnp.sum(jnp.abs(g)) for g in leaves)) > 0.0


def halves(x):
  n = x.shape[0] // 2
  return x[:n], x[n:]


# The table and the configs
def test_table_entries_and_variants_agree():
  from configs import dpo  # noqa: PLC0415 (configs is a plain folder on the test path)
  for name in NEW:
    obj = OBJECTIVES[name]
    assert obj.records == "pairs" and set(obj.hparams) <= set(DEFAULTS)
    c = dpo.get_config(f"variant={name}")
    assert c.algo.loss_type == name
  for variant in dpo.VARIANTS:
    c = dpo.get_config(f"variant={variant}")
    assert c.algo.loss_type in OBJECTIVES
    assert set(OBJECTIVES[c.algo.loss_type].hparams) <= set(c.algo)
  assert not OBJECTIVES["simpo"].uses_ref and not OBJECTIVES["orpo"].uses_ref


# Reference-free
def test_simpo(setup, models):
  batch, options = build("simpo", setup, models)
  logps_R = policy_logps(batch, models).sum(1)
  avg_w, avg_l = halves(logps_R / jnp.maximum(batch.loss_mask.sum(1), 1))
  want = losses.simpo_loss(avg_w, avg_l, beta=0.1, simpo_gamma=0.5)
  check(run("simpo", batch, options, models), want)


def test_orpo_nll_is_the_chosen_token_mean(setup, models):
  batch, options = build("orpo", setup, models)
  tok_RxL = policy_logps(batch, models)
  (lp_w, _), (len_w, _) = halves(tok_RxL.sum(1)), halves(batch.loss_mask.sum(1))
  avg_w, avg_l = halves(tok_RxL.sum(1) / batch.loss_mask.sum(1))
  want = losses.orpo_loss(avg_w, avg_l, -lp_w.sum() / len_w.sum(), beta=0.1)
  out = run("orpo", batch, options, models)
  check(out, want)
  np.testing.assert_allclose(float(out[1]["nll_loss"]), -float(lp_w.sum() / len_w.sum()),
                             rtol=1e-5)


# KTO
def test_kto_kl_rows_put_each_completion_under_another_prompt(setup, models):
  batch, options = build("kto", setup, models)
  tokens, mask = np.asarray(batch.tokens), np.asarray(batch.loss_mask)
  b2 = tokens.shape[0] // 2
  for j in range(b2):   # same completion tokens, a different prompt
    comp = lambda r: tokens[r, 1:][mask[r] > 0].tolist()
    assert comp(j) == comp(b2 + j)
    assert TOK.decode(tokens[j]) != TOK.decode(tokens[b2 + j])
  tok_RxL = policy_logps(batch, models)
  logps_R, ref_R = tok_RxL.sum(1), batch.ref_logps
  want = losses.kto_loss(logps_R[:b2], ref_R[:b2], jnp.arange(b2) < b2 // 2, logps_R[b2:],
                         ref_R[b2:], beta=0.1)
  check(run("kto", batch, options, models), want)


def test_kto_needs_two_pairs(setup, models):
  with pytest.raises(ValueError, match=">= 2 pairs"):
    build("kto", setup, models, items=ITEMS[:1])


# CREAM
def test_cream_consistency_is_kendall_tau_of_the_two_host_rankings(setup, models):
  batch, options = build("cream", setup, models)
  current, previous = preference_data.cream_scores(ITEMS, 5, fmt="short")
  c = losses.cream_consistency(jnp.asarray(current), jnp.asarray(previous))
  np.testing.assert_allclose(np.asarray(batch.extra["consistency"]), np.tile(np.asarray(c), 2))
  assert np.all((np.asarray(c) >= 0) & (np.asarray(c) <= 1))
  logps_w, logps_l = halves(policy_logps(batch, models).sum(1))
  ref_w, ref_l = halves(batch.ref_logps)
  want = losses.cream_loss(logps_w, logps_l, ref_w, ref_l, c, beta=0.1)
  check(run("cream", batch, options, models), want)


def test_cream_keeps_the_records_own_consistency(setup, models):
  items = [dict(it, consistency=0.25) for it in ITEMS]
  batch, _ = build("cream", setup, models, items=items)
  np.testing.assert_array_equal(np.asarray(batch.extra["consistency"]), [0.25] * 4)


# T-REG
def test_treg_rewards_from_the_reference_under_contrastive_prompts(setup, models):
  batch, options = build("treg", setup, models)
  n = batch.tokens.shape[0] // 3
  mask = np.asarray(batch.loss_mask)
  # Response tokens sit in the same columns under x, x_better and x_worse.
  np.testing.assert_array_equal(mask[:n], mask[n:2 * n])
  np.testing.assert_array_equal(mask[:n], mask[2 * n:])
  np.testing.assert_array_equal(np.asarray(batch.tokens)[:n] * np.pad(mask[:n], [(0, 0), (1, 0)]),
                                np.asarray(batch.tokens)[n:2 * n] * np.pad(mask[:n],
                                                                           [(0, 0), (1, 0)]))
  assert TOK.decode(np.asarray(batch.tokens)[n], skip_special_tokens=True).startswith(
      "Answer correctly. ")
  tok = policy_logps(batch, models)[:n]
  ref = batch.extra["ref_token_logps"]
  lm = batch.loss_mask[:n].astype(jnp.float32)
  rewards = losses.treg_token_rewards(ref[n:2 * n], ref[2 * n:], lm)
  assert float(jnp.abs(rewards).sum()) > 0.0
  b = n // 2
  want = losses.treg_loss(tok[:b], tok[b:], ref[:b], ref[b:n], rewards[:b], rewards[b:],
                          lm[:b], lm[b:], beta=0.1, alpha=0.25)
  check(run("treg", batch, options, models), want)


# DNO
def test_dno_hard_labels_without_rewards_and_the_records_own_rewards(setup, models):
  batch, _ = build("dno", setup, models)
  assert not batch.extra   # DNO-Prct: no rewards, hard labels
  items = [dict(it, chosen_reward=0.9, rejected_reward=0.2) for it in ITEMS]
  batch, _ = build("dno", setup, models, items=items, dno_win_rates=True)
  np.testing.assert_allclose(np.asarray(batch.extra["reward"]), [0.9, 0.9, 0.2, 0.2])


def test_dno_win_rate_labels(setup, models):
  batch, options = build("dno", setup, models, dno_win_rates=True)
  rates = losses.win_rate_rewards(jnp.asarray(preference_data.dno_preferences(
      ITEMS, 5, fmt="short")))
  reward_w, reward_l = halves(np.asarray(batch.extra["reward"]))
  np.testing.assert_allclose(reward_w, np.asarray(rates[:, 0]))
  np.testing.assert_allclose(reward_l, np.asarray(rates[:, 1]))
  np.testing.assert_allclose(reward_w, [1.0, 1.0])   # the correct answer beats every other
  assert np.all(reward_l < 1.0)
  logps_w, logps_l = halves(policy_logps(batch, models).sum(1))
  ref_w, ref_l = halves(batch.ref_logps)
  want = losses.dno_loss(logps_w, logps_l, ref_w, ref_l, beta=0.1,
                         chosen_rewards=rates[:, 0], rejected_rewards=rates[:, 1])
  check(run("dno", batch, options, models), want)


# SPO preference degrees
def test_sspo_degraded_rows_and_degree_logits(setup, models):
  batch, options = build("sspo", setup, models)
  n = batch.tokens.shape[0] // 2
  labels = np.asarray(batch.extra["sspo_labels"])[n:]
  texts = [it["chosen"] for it in ITEMS] + [it["rejected"] for it in ITEMS]
  degraded = [TOK.decode(np.asarray(batch.tokens)[n + r, 1:][np.asarray(batch.loss_mask)[n + r]
                                                             > 0], skip_special_tokens=True)
              for r in range(n)]
  for text, short, k in zip(texts, degraded, labels):
    assert len(short) == len(text) - k and 0 <= k <= 2
  # Class logits: the full logits after each degraded row's EOS, at the characters "0", "1", "2".
  graphdef, params, _ = models
  logits = nnx.merge(graphdef, params)(batch.tokens[n:], attention_mask=batch.attention_mask[n:])
  last = np.asarray(batch.attention_mask[n:]).sum(1) + np.argmax(
      np.asarray(batch.attention_mask[n:]), axis=1) - 1
  assert np.all(np.asarray(batch.tokens)[n:][np.arange(n), last] == TOK.eos_token_id)
  class_logits = logits[np.arange(n), last][:, preference_data.class_token_ids(TOK, 2)]
  np.testing.assert_allclose(
      np.asarray(degree_logits(nnx.merge(graphdef, params), batch.tokens[n:],
                               batch.attention_mask[n:], batch.extra["sspo_class_ids"][n:])),
      np.asarray(class_logits), rtol=1e-5, atol=1e-6)
  logps_w, logps_l = halves(policy_logps(batch, models)[:n].sum(1))
  ref_w, ref_l = halves(batch.ref_logps[:n])
  dpo, dpo_metrics = losses.dpo_loss(logps_w, logps_l, ref_w, ref_l, beta=0.1)
  ssl, ssl_metrics = losses.spo_ssl_loss(class_logits, jnp.asarray(labels))
  check(run("sspo", batch, options, models), (dpo + 1.0 * ssl, {**dpo_metrics, **ssl_metrics}))


def test_degrade_answer_removes_answer_digits_only():
  rng = np.random.default_rng(0)
  assert preference_data.degrade_answer("12+7 = \\boxed{19}", 1, rng) in (
      "12+7 = \\boxed{9}", "12+7 = \\boxed{1}")
  with pytest.raises(ValueError, match="cannot remove 2"):
    preference_data.degrade_answer("-4", 2, rng)
