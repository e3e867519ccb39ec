"""SSR-Zero: RL with the policy as its own judge, no labels (arXiv 2505.16637, §3). Each
rollout's answer is judged by the current policy through a judge prompt (the SPARK pointwise
format the shipped model knows); the reward is p(yes) / (p(yes) + p(no)) read at the verdict
position after the judge's own working (reward.md-style token-probability reading), GRPO on
top. The verifier is logged with weight 0: no label enters training.
variant=verifier is the with-labels reference (GRPO on the verifier).

    python launch/train.py --config=configs/ssr_zero.py --workdir=/tmp/ssr_zero
"""

from configs import grpo

VARIANTS = {"ssr_zero": "judge,verifier:0", "verifier": "verifier"}


def get_config(arg=None):
  arg, c = grpo.with_reward_variants(arg, VARIANTS, "ssr_zero")
  c.rewards.update(terms=VARIANTS[arg.variant], judge_read="probability",
                   judge_max_new_tokens=10)
  if arg.size not in ("tiny", "smoke"):
    c.rewards.update(judge_read="parsed", judge_max_new_tokens=512, max_length=1024)
  return c
