"""Majority votes over a prompt's group of answers, and agreement rewards against a vote.

The label-free rewards of Co-Reward (arXiv 2508.00410, Eq. 7-8) and of test-time RL's
self-majority baseline (TTRL, arXiv 2504.16084): a group's pseudo-label is the most frequent
extracted answer of its G rollouts, and a rollout is rewarded 1 when its answer equals the
pseudo-label the recipe routes to it (its own group's, its analogical partner's, or a teacher's).

Exactly as the official reward managers (tmlr-group/Co-Reward
`coreward/verl/workers/reward_manager/co_reward.py::majority_vote`, and tmlr-group/Co-rewarding
`Co-rewarding-II/verl/workers/reward_manager/co_rewarding_II.py`):

* answers are compared as exact strings (no numeric equivalence: "07" != "7");
* empty answers (no extractable answer) never vote; a group without any vote has the empty
  pseudo-label "", which rewards nobody;
* ties go to the answer seen first in the group (`collections.Counter.most_common` keeps
  insertion order among equal counts).

Pure numpy and python; rows are G consecutive samples per prompt (the sampler's layout).
"""

from collections import Counter
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float, Int

from rewardjax.rewards import verifiers


def extract_answers(texts: Sequence[str], fmt: str) -> list[str]:
  """The extracted answer of each completion, "" where none (`verifiers.extract_answer`).

  >>> extract_answers(["19\\nok", "", "\\\\boxed{3}"], "short")
  ['19', '', '\\\\boxed{3}']
  """
  return [verifiers.extract_answer(t, fmt) or "" for t in texts]


def majority_vote(answers: Sequence[str]) -> str:
  """The most frequent non-empty answer; ties to the first seen; "" when none is non-empty.

  v = argmax_a #{i : ans_i = a, a != ""} (first-seen among equal counts).

  >>> majority_vote(["18", "19", "19", "18"]), majority_vote(["", " ", ""])
  ('18', '')
  """
  votes = [a for a in answers if a is not None and str(a).strip() != ""]
  if not votes:
    return ""
  return Counter(votes).most_common(1)[0][0]


def group_votes(answers: Sequence[str], group_size: int) -> list[str]:
  """Per-prompt majority votes [P] of B = P * G answers in groups of G consecutive rows.

  >>> group_votes(["1", "2", "2", "", "", ""], 3)
  ['2', '']
  """
  if group_size < 1 or len(answers) % group_size:
    raise ValueError(f"{len(answers)} answers are not groups of {group_size}")
  return [majority_vote(answers[p:p + group_size]) for p in range(0, len(answers), group_size)]


def agreement_rewards(answers: Sequence[str], labels: Sequence[str],
                      group_size: int) -> Float[np.ndarray, " B"]:
  """r_i = 1[ans_i = v_p(i) and v_p(i) != ""]: agreement of each rollout with its prompt's
  pseudo-label.

  Args:
    answers: B = P * G extracted answers, G consecutive rows per prompt.
    labels: P pseudo-labels, one per prompt ("" = none).
    group_size: G.

  Returns:
    float32 [B] rewards in {0, 1}.

  References:
    Co-Reward, arXiv 2508.00410, Eq. 8 (official `co_reward.py`: `ans == pseudo_label and
    pseudo_label != ''`).

  >>> agreement_rewards(["5", "6", "", "6"], ["6", ""], 2).tolist()
  [0.0, 1.0, 0.0, 0.0]
  """
  if len(answers) != len(labels) * group_size:
    raise ValueError(f"{len(answers)} answers but {len(labels)} labels x G={group_size}")
  rows = np.repeat(np.arange(len(labels)), group_size)
  return np.array([float(labels[p] != "" and a == labels[p]) for a, p in zip(answers, rows)],
                  np.float32)


def partner_index(num_prompts: int) -> Int[np.ndarray, " P"]:
  """The analogical partner of each prompt when pairs are adjacent (x, x', x, x' ...):
  [1, 0, 3, 2, ...].

  >>> partner_index(4).tolist()
  [1, 0, 3, 2]
  """
  if num_prompts % 2:
    raise ValueError(f"{num_prompts} prompts are not (question, rewrite) pairs")
  return np.arange(num_prompts) ^ 1


def vote_accuracy(labels: Sequence[str], truths: Sequence[str]) -> float:
  """Share of pseudo-labels equal to the true answers (a diagnostic; never a reward).

  >>> vote_accuracy(["19", "", "7"], ["19", "3", "8"])
  0.3333333333333333
  """
  return float(np.mean([v != "" and v == str(t) for v, t in zip(labels, truths)]))
