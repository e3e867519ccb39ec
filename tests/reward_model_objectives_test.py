"""Tests for rewardjax.algorithms.reward_model_objectives and the built-in record kinds it trains
on (rewardjax.data.tasks: rated, noisy, win-tie pairs, POLAR triplets).

Every objective runs on a batch from its records kind (four built-in records, char tokenizer,
a one-layer D=16 ScalarModel): its loss equals a direct call of the `rewardjax.losses` function
on scores computed independently of the objective (e.g. YOJO's packed scores by re-scoring each
prefix), its metrics have the expected names, and its gradient is finite and reaches both the
head and the backbone. Each objective is jitted once (loss, gradient and reference together).
"""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import reward_model as reward_model_config
from rewardjax import losses, sharding
from rewardjax.algorithms import base, reward_model
from rewardjax.algorithms import reward_model_objectives as rmo
from rewardjax.algorithms import reward_model_records as rmr
from rewardjax.data import reward_data, tasks, tokenizers
from rewardjax.models import heads, transformer
from rewardjax.types import SequenceBatch

B = 4            # records per batch: the smoke configs' batch_size
DEVICES = 8      # tests/conftest.py emulates 8 CPU devices; rows are split over them
RNG = jax.random.key(1)  # the rng handed to `prepare` (the step key of the sampling objectives)

BT_METRICS = {"accuracy", "margin", "chosen_rewards", "rejected_rewards", "mean_reward",
              "min_reward", "max_reward", "center_penalty"}
METRICS = {
    "bt": BT_METRICS,
    "margin": BT_METRICS,
    "label_flip": {"accuracy", "margin", "noisy_fraction", "adaptive_margin"},
    "label_smoothing": {"accuracy", "margin", "noisy_fraction", "adaptive_margin"},
    "adaptive_margin": {"accuracy", "margin", "noisy_fraction", "adaptive_margin"},
    "contrastive": BT_METRICS | {"bt_loss", "simcse_loss", "simcse_accuracy",
                                 "simcse_positive_cosine", "simcse_negative_cosine"},
    "win_tie": {"accuracy", "margin", "tie_gap", "tie_fraction"},
    "k_choose_2": {"accuracy", "margin", "num_pairs"},
    "plackett_luce": {"accuracy", "margin", "num_pairs"},
    "polar": BT_METRICS - {"center_penalty"},
    "yojo": {"accuracy", "chosen_rewards", "rejected_rewards", "pair_accuracy"},
    "goal_conditioned": BT_METRICS | {"bt_loss", "goal_loss", "goal_positive_cosine",
                                      "goal_negative_cosine"},
    "pointwise": {"accuracy", "p_yes", "positive_fraction", "pair_accuracy"},
}


@pytest.fixture(scope="module")
def setup():
  return types.SimpleNamespace(tokenizer=tokenizers.char_tokenizer(), data=base.DataOptions())


@pytest.fixture(scope="module")
def options():
  # The defaults, with centering on so that the BT-based objectives check its term too.
  return ml_collections.ConfigDict(dict(rmo.DEFAULTS, center_rewards_coefficient=0.01))


@pytest.fixture(scope="module")
def problems():
  return tasks.problems(B, difficulty=1, seed=0, unique=True)


@pytest.fixture(scope="module")
def model():
  config = transformer.ModelConfig(vocab_size=128, hidden_size=16, intermediate_size=32,
                                   num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8)
  return heads.ScalarModel(config, rngs=nnx.Rngs(0))


def host_batch(name, problems, setup, options):
  """(items, arrays, extra) of objective `name` on the built-in records, after `prepare`."""
  obj = rmo.OBJECTIVES[name]
  records = rmr.RECORDS[obj.records]
  items = records.builtin(problems, fmt="short", seed=0, options=options)[:B]
  arrays, extra = records.arrays(items, setup=setup)
  if obj.prepare is not None:
    arrays, extra = obj.prepare(arrays, extra, items, setup=setup, options=options, rng=RNG)
  return items, arrays, extra


