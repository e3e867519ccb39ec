"""Pretraining of the shipped embedded model: the stand-in for an instruct checkpoint.

    python launch/train.py --config=configs/pretrain.py --workdir=/tmp/pretrain
    python launch/ship_pretrained.py --workdir=/tmp/pretrain   # -> rewardjax/pretrained/arith

3,500 steps x 128 examples: 23 minutes on a 2-core CPU measuring ~150 GFLOP/s float32 matmul.

The SFT algorithm on the warm-start half of the built-in arithmetic task (the other half is
left new for RL): task demonstrations from a demonstrator that drops the carry on half the
questions that have one (`tasks.carry_slip`, a flaw RL can fix), plus 30,000 examples of the
SPARK judge and reflection formats on synthetic wrong answers (`recipes.spark.format_warmstart`)
in which the same demonstrator works the question out (slipping at the same rate), checks its
working digit by digit against the shown answer and states the verdict its check gives: what
an instruct model brings to SPARK (arXiv 2509.22624), a policy that solves and judges a little,
and judges no better than it solves. The run exports a Hugging Face directory (config.json,
model.safetensors, tokenizer) to `<workdir>/hf`; every embedded default config (spark, grpo,
dpo, reward_model) starts from the shipped copy through `--config.model.checkpoint`, the path
an HF user takes. `tests/pretrained_test.py` checks the shipped files against this config
(fingerprint) and re-runs its first steps.
"""

import ml_collections

from configs import base, common, spark


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False)
  c = base.get_config(smoke=arg.smoke, size="tiny", algorithm="sft")
  c.recipe = "spark"           # the judge / reflection formats and the self-judging eval
  c.algo.update(loss_type="nll", slip_rate=0.5)
  # 16 completion tokens: a judge's working, check line and verdict take 10 with EOS.
  c.data.update(difficulty=1, fmt="short", num_train=20_000, num_eval=256, bucket=8,
                max_completion_length=16)
  c.rollout.update(max_new_tokens=10)
  c.warmstart.steps = 0        # this job is the supervised stage itself
  c.model.checkpoint = ""      # from scratch
  if not arg.smoke:
    # Constant learning rate after warmup: a run of k steps is the prefix of a longer one.
    c.train.update(steps=3500, batch_size=128, eval_every=500, eval_batch_size=128)
    c.optim.update(learning_rate=1e-3, warmup_steps=50, schedule="constant", b2=0.99)
    c.checkpoint.update(every=500)
  else:
    c.train.batch_size = 8
  s = spark.get_config("grpo_only,smoke" if arg.smoke else "grpo_only")
  c.recipe_args = ml_collections.ConfigDict(s.recipe_args.to_dict())
  c.recipe_args.update(format_warmstart=30_000 if not arg.smoke else 16,
                       format_warmstart_labels="true")
  spark.link_recipe_args(c)
  return c
