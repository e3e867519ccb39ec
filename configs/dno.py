"""DNO-Prct: Direct Nash Optimization, the practical iterative recipe (Rosset et al., arXiv
2404.03715, Algorithm 2 and §5.1). Each round: K = 4 samples from the current policy plus the
gold response (the task's correct answer, standing in for the GPT-4-Turbo teacher) on a fresh
split of 2,048 questions; an annotator scores all K + 1 (here the shipped reward model, sigma of
its score in [0, 1], standing in for GPT-4-Turbo's 6-point score); every large-margin pair is
kept (positive >= 0.5, gap >= 0.5, or >= 0.25 when the positive is a policy sample: the
paper's 5-of-6 / 2-point / 1-point rule rescaled), teacher > student, student > teacher and
student > student alike; then hard-label DPO with the previous iterate as the reference
(`losses.dno_loss`, eta = beta = 0.1). 4 rounds x 40 steps. Replay of earlier rounds' pairs
(at most 30% from t-1) is not built.

  judge=reward_model   the annotator is the shipped reward model (default)
  judge=self           the policy annotates (its judge prompt), as in Self-Rewarding
  judge=verifier       the verifier as the annotator (an oracle)

    python launch/train.py --config=configs/dno.py --workdir=/tmp/dno
"""

from configs import self_rewarding


def get_config(arg=None):
  return self_rewarding.make(self_rewarding.parse(arg, judge="reward_model"), rule="dno",
                             loss_type="dno")
