"""Supervised fine-tuning on the built-in arithmetic task (the warm start of every embedded
config, as a job of its own); exports a Hugging Face model directory to `<workdir>/hf`.

    python launch/train.py --config=configs/sft.py --workdir=/tmp/sft
    python launch/train.py --config=configs/sft.py:smoke --workdir=/tmp/sft_smoke
"""

from configs import base, common

VARIANTS = {
    "nll": dict(loss_type="nll"),
    # The demonstrator drops the carry on half the questions that have one (tasks.carry_slip):
    # the flawed starting point configs/grpo.py gives RL to fix.
    "slip": dict(loss_type="nll", slip_rate=0.5),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS, "size": common.MODELS},
                         variant="nll", size="tiny", smoke=False)
  c = base.get_config(smoke=arg.smoke, size=arg.size, algorithm="sft")
  c.algo.update(VARIANTS[arg.variant])
  c.warmstart.steps = 0  # this job is the supervised stage itself
  c.model.checkpoint = ""  # from scratch
  if arg.smoke:
    c.train.batch_size = 8  # examples per step: one row each (8 test devices)
  if not arg.smoke:
    c.data.update(difficulty=1, num_train=20_000, num_eval=512)
    c.train.update(steps=2500, batch_size=128, eval_every=500)
    c.optim.update(learning_rate=1e-3, warmup_steps=20, schedule="cosine")
  return c
