"""A reward is a weighted sum of named terms, each computed on a batch of finished rollouts.

A term is `fn(rollouts: Scored) -> [B] float` (or `StepRewards`, a process term's reward per
step) with a name and a weight; `Composition.score`
adds them up and reports each term's batch mean on its own (`reward/<name>`). Terms see the
items (prompt records), the decoded completions and the rollout arrays, and the train state,
so a term can be a verifier (texts only) or, later, a model: a trained reward model, the policy
as a judge, or log-prob rewards read from `state.params` / `state.ref_params` with a jitted
forward on the mesh. The trainer never changes when a term is added.

`with_timeout` bounds a term's time on one batch: a term that hangs (a pathological completion
in a slow parser) stops training with a `RewardTimeoutError` naming the completion, instead of
stalling it silently.
"""

import dataclasses
import signal
import threading
import time
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


# ---- a time limit per batch ----------------------------------------------------------------
class RewardTimeoutError(RuntimeError):
  """A reward term took longer than its time limit to score one batch (`with_timeout`).

  Attributes: term (its name), limit and elapsed (seconds), index (the slowest completion's row,
  or None), completion (its text, or None).
  """

  def __init__(self, message: str, *, term: str, limit: float, elapsed: float,
               index: int | None, completion: str | None):
    super().__init__(message)
    self.term, self.limit, self.elapsed = term, limit, elapsed
    self.index, self.completion = index, completion


class _Expired(BaseException):
  """Raised by the alarm inside the timed call; a BaseException so that a term's own
  `except Exception` cannot swallow it."""


def _on_alarm(signum, frame):
  raise _Expired


def _can_interrupt() -> bool:
  """SIGALRM can stop a call here: a Unix main thread with no ITIMER_REAL already pending (an
  outer timer, such as pytest-timeout's, is left alone)."""
  return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
          and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0)


def _run(fn: Callable, arg, seconds: float) -> tuple[Any, float, bool]:
  """(fn(arg), seconds it took, whether the alarm stopped it) with at most `seconds` allowed.

  Where SIGALRM cannot be used the call runs to the end and is only measured. A signal handler
  runs between bytecodes, so one long C call (a huge int power) is stopped when it returns.
  """
  start = time.perf_counter()
  if not _can_interrupt():
    return fn(arg), time.perf_counter() - start, False
  previous = signal.signal(signal.SIGALRM, _on_alarm)
  try:
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
      result, expired = fn(arg), False
    finally:
      signal.setitimer(signal.ITIMER_REAL, 0)
  except _Expired:  # one-shot timer: it cannot fire again once here
    result, expired = None, True
  finally:
    # None: a handler not installed from Python; the default is the nearest we can restore.
    signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
  return result, time.perf_counter() - start, expired


def _slowest_completion(fn: Callable, scored: Scored,
                        budget: float) -> tuple[int | None, float, int, float]:
  """(row, seconds, rows tried, blank seconds): the completion `fn` takes longest on, the rows
  tried in order within `budget` seconds for all (row None if none could be timed).

  Each completion is timed alone: the batch with every other completion blanked to "", so a
  term that needs the batch's shape (win_rate's groups of G) still sees it. The all-blank batch
  runs first, with its own `budget`: it pays any one-off cost (a first jitted call compiles)
  that would otherwise be blamed on row 0, and its time says whether any completion matters.
  """
  def blanked(i):
    return dataclasses.replace(scored, texts=[t if j == i else "" for j, t in
                                              enumerate(scored.texts)])

  try:
    _, blank_seconds, _ = _run(fn, blanked(-1), budget)
  except Exception:  # a term may reject blanked rows; the time limit is the error to report
    blank_seconds = 0.0
  deadline = time.perf_counter() + budget
  slowest, slowest_seconds, tried = None, 0.0, 0
  for i in range(len(scored.texts)):
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
      break
    tried = i + 1
    try:
      _, seconds, _ = _run(fn, blanked(i), remaining)
    except Exception:
      continue
    if slowest is None or seconds > slowest_seconds:
      slowest, slowest_seconds = i, seconds
  return slowest, slowest_seconds, tried, blank_seconds


def _preview(text: str, width: int = 200) -> str:
  """repr of `text`, its middle cut to keep `width` characters (the end holds the answer)."""
  if len(text) <= width:
    return repr(text)
  return f"{text[:width // 2]!r} ... {text[-width // 2:]!r}"


def with_timeout(term: Term, seconds: float) -> Term:
  """`term`, raising `RewardTimeoutError` when it takes more than `seconds` on one batch.

  In a Unix main thread the call is interrupted at the limit (SIGALRM via `setitimer`, the
  previous handler restored); elsewhere it is measured when it returns. Past the limit, each
  completion of the batch is timed alone (for at most twice `seconds` more) and the error names
  the term, the limit, the time taken and the slowest completion, cut to 200 characters.

  Args:
    term: any term; its fn's result passes through unchanged.
    seconds: the limit for one batch; 0 (or less) returns `term` itself: no limit.

  Returns:
    The term with a timed fn (same name, weight and uses_ref).
  """
  if seconds <= 0:
    return term

  def timed(scored: Scored):
    result, elapsed, expired = _run(term.fn, scored, seconds)
    if not expired and elapsed <= seconds:
      return result
    took = f"was stopped after {elapsed:.3g} s" if expired else f"took {elapsed:.3g} s"
    index, alone, tried, blank = _slowest_completion(term.fn, scored, seconds)
    completion, detail = None, ""
    if blank >= seconds:
      detail = (f" With every completion blanked to \"\" it took {blank:.3g} s as well: the time "
                "is not spent on a completion.")
    elif index is not None:
      completion = scored.texts[index]
      # Rows after `tried` were not timed: timing them would have taken longer than the limit.
      of = "" if tried == len(scored.texts) else f" of rows 0-{tried - 1}"
      detail = (f" The slowest completion{of} is row {index} ({alone:.3g} s alone, "
                f"{len(completion):,} characters): {_preview(completion)}.")
    raise RewardTimeoutError(
        f"reward term {term.name!r} {took} on a batch of {len(scored.texts)} completions, "
        f"over its limit of {seconds:g} s.{detail} If such completions are to be scored, "
        "raise the limit with --config.rewards.timeout_seconds=<seconds> (0 turns it off); "
        "if not, the term's parsing of them needs a bound.",
        term=term.name, limit=seconds, elapsed=elapsed, index=index, completion=completion)

  return dataclasses.replace(term, fn=timed)
