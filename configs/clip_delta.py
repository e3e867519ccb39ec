"""Process rewards at training time: the raw PRM sum vs Clip vs Delta vs Clip+Delta (Gao et al.,
"On Designing Effective RL Reward at Training Time for LLM Reasoning", arXiv 2410.15115, §4).

    python launch/train.py --config=configs/clip_delta.py --workdir=/tmp/clip_delta
    python launch/train.py --config=configs/clip_delta.py:variant=sum --workdir=/tmp/prm_sum

GRPO on the multi-step task (`configs/prm.py: steps_policy`) with the success reward (the
verifier, at the last token) plus alpha (0.2: the outcome stays the main signal; the paper
gives no value) times the shipped PRM's refined step rewards
(`rewards.process.refine`), each at its step's last token; token advantages are the
return-to-go minus the group's mean return, not divided by its std
(`advantages.process_advantages`: PPO's with gamma = lambda = 1 and the group mean as the value),
so a step sequence is pushed exactly by the return it collects. Variants (`variant=`):

  sum         r_k = p_k: every restated step adds return, so repetition pays (the hack)
  clip        r_k = min(p_k - eta, 0): no step adds return (eta = 0.5)
  delta       r_k = p_k - p_{k+1}, r_K = p_K: the return from step k is p_k, bounded
  clip_delta  (default) delta of the clipped scores
  outcome     the success reward alone (no PRM)

`ppo` in the argument (e.g. `variant=clip,ppo`) trains with PPO and a critic instead (the
paper's setting: GAE over the same token rewards).
Repetition is logged as "reward/prm/repeated_steps" (share of step lines restating an earlier
one) and "completion_length".
"""

from configs import base, common, prm

VARIANTS = ("clip_delta", "sum", "clip", "delta", "outcome")


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS}, variant="clip_delta",
                         smoke=False, ppo=False, alpha=0.2, eta=0.5)
  algorithm = "ppo" if arg.ppo else "grpo"
  c = base.get_config(smoke=arg.smoke, algorithm=algorithm)
  prm.steps_policy(c, smoke=arg.smoke)
  if algorithm == "grpo":
    # No division by the group's std: in a group whose outcomes are all equal, dividing would
    # blow the PRM's small differences up to the outcome's scale (measured: with "group",
    # Clip+Delta at alpha 0.2 falls from 46% to 2% held-out, writing one step and no answer).
    c.algo.update(loss_type="grpo", beta=0.0, advantage="process", scale_rewards="none")
  c.rewards.update(terms="verifier" if arg.variant == "outcome" else f"verifier,prm:{arg.alpha}",
                   prm_mechanism="sum" if arg.variant == "outcome" else arg.variant,
                   prm_eta=arg.eta)
  if not arg.smoke:
    c.rollout.update(num_generations=8, temperature=1.0)
    c.train.update(steps=150, batch_size=16, eval_every=50)
    c.optim.update(learning_rate=1e-4, warmup_steps=5)
  return c
