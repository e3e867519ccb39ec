"""Built-in reward-model data beyond plain pairs: ties of equally good answers, prefix trees of
responses, and the policy-discrimination triplets of POLAR's pre-training.

All builders take `tasks.problems` records ("short" format) and are pure functions of
(items, seed): record i draws from `np.random.default_rng([seed, i, <builder tag>])`.
"""

from collections.abc import Sequence

import numpy as np

from rewardjax.data import tasks
from rewardjax.evaluation.reward_bench import correct_forms


def _short(it: dict) -> str:
  return f"{it['question']}="


def closeness(text: str, answer: int) -> float:
  """1 / (1 + |value − answer|) of a "short" response (0 when it is not an integer): the
  preference of an annotator who likes answers near the truth (`tasks.ranked_responses`).

  >>> closeness("14", 14), closeness("12", 14), closeness("x", 14)
  (1.0, 0.3333333333333333, 0.0)
  """
  try:
    return 1.0 / (1.0 + abs(int(text) - answer))
  except ValueError:
    return 0.0


def tie_pairs(items: Sequence[dict], *, seed: int = 0, tie_fraction: float = 0.5,
              wrong_tie_fraction: float = 0.0, pairs_per_question: int = 1) -> list[dict]:
  """SoliReward pairs with ties of equally right (or equally wrong) answers of one question.

  Item i gives `pairs_per_question` pairs, each drawn alone. With probability `tie_fraction` a
  tie (is_tie 1) of two Pass responses: half of them the paper's cross-prompt pairing (this
  question's answer against another
  question's; SoliReward, arXiv 2512.22170 §3.2), half two different correct forms of this
  question's answer ("14" and "014", `reward_bench.correct_forms`), the within-prompt ties
  RewardBench 2's Ties subset probes. A share `wrong_tie_fraction` of the ties are instead two
  equally wrong answers (v + d and v − d; beyond the paper, which never ties two Fails).
  Otherwise a win pair (is_tie 0): a correct answer in a random correct form against a wrong
  one (`tasks.wrong_answers`).

  Returns:
    dicts `{"prompt", "chosen", "rejected_prompt", "rejected", "is_tie", "answer"}`.

  >>> [(p["chosen"], p["rejected"], p["is_tie"]) for p in tie_pairs(
  ...     tasks.problems(3, difficulty=0), tie_fraction=1.0)]
  [('14', '12', 1), ('12', '012', 1), ('8', '14', 1)]
  """
  out = []
  for i, j in ((i, j) for i in range(len(items)) for j in range(pairs_per_question)):
    it = items[i]
    rng = np.random.default_rng([seed, i, 11, j])
    value = int(it["answer"])
    forms = correct_forms(value)
    pair = dict(prompt=_short(it), rejected_prompt=_short(it), answer=it["answer"])
    if rng.random() < tie_fraction:
      if rng.random() < wrong_tie_fraction:
        d = int(rng.integers(1, 4))
        out.append(dict(pair, chosen=str(value + d), rejected=str(value - d), is_tie=1))
      elif len(items) > 1 and rng.random() < 0.5:
        other = items[(i + 1 + int(rng.integers(len(items) - 1))) % len(items)]
        out.append(dict(pair, chosen=forms[0], rejected_prompt=_short(other),
                        rejected=other["answer"], is_tie=1))
      else:
        out.append(dict(pair, chosen=forms[0], rejected=forms[1 + int(rng.integers(3))],
                        is_tie=1))
    else:
      wrong = tasks.wrong_answers(value, 1, rng)[0]
      out.append(dict(pair, chosen=forms[int(rng.integers(4))], rejected=str(wrong), is_tie=0))
  return out


def _digit_variant(answer: str, keep: float, rng: np.random.Generator) -> str:
  """Each character of `answer` kept with probability `keep`, else a random other digit."""
  chars = []
  for ch in answer:
    if ch.isdigit() and rng.random() >= keep:
      ch = str((int(ch) + int(rng.integers(1, 10))) % 10)
    chars.append(ch)
  return "".join(chars)


def _preferred(a: str, b: str, value: int) -> tuple[str, str] | None:
  ca, cb = closeness(a, value), closeness(b, value)
  if ca == cb:
    return None
  return (a, b) if ca > cb else (b, a)


