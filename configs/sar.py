"""SAR, the Self-Aligned Reward (arXiv 2509.05489, §3): GRPO on the verifier plus alpha times
the completion's relative perplexity drop given the question,
R = R_VR + 0.2 * clip((ppl(a) - ppl(a|q)) / ppl(a), -1, 1). The official SA-GRPO scripts use
Dr. GRPO advantages (no std scaling) and a 0.001 k3 KL loss. variant=verifier is the matched
baseline (the same run with alpha = 0; SAR still logged).

    python launch/train.py --config=configs/sar.py --workdir=/tmp/sar
    python launch/train.py --config=configs/sar.py:variant=verifier --workdir=/tmp/sar_base
"""

from configs import grpo

VARIANTS = {"sar": 0.2, "verifier": 0.0}


def get_config(arg=None):
  arg, c = grpo.with_reward_variants(arg, VARIANTS, "sar", base_variant="dr_grpo")
  c.algo.update(beta=0.001)
  # The answer-only context: the task's prompt with the question removed ("=" for the
  # built-in short format; the paper uses the chat template with an empty user turn).
  c.rewards.update(terms=f"verifier,sar:{VARIANTS[arg.variant]}", sar_context="=")
  return c
