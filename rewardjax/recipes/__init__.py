"""Paper recipes: the general hooks through which a paper variant plugs into the loop.

A recipe module `rewardjax/recipes/<name>.py` defines `make_hooks(args, *, records, fmt, seed)`
returning a `Hooks`. Every hook has a no-op default, so a recipe overrides only what it
changes; the training loop itself is never forked.

  warmstart_examples() -> list : extra {"prompt", "completion"} examples for the warm start
  items_at(default)     -> items_at(step, round) : which prompts a step trains on
  reward_fn(default)    -> reward_fn(items, completions) : how completions are scored
  after_batch(records, step) : sees every scored rollout (e.g. to recycle it into new prompts)
  evaluate(state, tokenizer, rng) -> dict : extra held-out metrics
  state_dict() / load_state(d) : the recipe's host state, saved in every checkpoint (JSON)
"""

import dataclasses
import importlib
from collections.abc import Callable

RECIPES = ("spark",)


def _identity(fn):
  return fn


@dataclasses.dataclass(frozen=True)
class Hooks:
  warmstart_examples: Callable = lambda: []
  items_at: Callable = _identity
  reward_fn: Callable = _identity
  after_batch: Callable = lambda records, step: None
  evaluate: Callable = lambda state, tokenizer, rng: {}
  state_dict: Callable = lambda: {}
  load_state: Callable = lambda state: None


def load(name: str, args: dict, **kwargs) -> Hooks:
  """The hooks of recipe `name` ("" = plain algorithm, no hooks)."""
  if not name:
    return Hooks()
  if name not in RECIPES:
    raise ValueError(f"recipe={name!r} is not one of {RECIPES} (or '' for none)")
  return importlib.import_module(f"rewardjax.recipes.{name}").make_hooks(args, **kwargs)
