"""Evaluating a model that judges itself: judge accuracy, reflection, self-reflection, best-of-N.

All prompts come from a `formatter` (`rewardjax.recipes.spark.Formatter`): `question(item)`,
`pointwise(question, answer, i) -> (prompt, yes, no)`, `pairwise(question, a, b, i)`,
`reflection(kind, question, content, i)`, `target(label)`, `split_verdict(text)`,
`judge_reward(text, label)` and `fmt`. A judge completion is working then a verdict; only the
verdict is scored. Every generation goes through `accuracy.generate_texts` in fixed-size
batches of fixed `accuracy.EvalSizes` (greedy unless stated), so repeated evaluations reuse
the compiled programs.

  self_judging_eval  one call: held-out rollouts -> every metric below
  heldout_judge_items balanced pointwise / pairwise judge items and reflection items
  self_reflect       test-time answer -> self-judge -> revise loop (SPARK, arXiv 2509.22624)
  best_of_n          pick one of N samples by the model's own P(yes) on the pointwise prompt
"""

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from rewardjax import rollouts, sharding
from rewardjax.data import tokenizers
from rewardjax.evaluation import accuracy
from rewardjax.rewards import verifiers


@dataclasses.dataclass(frozen=True)
class SelfJudging:
  """What `self_judging_eval` runs, besides the generation sizes.

  Attributes:
    num_samples: K temperature-1 answers per held-out problem (judge items and best-of-N).
    max_round: rounds of the test-time self-reflection loop (`self_reflect`).
    judge_index: pointwise template judging an answer (self-reflection and best-of-N).
    revise_index: answer-reflection template re-answering a rejected answer.
  """
  num_samples: int
  max_round: int
  judge_index: int
  revise_index: int


def _answer(text: str, fmt: str) -> str:
  """The extracted answer, or the stripped text when none can be extracted."""
  answer = verifiers.extract_answer(text, fmt)
  return text.strip() if answer is None else answer


def heldout_judge_items(items: Sequence[dict], texts: Sequence[str], *, num_samples: int,
                        formatter) -> dict[str, list[dict]]:
  """Labelled judge and reflection prompts from K sampled answers per held-out problem.

  For problem i, c_i = its first correct sample and w_i its first wrong sample with an
  extracted answer. Pointwise: the first n problems having a c_i and the first n having a w_i,
  n = min of the two counts, so labels are exactly balanced. Pairwise: every problem with both,
  c_i in slot A for even positions and B for odd ones. Reflection: every w_i, CoT (full text)
  and answer reflection alternating. Templates cycle through each table.

  Args:
    items: P held-out task records.
    texts: P * K sampled completions, problem-major.
    num_samples: K.
    formatter: renders the prompts.

  Returns:
    {"pointwise", "pairwise", "reflection"}: lists of {"prompt", "answer"} items.
  """
  if len(texts) != len(items) * num_samples:
    raise ValueError(f"{len(texts)} texts for {len(items)} items x {num_samples} samples")
  t, fmt = formatter.templates, formatter.fmt
  right, wrong = [], []
  for i, item in enumerate(items):
    group = texts[i * num_samples:(i + 1) * num_samples]
    ok = [verifiers.math_verify(x, item["answer"], fmt) > 0.5 for x in group]
    answered = [verifiers.extract_answer(x, fmt) is not None for x in group]
    right.append(next((x for x, c in zip(group, ok) if c), None))
    wrong.append(next((x for x, c, a in zip(group, ok, answered) if not c and a), None))
  n = min(sum(x is not None for x in right), sum(x is not None for x in wrong))
  shown = ([(i, right[i], True) for i in range(len(items)) if right[i] is not None][:n]
           + [(i, wrong[i], False) for i in range(len(items)) if wrong[i] is not None][:n])
  pointwise = []
  for j, (i, text, correct) in enumerate(shown):
    prompt, yes, no = formatter.pointwise(formatter.question(items[i]), _answer(text, fmt),
                                          j % len(t.pointwise))
    pointwise.append({"prompt": prompt, "answer": yes if correct else no})
  both = [i for i in range(len(items)) if right[i] is not None and wrong[i] is not None]
  pairwise = []
  for j, i in enumerate(both):
    good, bad = _answer(right[i], fmt), _answer(wrong[i], fmt)
    pairwise.append({"prompt": formatter.pairwise(formatter.question(items[i]),
                                                  *((good, bad) if j % 2 == 0 else (bad, good)),
                                                  j % len(t.pairwise)),
                     "answer": "AB"[j % 2]})
  reflection = []
  for j, i in enumerate(i for i in range(len(items)) if wrong[i] is not None):
    kind = ("cot_reflection", "answer_reflection")[j % 2]
    content = wrong[i] if kind == "cot_reflection" else _answer(wrong[i], fmt)
    reflection.append({"prompt": formatter.reflection(kind, formatter.question(items[i]),
                                                      content, j % len(t.cot_reflection)),
                       "answer": items[i]["answer"]})
  return {"pointwise": pointwise, "pairwise": pairwise, "reflection": reflection}


