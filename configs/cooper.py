"""Cooper: the policy and its reward model updated together (arXiv 2508.05613, §3; official
code ZJU-REAL/cooper). GRPO on sigma(reward-model score); every step the reward model takes a
Bradley-Terry step on (verified-correct, rejected) rollouts of the step (`recipes/cooper.py`).

variant=frozen is the matched baseline: the same reward model, never updated. The verifier is
logged with weight 0, so the gap between the reward model's score and true accuracy (the
reward hacking Cooper is meant to prevent) is read in "reward/reward_model" vs
"reward/verifier".

    python launch/train.py --config=configs/cooper.py --workdir=/tmp/cooper
    python launch/train.py --config=configs/cooper.py:variant=frozen --workdir=/tmp/cooper_frozen
"""

from configs import grpo
from rewardjax import pretrained

VARIANTS = ("cooper", "frozen")


def get_config(arg=None):
  arg, c = grpo.with_reward_variants(arg, VARIANTS, "cooper", reward_model=pretrained.ARITH_RM)
  # Cooper's policy reward R = sigma(logit) (official `dp_reward.py`).
  c.rewards.update(terms="reward_model,verifier:0", reward_model_sigmoid=True,
                   reward_model=arg.reward_model, max_length=64)
  if arg.variant == "cooper":
    c.recipe = "cooper"
    c.rewards.reward_model = "companion"
    # The paper's reward-model lr, 1e-5 (its policy's is 1e-6; ours 1e-4). Measured on the
    # tiny task (seed 0, final accuracy): 1e-5 92.8%, 3e-5 90.6%, 3e-4 83.8% (the reward
    # model drifts on 16 on-policy pairs a step), frozen 89.3%.
    c.recipe_args.update(dict(reward_model=arg.reward_model, learning_rate=1e-5,
                              max_length=64))
  return c
