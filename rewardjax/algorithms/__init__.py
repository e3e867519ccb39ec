"""Training algorithms as values, looked up once by name (`get`).

One module per algorithm, each exposing `ALGORITHM` (`base.Algorithm`): its config block's
defaults, its table of objectives (chosen by `loss_type`), the kind of records it trains on, and
`build(options, setup) -> base.Program` (batch stages, pure update step, held-out evaluation).

  grpo          policy gradient, GRPO family (`grpo.py`)
  ppo           PPO with a learned critic, GAE (`ppo.py`)
  dpo           preference optimisation, DPO family (`preference.py`)
  reward_model  scalar-head reward models (`reward_model.py`)
  sft           supervised fine-tuning; also the warm-start stage (`sft.py`)
  self_distillation  SD-Zero: on-policy distillation from a reward-conditioned reviser
                (`self_distillation.py`)
"""

from rewardjax.algorithms import base, grpo, ppo, preference, reward_model, self_distillation, sft

ALGORITHMS = {a.name: a for a in (grpo.ALGORITHM, ppo.ALGORITHM, preference.ALGORITHM,
                                  reward_model.ALGORITHM, sft.ALGORITHM,
                                  self_distillation.ALGORITHM)}


def get(name: str) -> base.Algorithm:
  """The algorithm called `name`, or a ValueError listing the valid names."""
  if name not in ALGORITHMS:
    raise ValueError(f"algorithm={name!r}; valid: {sorted(ALGORITHMS)}")
  return ALGORITHMS[name]