def completion_logprobs(graphdef, params, tokenizer, prompts: Sequence[str],
                        completions: Sequence[str], *, batch_size: int, bucket: int = 16,
                        max_prompt_length: int | None = None) -> np.ndarray:
  """Teacher-forced log p(completion | prompt) = sum_t log p(y_t | x, y_<t), float64 [n].

  Completions are scored without an EOS; batches are padded to `batch_size` rows (copies of
  the first row) so every call has one shape per prompt bucket.
  """
  out = []
  for start in range(0, len(prompts), batch_size):
    rows = list(zip(prompts, completions))[start:start + batch_size]
    real = len(rows)
    rows += [rows[0]] * (batch_size - real)
    prompt_BxS, prompt_mask_BxS = tokenizers.encode_prompts(
        tokenizer, [p for p, _ in rows], bucket=bucket, max_length=max_prompt_length)
    completion_BxT, completion_mask_BxT = tokenizers.encode_completions(
        tokenizer, [c for _, c in rows], bucket=bucket, append_eos=False)
    logps_BxT = rollouts.token_logprobs(
        (graphdef, params), *sharding.feed((np.concatenate([prompt_BxS, completion_BxT], 1),
                                            np.concatenate([prompt_mask_BxS, completion_mask_BxT],
                                                           1))),
        prompt_BxS.shape[1])
    out.append(sharding.gather(logps_BxT).astype(np.float64).sum(axis=1)[:real])
  return np.concatenate(out)


def self_reflect(graphdef, params, tokenizer, items: Sequence[dict], rng: jax.Array, *,
                 formatter, max_round: int, judge_index: int, revise_index: int,
                 **generate_kwargs) -> dict[str, float]:
  """Test-time self-reflection (SPARK, arXiv 2509.22624; official code InternLM/Spark
  `evaluation_tts.py`): answer, self-judge, revise, up to max_round times.

  Greedy throughout. Round r (1..max_round): every still-open answer is judged with pointwise
  template `judge_index`; a "yes" verdict closes it, any other verdict replaces it with the
  answer to answer-reflection template `revise_index` ("this answer is incorrect, solve
  again"). The answer revised in the last round is kept without a further judgement.
  `generate_kwargs` go to `accuracy.generate_texts` (at least `sizes`, an `EvalSizes`).

  Returns:
    {"self_reflection_accuracy", "self_reflection_base_accuracy" (round 0, plain greedy),
    "self_reflection_gain" (their difference), "self_reflection_revised" (share revised)}.
  """
  fmt = formatter.fmt
  generate = lambda prompts, k: accuracy.generate_texts(
      graphdef, params, tokenizer, prompts, jax.random.fold_in(rng, k), **generate_kwargs)
  current = generate([it["prompt"] for it in items], 0)
  base = verifiers.verify_batch(current, [it["answer"] for it in items], fmt)
  questions = [formatter.question(it) for it in items]
  open_ = np.ones(len(items), bool)
  revised = np.zeros(len(items), bool)
  for round_index in range(1, max_round + 1):
    idx = np.flatnonzero(open_)
    if not idx.size:
      break
    judged = [formatter.pointwise(questions[i], _answer(current[i], fmt), judge_index)
              for i in idx]
    verdicts = generate([p for p, _, _ in judged], 2 * round_index - 1)
    says_yes = np.array([formatter.judge_reward(v, yes) > 0.5
                         for v, (_, yes, _) in zip(verdicts, judged)], bool)
    open_[idx[says_yes]] = False
    redo = idx[~says_yes]
    if not redo.size:
      break
    new = generate([formatter.reflection("answer_reflection", questions[i],
                                         _answer(current[i], fmt), revise_index)
                    for i in redo], 2 * round_index)
    for i, text in zip(redo.tolist(), new):
      current[i] = text
    revised[redo] = True
  final = verifiers.verify_batch(current, [it["answer"] for it in items], fmt)
  return {"self_reflection_accuracy": float(final.mean()),
          "self_reflection_base_accuracy": float(base.mean()),
          "self_reflection_gain": float(final.mean() - base.mean()),
          "self_reflection_revised": float(revised.mean())}


