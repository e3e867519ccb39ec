"""R1-Reward's StableReinforce with its consistency reward (arXiv 2505.02835, §3), on the
multi-step task (`configs/prm.py: steps_policy`).

    python launch/train.py --config=configs/stable_reinforce.py --workdir=/tmp/stable
    python launch/train.py --config=configs/stable_reinforce.py:variant=reinforce_pp \
        --workdir=/tmp/reinforce_pp

variant=stable_reinforce: REINFORCE++ (one sample per prompt, the sequence reward minus
1e-3 * k1 KL per token, returns whitened over the batch) with the pre-clip |log rho| <= ln 1e3
and the advantage filter |A| <= 3 (official yfzhang114/r1_reward `openrlhf/models/loss.py`,
`replay_buffer.py`), and the reward of `math_verifier_mllm.py`:

    R = 0.5 * format + accuracy * (1 + 0.5 * consistency)

format: every step line is "a op b = c" and the last line a number (`data.steps.well_formed`);
consistency: +1 if the final answer equals the last step's result, -1 if not
(`data.steps.consistency`). The paper asks an external judge LLM whether the last reasoning
lines agree with the answer; on this task the check is exact, with no judge.
variant=reinforce_pp: the same without pre-clip, filter and consistency (reward = accuracy).
"""

from configs import base, common, grpo, prm

VARIANTS = ("stable_reinforce", "reinforce_pp")


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS}, variant="stable_reinforce",
                         smoke=False)
  c = base.get_config(smoke=arg.smoke, algorithm="grpo")
  prm.steps_policy(c, smoke=arg.smoke)
  c.algo.update(grpo.VARIANTS[arg.variant])
  c.rewards.update(terms="format:0.5,verifier,consistency:0.5"
                   if arg.variant == "stable_reinforce" else "verifier")
  if not arg.smoke:
    # n_samples_per_prompt = 1 (scripts/train.sh): 128 prompts a step, as many rows as 16 x 8.
    c.rollout.update(num_generations=1, temperature=1.0)
    c.train.update(steps=150, batch_size=128, eval_every=50)
    c.optim.update(learning_rate=1e-4, warmup_steps=5)
  return c
