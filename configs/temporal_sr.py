"""Temporal Self-Rewarding LMs (arXiv 2508.06026, §3): each iteration has two phases of 40
DPO steps on a fresh split of 2,048 questions, judged by the current model M_i (the judge prompt
of `configs/self_rewarding.py`). Phase 1, anchored rejection: chosen = the best of M_i's K = 4
answers, rejected = the worst of the starting model M_0's K answers when it scores below M_i's
worst (else M_i's worst); DPO from M_i gives a temporary M_f. Phase 2, future-guided chosen:
M_f's best answer (judged by M_i) replaces the chosen one if it scores higher; M_{i+1} = DPO
from M_i (M_f discarded) on those pairs. 2 iterations, as the paper runs (iter0 + iter1): the
same 160 DPO steps as 4 rounds of `configs/self_rewarding.py`.

  judge=self | reward_model | verifier   as in configs/self_rewarding.py

    python launch/train.py --config=configs/temporal_sr.py --workdir=/tmp/temporal_sr
"""

from configs import self_rewarding

ITERATIONS = 2


def get_config(arg=None):
  return self_rewarding.make(self_rewarding.parse(arg), rule="temporal",
                             num_rounds=ITERATIONS, temporal_iterations=ITERATIONS)
