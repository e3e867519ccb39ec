"""Reward sources as composition terms (`rewardjax.rewards.sources`), each against a direct
computation written here from the definition, on tiny random models and hand-built rollouts:

* `parse_terms`: unknown names, bad weights and empty specs fail with what is wrong.
* reward_model: a saved `ScalarModel` with its OWN tokenizer (no BOS, unlike the policy's)
  scores `prompt + completion + eos` in its ids, as a per-row unpadded forward does; a row
  longer than `max_length` is cut from the left and counted in "truncated"; sigma(score) with
  `reward_model_sigmoid`; the composition weights it and reports its metrics.
* sar: max((A - QA) / A, -1), QA from the rollout's `model_logprobs`, A from a full-logits
  forward of the policy over [context | completion] (and the hand values 1 - 1/e and -1).
* endogenous: alpha sum_t log softmax(logits / alpha)[y_t] + alpha logsumexp(logits / alpha) at
  the position before the first completion token, of `state.ref_params` (or `state.params`).
* coherent: sum_t log pi_ref - log pi_base of the completion tokens.
* judge: [B] values in [0, 1], 0 without an answer, its metrics; "probability" equals
  sigmoid(l_Y - l_N) after the judge's greedy working, both recomputed here (own greedy loop).
* timeout_seconds (`composition.with_timeout`): a term spinning on one completion is stopped at
  the limit and the error names that completion; off the main thread it is measured after the
  fact; a fast term passes unchanged; 0 turns the limit off; the host terms are the timed ones.
"""

import functools
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rewardjax import sharding
from rewardjax.data import tokenizers
from rewardjax.models import heads, hf, hf_reward, transformer
from rewardjax.recipes import spark
from rewardjax.rewards import composition, sources, verifiers
from rewardjax.types import TrainState

TOKENIZER = tokenizers.char_tokenizer()          # the policy's: BOS first
CONFIG = transformer.ModelConfig(
    vocab_size=128, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2,
    num_kv_heads=1, head_dim=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)
B, S, T = 4, 8, 5
EOS = TOKENIZER.eos_token_id


def _randomise(model, seed, std=0.3):
  """Std-`std` weights (norm scales 1 + noise): O(1) logits and scores, not near-uniform."""
  graphdef, params = nnx.split(model, nnx.Param)
  flat, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))
  rng = np.random.default_rng(seed)
  leaves = [jnp.asarray((1.0 if "scale" in jax.tree_util.keystr(path) else 0.0)
                        + std * rng.normal(size=x.shape), x.dtype) for path, x in flat]
  nnx.replace_by_pure_dict(params, jax.tree_util.tree_unflatten(treedef, leaves))
  return nnx.merge(graphdef, params)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, params, tokens, mask):
  return nnx.merge(graphdef, params)(tokens, attention_mask=mask)


def _apply(model, tokens, mask):
  """The model's full output (LM logits [B, L, V] or scores [B]) on right-padded rows, jitted
  (eager ops would compile per shape)."""
  graphdef, params = nnx.split(model, nnx.Param)
  return _forward(graphdef, params, jnp.asarray(tokens, jnp.int32), jnp.asarray(mask, jnp.int32))


def _right_padded(rows, length):
  tokens = np.zeros((len(rows), length), np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)], mask[i, :len(r)] = r, 1
  return tokens, mask


def _lm(seed):
  return _randomise(transformer.Transformer(CONFIG, rngs=nnx.Rngs(seed)), seed)


def _ids(text):
  return TOKENIZER.convert_tokens_to_ids(list(text))


@pytest.fixture(scope="module")
def mesh():
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    yield mesh


@pytest.fixture(scope="module")
def policy():
  """(policy model, reference model, TrainState with params / ref_params / graphdef)."""
  model, ref = _lm(1), _lm(2)
  graphdef, params = nnx.split(model, nnx.Param)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=nnx.to_pure_dict(params),
                     opt_state=None, rng=None,
                     ref_params=nnx.to_pure_dict(nnx.split(ref, nnx.Param)[1]),
                     graphdef=graphdef)
  return model, ref, state


