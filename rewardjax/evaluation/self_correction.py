"""Intrinsic self-correction: greedy first and second attempts on held-out problems.

The metrics of SCoRe (arXiv 2409.12917 §3, §6): Accuracy@t1 and Accuracy@t2 (greedy), their
difference Δ(t1, t2), Δ(i→c) the share of problems wrong at attempt 1 and right at attempt 2,
and Δ(c→i) the share right at attempt 1 and wrong at attempt 2 (Δ(t1, t2) = Δ(i→c) − Δ(c→i)).
The second prompt is `rewardjax.turns.revise_prompt` of the first attempt (no feedback).
"""

from collections.abc import Sequence

import jax
import numpy as np

from rewardjax import turns
from rewardjax.evaluation import accuracy
from rewardjax.rewards import verifiers


def transitions(correct1: np.ndarray, correct2: np.ndarray) -> dict[str, float]:
  """Self-correction metrics of per-problem 0/1 outcomes [P] of two attempts.

    accuracy_t1 = mean c1, accuracy_t2 = mean c2, delta_t1_t2 = mean (c2 - c1),
    delta_i_to_c = mean (1 - c1) c2, delta_c_to_i = mean c1 (1 - c2)

  References:
    SCoRe, arXiv 2409.12917 §3 (metrics), Table 2.

  >>> out = transitions(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 1]))
  >>> out["delta_t1_t2"], out["delta_i_to_c"], out["delta_c_to_i"]
  (0.25, 0.5, 0.25)
  """
  c1, c2 = np.asarray(correct1) > 0.5, np.asarray(correct2) > 0.5
  if c1.shape != c2.shape or c1.ndim != 1:
    raise ValueError(f"outcomes {c1.shape} and {c2.shape} must both be [P]")
  return {"accuracy_t1": float(c1.mean()), "accuracy_t2": float(c2.mean()),
          "delta_t1_t2": float(c2.mean() - c1.mean()),
          "delta_i_to_c": float((~c1 & c2).mean()), "delta_c_to_i": float((c1 & ~c2).mean())}


def two_attempt_accuracy(graphdef, params, tokenizer, items: Sequence[dict], rng: jax.Array, *,
                         fmt: str, revise: str, sizes: accuracy.EvalSizes) -> dict[str, float]:
  """Greedy attempt 1 at each item's prompt, greedy attempt 2 at revise(x1, y1), verified.

  Args:
    graphdef, params: the model (`nnx.split`).
    tokenizer: its tokenizer.
    items: P held-out records {"prompt", "answer", "question"}.
    rng: unused by greedy decoding; kept for the evaluation contract.
    fmt: the answer format ("short" | "boxed").
    revise: a `turns.REVISE_PROMPTS` name.
    sizes: the generation shapes (`accuracy.EvalSizes`).

  Returns:
    {"accuracy" (= accuracy_t1, the plain greedy accuracy), "completion_length" (attempt 1,
    characters), and the `transitions` metrics}.
  """
  texts1 = accuracy.generate_texts(graphdef, params, tokenizer, [it["prompt"] for it in items],
                                   rng, sizes=sizes)
  answers = [it["answer"] for it in items]
  correct1 = verifiers.verify_batch(texts1, answers, fmt)
  second = turns.second_items(items, texts1, revise=revise, fmt=fmt)
  texts2 = accuracy.generate_texts(graphdef, params, tokenizer, [it["prompt"] for it in second],
                                   jax.random.fold_in(rng, 1), sizes=sizes)
  correct2 = verifiers.verify_batch(texts2, answers, fmt)
  return {"accuracy": float(np.mean(correct1)),
          "completion_length": float(np.mean([len(t) for t in texts1])),
          **transitions(correct1, correct2)}