def pairs_of(scores):
  return scores[:B], scores[B:]


def field(items, name):
  return jnp.array([float(it[name]) for it in items], jnp.float32)


# ------------------------------------------------ reference values, from independent scores
# Each takes (model, batch, items, options) and calls the losses function directly.


def scores_of(model, batch):
  return model(batch.tokens, attention_mask=batch.attention_mask)


def ref_bt(model, batch, items, options):
  return losses.bradley_terry_loss(*pairs_of(scores_of(model, batch)),
                                   center_rewards_coefficient=options.center_rewards_coefficient)


def ref_margin(model, batch, items, options):
  return losses.bradley_terry_loss(*pairs_of(scores_of(model, batch)),
                                   margin=field(items, "margin"),
                                   center_rewards_coefficient=options.center_rewards_coefficient)


def ref_denoised(recipe):
  def ref(model, batch, items, options):
    chosen, rejected = pairs_of(scores_of(model, batch))
    return losses.denoised_bradley_terry_loss(
        chosen, rejected, field(items, "preference_strength"), recipe=recipe,
        label_smoothing=options.label_smoothing, noise_threshold=options.noise_threshold)
  return ref


def features_of(model, batch):
  hidden, _ = model.backbone.hidden_states(batch.tokens, attention_mask=batch.attention_mask)
  return hidden, heads.last_token_pool(hidden, batch.attention_mask)


def ref_contrastive(model, batch, items, options):
  bt, _ = ref_bt(model, batch, items, options)
  _, features = features_of(model, batch)
  views = rmo.feature_views(features, RNG, options.contrastive_dropout)
  simcse, _ = losses.simcse_loss(views[0], views[1], temperature=options.contrastive_temperature)
  return bt + options.contrastive_coefficient * simcse, {}


def ref_win_tie(model, batch, items, options):
  chosen, rejected = pairs_of(scores_of(model, batch))
  return losses.win_tie_bradley_terry_loss(chosen, rejected, field(items, "is_tie"))


def list_ranks(items):
  # Best first by distance to the answer, computed from the response texts themselves.
  return jnp.array([np.argsort(np.argsort([abs(int(r) - int(it["answer"]))
                                           for r in it["responses"]])) for it in items],
                   jnp.float32)


def ref_listwise(loss_fn):
  def ref(model, batch, items, options):
    scores = scores_of(model, batch)
    return loss_fn(scores.reshape(B, options.num_responses), list_ranks(items))
  return ref


def ref_polar(model, batch, items, options):
  return losses.polar_loss(*pairs_of(scores_of(model, batch)))


def ref_yojo(model, batch, items, options):
  # Causal attention: the hidden state at position p depends on tokens <= p only, so the packed
  # score of response k equals the plain last-token score of the row cut after its end position.
  ends = batch.extra["end_positions"]                                   # [R, K]
  rows, k = ends.shape
  keep = jnp.arange(batch.tokens.shape[1])[None, None, :] <= ends[:, :, None]
  masks = (batch.attention_mask[:, None, :] * keep).reshape(rows * k, -1)
  tokens = jnp.repeat(batch.tokens, k, axis=0)
  scores = model(tokens, attention_mask=masks).reshape(rows, k)
  best = jnp.array([int(np.argmin([abs(int(r) - int(it["answer"])) for r in order]))
                    for it in items for order in (it["responses"], it["responses"][::-1])])
  return losses.yojo_loss(scores, best)


def ref_goal(model, batch, items, options):
  bt, _ = ref_bt(model, batch, items, options)
  hidden, _ = features_of(model, batch)
  prompt_width = tokenizers.encode_prompts(
      tokenizers.char_tokenizer(), [it["prompt"] for it in items], bucket=16,
      max_length=base.DataOptions().max_prompt_length)[0].shape[1]
  response = batch.attention_mask.at[:, :prompt_width].set(0)
  positions = losses.goal_contrastive_positions(
      RNG, response[:B], response[B:], num_positive=options.goal_samples,
      num_negative=options.goal_samples)
  goal, _ = losses.goal_contrastive_loss(hidden[:B], hidden[B:], *positions,
                                         beta=options.goal_coefficient)
  return bt + goal, {}