@pytest.fixture(scope="module")
def rollouts():
  """Arrays as `grpo.sample` returns them: prompts left-padded to S, completions right-padded
  to T (lengths 5, 3, 4, 1, EOS last), model_logprobs garbage (+5) under the mask."""
  rng = np.random.default_rng(0)
  prompt_lengths, lengths = [8, 5, 6, 3], [5, 3, 4, 1]
  prompt_mask = (np.arange(S)[None] >= S - np.array(prompt_lengths)[:, None]).astype(np.int32)
  completion_mask = (np.arange(T)[None] < np.array(lengths)[:, None]).astype(np.int32)
  prompt = np.where(prompt_mask > 0, rng.integers(4, 100, (B, S)), 0)
  completion = rng.integers(4, 100, (B, T))
  completion[np.arange(B), np.array(lengths) - 1] = EOS
  completion = np.where(completion_mask > 0, completion, 0)
  model_logprobs = np.where(completion_mask > 0, rng.uniform(-4.0, -0.5, (B, T)), 5.0)
  return dict(tokens=np.concatenate([prompt, completion], axis=1).astype(np.int32),
              prompt_mask=prompt_mask, completion_mask=completion_mask,
              completion_tokens=completion.astype(np.int32),
              lengths=np.array(lengths, np.int32),
              model_logprobs=model_logprobs.astype(np.float32))


def _scored(arrays, state, texts=None, items=None):
  texts = texts or ["x"] * len(arrays["lengths"])
  items = items or [{"prompt": "p", "answer": "1", "question": "q"}] * len(texts)
  return composition.Scored(items, texts, arrays, state)


def _token_logps(model, tokens, mask, start, alpha=1.0):
  """log softmax(logits / alpha) of tokens[:, start:] from the full [B, L, V] logits."""
  logits = _apply(model, tokens, mask)
  logp = jax.nn.log_softmax(logits[:, start - 1:-1] / alpha, axis=-1)
  return np.asarray(jnp.take_along_axis(logp, jnp.asarray(tokens)[:, start:, None], -1)[..., 0])


# ---- parse_terms ----------------------------------------------------------------------------
def test_parse_terms_names_weights_and_errors():
  assert sources.parse_terms("verifier, sar:0.2,judge:-1") == [
      ("verifier", 1.0), ("sar", 0.2), ("judge", -1.0)]
  with pytest.raises(ValueError, match=r"unknown reward source 'verfier'.*valid"):
    sources.parse_terms("verfier")
  with pytest.raises(ValueError, match=r"weight 'x' of 'sar' is not a number"):
    sources.parse_terms("verifier,sar:x")
  for empty in ("", " , ,"):
    with pytest.raises(ValueError, match="rewards.terms is empty"):
      sources.parse_terms(empty)


# ---- reward model -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
  """A random ScalarModel saved as a workdir's hf/ with a char tokenizer WITHOUT BOS."""
  model = _randomise(heads.ScalarModel(CONFIG, bias=False, rngs=nnx.Rngs(5)), 5)
  workdir = tmp_path_factory.mktemp("rm_workdir")
  hf_reward.save_reward_model(model, workdir / "hf")
  tokenizers.char_tokenizer(add_bos=False).save_pretrained(workdir / "hf")
  return model, str(workdir)


