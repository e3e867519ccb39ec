"""Co-Reward / Co-rewarding: label-free RL from another view's majority vote (arXiv 2508.00410,
v1 Eq. 6-8 and v2-v3 "Co-rewarding-I/II"; official code tmlr-group/Co-Reward and
tmlr-group/Co-rewarding). Every step trains on 8 questions of the 2-digit addition drill
(difficulty 6, where the shipped model drops the carry on about half its carry questions) and
their commuted rewrites ("47+38=" / "38+47="); GRPO on the vote reward of `variant`
(`recipes/co_reward.py`):

  co_reward      each view rewarded by its partner's majority vote (Co-rewarding-I)
  ema_teacher    by the majority of an EMA teacher's G answers to the same question (II); the
                 teacher is the synchronised reference (algo.sync_ref_model, alpha 0.01 -> 1e-5)
  combined       by the EMA teacher's majority on the partner view (III, the v3 abstract's
                 "orthogonally combined version")
  majority_vote  by its own group's majority (the self-consistency baseline that collapses)
  verifier       GRPO on the verifier, the same pairs and schedule (the with-labels comparator)

No answer label is read in training (the verifier and the pseudo-label accuracy are logged
with weight 0); held-out accuracy is the true one. `style=` picks the rewrite
(`data/analogies.py`): "commute" (default), "spaced", or "rebalance" (beyond the paper: an
equivalent carry-free sum, "47+38=" / "50+35=", whose errors are not correlated with the
original's).

Measured (seed 0, greedy held-out accuracy 64.8% at the start -> after 300 steps): majority_vote
56.2, co_reward 56.2, ema_teacher 58.0, combined 58.4, verifier 100.0; with style=rebalance:
majority_vote 56.2, co_reward 98.2, combined 97.5. Commuting keeps the ones digits that cause
the shipped model's carry slip, so the two views vote for the same wrong answer and
cross-referring is self-majority again; a view with independent errors prevents the collapse.

    python launch/train.py --config=configs/co_reward.py --workdir=/tmp/co_reward
    python launch/train.py --config=configs/co_reward.py:variant=majority_vote --workdir=/tmp/mv
    python launch/train.py --config=configs/co_reward.py:variant=co_reward,style=rebalance \
        --workdir=/tmp/co_reward_rebalance
"""

from configs import grpo

VARIANTS = ("co_reward", "ema_teacher", "combined", "majority_vote", "verifier")
# Co-rewarding-II's teacher: ref <- a * policy + (1 - a) * ref every step, a cosine-annealed
# from 0.01 to 1e-5 over the run (official run_corewarding-II.sh).
EMA_TEACHER = dict(sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=0.01,
                   ref_model_mixup_alpha_end=1e-5)


def get_config(arg=None):
  arg, c = grpo.with_reward_variants(arg, VARIANTS, "co_reward", style="commute")
  c.recipe = "co_reward"
  c.recipe_args.update(dict(mode=arg.variant, style=arg.style, teacher_temperature=1.0))
  if arg.variant in ("ema_teacher", "combined"):
    c.algo.update(EMA_TEACHER)
  if not arg.smoke and arg.size == "tiny":
    c.data.update(difficulty=6)
  return c
