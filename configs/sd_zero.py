"""SD-Zero: self-distillation from the model's own reward-conditioned reviser (arXiv 2604.12002,
abstract only: the conditioning, the divergence and the teacher schedule are our reconstruction).

    python launch/train.py --config=configs/sd_zero.py --workdir=/tmp/sd_zero
    python launch/train.py --config=configs/sd_zero.py:forward_kl --workdir=/tmp/sd_zero_fkl

One model is generator and reviser (`rewardjax/algorithms/self_distillation.py`). For each
sampled answer y of prompt x (8 per prompt, temperature 1) the verifier gives r(y) ∈ {0, 1};
the teacher is the same model, params frozen at batch time (synchronised every step), reading
the revise prompt that shows y with r as text feedback (the tiny model's SPARK reflection
format: "wrong! redo\\nBadAns:41\\n47-8=" for a wrong answer, the neutral "check&fix" one for a
right answer). The student π_θ(· | x, y_<t) is pulled towards the teacher's full next-token
distribution at every token of its own sample y: reverse KL by default, `forward_kl` the other
direction. No reference model, no policy-gradient term. The held-out evaluation reports greedy
accuracy (and the second-attempt metrics of `rewardjax.evaluation.self_correction`).
"""

from configs import base, common

VARIANTS = {
    "sd_zero": dict(loss_type="reverse_kl"),
    "forward_kl": dict(loss_type="forward_kl"),
}


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS, "size": common.MODELS},
                         variant="sd_zero", size="tiny", smoke=False)
  c = base.get_config(smoke=arg.smoke, size=arg.size, algorithm="self_distillation")
  c.algo.update(VARIANTS[arg.variant])
  if arg.size == "tiny" and not arg.smoke:
    # As configs/grpo.py: the shipped model on difficulty 1 (~80% greedy held-out accuracy).
    c.data.update(difficulty=1, num_train=20_000, num_eval=512, bucket=8)
    c.warmstart.update(steps=2500, batch_size=128, learning_rate=1e-3, slip_rate=0.5)
    c.rollout.update(num_generations=8, max_new_tokens=6, temperature=1.0)
    c.train.update(steps=150, batch_size=16, eval_every=50)
    c.optim.update(learning_rate=1e-4, warmup_steps=5)
  elif arg.size not in ("tiny", "smoke"):
    c.algo.revise_prompt = "append"   # the teacher reads x + y + feedback + instruction
    c.data.update(fmt="boxed", chat_template=True, max_prompt_length=1024,
                  max_completion_length=512)
    c.rollout.update(num_generations=8, max_new_tokens=512)
    c.train.update(steps=500, batch_size=8, eval_every=100)
    c.optim.update(learning_rate=1e-6)
  return c