def test_reward_model_scores_rows_in_its_own_tokenizer_and_counts_truncation(mesh,
                                                                             reward_model):
  model, workdir = reward_model
  max_length = 16
  items = [{"prompt": "12+7="}, {"prompt": "3-5="}, {"prompt": "9*9="}]
  texts = ["19", "-2 is it", "81 because nine nines are 81"]   # the last row is too long
  options = sources.RewardOptions(terms="reward_model", reward_model=workdir,
                                  max_length=max_length, bucket=8)
  fn = sources.reward_model_term(options, tokenizer=TOKENIZER, mesh=mesh)
  scores, metrics = fn(composition.Scored(items, texts, {}, None))

  rows = [_ids(it["prompt"] + t) + [EOS] for it, t in zip(items, texts)]  # no BOS
  assert len(rows[2]) > max_length >= max(len(rows[0]), len(rows[1]))
  # The reward model's own ids (cut from the left), then the policy's (BOS first) for contrast;
  # one right-padded batch of fixed length 32 (positions come from the mask).
  direct = np.asarray(_apply(model, *_right_padded(
      [r[-max_length:] for r in rows] + [[1] + r for r in rows[:2]], 32)))
  expected, with_bos = direct[:3], direct[3:]
  np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
  assert metrics == {"truncated": 1.0}
  # The policy's ids would score differently: the term used the reward model's tokenizer.
  assert np.all(np.abs(with_bos - expected[:2]) > 1e-4)

  sigmoid = sources.reward_model_term(
      sources.RewardOptions(reward_model=workdir, max_length=max_length, bucket=8,
                            reward_model_sigmoid=True), tokenizer=TOKENIZER, mesh=mesh)
  np.testing.assert_allclose(sigmoid(composition.Scored(items, texts, {}, None))[0],
                             1 / (1 + np.exp(-expected)), rtol=1e-5)

  # In a composition: weighted, and its metrics reported under its name.
  both = sources.composition_from_options(
      sources.RewardOptions(terms="reward_model:0.5,verifier", reward_model=workdir,
                            max_length=max_length, bucket=8),
      tokenizer=TOKENIZER, mesh=mesh, fmt="short")
  answers = [{**it, "answer": a} for it, a in zip(items, ("19", "0", "81"))]
  total, metrics = both.score(composition.Scored(answers, texts, {}, None))
  # "short" answers are the first line: only row 0 is right.
  np.testing.assert_allclose(total, 0.5 * expected + np.array([1.0, 0.0, 0.0]), rtol=1e-5)
  assert metrics["reward/reward_model/truncated"] == 1.0
  assert metrics["reward/verifier"] == pytest.approx(1 / 3)
  assert not both.uses_reference


