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
    # 8 pairs per training question (distinct wrong answers): the model learns to verify
    # instead of remembering pairs; with 1 pair per question held-out accuracy stalls at ~80%.
    c.data.update(difficulty=1, num_train=20_000, num_eval=512, pairs_per_question=8)
    c.warmstart.update(steps=2500, batch_size=128, learning_rate=1e-3)
    c.train.update(steps=2500, batch_size=64, eval_every=500)
    c.optim.update(learning_rate=3e-4, warmup_steps=50, schedule="cosine")
  return c
