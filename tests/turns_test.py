"""Two-attempt rollouts (rewardjax.turns), SCoRe's per-turn rewards and KL weights, the per-row
KL weights of grpo_loss, SD-Zero's self-distillation loss, the self-correction metrics, and a
smoke run of every score / sd_zero variant."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from configs import common
from rewardjax import losses, train, train_state, turns
from rewardjax.data import tokenizers
from rewardjax.evaluation import self_correction

# launch/train.py defines absl flags (variants_test loads it); its `load_config` is this one.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- revise prompts


def test_revise_prompt_shows_the_attempt_and_hides_correctness():
  item = {"prompt": "47-8=", "question": "47-8", "answer": "39"}
  right, wrong = (turns.revise_prompt("reflection", item, t, "short") for t in ("39", "41"))
  assert wrong == "check&fix\nAns:41\n47-8=" and right == "check&fix\nAns:39\n47-8="
  # The same instruction whether or not the attempt is right; only SD-Zero's feedback differs.
  assert right.split("\n")[0] == wrong.split("\n")[0]
  assert turns.feedback_prompt("reflection", item, "41", 0.0, "short").startswith("wrong!")
  assert turns.feedback_prompt("reflection", item, "39", 1.0, "short") == right
  appended = turns.revise_prompt("append", item, "41", "short")
  assert appended.startswith("47-8=41\n") and "might be an error" in appended
  with pytest.raises(ValueError, match="reflection"):
    turns.revise_prompt("nope", item, "41", "short")


# ---------------------------------------------------------------- SCoRe rewards and KL weights


def test_score_turn_rewards_both_stages():
  r1 = jnp.array([0.0, 0.0, 1.0, 1.0])
  r2 = jnp.array([0.0, 1.0, 0.0, 1.0])
  one, two = turns.score_turn_rewards(r1, r2, 10.0, "I")
  np.testing.assert_array_equal(one, [0, 0, 0, 0])
  np.testing.assert_array_equal(two, [0, 1, 0, 1])
  one, two = turns.score_turn_rewards(r1, r2, 10.0, "II")
  np.testing.assert_array_equal(one, [0, 0, 1, 1])
  # i->c earns 1 + alpha, c->i costs -alpha, unchanged correctness gets no bonus.
  np.testing.assert_array_equal(two, [0, 11, -10, 1])
  np.testing.assert_array_equal(turns.score_turn_rewards(r1, r2, 0.0, "II")[1], r2)
  with pytest.raises(ValueError, match="stage"):
    turns.score_turn_rewards(r1, r2, 1.0, "III")


def test_score_kl_weights_and_schedule():
  assert turns.score_kl_weights("I", 0.01, 0.1) == pytest.approx((11.0, 1.0))
  assert turns.score_kl_weights("II", 0.01, 0.1) == (1.0, 1.0)
  with pytest.raises(ValueError, match="beta1 > 0"):
    turns.score_kl_weights("I", 0.0, 0.1)
  schedule = turns.TurnSchedule(stage_one_steps=3, alpha=10.0, beta=0.01, first_turn_kl=0.1)
  assert [schedule.stage(s) for s in (0, 2, 3, 9)] == ["I", "I", "II", "II"]
  r1, r2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
  np.testing.assert_array_equal(np.stack(schedule.rewards(r1, r2, 0)), [[0, 0], [0, 1]])
  np.testing.assert_array_equal(np.stack(schedule.rewards(r1, r2, 3)), [[1, 0], [-10, 11]])


def test_transitions_and_turn_metrics():
  c1, c2 = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 1, 1, 1])
  out = self_correction.transitions(c1, c2)
  assert out["accuracy_t1"] == pytest.approx(0.6) and out["accuracy_t2"] == pytest.approx(0.8)
  assert out["delta_i_to_c"] == pytest.approx(0.4) and out["delta_c_to_i"] == pytest.approx(0.2)
  assert out["delta_t1_t2"] == pytest.approx(out["delta_i_to_c"] - out["delta_c_to_i"])
  assert turns.turn_metrics(c1, c2)["turn/delta_i_to_c"] == pytest.approx(0.4)


# ---------------------------------------------------------------- per-row KL weights in the loss


def _np_grpo_kl(lp, ref, adv, m, beta, w):
  """seq-mean-token-mean of -A + beta w_b k3 at ratio 1 (old = logp), float64."""
  lp, ref, m = (np.asarray(x, np.float64) for x in (lp, ref, m))
  d = ref - lp
  per_token = -np.asarray(adv, np.float64)[:, None] + beta * np.asarray(w)[:, None] * (
      np.exp(d) - d - 1.0)
  rows = [(per_token[b] * m[b]).sum() / m[b].sum() for b in range(len(m)) if m[b].sum() > 0]
  return np.mean(rows)


def test_kl_weights_reach_the_loss():
  rng = np.random.default_rng(0)
  lp = jnp.asarray(-rng.uniform(0.1, 2.0, (4, 5)), jnp.float32)
  ref = jnp.asarray(-rng.uniform(0.1, 2.0, (4, 5)), jnp.float32)
  adv = jnp.asarray(rng.normal(size=4), jnp.float32)
  m = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
  w = jnp.array([11.0, 11.0, 1.0, 1.0])
  loss, aux = losses.grpo_loss(lp, lp, ref, adv, m, beta=0.01, kl_weights=w)
  np.testing.assert_allclose(loss, _np_grpo_kl(lp, ref, adv, m, 0.01, w), rtol=1e-5)
  # All-ones weights are bitwise the unweighted loss; the kl metric is never weighted.
  plain, plain_aux = losses.grpo_loss(lp, lp, ref, adv, m, beta=0.01)
  ones, _ = losses.grpo_loss(lp, lp, ref, adv, m, beta=0.01, kl_weights=jnp.ones(4))
  assert float(ones) == float(plain) and float(aux["kl"]) == float(plain_aux["kl"])
  # The weight scales the KL gradient of its row only.
  grad = jax.grad(lambda x, w: losses.grpo_loss(x, lp, ref, adv, m, beta=0.01,
                                                 kl_weights=w)[0])
  g_w, g_1 = grad(lp, w), grad(lp, jnp.ones(4))
  pg = jax.grad(lambda x: losses.grpo_loss(x, lp, ref, adv, m, beta=0.0)[0])(lp)
  np.testing.assert_allclose(g_w - pg, (g_1 - pg) * w[:, None], rtol=1e-4, atol=1e-7)
  # A wrong shape fails (the jaxtyping check in tests, the ValueError without it).
  with pytest.raises(Exception, match="kl_weights"):
    losses.grpo_loss(lp, lp, ref, adv, m, kl_weights=jnp.ones(3))


# ---------------------------------------------------------------- SD-Zero loss


def _np_divergence(s_logits, t_logits, mask, divergence):
  def log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(
        -1, keepdims=True)
  log_p, log_q = log_softmax(s_logits), log_softmax(t_logits)
  if divergence == "forward_kl":
    d = (np.exp(log_q) * (log_q - log_p)).sum(-1)
  else:
    d = (np.exp(log_p) * (log_p - log_q)).sum(-1)
  m = np.asarray(mask, np.float64)
  return (d * m).sum() / m.sum()


@pytest.mark.parametrize("divergence", losses.DIVERGENCES)
def test_self_distillation_loss_matches_numpy_and_gradients(divergence):
  rng = np.random.default_rng(1)
  s_logits = jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32)
  t_logits = jnp.asarray(2.0 * rng.normal(size=(2, 3, 5)), jnp.float32)
  mask = jnp.array([[1, 1, 0], [1, 0, 0]])
  t_logps = jax.nn.log_softmax(t_logits)

  def loss_of(logits):
    return losses.self_distillation_loss(jax.nn.log_softmax(logits), t_logps, mask,
                                         divergence=divergence)[0]

  np.testing.assert_allclose(loss_of(s_logits), _np_divergence(s_logits, t_logits, mask,
                                                               divergence), rtol=1e-5)
  check_grads(loss_of, (s_logits,), order=1, modes=("rev",), atol=1e-2, rtol=1e-2)
  # Masked positions get no gradient, even when they hold NaN; the teacher gets none at all.
  grads = jax.grad(loss_of)(s_logits)
  assert float(jnp.abs(grads[0, 2]).sum()) == 0.0 and float(jnp.abs(grads[1, 1:]).sum()) == 0.0
  poisoned = jnp.asarray(t_logps).at[1, 2].set(jnp.nan)
  value, metrics = losses.self_distillation_loss(jax.nn.log_softmax(s_logits), poisoned, mask,
                                                 divergence=divergence)
  assert np.isfinite(float(value)) and float(metrics["teacher_agreement"]) <= 1.0
  # The student equal to the teacher is a minimum with value 0.
  same, _ = losses.self_distillation_loss(t_logps, t_logps, mask, divergence=divergence)
  assert abs(float(same)) < 1e-6


# ---------------------------------------------------------------- the two-attempt batch


@pytest.fixture(scope="module")
def two_attempt_batch():
  """A Stage I batch of configs/score.py at smoke size (4 prompts x 2 rollouts x 2 turns)."""
  config = common.load_config(os.path.join(REPO, "configs", "score.py") + ":smoke",
                                    {"algo.stage_one_steps": 5})
  mesh = train.sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh):
    job = train.make_job(config, mesh)
    state, _ = train_state.create_state(job.program.model_fn, train.make_optimizer(config.optim, 2),
                                        mesh, jax.random.key(0), with_ref=job.program.with_ref)
    batch, metrics = job.program.make_batch(state, 0, jax.random.key(1))
  return config, job, jax.device_get(batch), metrics


def test_two_attempt_rows_masks_and_kl_weights(two_attempt_batch):
  config, job, batch, metrics = two_attempt_batch
  p, g = config.train.batch_size, config.rollout.num_generations
  tok = job.tokenizer
  rows, width = batch.tokens.shape
  t = batch.completion_mask.shape[1]
  assert rows == 2 * p * g and job.program.rows_per_update == rows
  turn = np.tile(np.repeat([1, 2], g), p)  # prompt p: G first attempts, then G second ones
  np.testing.assert_array_equal(batch.kl_weights, np.where(turn == 1, 11.0, 1.0))
  # The loss reads only the last T columns, through completion_mask: the prompt columns of
  # every row (x2 holds attempt 1) are never trained.
  np.testing.assert_array_equal(batch.attention_mask[:, width - t:], batch.completion_mask)
  first = tokenizers.decode_completions(tok, batch.tokens[turn == 1, width - t:])
  second_prompts = [tok.decode(row[:width - t][m[:width - t] > 0], skip_special_tokens=True)
                    for row, m in zip(batch.tokens[turn == 2], batch.attention_mask[turn == 2])]
  for text, prompt in zip(first, second_prompts):
    assert prompt.startswith("check&fix\nAns:") and prompt.endswith("=")
    assert turns._answer(text, "short") in prompt  # attempt 1 is prompt of the second row
  assert {"turn1/reward", "turn2/reward", "turn/delta_i_to_c", "score_stage"} <= set(metrics)
  assert metrics["score_stage"] == 1.0


# ---------------------------------------------------------------- smoke runs

# (config, variant, overrides): every variant, and SD-Zero with a teacher refreshed every step
# of 2 (the teacher copy is the state's `ref_params`, synchronised by `update.RefSync`).
CASES = [("score", "score", {}), ("score", "naive", {}), ("sd_zero", "sd_zero", {}),
         ("sd_zero", "forward_kl", {}), ("sd_zero", "sd_zero", {"algo.teacher_sync_steps": 2})]


@pytest.mark.parametrize("name,variant,overrides", CASES,
                         ids=[f"{n}-{v}{'-sync2' if o else ''}" for n, v, o in CASES])
def test_variant_smoke_run_reports_both_attempts(name, variant, overrides, tmp_path):
  config = common.load_config(
      os.path.join(REPO, "configs", f"{name}.py") + f":variant={variant},smoke",
      {"warmstart.steps": 0, "train.export_hf": False, "checkpoint.async_save": False,
       **overrides})
  train.run(config, str(tmp_path))
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  losses_ = [line["train/loss"] for line in lines if "train/loss" in line]
  assert len(losses_) == 2 and np.all(np.isfinite(losses_))
  final = [line for line in lines if "eval/accuracy_t2" in line][-1]
  assert final["eval/delta_t1_t2"] == pytest.approx(
      final["eval/delta_i_to_c"] - final["eval/delta_c_to_i"])
  train_keys = set().union(*[line for line in lines if "train/loss" in line])
  want = {"train/turn2/reward"} if name == "score" else {"train/teacher_agreement"}
  assert want <= train_keys
  syncs = [line["train/ref_sync/alpha"] for line in lines if "train/ref_sync/alpha" in line]
  assert syncs == ([0.0, 1.0] if overrides else [])  # 2 updates: the copy after update 2