# ---- log-prob rewards ---------------------------------------------------------------------------
def test_sar_is_the_relative_perplexity_drop(mesh, policy, rollouts):
  model, _, state = policy
  context = [TOKENIZER.bos_token_id] + _ids("=")
  full = np.concatenate([np.tile(context, (B, 1)), rollouts["completion_tokens"]], axis=1)
  mask = np.concatenate([np.ones((B, len(context)), np.int32), rollouts["completion_mask"]], 1)
  answer_logps = _token_logps(model, full, mask, len(context))
  m = rollouts["completion_mask"] > 0
  # QA = A / e on row 0 (reward 1 - 1/e), QA = e^3 A on row 1 (reward 1 - e^3, clipped to -1).
  arrays = dict(rollouts, model_logprobs=rollouts["model_logprobs"].copy())
  arrays["model_logprobs"][0] = np.where(m[0], answer_logps[0] + 1.0, 5.0)
  arrays["model_logprobs"][1] = np.where(m[1], answer_logps[1] - 3.0, 5.0)
  fn = sources.sar_term(sources.RewardOptions(sar_context="="), tokenizer=TOKENIZER, mesh=mesh)
  reward = np.asarray(fn(_scored(arrays, state)))

  def ppl(logps, row):
    return np.exp(-np.mean(logps[row][m[row]].astype(np.float64)))

  expected = [max((ppl(answer_logps, b) - ppl(arrays["model_logprobs"], b))
                  / ppl(answer_logps, b), -1.0) for b in range(B)]
  np.testing.assert_allclose(reward, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(reward[:2], [1 - np.exp(-1.0), -1.0], rtol=1e-4)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_endogenous_reward_of_the_reference(mesh, policy, rollouts, alpha):
  model, ref, state = policy
  attention = np.concatenate([rollouts["prompt_mask"], rollouts["completion_mask"]], axis=1)
  m = rollouts["completion_mask"] > 0

  def expected(lm):
    logps = _token_logps(lm, rollouts["tokens"], attention, S, alpha)
    logits = _apply(lm, rollouts["tokens"], attention)
    value = alpha * jax.nn.logsumexp(logits[:, S - 1] / alpha, axis=-1)
    return alpha * np.where(m, logps, 0.0).sum(axis=1) + np.asarray(value)

  for which, lm in (("reference", ref), ("policy", model)):
    if which == "policy" and alpha != 1.0:
      continue
    fn = sources.endogenous_term(sources.RewardOptions(alpha=alpha, endogenous_model=which),
                                 mesh=mesh)
    np.testing.assert_allclose(fn(_scored(rollouts, state)), expected(lm), rtol=1e-5,
                               atol=1e-4)


def test_coherent_reward_is_reference_minus_base_logprobs(mesh, policy, rollouts, tmp_path):
  _, ref, state = policy
  base = _lm(7)
  hf.save_pretrained(base, tmp_path / "base")
  fn = sources.coherent_term(sources.RewardOptions(base_model=str(tmp_path / "base")),
                             mesh=mesh)
  attention = np.concatenate([rollouts["prompt_mask"], rollouts["completion_mask"]], axis=1)
  m = rollouts["completion_mask"] > 0
  diff = (_token_logps(ref, rollouts["tokens"], attention, S)
          - _token_logps(base, rollouts["tokens"], attention, S))
  expected = np.where(m, diff, 0.0).sum(axis=1)
  assert np.abs(expected).max() > 0.5
  np.testing.assert_allclose(fn(_scored(rollouts, state)), expected, rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match="base_model is empty"):
    sources.coherent_term(sources.RewardOptions(), mesh=mesh)


# ---- the policy as a judge ------------------------------------------------------------------
MAX_NEW = 10


def _next_logits(model, ids):
  """Logits [V] after `ids`, from a full forward of the row right-padded to 64 (no cache)."""
  return np.asarray(_apply(model, *_right_padded([ids], 64))[0, len(ids) - 1])


def _greedy_working(model, prompt_ids):
  """The judge's greedy completion text, one full forward per token."""
  ids = list(prompt_ids)
  out = []
  for _ in range(MAX_NEW):
    token = int(np.argmax(_next_logits(model, ids)))
    if token in (EOS, TOKENIZER.pad_token_id):
      break
    out.append(token)
    ids.append(token)
  return TOKENIZER.decode(out, skip_special_tokens=True)


def test_judge_reads_probability_after_working_and_parses_verdicts(mesh):
  # Seed and scale picked so that this random judge writes line breaks: both workings are
  # non-empty (the verdict is read after them), one has fewer than two lines ("malformed").
  model = _randomise(transformer.Transformer(CONFIG, rngs=nnx.Rngs(0)), 39, std=1.0)
  graphdef, params = nnx.split(model, nnx.Param)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=nnx.to_pure_dict(params),
                     opt_state=None, rng=None, graphdef=graphdef)
  items = [{"question": "12+7", "answer": "19", "prompt": "12+7="},
           {"question": "3-5", "answer": "-2", "prompt": "3-5="},
           {"question": "9*9", "answer": "81", "prompt": "9*9="},
           {"question": "4+4", "answer": "8", "prompt": "4+4="}]
  texts = ["19", "", "80\nextra", "  \n"]              # rows 1 and 3 have no answer
  formatter = spark.Formatter("short")
  judged = [0, 2]
  texts_ref, expected = {}, {}
  for i in judged:
    prompt, yes, no = formatter.pointwise(items[i]["question"], texts[i].splitlines()[0], 0)
    prompt_ids = TOKENIZER(prompt)["input_ids"]
    texts_ref[i] = _greedy_working(model, prompt_ids)
    working = formatter.split_verdict(texts_ref[i])[0]
    assert working, texts_ref[i]
    ids = prompt_ids + TOKENIZER(working, add_special_tokens=False)["input_ids"]
    logits = _next_logits(model, ids)
    y, n = _ids(yes)[0], _ids(no)[0]
    expected[i] = float(1 / (1 + np.exp(-(np.float64(logits[y]) - logits[n]))))

  def judge(read):
    fn = sources.judge_term(sources.RewardOptions(judge_read=read, judge_max_new_tokens=MAX_NEW,
                                                  max_length=64, bucket=16),
                            tokenizer=TOKENIZER, mesh=mesh, fmt="short")
    return fn(composition.Scored(items, texts, {}, state))

  values, metrics = judge("probability")
  assert values.shape == (B,) and np.all((values >= 0) & (values <= 1))
  assert values[1] == values[3] == 0.0
  assert metrics["judged"] == 2.0 and metrics["truncated"] == 0.0
  assert set(metrics) == {"judged", "truncated", "malformed"}
  np.testing.assert_allclose(values[judged], [expected[i] for i in judged], rtol=1e-4,
                             atol=1e-6)
  malformed = sum(formatter.split_verdict(texts_ref[i])[0].count("\n") < 2 for i in judged)
  assert metrics["malformed"] == float(malformed) == 1.0
  # This random judge writes no verdict line: "parsed" has nothing to read in any judged row,
  # and says so with the raw outputs instead of rewarding every rollout 0.
  assert not any(formatter.judge_reward(texts_ref[i], v) for i in judged for v in "YN")
  with pytest.raises(ValueError, match="could not be parsed in any of the 2 judged rows") as e:
    judge("parsed")
  assert repr(texts_ref[0]) in str(e.value)
  with pytest.raises(ValueError, match="judge_read"):
    sources.judge_term(sources.RewardOptions(judge_read="vibes"), tokenizer=TOKENIZER,
                       mesh=mesh, fmt="short")


