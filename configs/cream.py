"""CREAM: consistency-regularised self-rewarding (Wang et al., ICLR 2025, arXiv 2410.12735).
The Self-Rewarding loop of `configs/self_rewarding.py` (the model judges its own K = 4 answers,
best vs worst, 4 rounds, reference = the round's starting model), with each pair's label
softened by how much the current and the previous iterate agree on the ranking of that
question's answers: C = (Kendall tau + 1) / 2, loss C * DPO(y_w > y_l) + (1 - C) * DPO(y_l >
y_w) (`losses.cream_loss`). Round 0 has no previous iterate; as CREAM does for M0, the
length-normalised log-likelihood under the starting model is the previous ranking there.
CREAM scores with the DPO implicit reward; here both iterates judge through the judge prompt
(the self-rewarding setting of the issue), which keeps one judge across the round configs.

  judge=self | reward_model | verifier   as in configs/self_rewarding.py

    python launch/train.py --config=configs/cream.py --workdir=/tmp/cream
"""

from configs import self_rewarding


def get_config(arg=None):
  return self_rewarding.make(self_rewarding.parse(arg), rule="cream", loss_type="cream")
