"""Self-play preference optimisation, "A Minimaximalist Approach to RLHF" (Swamy et al., ICML
2024, arXiv 2401.04056): no reward model; each of a prompt's G = 8 samples is rewarded by its
win rate against the other 7 under a preference comparator (`rewards.sources.win_rate_term`),
and any policy-gradient method optimises it (GRPO here, the `configs/grpo.py` run: 300 steps x
16 prompts from the shipped model). The comparator is "closeness" (the answer nearer the true
one wins, ties 1/2): a preference over pairs, not a score the policy is trained to maximise.
The verifier is logged with weight 0.

  variant=spo          win-rate rewards, closeness comparator
  variant=verifier_comparator   win rates under right-beats-wrong (affine in the verifier per
                       group: the same GRPO advantages as the verifier reward)
  variant=verifier     GRPO on the verifier (the matched reward-based baseline)

    python launch/train.py --config=configs/spo.py --workdir=/tmp/spo
"""

from configs import grpo

VARIANTS = {"spo": ("win_rate,verifier:0", "closeness"),
            "verifier_comparator": ("win_rate,verifier:0", "verifier"),
            "verifier": ("verifier", "closeness")}


def get_config(arg=None):
  arg, c = grpo.with_reward_variants(arg, VARIANTS, "spo")
  terms, preference = VARIANTS[arg.variant]
  c.rewards.update(terms=terms, preference=preference)
  return c