def ref_pointwise(model, batch, items, options):
  scores = scores_of(model, batch)
  return losses.pointwise_binary_loss(scores, jnp.array([1.0] * B + [0.0] * B))


REFERENCES = {
    "bt": ref_bt, "margin": ref_margin, "label_flip": ref_denoised("flip"),
    "label_smoothing": ref_denoised("soft_label_margin"), "adaptive_margin": ref_denoised("margin"),
    "contrastive": ref_contrastive, "win_tie": ref_win_tie,
    "k_choose_2": ref_listwise(losses.k_choose_2_loss),
    "plackett_luce": ref_listwise(losses.plackett_luce_loss), "polar": ref_polar,
    "yojo": ref_yojo, "goal_conditioned": ref_goal, "pointwise": ref_pointwise,
}


@pytest.fixture(scope="module")
def results(model, problems, setup, options):
  """name -> (extra, loss, metrics, grads, reference loss, reference metrics), computed once."""
  graphdef, params = nnx.split(model, nnx.Param)
  cache = {}

  def get(name):
    if name not in cache:
      items, arrays, extra = host_batch(name, problems, setup, options)
      base.check_fields(rmo.OBJECTIVES[name], extra, name)
      batch = SequenceBatch(extra=jax.tree.map(jnp.asarray, extra),
                            **jax.tree.map(jnp.asarray, arrays))
      loss_fn = base.bind(rmo.OBJECTIVES[name], options)

      @jax.jit
      def run(params, batch):
        (loss, metrics), grads = jax.value_and_grad(
            lambda p: loss_fn(nnx.merge(graphdef, p), batch), has_aux=True)(params)
        reference = REFERENCES[name](nnx.merge(graphdef, params), batch, items, options)
        return loss, metrics, grads, reference

      loss, metrics, grads, (ref_loss, ref_metrics) = run(params, batch)
      cache[name] = (extra, loss, metrics, grads, ref_loss, ref_metrics)
    return cache[name]

  return get


# ------------------------------------------------------------------------- objectives


# The PRM ("prm") reads step records of the multi-step task, not this file's fixtures; its
# objective is tested against numpy in tests/process_rewards_test.py and has its own config.
# VPL ("vpl") trains its own model (a set encoder and a latent-conditioned decoder), not this
# file's ScalarModel: tests/vpl_test.py checks it the same way.
PAIR_OBJECTIVES = sorted(set(rmo.OBJECTIVES) - {"prm", "vpl"})


def test_table_covers_the_config_variants():
  # Variants beyond one per objective: a records kind or option diff of an objective.
  extra = {"center", "noisy_bt", "tree", "chain", "endogenous", "user_bt"}
  assert set(reward_model_config.VARIANTS) == set(PAIR_OBJECTIVES) | extra | {"vpl"}
  for name in extra:
    diff = reward_model_config.VARIANTS[name]
    assert diff["loss_type"] in rmo.OBJECTIVES and diff.get("records", "bt") != "", name
    assert diff.get("records", "pairs") in rmr.RECORDS, name
  assert set(REFERENCES) == set(PAIR_OBJECTIVES) == set(METRICS)
  for name, obj in rmo.OBJECTIVES.items():
    assert obj.records in rmr.RECORDS, name
    assert set(obj.hparams) <= set(rmo.DEFAULTS), name
    assert not obj.uses_ref, name


@pytest.mark.parametrize("name", PAIR_OBJECTIVES)
def test_objective_matches_its_loss_on_independent_scores(name, results):
  _, loss, metrics, _, ref_loss, ref_metrics = results(name)
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5, atol=1e-6)
  for key, value in ref_metrics.items():  # the metrics the losses function itself reports
    np.testing.assert_allclose(float(metrics[key]), float(value), rtol=1e-5, atol=1e-6,
                               err_msg=key)


