"""SCoRe: training a model to self-correct with multi-turn RL (arXiv 2409.12917, §5).

    python launch/train.py --config=configs/score.py --workdir=/tmp/score
    python launch/train.py --config=configs/score.py:naive --workdir=/tmp/score_naive
    python launch/train.py --config=configs/score.py:qwen2_5_0_5b \
        --config.model.checkpoint=/path/to/Qwen2.5-0.5B-Instruct \
        --config.data.source=jsonl --config.data.path=/path/to/train.jsonl

Each rollout y1 ~ pi(. | x1) gets a second attempt y2 ~ pi(. | x2), x2 = the first attempt under
a fixed instruction that says it *might* be wrong (`rewardjax.turns`; the tiny model's is the
neutral SPARK answer-reflection template it was pretrained on, "check&fix\\nAns:41\\n47-8=", HF
presets append SCoRe's instruction after x1 + y1). Both attempts train, each on its own
completion tokens, with its own group baseline, on-policy (one update per batch: REINFORCE
with group baselines; the GRPO clip never binds). Stage I (the first `stage_one_steps`
steps): rewards (0, r2) and KL coefficient beta2 + beta1 on attempt 1, beta1 on attempt 2
(Eq. 3); Stage II: rewards (r1, r2 + alpha (r2 - r1)), beta1 on both (Eqs. 4-5). The paper
gives beta2 = 10 beta1 and "alpha significantly larger than 1" but no numbers:
beta1 = 0.1, beta2 = 1.0, alpha = 10 here are our choice (at beta1 = 0.01, beta2 = 0.1 the
first attempt drifted with the second in Stage I); the paper interleaves the stages for a few
rounds, here Stage I runs once (the first 30% of the steps), then Stage II. `naive` is the
two-attempt baseline that maximises r1 + r2 directly (no Stage I, alpha = 0, the same beta1).
The held-out evaluation reports greedy Accuracy@t1 ("accuracy_t1"), Accuracy@t2, Δ(t1, t2),
Δ(i→c) and Δ(c→i) (`rewardjax.evaluation.self_correction`).
"""

from configs import grpo

# beta1 = 0.1, beta2 = 10 beta1 = 1.0: the per-token k3 KL of these runs is 0.02-0.06 against
# advantages of order 1, and at beta1 = 0.01, beta2 = 0.1 Stage I did not hold attempt 1.
SCORE = dict(loss_type="grpo", advantage="grpo", scale_rewards="group", num_iterations=1,
             num_minibatches=1, turns=2, beta=0.1, kl_estimator="low_var_kl")
VARIANTS = {
    "score": dict(SCORE, turn_bonus=10.0, first_turn_kl=1.0),   # Stage I then Stage II
    "naive": dict(SCORE, turn_bonus=0.0, first_turn_kl=0.0),    # r1 + r2, Stage II only
}
STAGE_ONE_FRACTION = {"score": 0.3, "naive": 0.0}   # share of the steps spent in Stage I


def get_config(arg=None):
  arg, c = grpo.with_reward_variants(arg, VARIANTS, "score")
  c.algo.update(VARIANTS[arg.variant])
  if arg.size == "tiny" and not arg.smoke:
    # Two attempts cost about twice a GRPO step: 120 steps of 16 prompts x 8 rollouts x 2.
    c.train.update(steps=120, batch_size=16, eval_every=40)
  elif arg.size not in ("tiny", "smoke"):
    # x2 = x1 + y1 + instruction: room for the first attempt in the prompt. The instruction is
    # plain text after y1 (inside the assistant turn of a chat-templated x1).
    c.algo.revise_prompt = "append"
    c.data.max_prompt_length += c.rollout.max_new_tokens + 64
  # Linked to train.steps, so --config.train.steps=N keeps the share of Stage I.
  c.algo.stage_one_steps = (c.train.get_ref("steps") * STAGE_ONE_FRACTION[arg.variant]).to_int()
  return c
