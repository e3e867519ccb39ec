"""Reward evaluation: the RewardBench-style benchmark and best-of-N, for any scorer.

A reward-model run, a DPO run (its implicit reward) or a language model (its endogenous reward)
is evaluated the same way (`rewardjax.evaluation.scorers`):

* the built-in benchmark (`reward_bench`): RewardBench 1 pair accuracy per subset, section and
  overall; RewardBench 2 best-of-4 per subset and its Ties score;
* best-of-N: N samples per held-out question from a fixed policy (the shipped model), the
  scorer's top sample checked by the verifier, against the mean accuracy of a single sample and
  the oracle pass@N (Nakano et al., WebGPT, arXiv 2112.09332 §4; Gao et al., arXiv 2210.10760).

The reward-model and DPO programs call `evaluate` in their held-out evaluation, so every
training run logs these figures and `launch/eval.py` prints their table.
"""

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from rewardjax.evaluation import accuracy, reward_bench
from rewardjax.evaluation.scorers import Scorer
from rewardjax.rewards import verifiers


@dataclasses.dataclass(frozen=True)
class RewardEvalOptions:
  """The config's `reward_eval` block.

  questions: held-out questions the benchmark is built from (0 = no benchmark).
  best_of_n: N samples per question reranked by the scorer (0 = no best-of-N).
  best_of_n_questions: held-out questions of best-of-N.
  policy: Hugging Face directory of the policy that samples best-of-N candidates ("" = the
    run's model.checkpoint); it must share the run's tokenizer.
  scorer: "" = the run's own reward (reward-model head, DPO implicit reward); "endogenous" =
    the endogenous reward of `policy` (training-free).
  temperature: sampling temperature of best-of-N.
  master_keys: held-out questions of the master-key probe of the policy as its own judge
    (`master_keys.evaluate`, arXiv 2507.08794), run by launch/eval.py (0 = off).
  """
  questions: int = 256
  best_of_n: int = 8
  best_of_n_questions: int = 256
  policy: str = ""
  scorer: str = ""
  temperature: float = 1.0
  master_keys: int = 0


SCORERS = ("", "endogenous")

# What `launch/eval.py` reports for a run of each algorithm (the message of a mismatched
# --config names the workdir's list).
EVALUATIONS = {
    "reward_model": "held-out pair accuracy, the RewardBench-style benchmark (RewardBench 1 "
                    "pairs, RewardBench 2 best-of-4, Ties) and best-of-N reranking "
                    "(configs/reward_model.py; a PRM: step accuracy, configs/prm.py)",
    "dpo": "preference accuracy, greedy task accuracy, and the benchmark and best-of-N on the "
           "implicit reward (configs/dpo.py)",
    "grpo": "greedy task accuracy; with recipe spark (or the shipped model's judge prompt): "
            "judge accuracy, self-reflection, best-of-N by the model's own judge and the "
            "master-key probe (configs/spark.py)",
    "ppo": "greedy task accuracy (configs/ppo.py)",
    "sft": "greedy task accuracy (configs/sft.py)",
}


def check_workdir_algorithm(saved_config: dict, algorithm: str, workdir: str) -> None:
  """Raises ValueError when `workdir`'s run (its checkpoint's saved config) trained another
  algorithm than `algorithm`, naming the evaluations that apply to it."""
  saved = saved_config.get("algorithm", "")
  if saved and saved != algorithm:
    raise ValueError(
        f"--workdir={workdir} holds a {saved!r} run, but --config is a {algorithm!r} config. "
        f"Evaluations that apply to a {saved} run: {EVALUATIONS.get(saved, 'task accuracy')}. "
        f"Pass the config the run was trained with.")


def unique_questions(items: Sequence[dict], n: int) -> list[dict]:
  """The first n items with distinct questions ("short" prompts rebuilt as "<question>=")."""
  out, seen = [], set()
  for it in items:
    if it["question"] not in seen and len(out) < n:
      seen.add(it["question"])
      out.append(dict(it, prompt=f"{it['question']}="))
  return out


def benchmark(scorer: Scorer, items: Sequence[dict], *, seed: int = 0) -> dict[str, float]:
  """`reward_bench.report` of `scorer` on the benchmark built from `items` (held-out
  questions)."""
  records = reward_bench.build(items, seed=seed)
  scores = reward_bench.score_records(records, lambda p, lists: scorer(
      p, lists, [r["answer"] for r in records]))
  return reward_bench.report(records, scores)


def sample_candidates(policy, tokenizer, items: Sequence[dict], rng: jax.Array, *, n: int,
                      sizes: accuracy.EvalSizes, temperature: float = 1.0) -> dict:
  """N samples per question from `policy` = (graphdef, params) and their verifier outcomes.

  Returns {"texts": [P][N] completions, "correct": [P, N] 0/1} ("short" format).
  """
  graphdef, params = policy
  texts = accuracy.generate_texts(graphdef, params, tokenizer, [it["prompt"] for it in items],
                                  rng, sizes=sizes, temperature=temperature, num_samples=n)
  lists = [texts[i * n:(i + 1) * n] for i in range(len(items))]
  correct = np.array([[verifiers.math_verify(t, it["answer"], "short") for t in xs]
                      for xs, it in zip(lists, items)], np.float64)
  return {"texts": lists, "correct": correct}