@pytest.mark.parametrize("name", PAIR_OBJECTIVES)
def test_objective_metrics_include_an_accuracy(name, results):
  _, _, metrics, _, _, _ = results(name)
  assert set(metrics) == METRICS[name]
  assert "loss" not in metrics  # the update step adds it
  accuracy = metrics.get("pair_accuracy", metrics["accuracy"])
  assert 0.0 <= float(accuracy) <= 1.0
  assert all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.parametrize("name", PAIR_OBJECTIVES)
def test_objective_gradient_is_finite_and_reaches_head_and_backbone(name, results):
  _, _, _, grads, _, _ = results(name)
  for part in ("head", "backbone"):
    leaves = jax.tree.leaves(grads[part])
    assert all(bool(jnp.isfinite(g).all()) for g in leaves), part
    assert float(sum(jnp.sum(jnp.square(g)) for g in leaves)) > 0.0, part


@pytest.mark.parametrize("name", PAIR_OBJECTIVES)
def test_every_batch_field_has_one_entry_per_row(name, problems, setup, options):
  # The mesh splits every leaf over its leading axis: rows must divide over the devices.
  obj = rmo.OBJECTIVES[name]
  _, arrays, extra = host_batch(name, problems, setup, options)
  rows = rmr.RECORDS[obj.records].rows(B, options)
  assert rows % DEVICES == 0
  assert {k: np.shape(v)[0] for k, v in {**arrays, **extra}.items()} == dict.fromkeys(
      {**arrays, **extra}, rows)
  assert set(obj.needs) <= set(extra)
  placed = sharding.shard_batch((arrays, extra), sharding.make_mesh())
  assert all(len(x.sharding.device_set) == DEVICES for x in jax.tree.leaves(placed))


def test_center_variant_is_the_default_and_every_variant_fits_the_smoke_mesh():
  assert reward_model_config.get_config().algo.center_rewards_coefficient == 0.01
  assert reward_model_config.get_config().algo.loss_type == "bt"
  for variant in reward_model_config.VARIANTS:
    c = reward_model_config.get_config(f"variant={variant},smoke")
    obj = base.objective(rmo.OBJECTIVES, c.algo.loss_type, "reward_model")
    assert rmr.RECORDS[obj.records].rows(c.train.batch_size, c.algo) % DEVICES == 0, variant


@pytest.mark.parametrize("name", PAIR_OBJECTIVES)
def test_program_builds_a_batch_on_the_mesh(name, problems, setup, options):
  # reward_model.build end to end up to the batch (no compilation): records -> rows -> mesh.
  run_setup = base.Setup(
      tokenizer=setup.tokenizer, mesh=sharding.make_mesh(), model=None, data=setup.data,
      sampling=base.SamplingOptions(), recipe=None, records={}, batch_size=B, eval_batch_size=8,
      seed=0, problems={"train": problems, "heldout": tasks.problems(2, split="heldout")})
  program = reward_model.build(ml_collections.ConfigDict(dict(options.to_dict(), loss_type=name)),
                               run_setup)
  batch, _ = program.make_batch(None, 0, jax.random.key(0))
  assert batch.tokens.shape[0] == program.rows_per_update
  assert set(rmo.OBJECTIVES[name].needs) <= set(batch.extra)


def _program(problems, setup, **algo):
  run_setup = base.Setup(
      tokenizer=setup.tokenizer, mesh=sharding.make_mesh(), model=None, data=setup.data,
      sampling=base.SamplingOptions(), recipe=None, records={}, batch_size=B, eval_batch_size=8,
      seed=0, problems={"train": problems, "heldout": tasks.problems(2, split="heldout")})
  return reward_model.build(ml_collections.ConfigDict(dict(rmo.DEFAULTS, **algo)), run_setup)


