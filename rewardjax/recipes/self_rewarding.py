"""Iterated self-rewarding as a recipe: rounds of generate -> judge -> pair -> train.

The source is a `rounds.RoundSource` over the task's training questions (a fresh split each
round), the judge is the config's `rewards` composition (`rewards.terms`: "judge" = the model
itself through the SPARK judge prompt the shipped model was trained on, "reward_model" = a
trained reward model, "verifier" = the oracle), and the pair rule is `recipe_args.rule`
(`rounds.RULES`). The preference algorithm (`algorithm="dpo"`, any `loss_type`) runs the rounds.

  configs/self_rewarding.py   Self-Rewarding LM (Yuan et al., arXiv 2401.10020)
  configs/cream.py            CREAM (arXiv 2410.12735): consistency C as the soft label
  configs/temporal_sr.py      Temporal Self-Rewarding (arXiv 2508.06026)
  configs/dno.py              DNO-Prct (arXiv 2404.03715)
  configs/online_dpo.py       online DPO: one step per round, fixed reference
  configs/treg.py, sspo.py    T-REG (arXiv 2412.02685), SPO (arXiv 2409.17791) on judged pairs
"""

import dataclasses

from rewardjax import rounds
from rewardjax.recipes import Recipe

DEFAULTS = dataclasses.asdict(rounds.RoundOptions())


def make_recipe(args: dict, *, stream, problems: dict, fmt: str, seed: int, rewards,
                tokenizer=None) -> Recipe:
  """Rounds over `problems["train"]`, judged by `rewards`, paired by `args["rule"]`.

  Args:
    args: `config.recipe_args` as a dict: the fields of `rounds.RoundOptions`.
    stream: the task's record stream (its `batch_size` is the pairs per step).
    problems: {"train", ...} task records: the questions each round samples.
    fmt: the task's answer format.
    seed: the run seed (question splits, pair order).
    rewards: the judge: the config's `rewards` composition.
    tokenizer: unused.
  """
  del fmt, tokenizer
  unknown = sorted(set(args) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"recipe_args {unknown} are not options of recipe=self_rewarding; valid: "
                     f"{sorted(DEFAULTS)}")
  options = rounds.RoundOptions(**{**DEFAULTS, **args})
  source = rounds.RoundSource(problems.get("train", []), options=options,
                              batch_size=stream.batch_size, seed=seed)
  return Recipe(source=source, rewards=rewards, rounds=options)
