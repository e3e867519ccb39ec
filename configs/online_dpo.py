"""Online DPO (Guo et al., arXiv 2402.04792; TRL `OnlineDPOTrainer`), the common baseline of
the round-based configs: every step samples K = 4 answers to 64 fresh questions from the
current policy, the same judge as `configs/self_rewarding.py` picks best vs worst, and one DPO
step trains on 32 of those pairs against a fixed reference (the starting model). It is the
rounds mechanism with one step per round and no reference refresh: 160 steps, the DPO steps of
4 self-rewarding rounds, with a fresh sample at every step instead of every 40.

  judge=self | reward_model | verifier   as in configs/self_rewarding.py

    python launch/train.py --config=configs/online_dpo.py --workdir=/tmp/online_dpo
"""

from configs import self_rewarding

STEPS = 160


def get_config(arg=None):
  arg = self_rewarding.parse(arg)
  c = self_rewarding.make(arg, rule="self_rewarding", num_rounds=2 if arg.smoke else STEPS,
                          steps_per_round=1, refresh_reference=False, reset_optimizer=False,
                          prompts_per_round=8 if arg.smoke else 64)
  if not arg.smoke:
    c.train.update(eval_every=40)
    c.checkpoint.update(every=40)
  return c
