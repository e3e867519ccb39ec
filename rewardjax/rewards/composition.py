"""A reward is a weighted sum of named terms, each computed on a batch of finished rollouts.

A term is `fn(rollouts: Scored) -> [B] float` (or `StepRewards`, a process term's reward per
step) with a name and a weight; `Composition.score`
adds them up and reports each term's batch mean on its own (`reward/<name>`). Terms see the
items (prompt records), the decoded completions and the rollout arrays, and the train state,
so a term can be a verifier (texts only) or, later, a model: a trained reward model, the policy
as a judge, or log-prob rewards read from `state.params` / `state.ref_params` with a jitted
forward on the mesh. The trainer never changes when a term is added.
"""

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rewardjax.rewards import verifiers


@dataclasses.dataclass(frozen=True)
class Scored:
  """What a reward term sees of one batch of rollouts (B = P prompts x G samples).

  items: [B] prompt records (each prompt's record repeated G times).
  texts: [B] decoded completions.
  arrays: host arrays of the rollouts: tokens [B, S+T], prompt_mask [B, S],
    completion_mask [B, T], lengths [B], model_logprobs [B, T].
  state: the current TrainState (params, ref_params) for model-computed rewards.
  """
  items: Sequence[dict]
  texts: Sequence[str]
  arrays: dict
  state: Any = None


@dataclasses.dataclass(frozen=True)
class StepRewards:
  """What a process term returns: rewards [B, K] of the rollouts' steps and their mask [B, K]
  (the steps of `rewards.process.step_layout`, K = T)."""
  values: np.ndarray
  mask: np.ndarray


@dataclasses.dataclass(frozen=True)
class Term:
  """One reward source: `fn(scored) -> [B]` or `([B], {metric: float})`, weighted.

  uses_ref: the term reads `state.ref_params` (the frozen starting policy), so the state must
    carry one even when the objective has no KL term.
  """
  name: str
  fn: Callable[[Scored], Any]
  weight: float = 1.0
  uses_ref: bool = False


@dataclasses.dataclass(frozen=True)
class Composition:
  """reward = sum_k weight_k * term_k(rollouts)."""
  terms: tuple[Term, ...]

  @property
  def uses_reference(self) -> bool:
    return any(term.uses_ref for term in self.terms)

  def score(self, scored: Scored) -> tuple[np.ndarray, dict[str, float]]:
    """(rewards [B] float32, {"reward/<name>": batch mean of the unweighted term, and
    "reward/<name>/<metric>": the term's own metrics}); a process term counts with the sum of
    its step rewards."""
    outcome, step_rewards, metrics = self.score_steps(scored)
    return outcome if step_rewards is None else outcome + step_rewards.sum(axis=1), metrics

  def score_steps(self, scored: Scored) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(outcome rewards [B], step rewards [B, K] or None when no term is a process term,
    metrics): each term weighted; a term's metric is its unweighted batch mean (a process
    term's: the mean over rollouts of its summed step rewards)."""
    total = np.zeros(len(scored.texts), np.float32)
    steps, metrics = None, {}
    for term in self.terms:
      values = term.fn(scored)
      if isinstance(values, tuple):
        values, term_metrics = values
        metrics.update({f"reward/{term.name}/{k}": v for k, v in term_metrics.items()})
      if isinstance(values, StepRewards):
        step_values = np.asarray(values.values, np.float32) * (values.mask > 0)
        if step_values.shape[0] != total.shape[0]:
          raise ValueError(f"reward term {term.name!r} returned step rewards for "
                           f"{step_values.shape[0]} rollouts, expected {total.shape[0]}")
        steps = term.weight * step_values + (0.0 if steps is None else steps)
        values = step_values.sum(axis=1)
      else:
        values = np.asarray(values, np.float32)
        if values.shape != total.shape:
          raise ValueError(f"reward term {term.name!r} returned shape {values.shape}, expected "
                           f"{total.shape} (one reward per rollout)")
        total = total + term.weight * values
      metrics[f"reward/{term.name}"] = float(np.nanmean(values)) if len(values) else 0.0
    return total, steps, metrics


def verifier(fmt: str) -> Term:
  """1 if a completion's answer equals its item's "answer", else 0 (`verifiers.math_verify`)."""
  return Term("verifier", lambda s: verifiers.verify_batch(
      s.texts, [it["answer"] for it in s.items], fmt))
