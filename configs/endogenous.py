"""RL on the endogenous reward ("Generalist Reward Models: Found Inside LLMs", arXiv 2506.23235,
§3-4): r(x, y) = alpha * log pi_ref(y|x) + V(s_1), read from the frozen starting policy's own
logits (inverse soft Bellman, Eq. 12), no labels and no trained reward model. The verifier is
logged with weight 0. variant=verifier is the with-labels reference.

    python launch/train.py --config=configs/endogenous.py --workdir=/tmp/endogenous
"""

from configs import grpo

VARIANTS = {"endogenous": "endogenous,verifier:0", "verifier": "verifier"}


def get_config(arg=None):
  arg, c = grpo.with_reward_variants(arg, VARIANTS, "endogenous")
  c.rewards.update(terms=VARIANTS[arg.variant], endogenous_model="reference", alpha=1.0)
  return c
