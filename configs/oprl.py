"""OPRL: online process reward learning (arXiv 2509.19199) vs outcome-only GRPO, on the
multi-step task (`configs/prm.py: steps_policy`).

    python launch/train.py --config=configs/oprl.py --workdir=/tmp/oprl
    python launch/train.py --config=configs/oprl.py:variant=outcome --workdir=/tmp/outcome

variant=oprl (`recipes/oprl.py`): an implicit PRM (a copy of the starting policy) trained every
step by trajectory DPO against the sampling policy on (best, worst) rollouts of each group; its
step rewards beta * log pi_phi / pi_old per step line, normalised over the group's steps, are
added to the outcome advantage (A = A^E + alpha A^S, alpha = 1). The paper's policy loss is
the step-level clipped surrogate without KL (beta_KL = 0); PRM lr 1e-6 and policy lr 5e-7 in
the paper's 7B runs, here 1e-4 for both.
variant=outcome: the same GRPO with the verifier's outcome advantage only.
"""

from configs import base, common, prm

VARIANTS = ("oprl", "outcome")


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS}, variant="oprl", smoke=False,
                         beta=0.05, alpha=1.0)
  c = base.get_config(smoke=arg.smoke, algorithm="grpo")
  prm.steps_policy(c, smoke=arg.smoke)
  c.algo.update(loss_type="grpo", beta=0.0, scale_rewards="group")
  if arg.variant == "oprl":
    c.recipe = "oprl"
    c.algo.update(advantage="oprl", step_advantage_weight=arg.alpha)
    c.rewards.update(terms="verifier,implicit_prm", implicit_prm_beta=arg.beta)
    c.recipe_args.update(dict(beta=arg.beta, learning_rate=1e-4))
  else:
    c.algo.update(advantage="grpo")
  if not arg.smoke:
    c.rollout.update(num_generations=8, temperature=1.0)
    c.train.update(steps=150, batch_size=16, eval_every=50)
    c.optim.update(learning_rate=1e-4, warmup_steps=5)
  return c