def test_records_override_pretrain_stage_and_small_data(problems, setup):
  def texts(program, step):
    batch, _ = program.make_batch(None, step, jax.random.key(0))
    return setup.tokenizer.batch_decode(np.asarray(batch.tokens), skip_special_tokens=True)

  # bt on the tree records: the rows are tree leaves of the training questions.
  tree = _program(problems, setup, loss_type="bt", records="tree_pairs")
  leaves = {p["chosen"] for p in reward_data.tree_pairs(problems)}
  assert any(t.split("=")[-1] in leaves for t in texts(tree, 0))
  # POLAR: steps [0, 2) from the unlabelled policy triplets, then the ranked fine-tuning triples.
  polar = _program(problems, setup, loss_type="polar", pretrain_steps=2)
  fine = {rmr.polar_prompt(t["prompt"], t["reference"]) + t["positive"]
          for t in tasks.polar_triplets(problems)}
  assert not set(texts(polar, 0)[:B]) <= fine and set(texts(polar, 2)[:B]) <= fine
  with pytest.raises(ValueError, match="no pre-training data; kinds that do: \\['polar'\\]"):
    _program(problems, setup, loss_type="bt", pretrain_steps=2)
  with pytest.raises(ValueError, match="records='nope' is not a records kind"):
    _program(problems, setup, loss_type="bt", records="nope")
  # train_questions: only the first N questions are labelled.
  small = _program(problems, setup, loss_type="bt", train_questions=2)
  prompts = {t.split("=")[0] + "=" for step in range(3) for t in texts(small, step)}
  assert prompts <= {problems[0]["prompt"], problems[1]["prompt"]}


@pytest.mark.parametrize("kind", sorted(rmr.RECORDS))
def test_heldout_rows_are_chosen_then_rejected(kind, setup):
  pairs = tasks.preference_pairs(tasks.problems(3, split="heldout"))
  arrays, _ = rmr.RECORDS[kind].heldout_arrays(pairs, setup=setup)
  texts = setup.tokenizer.batch_decode(arrays["tokens"], skip_special_tokens=True)
  assert len(texts) == 2 * len(pairs)
  for p, chosen, rejected in zip(pairs, texts[:3], texts[3:]):
    assert chosen.endswith(p["prompt"] + p["chosen"])  # POLAR puts the reference before
    assert rejected.endswith(p["prompt"] + p["rejected"])


def test_feature_views_are_inverted_dropout():
  features = jnp.ones((64, 16))
  views = rmo.feature_views(features, jax.random.key(0), 0.25)
  assert views.shape == (2, 64, 16)
  assert set(np.unique(np.asarray(views)).tolist()) == {0.0, float(np.float32(1.0 / 0.75))}
  assert abs(float(jnp.mean(views == 0.0)) - 0.25) < 0.03
  assert not bool(jnp.array_equal(views[0], views[1]))
  np.testing.assert_array_equal(rmo.feature_views(features, jax.random.key(0), 0.0)[1], features)


def test_add_step_key_stores_the_step_key_on_every_row():
  arrays = {"tokens": np.zeros((8, 4), np.int32)}
  _, extra = rmo.add_step_key(arrays, {}, [], setup=None, options=None, rng=RNG)
  assert extra["key"].shape == (8, 2) and extra["key"].dtype == np.uint32
  assert (extra["key"] == np.asarray(jax.random.key_data(RNG))).all()
  key = jax.random.wrap_key_data(jnp.asarray(extra["key"][3]))
  assert bool(jnp.array_equal(jax.random.uniform(key, (3,)), jax.random.uniform(RNG, (3,))))


# ---------------------------------------------------------------- records and tasks


def value(text):
  return int(text)  # the "short" format's targets are the bare answers


def test_rated_pairs_are_the_plain_pairs_with_llama2_margins():
  items = tasks.problems(50, difficulty=1, seed=3)
  plain = tasks.preference_pairs(items, seed=3, pairs_per_question=3)
  rated = tasks.rated_preference_pairs(items, seed=3, pairs_per_question=3)
  assert [{k: p[k] for k in plain[0]} for p in rated] == plain
  for p in rated:
    distance = abs(value(p["rejected"]) - int(p["answer"]))
    assert p["margin"] == (1 / 3 if distance <= 2 else 2 / 3 if distance <= 10 else 1.0)
  assert {round(p["margin"], 4) for p in rated} == {0.3333, 0.6667, 1.0}


