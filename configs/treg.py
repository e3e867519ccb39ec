"""T-REG: DPO with token-level reward regularisation (Zhou et al., ACL 2025, arXiv 2412.02685).
The paper's pipeline: best vs worst of the policy's own samples scored by a reward model
(ArmoRM there, the shipped reward model here), then DPO-REG = DPO + alpha * w * (L_REG(y_w) +
L_REG(y_l)) with token rewards from contrastive prompting of the frozen reference
(`losses.treg_loss`, alpha 0.25). Pairs are regenerated in 4 rounds of 40 steps, as in
`configs/self_rewarding.py`; variant=dpo is the base DPO on the same pipeline.

    python launch/train.py --config=configs/treg.py --workdir=/tmp/treg
    python launch/train.py --config=configs/treg.py:variant=dpo --workdir=/tmp/treg_dpo
"""

from configs import self_rewarding

VARIANTS = ("treg", "dpo")


def get_config(arg=None):
  return self_rewarding.against_dpo(arg, "treg")
