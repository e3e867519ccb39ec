"""Self-Rewarding PPO (arXiv 2510.21090): SFT on demonstrations, then PPO with the coherent
reward r = sum_t [log pi_sft(y_t) - log pi_pt(y_t)] of the frozen SFT model against the
pretrained base, on prompts without labels (the verifier is logged with weight 0).

On the built-in task pi_pt is the shipped model (it imitated a demonstrator that drops half
its carries) and pi_sft is it after `warmstart.steps` of SFT on clean demonstrations of the
warm-start half (`warmstart.from_checkpoint`); the policy starts from pi_sft. Its base is the
SFT model itself: the RL stage's step-0 evaluation.

    python launch/train.py --config=configs/self_rewarding_ppo.py --workdir=/tmp/srppo
"""

from configs import common, ppo
from rewardjax import pretrained


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"size": common.MODELS}, size="tiny", smoke=False)
  c = ppo.get_config(f"size={arg.size}" + (",smoke" if arg.smoke else ""))
  base_model = pretrained.ARITH if arg.size in ("tiny", "smoke") else c.model.checkpoint
  c.rewards.update(terms="coherent,verifier:0", base_model=base_model)
  c.warmstart.update(from_checkpoint=True, slip_rate=0.0)
  # The coherent reward is an implicit reward of scale 1 (a DPO reward with beta = 1), and the
  # KL coefficient beta sets the optimum pi* ~ pi_sft * (pi_sft / pi_pt)^(1 / beta): with TRL's
  # 0.05 that is (pi_sft / pi_pt)^20, which prefers whatever the base finds least likely
  # (seed 0: 98.2% -> 22.1% in 300 steps, completions 2.09 -> 3.49 tokens). 1.0 keeps pi_sft^2
  # / pi_pt.
  c.algo.update(kl_coef=1.0)
  if arg.size == "tiny" and not arg.smoke:
    c.warmstart.update(steps=200, batch_size=64, learning_rate=3e-4, warmup_steps=10)
    c.train.update(steps=150)  # three forward passes per step on top of PPO's
  return c