def test_noisy_pairs_swap_labels_and_scorers_see_it():
  items = tasks.problems(300, difficulty=1, seed=0)
  exact = tasks.noisy_preference_pairs(items, label_noise=0.2, scorer_error=0.0, num_scorers=3)
  assert abs(np.mean([p["mislabelled"] for p in exact]) - 0.2) < 0.06
  for p in exact:
    correct, wrong = (p["rejected"], p["chosen"]) if p["mislabelled"] else (p["chosen"],
                                                                            p["rejected"])
    assert value(correct) == int(p["answer"]) != value(wrong)
    # Exact scorers: d = ±log10(1 + |wrong - answer|), negative iff mislabelled.
    d = np.log10(1 + abs(value(wrong) - int(p["answer"])))
    np.testing.assert_allclose(p["scorer_margins"], [-d if p["mislabelled"] else d] * 3)
  noisy = rmr.RECORDS["noisy_pairs"].builtin(
      items, fmt="short", seed=0, options=dict(rmo.DEFAULTS, pairs_per_question=1))
  agree = [(p["preference_strength"] < 0) == p["mislabelled"] for p in noisy]
  assert np.mean(agree) > 0.9  # the ensemble finds most swapped labels
  for p in noisy[:20]:  # ensemble statistics: mean and population std (ddof 0)
    np.testing.assert_allclose(p["preference_strength"], np.mean(p["scorer_margins"]), rtol=1e-5)
    np.testing.assert_allclose(p["preference_std"], np.std(p["scorer_margins"]), rtol=1e-4,
                               atol=1e-6)


def test_win_tie_pairs_tie_only_correct_answers():
  items = tasks.problems(200, difficulty=1, seed=0, unique=True)
  answers = {it["prompt"]: int(it["answer"]) for it in items}
  pairs = reward_data.tie_pairs(items, tie_fraction=0.5)
  assert abs(np.mean([p["is_tie"] for p in pairs]) - 0.5) < 0.1
  cross = []
  for p in pairs:
    assert float(p["chosen"]) == answers[p["prompt"]]  # the winner always passes
    rejected_ok = float(p["rejected"]) == answers[p["rejected_prompt"]]
    assert rejected_ok == bool(p["is_tie"])  # a tie is Pass-Pass, a win is Pass-Fail
    if p["is_tie"]:
      cross.append(p["rejected_prompt"] != p["prompt"])
      if not cross[-1]:  # a within-prompt tie: two different forms of the same answer
        assert p["chosen"] != p["rejected"]
  assert 0.3 < np.mean(cross) < 0.7  # half the paper's cross-prompt ties, half forms
  assert not any(p["rejected_prompt"] != p["prompt"]
                 for p in reward_data.tie_pairs(items[:1], tie_fraction=1.0))
  wrong = reward_data.tie_pairs(items, tie_fraction=1.0, wrong_tie_fraction=1.0)
  for p in wrong:  # equally wrong: v + d against v - d
    v = answers[p["prompt"]]
    assert float(p["chosen"]) - v == v - float(p["rejected"]) != 0


def test_polar_triplets_rank_candidates_against_the_correct_reference():
  items = tasks.problems(20, difficulty=1, seed=0)
  for t in tasks.polar_triplets(items):  # fine-tuning form: second-ranked beats third-ranked
    answer = int(t["answer"])
    assert value(t["reference"]) == answer != value(t["positive"])
    assert abs(value(t["positive"]) - answer) < abs(value(t["negative"]) - answer)


def test_policy_triplets_share_the_reference_policy():
  items = tasks.problems(300, difficulty=1, seed=0)
  triplets = reward_data.policy_triplets(items)
  # Same policy: reference and positive agree far more often than reference and negative.
  same = np.mean([t["reference"] == t["positive"] for t in triplets])
  other = np.mean([t["reference"] == t["negative"] for t in triplets])
  assert same > other + 0.1
  assert all(set(t) == {"prompt", "reference", "positive", "negative", "answer"} for t in triplets)


