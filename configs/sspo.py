"""SPO: self-supervised preference optimisation (Li et al., EMNLP Findings 2024, arXiv
2409.17791): DPO plus an auxiliary classification of how much key content (on this task, how
many answer digits) was removed from a response (`losses.spo_ssl_loss`, lambda 1, K = 2), on
pairs the policy generates and the shipped reward model ranks, regenerated in 4 rounds of 40
steps as in `configs/self_rewarding.py`. variant=dpo is the base DPO on the same pipeline. The
objective is reconstructed from the abstract (the method section was not retrievable).

    python launch/train.py --config=configs/sspo.py --workdir=/tmp/sspo
    python launch/train.py --config=configs/sspo.py:variant=dpo --workdir=/tmp/sspo_dpo
"""

from configs import self_rewarding

VARIANTS = ("sspo", "dpo")


def get_config(arg=None):
  return self_rewarding.against_dpo(arg, "sspo")
