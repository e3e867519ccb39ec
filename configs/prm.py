"""A process reward model (PRM) on the multi-step task: a score at the end of every step.

    python launch/train.py --config=configs/prm.py --workdir=/tmp/prm
    python launch/ship_pretrained.py --model=arith_prm --workdir=/tmp/prm  # the shipped copy

The reward-model algorithm with loss_type "prm" (`algorithms/process_reward_model.py`): the
shipped model's backbone plus a fresh scalar head read at each step's last token, binary
cross-entropy on per-step labels (Math-Shepherd, arXiv 2312.08935 §3.3; PRM800K, arXiv
2305.20050 §2). The labels come from the task (`data.steps.step_labels`: a step is correct iff
it and every step before it is a true equation on numbers the solver has, so restating a
correct step is correct: the labeller pays for repetition, which is what makes the raw PRM sum
exploitable in configs/clip_delta.py). Solutions are the demonstrator's (carry slips, restated
steps) with a 30% share of corrupted steps (`data.steps.prm_records`). Held-out metrics: step
accuracy and solution accuracy (all steps scored correct iff the solution is correct).
"""

from configs import base, common
from rewardjax.data import steps

# The multi-step task every process-reward config shares.
STEPS_DATA = dict(difficulty=steps.CHAIN_LEVEL, fmt="steps", num_train=20_000, num_eval=256,
                  bucket=8, max_prompt_length=16, max_completion_length=40)


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False)
  c = base.get_config(smoke=arg.smoke, size="tiny", algorithm="reward_model")
  c.algo.update(loss_type="prm")
  c.data.update(STEPS_DATA)
  if arg.smoke:  # one row per completion: 8 rows split over 8 test devices
    c.data.update(num_train=64, num_eval=8)
    c.train.batch_size = 8
  else:
    c.train.update(steps=1000, batch_size=64, eval_every=250)
    c.optim.update(learning_rate=1e-3, warmup_steps=50, schedule="cosine")
  return c


def steps_policy(c, *, smoke: bool = False):
  """The multi-step task for a policy config `c` (clip_delta, oprl, stable_reinforce): the
  shipped model learns the one-operation-per-line format in a short supervised stage on the
  warm-start half of the questions, from a demonstrator that slips on half its carries and
  restates a step 10% of the time (`data.steps.sft_examples`), then RL starts."""
  c.data.update(STEPS_DATA)
  c.rollout.update(max_new_tokens=4 if smoke else 40)
  if smoke:
    c.data.update(num_train=64, num_eval=8)
  else:
    c.warmstart.update(steps=300, batch_size=64, learning_rate=1e-3, warmup_steps=20,
                       slip_rate=0.5, from_checkpoint=True)
  return c