def test_tree_pairs_share_prefixes_and_chain_pairs_match_the_budget():
  items = [dict(question="18+7", answer="25", prompt="18+7=")]
  tree = reward_data.tree_pairs(items, pairs_per_question=100)
  leaves = {p["chosen"] for p in tree} | {p["rejected"] for p in tree}
  assert len(leaves) == 4 and "25" in leaves  # 2 digits, branching 2: 4 root-to-leaf paths
  assert {leaf[0] for leaf in leaves} == {"2", sorted({leaf[0] for leaf in leaves} - {"2"})[0]}
  for p in tree:  # the closer answer is preferred; a pair never ties
    assert abs(int(p["chosen"]) - 25) < abs(int(p["rejected"]) - 25)
  chain = reward_data.chain_pairs(items, pairs_per_question=100)
  assert len(chain) == len(tree)
  negative = reward_data.tree_pairs([dict(question="5-96", answer="-91", prompt="5-96=")])
  assert all(p["chosen"][0] == "-" and p["rejected"][0] == "-" for p in negative)


def test_polar_rows_pack_the_reference_before_the_candidate(setup):
  triplet = dict(prompt="8+6=", reference="14", positive="14", negative="12")
  arrays, _ = rmr.RECORDS["polar"].arrays([triplet], setup=setup)
  texts = setup.tokenizer.batch_decode(arrays["tokens"], skip_special_tokens=True)
  assert texts == ["8+6=14\n8+6=14", "8+6=14\n8+6=12"]
  pairs = [dict(prompt="8+6=", chosen="14", rejected="4")]
  arrays, _ = rmr.RECORDS["polar"].heldout_arrays(pairs, setup=setup)
  assert setup.tokenizer.batch_decode(arrays["tokens"], skip_special_tokens=True) == [
      "8+6=14\n8+6=14", "8+6=14\n8+6=4"]


def test_ranked_rows_carry_ranks_in_answer_distance_order(problems, setup, options):
  items = rmr.RECORDS["ranked"].builtin(problems, fmt="short", seed=0, options=options)
  arrays, extra = rmr.RECORDS["ranked"].arrays(items, setup=setup)
  k = options.num_responses
  texts = setup.tokenizer.batch_decode(arrays["tokens"], skip_special_tokens=True)
  for b, it in enumerate(items):
    for j, response in enumerate(it["responses"]):
      assert texts[b * k + j] == it["prompt"] + response  # record-major rows
    np.testing.assert_array_equal(extra["ranks"][b * k:(b + 1) * k], list_ranks([it])[0])
  assert rmr._dense_ranks([1.0, 0.5, 1.0, 0.2]) == [0, 1, 0, 2]  # equal scores tie


def test_packed_rows_read_each_response_at_its_end(problems, setup, options):
  items = rmr.RECORDS["packed"].builtin(problems, fmt="short", seed=0, options=options)
  assert {it["responses"][0] == it["answer"] for it in items} != {True}  # shuffled
  arrays, extra = rmr.RECORDS["packed"].arrays(items, setup=setup)
  tok = setup.tokenizer
  for r, tokens in enumerate(arrays["tokens"]):
    it = items[r // 2]
    order = it["responses"] if r % 2 == 0 else it["responses"][::-1]
    text = tok.decode(tokens, skip_special_tokens=True)
    assert text == it["prompt"] + rmr.YOJO_SEPARATOR.join(order)
    ends = extra["end_positions"][r]
    for k, response in enumerate(order[:-1]):  # the last character of response k
      assert tok.decode([tokens[ends[k]]]) == response[-1]
    assert tokens[ends[-1]] == tok.eos_token_id  # the last response is read at the EOS
    assert ends[-1] == np.flatnonzero(arrays["attention_mask"][r]).max()
    assert order[extra["best_index"][r]] == it["answer"]
    np.testing.assert_array_equal(extra["response_ranks"][r],
                                  list_ranks([dict(it, responses=order)])[0])
