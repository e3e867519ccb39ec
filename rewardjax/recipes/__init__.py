"""Paper recipes as data sources: where training prompts come from and how they are rewarded.

A recipe module `rewardjax/recipes/<name>.py` defines `make_recipe(args, *, stream, problems,
fmt, seed, rewards, tokenizer) -> Recipe` (`rewards`: the composition of the config's
`rewards` block, which a recipe may use, extend or replace). A `Recipe` is data and small
functions, not callbacks into the loop:

  source   a `PromptSource`: `prompts(step, round)` gives a step's prompt records;
           `observe(rollouts, step)` receives that step's finished, scored rollouts (e.g. to
           recycle them into new prompts); `followup(step)` names one more batch to train in
           the same step ("" = none; its `prompts` are then that batch's, e.g. SPARK's judge
           period); `state_dict()` / `load_state()` checkpoint it. A source whose prompts
           are aligned across rows (Co-Reward's question / rewrite pairs) sets
           `resamples = False`, and GRPO then refuses DAPO dynamic sampling.
  rewards  a `rewards.composition.Composition` (weighted, individually logged terms).
  warmstart_examples  extra {"prompt", "completion"} examples for the supervised warm start.
  evaluate `evaluate(state, tokenizer) -> dict`: extra held-out metrics.
  companion  a second model trained in the same step (`algorithms.base.Companion` with its
           `make_batch` from the scored rollouts), e.g. Cooper's reward model, OPRL's implicit
           PRM; or None.
  rounds   `rounds.RoundOptions` when the paper trains in rounds (its source is then a
           `rounds.RoundSource` and `rewards` is the judge that scores each round's samples);
           the preference algorithm runs them (`rounds.begin_round`); or None.

Without a recipe (`recipe=""`) the source is the algorithm's record stream and the reward the
config's `rewards` composition (`rewards.sources`; the verifier by default).
"""

import dataclasses
import importlib
from collections.abc import Callable, Sequence

from rewardjax.data import loaders
from rewardjax.rewards import composition

RECIPES = ("spark", "cooper", "self_rewarding", "co_reward", "oprl")


class StatelessSource:
  """The PromptSource methods of a source that keeps no state and observes nothing; a source
  dataclass inherits them and defines `prompts`."""

  def observe(self, rollouts: Sequence[dict], step: int) -> None:
    del rollouts, step

  def followup(self, step: int) -> str:
    del step
    return ""

  def state_dict(self) -> dict:
    return {}

  def load_state(self, state: dict) -> None:
    del state


@dataclasses.dataclass(frozen=True)
class RecordStream(StatelessSource):
  """The default prompt source: `batch_size` records per step, reshuffled every epoch.

  Round r > 0 (extra prompts for DAPO dynamic sampling) draws from an independent order.
  """
  records: Sequence[dict]
  batch_size: int
  seed: int

  def prompts(self, step: int, round_index: int = 0) -> list[dict]:
    indices = loaders.batch_indices(len(self.records), self.batch_size,
                                    seed=self.seed + 1000 * round_index, step=step)
    return [self.records[i] for i in indices.tolist()]


def _no_eval(state, tokenizer) -> dict:
  del state, tokenizer
  return {}


@dataclasses.dataclass(frozen=True)
class Recipe:
  source: object                                   # a PromptSource (RecordStream's methods)
  rewards: composition.Composition
  warmstart_examples: tuple = ()
  evaluate: Callable = _no_eval
  companion: object = None                         # a second trained model (base.Companion)
  rounds: object = None                            # rounds.RoundOptions, or None


def load(name: str, args: dict, *, stream: RecordStream, problems: dict, fmt: str,
         seed: int, rewards: composition.Composition | None = None, tokenizer=None) -> Recipe:
  """The recipe `name` ("" = the plain algorithm: the stream and `rewards`, by default the
  verifier)."""
  rewards = rewards or composition.Composition((composition.verifier(fmt),))
  if not name:
    return Recipe(source=stream, rewards=rewards)
  if name not in RECIPES:
    raise ValueError(f"recipe={name!r} is not one of {RECIPES} (or '' for none)")
  return importlib.import_module(f"rewardjax.recipes.{name}").make_recipe(
      args, stream=stream, problems=problems, fmt=fmt, seed=seed, rewards=rewards,
      tokenizer=tokenizer)
