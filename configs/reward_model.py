"""Bradley-Terry reward model on built-in preference pairs (InstructGPT, arXiv 2203.02155;
TRL RewardTrainer). The model is the warm-started language model with a scalar head on the
last token.

    python launch/train.py --config=configs/reward_model.py --workdir=/tmp/rm
"""

from configs import base, common


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"size": common.MODELS}, size="tiny", smoke=False)
  c = base.get_config(smoke=arg.smoke, size=arg.size)
  c.algorithm = "reward_model"
  c.algo.update(center_rewards_coefficient=0.01)
  c.train.export_hf = False
  if not arg.smoke:
    c.data.update(difficulty=1, num_train=20_000, num_eval=256)
    c.warmstart.update(steps=4000, batch_size=64, learning_rate=3e-3)
    c.train.update(steps=200, batch_size=32, eval_every=50)
    c.optim.update(learning_rate=3e-4, warmup_steps=10)
  return c