def test_win_rate_is_each_samples_share_of_wins_in_its_group():
  items = [{"answer": "19", "prompt": "12+7="}] * 3 + [{"answer": "-2", "prompt": "3-5="}] * 3
  texts = ["19", "17", "x", "-2", "-2", "5"]
  scored = composition.Scored(items, texts, {})
  # Closeness 1 / (1 + |a - 19|): 1, 1/3, 0 (no answer); group 2: 1, 1, 1/8. Wins count 1, ties
  # 1/2, over the G - 1 = 2 others.
  closeness = sources.win_rate_term(sources.RewardOptions(preference="closeness"), fmt="short",
                                    group_size=3)(scored)
  np.testing.assert_allclose(closeness, [1.0, 0.5, 0.0, 0.75, 0.75, 0.0])
  verifier = sources.win_rate_term(sources.RewardOptions(preference="verifier"), fmt="short",
                                   group_size=3)(scored)
  # Right beats wrong; "17" and "x" are both wrong (a tie).
  np.testing.assert_allclose(verifier, [1.0, 0.25, 0.25, 0.75, 0.75, 0.0])
  with pytest.raises(ValueError, match="groups of 4"):
    sources.win_rate_term(sources.RewardOptions(), fmt="short", group_size=4)(scored)
  with pytest.raises(ValueError, match="preference"):
    sources.win_rate_term(sources.RewardOptions(preference="vibes"), fmt="short", group_size=3)


# ---- time limit per batch (composition.with_timeout) ----------------------------------------
def _spin(seconds):
  """Pure-Python busy work: a hang SIGALRM can interrupt (it runs bytecodes), bounded so that a
  platform without the alarm (measured afterwards) still finishes."""
  end = time.perf_counter() + seconds
  while time.perf_counter() < end:
    pass


SLOW = r"\boxed{" + "9" * 1000 + "} hang"           # the one completion the slow term chokes on


def _slow_term(seconds=1.0):
  def fn(scored):
    for text in scored.texts:
      if text.endswith("hang"):
        _spin(seconds)
    return np.ones(len(scored.texts), np.float32), {"rows": float(len(scored.texts))}

  return composition.Term("slow", fn, 0.5)


