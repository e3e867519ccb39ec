"""Process rewards: the multi-step task, step layout, Clip / Delta, token advantages, the PRM
objective, OPRL's trajectory DPO, and a smoke run of every process-reward config."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common
from rewardjax import advantages, losses, train, update
from rewardjax.algorithms import base, grpo
from rewardjax.algorithms import process_reward_model as prm
from rewardjax.data import steps, tasks, tokenizers
from rewardjax.models import heads, transformer
from rewardjax.recipes import oprl
from rewardjax.rewards import process, verifiers
from rewardjax.types import SequenceBatch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- the task ------------------------------------------------------------------------------
def test_chain_solutions_verify_and_every_step_is_labelled():
  items = tasks.problems(50, difficulty=steps.CHAIN_LEVEL, fmt="steps")
  for it in items:
    text = steps.solution(it["question"])
    assert verifiers.math_verify(text, it["answer"], "steps") == 1.0
    assert steps.step_labels(it["question"], text) == [1, 1]
    assert steps.consistency(text) == 1 and steps.well_formed(text)
  assert items[0]["prompt"] == items[0]["question"] + ":"


def test_step_labels_first_error_and_repeats():
  q = "47+8-15"
  assert steps.step_labels(q, "47+8=55\n47+8=55\n55-15=40\n40") == [1, 1, 1]
  assert steps.step_labels(q, "47+8=56\n56-15=41\n41") == [0, 0]        # an error, then 0
  assert steps.step_labels(q, "47+8=55\n9+9=18\n40") == [1, 0]          # 9 is no operand
  assert steps.step_labels(q, "40") == [0]                              # no separator: 1 step
  assert steps.split_steps("no separator at all") == (["no separator at all"],
                                                      "no separator at all")


def test_sft_and_prm_records_mix_slips_repeats_and_corruptions():
  items = tasks.problems(400, difficulty=steps.CHAIN_LEVEL, fmt="steps")
  demos = tasks.sft_examples(items, fmt="steps", slip_rate=0.5)
  repeats = sum(len(set(steps.split_steps(d["completion"])[0]))
                < len(steps.split_steps(d["completion"])[0]) for d in demos)
  assert 0.05 < repeats / len(demos) < 0.15
  records = steps.prm_records(items)
  labels = [x for r in records for x in r["step_labels"]]
  assert 0.3 < np.mean(labels) < 0.9
  for r in records:
    assert r["step_labels"] == steps.step_labels(r["prompt"][:-1], r["completion"])


# ---- step layout and the mechanisms --------------------------------------------------------
def test_step_layout_on_tokens_matches_the_text_split():
  tok = tokenizers.char_tokenizer()
  texts = ["1+2=3\n3+4=7\n7", "12", "1+1=2\n1+1=2\n2+3=5\n5"]
  ids = tok(texts, add_special_tokens=False)["input_ids"]
  width = max(map(len, ids)) + 2
  tokens = np.zeros((3, width), np.int32)
  mask = np.zeros((3, width), np.int32)
  for i, row in enumerate(ids):
    tokens[i, :len(row)], mask[i, :len(row)] = row, 1
  layout = process.step_layout(tokens, mask, process.separator_id(tok))
  for i, text in enumerate(texts):
    lines, _ = steps.split_steps(text)
    n = int(layout["step_mask"][i].sum())
    assert n == len(lines)
    for k in range(n):  # each step's tokens decode to its line (+ separator)
      step_tokens = tokens[i][layout["token_step_ids"][i] == k]
      decoded = tok.decode(step_tokens.tolist())
      assert decoded.rstrip("\n") == lines[k]
  assert layout["step_end"][1, 0] == 1  # no separator: one step ending at the last token


def test_clip_and_delta_on_the_paper_examples():
  p = jnp.array([[0.9, 0.6, 0.8, 0.0]])
  m = jnp.array([[1.0, 1.0, 1.0, 0.0]])
  delta = process.delta_mechanism(p, m)
  np.testing.assert_allclose(delta[0], [0.3, -0.2, 0.8, 0.0], atol=1e-6)
  np.testing.assert_allclose(np.cumsum(delta[0, :3][::-1])[::-1], [0.9, 0.6, 0.8], atol=1e-6)
  clip = process.clip_mechanism(p, m, eta=0.7)
  np.testing.assert_allclose(clip[0], [0.0, -0.1, 0.0, 0.0], atol=1e-6)
  both = process.refine(p, m, mechanism="clip_delta", eta=0.7)
  np.testing.assert_allclose(both[0], [0.1, -0.1, 0.0, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="clip_delta"):
    process.refine(p, m, mechanism="nope")


@pytest.mark.parametrize("mechanism", process.MECHANISMS)
def test_only_the_raw_sum_pays_for_repeated_steps(mechanism):
  """A good step restated r times: the return grows with r only for "sum"."""
  returns = []
  for repeats in range(4):
    p = jnp.array([[0.9] * (1 + repeats) + [0.8]])
    returns.append(float(process.refine(p, jnp.ones_like(p), mechanism=mechanism,
                                        eta=0.5).sum()))
  if mechanism == "sum":
    assert returns == sorted(returns) and returns[-1] > returns[0] + 2
  else:
    assert max(returns) - min(returns) < 1e-6


# ---- advantages ------------------------------------------------------------------------------
def _process_advantages_numpy(outcome, step_rewards, ids, mask, g, scale):
  b, t = ids.shape
  returns = outcome + step_rewards.sum(1)
  out = np.zeros((b, t))
  for i in range(b):
    group = returns[(i // g) * g:(i // g + 1) * g]
    for j in range(t):
      to_go = step_rewards[i, ids[i, j]:].sum() if ids[i, j] >= 0 else 0.0
      a = outcome[i] + to_go - group.mean()
      out[i, j] = (a / (group.std(ddof=1) + 1e-4) if scale else a) * mask[i, j]
  return out


@pytest.mark.parametrize("scale", [True, False])
def test_process_advantages_match_numpy(scale):
  rng = np.random.default_rng(0)
  outcome = rng.integers(0, 2, 4).astype(np.float32)
  step_rewards = rng.random((4, 5)).astype(np.float32) * (np.arange(5) < 3)
  ids = np.array([[0, 0, 1, 2, -1], [0, 1, 1, -1, -1], [0, 0, 0, 0, 0], [0, 1, 2, 2, -1]])
  mask = (ids > -2).astype(np.float32)
  mask[1, 4] = 0
  got = advantages.process_advantages(jnp.asarray(outcome), jnp.asarray(step_rewards),
                                      jnp.asarray(ids), jnp.asarray(mask), 2,
                                      scale_rewards="group" if scale else "none")
  np.testing.assert_allclose(got, _process_advantages_numpy(outcome, step_rewards, ids, mask,
                                                            2, scale), rtol=1e-5, atol=1e-6)


def test_per_token_advantages_reach_the_loss_unchanged():
  """The GRPO stage's "process" advantages are `process_advantages`, and grpo_loss at ratio 1
  is -mean_b sum_t A_bt m_bt / sum_t m_bt of exactly those."""
  rng = np.random.default_rng(1)
  mask = np.ones((4, 5), np.float32)
  mask[2, 3:] = 0
  steps_in = (jnp.asarray(rng.random((4, 5)), jnp.float32), jnp.ones((4, 5)),
              jnp.asarray([[0, 0, 1, -1, -1]] * 4, jnp.int32))
  rewards = jnp.asarray([1.0, 0.0, 1.0, 1.0])
  adv = grpo.advantages(rewards, jnp.ones(4), None, None, jnp.asarray(mask), steps_in,
                        options=grpo.AdvantageOptions(estimator="process", group_size=2))
  direct = advantages.process_advantages(rewards, steps_in[0], steps_in[2], jnp.asarray(mask),
                                         2)
  np.testing.assert_array_equal(adv, direct)
  logps = jnp.asarray(np.log(rng.uniform(0.2, 0.9, (4, 5))), jnp.float32)
  loss, _ = losses.grpo_loss(logps, logps, None, adv, jnp.asarray(mask), beta=0.0,
                             loss_type="grpo")
  expected = -np.mean((np.asarray(adv) * mask).sum(1) / mask.sum(1))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_oprl_advantages_add_normalised_step_rewards_to_the_outcome():
  ids = jnp.asarray([[0, 1, -1], [0, 0, -1]], jnp.int32)
  r_steps = jnp.asarray([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
  step_mask = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  adv = grpo.advantages(jnp.asarray([1.0, 0.0]), jnp.ones(2), None, None, jnp.ones((2, 3)),
                        (r_steps, step_mask, ids), options=grpo.AdvantageOptions(
                            estimator="oprl", group_size=2, step_advantage_weight=0.5))
  a_e = np.array([0.5, -0.5]) / (np.std([1.0, 0.0], ddof=1) + 1e-4)
  a_s = (np.array([1.0, 3.0, 2.0]) - 2.0) / (1.0 + 1e-4)        # the group's 3 steps
  np.testing.assert_allclose(adv, [[a_e[0] + 0.5 * a_s[0], a_e[0] + 0.5 * a_s[1], a_e[0]],
                                   [a_e[1] + 0.5 * a_s[2], a_e[1] + 0.5 * a_s[2], a_e[1]]],
                             rtol=1e-5)


def test_step_token_rewards_put_each_step_reward_on_its_last_token():
  got = advantages.step_token_rewards(jnp.asarray([[0.5, 2.0, 0.0]]),
                                      jnp.asarray([[0, 0, 1, 1, -1]]))
  np.testing.assert_array_equal(got, [[0.0, 0.5, 0.0, 2.0, 0.0]])


# ---- the PRM objective and OPRL's trajectory DPO --------------------------------------------
CFG = transformer.ModelConfig(vocab_size=128, hidden_size=16, intermediate_size=32,
                              num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8)


def _setup():
  tok = tokenizers.char_tokenizer()
  return base.Setup(tokenizer=tok, mesh=None, model=CFG,
                    data=base.DataOptions(fmt="steps", bucket=8, max_prompt_length=16,
                                          max_completion_length=40),
                    sampling=base.SamplingOptions(), problems={}, records={}, recipe=None,
                    batch_size=4, eval_batch_size=4, seed=0)


def test_prm_rows_score_the_separators_and_the_loss_matches_numpy():
  setup = _setup()
  records = steps.prm_records(tasks.problems(4, difficulty=steps.CHAIN_LEVEL, fmt="steps"))
  arrays, extra = prm.step_arrays(records, setup=setup)
  sep = process.separator_id(setup.tokenizer)
  at = np.take_along_axis(arrays["tokens"], extra["step_positions"], axis=1)
  assert (at[extra["step_mask"] > 0] == sep).all()
  model = heads.ScalarModel(CFG, rngs=nnx.Rngs(0), bias=False)
  batch = SequenceBatch(extra={k: jnp.asarray(v) for k, v in extra.items()},
                        **{k: jnp.asarray(v) for k, v in arrays.items()})
  loss, metrics = prm.prm_objective(model, batch)
  z = np.asarray(prm.step_scores(model, batch.tokens, batch.attention_mask,
                                 batch.extra["step_positions"]), np.float64)
  m, y = extra["step_mask"] > 0, extra["step_labels"]
  bce = -(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 / (1 + np.exp(z))))
  np.testing.assert_allclose(loss, bce[m].mean(), rtol=1e-5)
  assert float(metrics["steps"]) == m.sum() / 4


def test_a_step_count_mismatch_names_the_record():
  setup = _setup()
  bad = dict(prompt="1+2+3:", completion="1+2=3\n3+3=6\n6", step_labels=[1], answer="6")
  with pytest.raises(ValueError, match="1 step labels but its completion has 2 steps"):
    prm.step_arrays([bad], setup=setup)


def test_trajectory_dpo_matches_numpy_and_its_gradient():
  model = transformer.Transformer(CFG, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, 100, (4, 7)), jnp.int32)
  attention = jnp.ones((4, 7), jnp.int32)
  completion_mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
  old = jnp.asarray(rng.normal(-2.0, 0.3, (4, 4)), jnp.float32)
  valid = jnp.asarray([1.0, 0.0, 1.0, 0.0])

  def loss_of(old_logprobs):
    batch = dict(tokens=tokens, attention_mask=attention, completion_mask=completion_mask,
                 old_logprobs=old_logprobs, valid=valid)
    return oprl.trajectory_dpo_objective(model, batch, beta=0.5)[0]

  logps, _ = update.token_logprobs(model, tokens, attention, 3, 4)

  def reference(old_np):
    s = 0.5 * ((np.asarray(logps, np.float64) - old_np) * np.asarray(completion_mask)).sum(1)
    return np.log1p(np.exp(-(s[0] - s[2])))     # the one valid pair: row 0 vs row 2

  np.testing.assert_allclose(loss_of(old), reference(np.asarray(old, np.float64)), rtol=1e-5)
  grad = np.asarray(jax.grad(loss_of)(old))
  eps, numeric = 1e-3, np.zeros((4, 4))
  for i in range(4):
    for j in range(4):
      e = np.zeros((4, 4))
      e[i, j] = eps
      o = np.asarray(old, np.float64)
      numeric[i, j] = (reference(o + e) - reference(o - e)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, atol=1e-4)


def test_oprl_pairs_order_by_outcome_and_skip_equal_groups():
  groups = [dict(rewards=np.array([0.0, 1.0, 1.0])), dict(rewards=np.zeros(3)),
            dict(rewards=np.array([1.0, 0.0, 0.5]))]
  assert oprl.pairs(groups) == [(1, 0, 1.0), (3, 3, 0.0), (6, 7, 1.0)]


# ---- every config trains two smoke steps -------------------------------------------------------
SMOKE = [("prm", ""), ("clip_delta", "variant=clip_delta"), ("clip_delta", "variant=sum,ppo"),
         ("oprl", "variant=oprl"), ("stable_reinforce", "variant=stable_reinforce")]
OVERRIDES = {"warmstart.steps": 0, "train.export_hf": False, "checkpoint.async_save": False,
             "train.eval_every": 100}


@pytest.mark.parametrize("name,arg", SMOKE, ids=[f"{n}-{a}" for n, a in SMOKE])
def test_process_config_trains_two_smoke_steps(name, arg, tmp_path):
  config = common.load_config(os.path.join(REPO, "configs", f"{name}.py") + ":"
                              + ",".join(filter(None, [arg, "smoke"])), OVERRIDES)
  train.run(config, str(tmp_path))
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train_lines = [line for line in lines if "train/loss" in line]
  assert [line["step"] for line in train_lines] == [1, 2]
  assert all(np.isfinite(line["train/loss"]) for line in train_lines)
  if name == "oprl":
    assert "train/prm/valid_pairs" in train_lines[0]
  if name == "clip_delta":
    assert "train/reward/prm/repeated_steps" in train_lines[0]


def test_steps_format_refuses_questions_that_are_not_chains():
  with pytest.raises(ValueError, match=r"chains of \+ and -"):
    steps.solution("12+3*4")
  with pytest.raises(ValueError, match="step-labelled solutions"):
    tasks.preference_pairs(tasks.problems(2, difficulty=steps.CHAIN_LEVEL), fmt="steps")
