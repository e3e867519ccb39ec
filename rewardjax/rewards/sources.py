"""Reward sources that are models: a trained reward model, the policy as a judge, log-prob
rewards. Each is a `composition.Term`, composed with weights by the config's `rewards` block.

  verifier       the task's rule-based check (`verifiers.math_verify`)
  reward_model   a scalar reward model: an HF `*ForSequenceClassification` directory or a
                 reward-model run's workdir (its `hf/` export), with its own tokenizer; or
                 "companion": the reward model trained in the same step (Cooper)
  judge          the current policy judges each rollout through a judge prompt (SSR-Zero,
                 arXiv 2505.16637): it writes its working with the sampler, and the verdict is
                 read from the next-token probabilities p(yes) / (p(yes) + p(no)) after it, or
                 parsed from the text
  sar            Self-Aligned Reward (arXiv 2509.05489, §3): relative perplexity drop of the
                 completion given the question vs. given an answer-only context
  coherent       Self-Rewarding PPO's reward (arXiv 2510.21090): sum_t log pi_sft - log pi_pt,
                 pi_sft the frozen starting policy, pi_pt a base model directory
  endogenous     the endogenous reward (arXiv 2506.23235, Eq. 12): alpha * log pi(y|x) + V(s_1)
                 of the frozen starting policy (or the current one)
  win_rate       self-play SPO (arXiv 2401.04056, §3): each rollout's win rate against the
                 other samples of its prompt under a preference comparator, no reward model
  format         1 if the completion has the task format's shape (`verifiers.format_reward`)
  prm, implicit_prm, consistency
                 process rewards per step (`rewards.process`): a PRM's step scores refined by
                 Clip / Delta, OPRL's implicit PRM, R1-Reward's consistency

Model-scored terms run one jitted forward over the whole batch on the mesh (bucketed shapes, so
few compilations); only tokenisation and text parsing run on the host. A text longer than
`max_length` tokens is cut from the left (the end holds the answer) and counted in
"reward/<term>/truncated", never dropped. The terms scored by Python alone (`HOST_SOURCES`) run
under `timeout_seconds` per batch (`composition.with_timeout`).
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rewardjax import rollouts, sharding
from rewardjax.data import tokenizers
from rewardjax.kernels import logprobs as logprobs_lib
from rewardjax.rewards import composition, judge_scores, logprob, process, verifiers

SOURCES = ("verifier", "format", "reward_model", "judge", "sar", "coherent", "endogenous",
           "win_rate", "prm", "implicit_prm", "consistency")
# Scored by Python text parsing alone, so their time on a batch is bounded by `timeout_seconds`.
# The model-scored terms are not: their time is jitted device work, and their first batch
# compiles, which a per-batch wall-clock limit would misreport as a hang.
HOST_SOURCES = ("verifier", "format", "win_rate", "consistency")
PREFERENCES = ("verifier", "closeness")
JUDGE_READS = ("probability", "parsed")


@dataclasses.dataclass(frozen=True)
class RewardOptions:
  """The config's `rewards` block: which terms, with which weights, and each source's options.

  terms: "name[:weight],..." over `SOURCES`, e.g. "verifier,sar:0.2".
  reward_model: directory of the reward model, or "companion" (the model trained alongside).
  reward_model_sigmoid: reward sigma(score) instead of the score (Cooper's R = sigma(logit)).
  max_length: tokens a model-scored text may have; longer ones are cut from the left, counted.
  bucket: text lengths are padded to a multiple of this (fewer compilations).
  judge_template: index of the pointwise judge template (`recipes.spark` TemplateSet).
  judge_read: "probability" (token probabilities after the judge's working; "short" format) or
    "parsed" (the verdict text).
  judge_max_new_tokens: the judge's working and verdict budget.
  sar_context: SAR's answer-only context (the paper: the chat template with an empty question).
  base_model: pi_pt's HF directory for "coherent".
  endogenous_model: "reference" (the frozen starting policy) or "policy" (the current one).
  alpha: the endogenous reward's soft-Q temperature.
  preference: win_rate's comparator: "verifier" (a right answer beats a wrong one) or
    "closeness" (the answer nearer the true one wins); ties count 1/2.
  prm: the process reward model's directory ("" = the shipped `pretrained.ARITH_PRM`).
  prm_mechanism: "sum" | "clip" | "delta" | "clip_delta" (`process.refine`).
  prm_eta: Clip's threshold eta.
  implicit_prm_beta: OPRL's beta in r = beta log pi_phi / pi_old.
  timeout_seconds: the longest a `HOST_SOURCES` term may take to score one batch; past it,
    training stops with a `composition.RewardTimeoutError` naming the term and its slowest
    completion (a parser hanging on one completion would otherwise stall the run silently).
    0 turns the limit off.
  """
  terms: str = "verifier"
  reward_model: str = ""
  max_length: int = 128
  bucket: int = 16
  judge_template: int = 0
  judge_read: str = "probability"
  judge_max_new_tokens: int = 10
  reward_model_sigmoid: bool = False
  sar_context: str = "="
  base_model: str = ""
  endogenous_model: str = "reference"
  alpha: float = 1.0
  preference: str = "closeness"
  prm: str = ""
  prm_mechanism: str = "sum"
  prm_eta: float = 0.5
  implicit_prm_beta: float = 0.05
  timeout_seconds: float = 60.0


def parse_terms(spec: str) -> list[tuple[str, float]]:
  """ "verifier,sar:0.2" -> [("verifier", 1.0), ("sar", 0.2)], checking names and weights.

  >>> parse_terms("verifier, sar:0.2")
  [('verifier', 1.0), ('sar', 0.2)]
  """
  terms = []
  for part in filter(None, (p.strip() for p in spec.split(","))):
    name, _, weight = part.partition(":")
    if name not in SOURCES:
      raise ValueError(f"rewards.terms: unknown reward source {name!r} in {spec!r}; valid: "
                       f"{SOURCES} (as 'name' or 'name:weight', comma-separated)")
    try:
      terms.append((name, float(weight) if weight else 1.0))
    except ValueError:
      raise ValueError(f"rewards.terms: weight {weight!r} of {name!r} is not a number") from None
  if not terms:
    raise ValueError("rewards.terms is empty; e.g. --config.rewards.terms=verifier")
  return terms


def encode_rows(tokenizer, prompts: Sequence[str], completions: Sequence[str], *,
                max_length: int, bucket: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Right-padded rows `prompt | completion | eos` in `tokenizer`'s ids, cut from the left.

  Returns (tokens [B, L], attention_mask [B, L], truncated [B] bool); L is the longest row
  rounded up to `bucket`, at most `max_length`. Positions come from the mask
  (`cumsum(mask) - 1`), so a row's padding side does not change its score.
  """
  prompt_rows = tokenizer(list(prompts))["input_ids"]
  completion_rows = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
  eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
  rows = [p + c + eos for p, c in zip(prompt_rows, completion_rows)]
  truncated = np.array([len(r) > max_length for r in rows])
  rows = [r[-max_length:] for r in rows]
  length = tokenizers.bucketed_length(max(len(r) for r in rows), bucket, max_length)
  tokens = np.full((len(rows), length), tokenizers.pad_token_id(tokenizer), np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)], mask[i, :len(r)] = r, 1
  return tokens, mask, truncated


def place(model, mesh) -> tuple:
  """(graphdef, pure params) of a frozen NNX model, the params sharded by the table."""
  graphdef, state = nnx.split(model, nnx.Param)
  return graphdef, jax.device_put(nnx.to_pure_dict(state),
                                  sharding.param_shardings(state, mesh))


def _host(x) -> np.ndarray:
  return np.asarray(sharding.gather(x))


@functools.partial(jax.jit, static_argnums=0)
def _scalar_scores(graphdef, params, tokens, attention_mask):
  return nnx.merge(graphdef, params)(tokens, attention_mask=attention_mask)


# ---- reward model --------------------------------------------------------------------------
def reward_model_term(options: RewardOptions, *, tokenizer, mesh):
  """The reward model's score of `prompt + completion`, one jitted forward over the batch.

  A directory: loaded once (`models.hf_reward`), re-tokenised with its own tokenizer (a policy
  and a reward model need not share one). "companion": `state.companion`, the reward model
  trained in the same step, which shares the policy's tokenizer (it is re-read every call).
  """
  from rewardjax.models import hf_reward  # noqa: PLC0415 (safetensors, only when used)

  if not options.reward_model:
    raise ValueError("rewards.terms has 'reward_model' but rewards.reward_model is empty: pass "
                     "an HF *ForSequenceClassification directory or a reward-model run's "
                     "workdir (--config.rewards.reward_model=/path), or 'companion'")
  if options.reward_model == "companion":
    source = None
  else:
    directory = hf_reward.resolve_reward_model_dir(options.reward_model)
    source = (*place(hf_reward.load_reward_model(directory), mesh),
              tokenizers.load_tokenizer(directory))

  def fn(scored: composition.Scored):
    if source is None:
      c = scored.state.companion
      graphdef, params, rm_tokenizer = c.graphdef, c.params, tokenizer
    else:
      graphdef, params, rm_tokenizer = source
    tokens, mask, truncated = encode_rows(
        rm_tokenizer, [it["prompt"] for it in scored.items], scored.texts,
        max_length=options.max_length, bucket=options.bucket)
    scores = _host(_scalar_scores(graphdef, params, *sharding.feed((tokens, mask), mesh)))
    if options.reward_model_sigmoid:
      scores = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
    return scores, {"truncated": float(truncated.sum())}

  return fn


# ---- log-prob rewards ----------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("graphdef", "completion_length", "alpha"))
def completion_logps(graphdef, params, tokens, attention_mask, *, completion_length: int,
                     alpha: float = 1.0):
  """(log-probs [B, T] of the last T tokens under softmax(logits / alpha), alpha * logsumexp
  (logits / alpha) [B] at the position that predicts the first of them: V(s_1))."""
  model = nnx.merge(graphdef, params)
  hidden, _ = model.hidden_states(tokens, attention_mask=attention_mask)
  start = tokens.shape[1] - completion_length
  hidden_BxTxD = jax.lax.dynamic_slice_in_dim(hidden, start - 1, completion_length, axis=1)
  w_DxV = model.unembedding()
  # logits / alpha = (h / alpha) W: the chunked kernel never forms [B, T, V].
  logps_BxT, _ = logprobs_lib.token_logprobs_from_hidden(hidden_BxTxD / alpha, w_DxV,
                                                         tokens[:, start:])
  first_logits_BxV = (hidden_BxTxD[:, 0].astype(jnp.float32)
                      @ w_DxV.astype(jnp.float32))
  return (jax.lax.stop_gradient(logps_BxT),
          jax.lax.stop_gradient(logprob.value_at(first_logits_BxV, alpha)))


def rollout_logps(graphdef, params, arrays, mesh, alpha=1.0):
  """`completion_logps` of the rollout rows (`Scored.arrays`) under `params`, on the mesh."""
  completion_length = arrays["completion_mask"].shape[1]
  attention = np.concatenate([arrays["prompt_mask"], arrays["completion_mask"]], axis=1)
  tokens, attention = sharding.feed((arrays["tokens"], attention.astype(np.int32)), mesh)
  return completion_logps(graphdef, params, tokens, attention,
                          completion_length=completion_length, alpha=alpha)


def sar_term(options: RewardOptions, *, tokenizer, mesh):
  """SAR: R_SA = max((ppl(a) - ppl(a|q)) / ppl(a), -1) (official `compute_ppl_qa_log`).

  ppl(a|q) from the rollout's own log-probs (the actor's, at sampling time, as the official
  code uses `old_log_probs`); ppl(a) from the current policy behind `sar_context`, an
  answer-only prompt (one extra forward pass over the batch).
  """
  context = tokenizer([options.sar_context])["input_ids"][0]

  def fn(scored: composition.Scored):
    a = scored.arrays
    completion_tokens, completion_mask = a["completion_tokens"], a["completion_mask"]
    rows = completion_tokens.shape[0]
    context_BxC = np.tile(np.asarray(context, np.int32), (rows, 1))
    tokens = np.concatenate([context_BxC, completion_tokens], axis=1).astype(np.int32)
    attention = np.concatenate([np.ones_like(context_BxC), completion_mask], axis=1)
    state = scored.state
    answer_logps, _ = completion_logps(
        state.graphdef, state.params, *sharding.feed((tokens, attention.astype(np.int32)), mesh),
        completion_length=completion_tokens.shape[1])
    reward = logprob.self_aligned_reward(
        jnp.asarray(_host(answer_logps)), jnp.asarray(completion_mask),
        jnp.asarray(a["model_logprobs"]), jnp.asarray(completion_mask))
    return np.asarray(reward)

  return fn


def coherent_term(options: RewardOptions, *, mesh):
  """Self-Rewarding PPO: sum_t [log pi_sft - log pi_pt] of the completion tokens, pi_sft the
  frozen starting policy (`state.ref_params`), pi_pt the model in `base_model`."""
  from rewardjax.models import hf  # noqa: PLC0415

  if not options.base_model:
    raise ValueError("rewards.terms has 'coherent' but rewards.base_model is empty: pass the "
                     "pretrained base model's HF directory (pi_pt of arXiv 2510.21090)")
  base_graphdef, base_params = place(hf.from_pretrained(options.base_model), mesh)

  def fn(scored: composition.Scored):
    state, a = scored.state, scored.arrays
    sft, _ = rollout_logps(state.graphdef, state.reference_params(), a, mesh)
    pt, _ = rollout_logps(base_graphdef, base_params, a, mesh)
    # float: coherent_reward's mask is Float | Bool, the rollouts' completion_mask is int32.
    mask = jnp.asarray(a["completion_mask"], jnp.float32)
    reward = logprob.coherent_reward(jnp.asarray(_host(sft)), jnp.asarray(_host(pt)), mask)
    return np.asarray(reward)

  return fn


def endogenous_term(options: RewardOptions, *, mesh):
  """The endogenous reward alpha * sum_t log pi_alpha(y_t | s_t) + V(s_1) (EOS included)."""
  if options.endogenous_model not in ("reference", "policy"):
    raise ValueError(f"rewards.endogenous_model={options.endogenous_model!r}; valid: "
                     "'reference' (the frozen starting policy), 'policy'")

  def fn(scored: composition.Scored):
    state, a = scored.state, scored.arrays
    params = (state.reference_params() if options.endogenous_model == "reference"
              else state.params)
    logps, first_value = rollout_logps(state.graphdef, params, a, mesh, alpha=options.alpha)
    reward = logprob.endogenous_reward(jnp.asarray(_host(logps)),
                                       jnp.asarray(a["completion_mask"]),
                                       jnp.asarray(_host(first_value)), alpha=options.alpha)
    return np.asarray(reward)

  return fn


# ---- the policy as a generative judge ------------------------------------------------------
def judge_term(options: RewardOptions, *, tokenizer, mesh, fmt: str):
  """SSR-Zero's self-judgment: the current policy judges each rollout's answer with a
  pointwise judge prompt (the SPARK templates the shipped model knows).

  The judge's working is generated greedily by the sampler (`rollouts.generate`), batched; the
  reward is p(yes) / (p(yes) + p(no)) at the verdict position, teacher-forced after the working
  ("probability", short format), or 1 if the parsed verdict is the yes label ("parsed"). A
  rollout without an extractable answer gets 0 (its row is judged with "?" to keep the shape).
  "parsed": a verdict that is neither label gets 0 and is counted ("malformed"); a batch in
  which no judged row has a parsable verdict raises, quoting a few raw judge outputs.
  """
  from rewardjax.recipes import spark  # noqa: PLC0415 (the judge prompts live with SPARK)

  if options.judge_read not in JUDGE_READS:
    raise ValueError(f"rewards.judge_read={options.judge_read!r}; valid: {JUDGE_READS}")
  if options.judge_read == "probability" and fmt != "short":
    raise ValueError("rewards.judge_read='probability' reads one verdict character, which the "
                     "'short' format has; use judge_read='parsed' with fmt='boxed'")
  formatter = spark.Formatter(fmt)

  def token_id(label):
    return tokenizer(label, add_special_tokens=False)["input_ids"][0]

  def fn(scored: composition.Scored):
    state = scored.state
    answers = [verifiers.extract_answer(t, fmt) for t in scored.texts]
    has_answer = np.array([a is not None for a in answers])
    # Every row is judged (a row without an answer shows "?" and gets 0 below): the judge's
    # batch keeps the rollouts' B rows, so its sampler and forward compile once, not per count.
    prompts = []
    for item, answer in zip(scored.items, answers):
      prompt, yes, no = formatter.pointwise(formatter.question(item), answer or "?",
                                            options.judge_template)
      prompts.append(prompt)
    lengths = [len(r) for r in tokenizer(prompts)["input_ids"]]
    truncated = float(sum(n > options.max_length for n in lengths))
    prompt_tokens, prompt_mask = tokenizers.encode_prompts(
        tokenizer, prompts, bucket=options.bucket, max_length=options.max_length)
    out = rollouts.generate(
        (state.graphdef, state.params), *sharding.feed((prompt_tokens, prompt_mask), mesh),
        jax.random.key(0), max_new_tokens=options.judge_max_new_tokens,
        decoding=rollouts.Decoding(temperature=0.0, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizers.pad_token_id(tokenizer)))
    texts = tokenizers.decode_completions(tokenizer, _host(out.completion_tokens))
    malformed = 0.0
    if options.judge_read == "parsed":  # one template: every row has the same labels
      values = np.array([formatter.judge_reward(t, yes) for t in texts], np.float32)
      parsed = values + np.array([formatter.judge_reward(t, no) for t in texts]) > 0
      malformed = float((~parsed & has_answer).sum())
      if has_answer.any() and not parsed[has_answer].any():
        # Nothing to learn from: every judged row would get reward 0 (in a round, no pair).
        raw = [t for t, ok in zip(texts, has_answer) if ok][:3]
        raise ValueError(
            f"the judge's verdict could not be parsed in any of the {int(has_answer.sum())} "
            f"judged rows (expected a last line {yes!r} or {no!r}); raw judge outputs: "
            f"{'; '.join(repr(t) for t in raw)}. Check rewards.judge_template and "
            "judge_max_new_tokens (the verdict must fit), and that the model was trained on "
            "this judge format.")
    else:
      working = [formatter.split_verdict(t)[0] for t in texts]
      malformed = float(sum(w.count("\n") < 2 for w, ok in zip(working, has_answer) if ok))
      tokens, mask, _ = encode_rows(tokenizer, prompts, working, max_length=options.max_length,
                                    bucket=options.bucket)
      # encode_rows appends EOS; the verdict is predicted at the last working token instead.
      last = mask.sum(axis=1) - 2
      logits = _last_logits(state.graphdef, state.params,
                            *sharding.feed((tokens, mask, last.astype(np.int32)), mesh))
      values = _host(judge_scores.yes_probability(logits, token_id(yes), token_id(no)))
    rewards = np.where(has_answer, np.asarray(values, np.float32), 0.0).astype(np.float32)
    return rewards, {"judged": float(has_answer.sum()), "truncated": truncated,
                     "malformed": malformed}

  return fn


@functools.partial(jax.jit, static_argnums=0)
def _last_logits(graphdef, params, tokens, attention_mask, index_B):
  """Logits [B, V] at position index_B of each row (the next-token prediction there)."""
  model = nnx.merge(graphdef, params)
  hidden, _ = model.hidden_states(tokens, attention_mask=attention_mask)
  h_BxD = jnp.take_along_axis(hidden, index_B[:, None, None], axis=1)[:, 0]
  return h_BxD.astype(jnp.float32) @ model.unembedding().astype(jnp.float32)


# ---- self-play win rates -------------------------------------------------------------------
def win_rate_term(options: RewardOptions, *, fmt: str, group_size: int):
  """Self-play SPO's reward (Swamy et al., arXiv 2401.04056, §3, the minimax winner): rollout
  i of a prompt gets r_i = mean_{j != i} P(y_i > y_j) over the other G - 1 samples of that
  prompt (`losses.win_rate_rewards`), with the hard comparator P = 1 win, 1/2 tie, 0 loss on a
  per-response key: "verifier" (right beats wrong; then r is affine in the verifier within a
  group) or "closeness" (1 / (1 + |answer - truth|), 0 without an answer: a graded preference
  that still reads no reward model). Rows are G consecutive samples per prompt (the sampler's
  layout).
  """
  from rewardjax.data import preference_data  # noqa: PLC0415
  from rewardjax.losses import self_rewarding  # noqa: PLC0415

  if options.preference not in PREFERENCES:
    raise ValueError(f"rewards.preference={options.preference!r}; valid: {PREFERENCES}")

  def key(text, answer):
    if options.preference == "verifier":
      return verifiers.math_verify(text, answer, fmt)
    return preference_data.closeness(preference_data.response_value(text, fmt), int(answer))

  def fn(scored: composition.Scored):
    n = len(scored.texts)
    if n % group_size:
      raise ValueError(f"win_rate: {n} rows are not groups of {group_size} samples")
    keys_PxG = np.array([key(t, it["answer"]) for t, it in zip(scored.texts, scored.items)],
                        np.float64).reshape(-1, group_size)
    diff = keys_PxG[:, :, None] - keys_PxG[:, None, :]
    prefs_PxGxG = np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))
    return _host(self_rewarding.win_rate_rewards(jnp.asarray(prefs_PxGxG, jnp.float32))).ravel()

  return fn


