"""Classic RLHF on the built-in task: RL on a trained reward model's score, not the verifier
(InstructGPT, arXiv 2203.02155, §3.5; Bradley-Terry reward model, §3.4).

The reward model is the shipped one (`rewardjax.pretrained.ARITH_RM`, made by
configs/reward_model.py; any `*ForSequenceClassification` directory or reward-model workdir
works: --config.rewards.reward_model=...). The verifier is logged with weight 0
("reward/verifier"), so true accuracy and reward-model score are read side by side: reward
hacking is the point where the score keeps rising while the verifier's accuracy falls.

    python launch/train.py --config=configs/rlhf.py --workdir=/tmp/rlhf
    python launch/train.py --config=configs/rlhf.py:variant=ppo --workdir=/tmp/rlhf_ppo
"""

from configs import common, grpo, ppo
from rewardjax import pretrained

VARIANTS = ("grpo", "ppo")


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS, "size": common.MODELS},
                         variant="grpo", size="tiny", smoke=False)
  rest = f"size={arg.size}" + (",smoke" if arg.smoke else "")
  c = (grpo if arg.variant == "grpo" else ppo).get_config(rest)
  c.rewards.update(terms="reward_model,verifier:0", reward_model=pretrained.ARITH_RM)
  return c
