"""Self-Rewarding Language Models (Yuan et al., arXiv 2401.10020): rounds in which the model
samples K = 4 answers to a fresh split of 2,048 questions, judges them itself (LLM-as-a-judge:
the SPARK pointwise judge prompt the shipped model was trained on, scored p(yes) / (p(yes) +
p(no)) after its own working, our short stand-in for the additive 5-point prompt), pairs the
highest- against the lowest-scored answer (ties discarded), and trains DPO for 40 steps with
the round's starting model as the reference. 4 rounds from the shipped model.

  judge=self          the model judges itself (the paper)
  judge=reward_model  the shipped reward model judges (rewardjax/pretrained/arith_rm)
  judge=verifier      the verifier as an oracle judge (the upper baseline)

    python launch/train.py --config=configs/self_rewarding.py --workdir=/tmp/self_rewarding

`make` is shared by the other round-based configs (cream, temporal_sr, dno, online_dpo, treg,
sspo): each is this file with another rule, objective or judge.
"""

import dataclasses

from configs import common, dpo
from rewardjax import pretrained, rounds

JUDGES = {"self": "judge,verifier:0", "reward_model": "reward_model,verifier:0",
          "verifier": "verifier"}


def make(arg, *, rule: str, loss_type: str = "sigmoid", num_rounds: int = 4,
         steps_per_round: int = 40, **recipe_args):
  """The round-based config: DPO-family `loss_type` on pairs built by `rule` each round."""
  c = dpo.get_config(f"size={arg.size}" + (",smoke" if arg.smoke else ""))
  c.recipe = "self_rewarding"
  c.algo.loss_type = loss_type
  c.reward_eval.update(questions=0, best_of_n=0)  # rounds report task accuracy per round
  c.rewards.update(terms=JUDGES[arg.judge], judge_read="probability", judge_max_new_tokens=10)
  if arg.judge == "reward_model":
    # sigma(score) in [0, 1], the scale of the self-judge's p(yes) and of DNO's thresholds.
    c.rewards.update(reward_model=pretrained.ARITH_RM, reward_model_sigmoid=True)
  c.rollout.update(num_generations=4, temperature=1.0, max_new_tokens=8)
  options = dict(rule=rule, steps_per_round=steps_per_round, prompts_per_round=2048)
  if arg.smoke:
    # Two steps: two rounds of one step (Temporal SR: one iteration of two phases).
    num_rounds = 1 if rule == "temporal" else 2
    options = dict(options, steps_per_round=1, prompts_per_round=8)
    c.rollout.update(num_generations=2, max_new_tokens=4)
  options.update(recipe_args)
  c.recipe_args = dataclasses.asdict(rounds.RoundOptions(**options))
  s = c.recipe_args.steps_per_round
  c.train.update(steps=num_rounds * s * (2 if rule == "temporal" else 1), eval_every=s)
  if not arg.smoke:
    c.data.update(num_eval=2048)   # 2,048 held-out questions: +-0.9 points of noise
    c.train.update(batch_size=32)
    c.checkpoint.update(every=s)
  return c


def parse(arg, choices=None, **defaults):
  """`common.parse_arg` with the round configs' keys: judge, size, smoke (and `choices`)."""
  return common.parse_arg(arg, choices={"judge": JUDGES, "size": common.MODELS, **(choices or {})},
                          **{"judge": "self", "size": "tiny", "smoke": False, **defaults})


def against_dpo(arg, objective: str):
  """`objective` (variant=<objective>) or its base DPO (variant=dpo) on the same rounds of
  pairs judged by the shipped reward model (configs/treg.py, sspo.py)."""
  variants = {objective: objective, "dpo": "sigmoid"}
  arg = parse(arg, {"variant": variants}, variant=objective, judge="reward_model")
  return make(arg, rule="self_rewarding", loss_type=variants[arg.variant])


def get_config(arg=None):
  return make(parse(arg), rule="self_rewarding")