def test_a_slow_term_is_stopped_and_names_its_slowest_completion():
  texts = ["1", "22", SLOW, "4"]
  scored = composition.Scored([{"answer": "1"}] * 4, texts, {})
  handler = signal.getsignal(signal.SIGALRM)
  start = time.perf_counter()
  with pytest.raises(composition.RewardTimeoutError) as info:
    composition.Composition((composition.with_timeout(_slow_term(), 0.05),)).score(scored)
  error, message = info.value, str(info.value)
  assert (error.term, error.limit, error.index, error.completion) == ("slow", 0.05, 2, SLOW)
  assert error.elapsed >= 0.05
  assert "'slow'" in message and "0.05 s" in message and "row 2" in message
  assert "--config.rewards.timeout_seconds" in message
  # The completion is named by its length and cut to ~200 characters, both ends kept.
  assert "1,013 characters" in message and "9" * 1000 not in message
  assert "'\\\\boxed{999" in message and "9} hang'" in message
  if threading.current_thread() is threading.main_thread():  # interrupted, not waited for
    assert "was stopped after" in message and time.perf_counter() - start < 0.9
  # The alarm is gone: the previous handler is back and no timer is pending.
  assert signal.getsignal(signal.SIGALRM) == handler
  assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_fast_term_passes_through_and_zero_turns_the_limit_off():
  scored = composition.Scored([{}] * 3, ["1", "2", "3"], {})
  fast = composition.with_timeout(_slow_term(), 5.0)
  assert (fast.name, fast.weight) == ("slow", 0.5)
  values, metrics = fast.fn(scored)                      # a (values, metrics) result unchanged
  np.testing.assert_array_equal(values, [1.0, 1.0, 1.0])
  assert metrics == {"rows": 3.0}
  term = _slow_term(0.1)
  assert composition.with_timeout(term, 0.0) is term
  slow = composition.Scored([{}] * 2, ["1", SLOW], {})
  assert composition.Composition((term,)).score(slow)[0].tolist() == [0.5, 0.5]


def test_off_the_main_thread_the_time_is_measured_afterwards():
  # SIGALRM reaches only the main thread: elsewhere the term runs to the end, then is reported.
  scored = composition.Scored([{}] * 3, ["1", SLOW, "3"], {})
  errors = []

  def run():
    try:
      composition.with_timeout(_slow_term(0.1), 0.02).fn(scored)
    except composition.RewardTimeoutError as e:
      errors.append(e)

  worker = threading.Thread(target=run)
  worker.start()
  worker.join()
  (error,) = errors
  assert error.index == 1 and error.elapsed >= 0.1 and "took" in str(error)


def test_rewards_timeout_seconds_times_the_host_terms(monkeypatch):
  def slow_verify(completion, answer, fmt="boxed"):
    if completion.endswith("hang"):
      _spin(0.2)
    return 1.0

  monkeypatch.setattr(verifiers, "math_verify", slow_verify)
  items = [{"prompt": "p", "answer": "19"}] * 3
  scored = composition.Scored(items, [r"\boxed{19}", SLOW, "x"], {})

  def build(timeout):
    return sources.composition_from_options(
        sources.RewardOptions(terms="verifier,format:0.5", timeout_seconds=timeout),
        tokenizer=None, mesh=None, fmt="boxed")

  with pytest.raises(composition.RewardTimeoutError, match="'verifier'.*row 1") as info:
    build(0.05).score(scored)
  assert info.value.completion == SLOW
  rewards, metrics = build(0.0).score(scored)              # 0: no limit, the slow batch scores
  np.testing.assert_allclose(rewards, [1.5, 1.5, 1.0])      # "x" has no box
  assert sources.RewardOptions().timeout_seconds == 60.0
  with pytest.raises(ValueError, match="timeout_seconds=-1"):
    build(-1.0)