def best_of_n(scorer: Scorer, items: Sequence[dict], candidates: dict) -> dict[str, float]:
  """Best-of-N accuracy: the verifier on the scorer's top candidate per question (ties at the
  top share the credit, as RewardBench 2's best-of-4: mean correctness of the tied winners).

  Returns {"bon/accuracy", "bon/sample_accuracy" (one random sample), "bon/oracle" (pass@N),
  "bon/gain" (accuracy − sample_accuracy)}.
  """
  scores = scorer([it["prompt"] for it in items], candidates["texts"],
                  [it["answer"] for it in items])
  correct = candidates["correct"]
  picked = []
  for s, c in zip(scores, correct):
    winners = np.flatnonzero(s == s.max())
    picked.append(float(np.mean(c[winners])))
  accuracy_ = float(np.mean(picked))
  sample = float(correct.mean())
  return {"bon/accuracy": accuracy_, "bon/sample_accuracy": sample,
          "bon/oracle": float(correct.max(axis=1).mean()), "bon/gain": accuracy_ - sample}


def evaluate(scorer: Scorer, items: Sequence[dict], options: RewardEvalOptions, *,
             candidates: dict | None = None) -> dict[str, float]:
  """The benchmark on the first `options.questions` distinct held-out questions and, given
  `candidates` (`sample_candidates` on `options.best_of_n_questions` of them), best-of-N."""
  out = {}
  if options.questions:
    out.update(benchmark(scorer, unique_questions(items, options.questions)))
  if candidates is not None:
    bon_items = unique_questions(items, options.best_of_n_questions)
    out.update(best_of_n(scorer, bon_items, candidates))
  return out


def format_table(results: dict) -> str:
  """The benchmark table (`reward_bench.format_table`) with the ties score and best-of-N."""
  lines = [reward_bench.format_table(results)]
  if "ties/score" in results:
    lines.append(f"ties: ref accuracy {100 * results['ties/ref_accuracy']:.1f}, tied accuracy "
                 f"{100 * results['ties/tied_accuracy']:.1f}, correctness preferred "
                 f"{100 * results['ties/correctness_preferred']:.1f}")
  if "bon/accuracy" in results:
    lines.append(f"best-of-N: {100 * results['bon/accuracy']:.1f} (one sample "
                 f"{100 * results['bon/sample_accuracy']:.1f}, oracle "
                 f"{100 * results['bon/oracle']:.1f})")
  return "\n".join(lines)


def pair_accuracy(scorer: Scorer, pairs: Sequence[dict]) -> dict[str, float]:
  """Held-out pairwise accuracy r(chosen) > r(rejected) (a tie is wrong) and the mean margin."""
  scores = scorer([p["prompt"] for p in pairs], [[p["chosen"], p["rejected"]] for p in pairs],
                  [p["chosen"] for p in pairs])
  margins = np.array([s[0] - s[1] for s in scores])
  return {"pair_accuracy": float(np.mean(margins > 0)), "reward_margin": float(np.mean(margins))}


def program_evaluation(setup, make_scorer, problems: Sequence[dict], pairs: Sequence[dict] = ()):
  """A program's reward evaluation `(state, rng) -> dict` ({} when `setup.reward_eval` is off).

  `make_scorer(state) -> Scorer` is the run's own reward (a reward-model head, a DPO implicit
  reward); `reward_eval.scorer="endogenous"` replaces it with the policy's endogenous reward,
  which then also scores the held-out `pairs` ("pair_accuracy", "reward_margin").
  The best-of-N policy is loaded, and its candidates sampled (fixed key, so every evaluation
  and every run with the same policy and seed reranks the same samples), on first use.
  """
  from rewardjax.evaluation import scorers  # noqa: PLC0415 (imports the reward-model tables)
  from rewardjax.models import hf  # noqa: PLC0415
  from rewardjax.rewards import sources  # noqa: PLC0415

  options = setup.reward_eval
  if options is None or not problems or not (options.questions or options.best_of_n):
    return lambda state, rng: {}
  if options.scorer not in SCORERS:
    raise ValueError(f"reward_eval.scorer={options.scorer!r}; valid: {SCORERS} ('' = the "
                     "run's own reward)")
  if options.scorer == "endogenous" and not options.policy:
    raise ValueError("reward_eval.scorer='endogenous' scores with a language model: set "
                     "--config.model.checkpoint or --config.reward_eval.policy to its directory")
  cache = {}

  def policy():
    if "policy" not in cache:
      cache["policy"] = sources.place(hf.from_pretrained(options.policy), setup.mesh)
    return cache["policy"]

  def candidates():
    if not (options.best_of_n and options.policy):
      return None
    if "candidates" not in cache:
      d = setup.data
      cache["candidates"] = sample_candidates(
          policy(), setup.tokenizer, unique_questions(problems, options.best_of_n_questions),
          jax.random.key(setup.seed + 7), n=options.best_of_n, temperature=options.temperature,
          sizes=accuracy.EvalSizes(max_new_tokens=setup.sampling.max_new_tokens,
                                   batch_size=setup.eval_batch_size, bucket=d.bucket,
                                   max_prompt_length=d.max_prompt_length))
    return cache["candidates"]

  def run(state, rng):
    del rng
    out = {}
    if options.scorer == "endogenous":
      scorer = scorers.endogenous(*policy(), setup)
      if pairs:
        out.update(pair_accuracy(scorer, pairs))
    else:
      scorer = make_scorer(state)
    return {**out, **evaluate(scorer, problems, options, candidates=candidates())}

  return run