def best_of_n(graphdef, params, tokenizer, items: Sequence[dict], texts: Sequence[str], *,
              num_samples: int, formatter, judge_index: int,
              sizes: accuracy.EvalSizes) -> dict[str, float]:
  """Best-of-N by self-judgement: keep the sample whose "yes" verdict is most likely.

  score_ik = log p(target(yes) | pointwise(question_i, answer_ik, judge_index), w_ik), with
  w_ik the judge's own greedy working (its completion up to the verdict), so the score is the
  probability of "yes" where the judge would state its verdict. The first maximiser wins ties.

  Returns:
    {"best_of_n_accuracy", "sample_accuracy" (mean over all N samples: a random pick)}.
  """
  fmt, k = formatter.fmt, num_samples
  prompts, targets = [], []
  for j, text in enumerate(texts):
    prompt, yes, _ = formatter.pointwise(formatter.question(items[j // k]), _answer(text, fmt),
                                         judge_index)
    prompts.append(prompt)
    targets.append(formatter.target(yes))
  verdicts = accuracy.generate_texts(graphdef, params, tokenizer, prompts, jax.random.key(0),
                                     sizes=sizes)
  working = [p + formatter.split_verdict(v)[0] for p, v in zip(prompts, verdicts)]
  scores_PxK = completion_logprobs(graphdef, params, tokenizer, working, targets,
                                   batch_size=sizes.batch_size, bucket=sizes.bucket,
                                   max_prompt_length=sizes.max_prompt_length).reshape(-1, k)
  correct_PxK = verifiers.verify_batch(
      texts, [it["answer"] for it in items for _ in range(k)], fmt).reshape(-1, k)
  picked_P = np.argmax(scores_PxK, axis=1)
  return {"best_of_n_accuracy": float(correct_PxK[np.arange(len(items)), picked_P].mean()),
          "sample_accuracy": float(correct_PxK.mean())}


def self_judging_eval(graphdef, params, tokenizer, items: Sequence[dict], *, formatter,
                      seed: int, protocol: SelfJudging, sizes: accuracy.EvalSizes) -> dict:
  """Every self-judging metric on held-out `items`, from one fixed-seed set of rollouts.

  K = protocol.num_samples answers per problem at temperature 1 (key `seed`) feed the judge
  items (`heldout_judge_items`) and best-of-N; judgements, reflections and the self-reflection
  loop (`protocol.max_round` rounds) are greedy. judge_accuracy is the verifier's mean over
  pointwise and pairwise items together. Every generation has the shapes `sizes`.

  Returns:
    A flat dict of floats: judge_accuracy, judge_pointwise_accuracy, judge_pairwise_accuracy,
    judge_items, reflection_fix_rate, the `self_reflect` and `best_of_n` metrics.
  """
  rng = jax.random.key(seed)
  num_samples, judge_index = protocol.num_samples, protocol.judge_index
  texts = accuracy.generate_texts(graphdef, params, tokenizer, [it["prompt"] for it in items],
                                  jax.random.fold_in(rng, 0), temperature=1.0,
                                  num_samples=num_samples, sizes=sizes)
  sets = heldout_judge_items(items, texts, num_samples=num_samples, formatter=formatter)
  out = {}
  scored = {}
  for name, judged in sets.items():
    if judged:
      texts_j = accuracy.generate_texts(graphdef, params, tokenizer,
                                        [it["prompt"] for it in judged],
                                        jax.random.fold_in(rng, 1), sizes=sizes)
      if name == "reflection":
        scored[name] = verifiers.verify_batch(texts_j, [it["answer"] for it in judged],
                                              formatter.fmt)
      else:
        scored[name] = np.array([formatter.judge_reward(x, it["answer"])
                                 for x, it in zip(texts_j, judged)])
  judge = [scored[n] for n in ("pointwise", "pairwise") if n in scored]
  out["judge_accuracy"] = float(np.concatenate(judge).mean()) if judge else float("nan")
  out["judge_items"] = float(sum(len(x) for x in judge))
  for name, key in (("pointwise", "judge_pointwise_accuracy"),
                    ("pairwise", "judge_pairwise_accuracy"),
                    ("reflection", "reflection_fix_rate")):
    out[key] = float(scored[name].mean()) if name in scored else float("nan")
  out.update(self_reflect(graphdef, params, tokenizer, items, jax.random.fold_in(rng, 2),
                          formatter=formatter, max_round=protocol.max_round,
                          judge_index=judge_index, revise_index=protocol.revise_index,
                          sizes=sizes))
  out.update(best_of_n(graphdef, params, tokenizer, items, texts, num_samples=num_samples,
                       formatter=formatter, judge_index=judge_index, sizes=sizes))
  return out