# ---- composition ---------------------------------------------------------------------------
def composition_from_options(options: RewardOptions, *, tokenizer, mesh, fmt: str,
                             group_size: int = 1) -> composition.Composition:
  """The weighted composition of `options.terms`, each source built once (`group_size`: the
  samples per prompt, G, which win_rate compares); the `HOST_SOURCES` terms are timed."""
  if options.timeout_seconds < 0:
    raise ValueError(f"rewards.timeout_seconds={options.timeout_seconds} is negative; it is "
                     "the seconds a host-scored term may take on one batch (0 = no limit)")
  builders = {
      "verifier": lambda: composition.verifier(fmt).fn,
      "reward_model": lambda: reward_model_term(options, tokenizer=tokenizer, mesh=mesh),
      "judge": lambda: judge_term(options, tokenizer=tokenizer, mesh=mesh, fmt=fmt),
      "sar": lambda: sar_term(options, tokenizer=tokenizer, mesh=mesh),
      "coherent": lambda: coherent_term(options, mesh=mesh),
      "endogenous": lambda: endogenous_term(options, mesh=mesh),
      "win_rate": lambda: win_rate_term(options, fmt=fmt, group_size=group_size),
      "format": lambda: lambda s: np.array([verifiers.format_reward(t, fmt) for t in s.texts],
                                           np.float32),
      "prm": lambda: process.prm_term(options, tokenizer=tokenizer, mesh=mesh),
      "implicit_prm": lambda: process.implicit_prm_term(options, mesh=mesh),
      "consistency": lambda: process.consistency_term(fmt),
  }
  uses_ref = {"coherent", "endogenous"} if options.endogenous_model == "reference" else {
      "coherent"}
  terms = []
  for name, weight in parse_terms(options.terms):
    term = composition.Term(name, builders[name](), weight, uses_ref=name in uses_ref)
    terms.append(composition.with_timeout(term, options.timeout_seconds)
                 if name in HOST_SOURCES else term)
  return composition.Composition(tuple(terms))