def tree_pairs(items: Sequence[dict], *, seed: int = 0,
               pairs_per_question: int = 8) -> list[dict]:
  """Preference pairs among the leaves of a prefix tree of responses (Qiu et al., "Reward
  Generalization in RLHF: A Topological Perspective", arXiv 2402.10184, Algorithm 1).

  Per question, a binary tree over the answer's characters: at depth t a node continues its
  prefix with the true character or with a random other digit (branching 2, depth = the
  answer's length), so root-to-leaf paths are complete responses that share prefixes. Pairs
  join leaves of the two subtrees of one internal node (they share the node's prefix and
  differ after it), labelled by the closeness annotator (`closeness`; equal closeness: no
  pair). `chain_pairs` is the same budget of pairs among independent responses.

  Returns:
    dicts `{"prompt", "chosen", "rejected", "answer"}`, `pairs_per_question` per question (fewer
    when the tree has fewer distinct labelled pairs).
  """
  return [p for i, it in enumerate(items) for p in _tree_pairs_of(
      it, np.random.default_rng([seed, i, 12]), pairs_per_question)]


def _tree_pairs_of(it: dict, rng: np.random.Generator, pairs_per_question: int) -> list[dict]:
  answer, value = it["answer"], int(it["answer"])
  leaves = [""]
  for ch in answer:
    nxt = []
    for prefix in leaves:
      nxt.append(prefix + ch)
      if ch.isdigit():  # a sign is never branched on
        nxt.append(prefix + str((int(ch) + int(rng.integers(1, 10))) % 10))
    leaves = nxt
  # Any two distinct leaves lie in the two subtrees of their deepest common node.
  candidates = [(j, k) for j in range(len(leaves)) for k in range(j + 1, len(leaves))]
  pairs = []
  for idx in rng.permutation(len(candidates)):
    j, k = candidates[idx]
    labelled = _preferred(leaves[j], leaves[k], value)
    if labelled is not None and len(pairs) < pairs_per_question:
      pairs.append(dict(prompt=_short(it), chosen=labelled[0], rejected=labelled[1],
                        answer=answer))
  return pairs


def chain_pairs(items: Sequence[dict], *, seed: int = 0, pairs_per_question: int = 8,
                keep: float = 0.5) -> list[dict]:
  """The chain baseline of `tree_pairs` (arXiv 2402.10184): as many pairs per question as
  `tree_pairs` makes, each between two independently sampled responses (every digit the true
  one with probability `keep`, else a random other digit), labelled by `closeness`."""
  out = []
  for i, it in enumerate(items):
    rng = np.random.default_rng([seed, i, 13])
    answer, value = it["answer"], int(it["answer"])
    budget = len(_tree_pairs_of(it, np.random.default_rng([seed, i, 12]), pairs_per_question))
    made, tries = 0, 0
    while made < budget and tries < 20 * pairs_per_question:
      tries += 1
      labelled = _preferred(_digit_variant(answer, keep, rng), _digit_variant(answer, keep, rng),
                            value)
      if labelled is not None:
        out.append(dict(prompt=_short(it), chosen=labelled[0], rejected=labelled[1],
                        answer=answer))
        made += 1
  return out


# POLAR's policy pool on the task: each "policy" answers with its characteristic error with
# probability 0.7 (else correctly); the solver is always right.
def _policy_answer(policy: str, it: dict, rng: np.random.Generator) -> str:
  value = int(it["answer"])
  if policy == "solver" or rng.random() >= 0.7:
    return str(value)
  if policy == "carry":
    slip = tasks.carry_slip(it["question"], value)
    return str(value + int(rng.choice([-10, 10])) if slip is None else slip)
  if policy == "off_by_one":
    return str(value + int(rng.choice([-1, 1])))
  if policy == "sign":
    return str(-value if value else 1)
  if policy == "digit":
    return _digit_variant(str(value), 0.0, rng) if abs(value) < 10 else _digit_variant(
        str(value), 0.5, rng)
  return f"{value}{int(rng.integers(10))}"  # "long": a digit appended


POLICIES = ("solver", "carry", "off_by_one", "sign", "digit", "long")


def policy_triplets(items: Sequence[dict], *, seed: int = 0) -> list[dict]:
  """POLAR pre-training triplets: reference and positive sampled from one policy, the negative
  from another (arXiv 2507.05197 §3.3); no correctness label is used.

  Returns:
    dicts `{"prompt", "reference", "positive", "negative", "answer"}` (POLAR's record fields).
  """
  out = []
  for i, it in enumerate(items):
    rng = np.random.default_rng([seed, i, 14])
    a, b = rng.choice(len(POLICIES), size=2, replace=False)
    out.append(dict(prompt=_short(it), reference=_policy_answer(POLICIES[a], it, rng),
                    positive=_policy_answer(POLICIES[a], it, rng),
                    negative=_policy_answer(POLICIES[b], it, rng), answer=it["answer"]))
  return out
