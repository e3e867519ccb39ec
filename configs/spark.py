"""SPARK: one model as policy and generative judge (arXiv 2509.22624).

    python launch/train.py --config=configs/spark.py --workdir=/tmp/spark
    python launch/train.py --config=configs/spark.py:grpo_only --workdir=/tmp/spark_grpo
    python launch/eval.py --config=configs/spark.py --workdir=/tmp/spark
    python launch/train.py --config=configs/spark.py:qwen2_5_0_5b \
        --config.model.checkpoint=/path/to/Qwen2.5-0.5B-Instruct \
        --config.data.path=/path/to/gsm8k_train.jsonl   # {"prompt": ..., "answer": ...} lines

The default is the embedded CPU job: SPARK from the shipped pretrained model
(`rewardjax/pretrained/arith`, made by configs/pretrain.py; loaded as a Hugging Face directory
through `model.checkpoint`), a char-level model that solves 81% of held-out questions (its
demonstrator dropped half its carries) and judges its own answers at 69% (it checks its working
digit by digit against the judged answer, and its working slips like its answers do).
Each step trains 16 task prompts ("infer" period), then 16 recycled judge / reflection items
when the cache holds them ("reward" period, the step's followup batch), as the official loop.
`grpo_only` is the matched RLVR baseline: the same model, steps, task batches, rollouts and
evaluation, with recycling off. `paper_labels` is SPARK with the paper's recycling rule; the
tiny default balances the recycled pointwise verdicts (`recipes.spark.recycle`'s
`balance_labels`), since once the task is mostly solved the rule yields mostly "correct" items.
One GRPO objective for task, judge and reflection prompts as in the official code: PPO-clip
0.2, k3 KL in the loss with coefficient 0.001, token-mean aggregation (OpenRLHF's masked mean;
"bnpo" in TRL names), group-normalised advantages. `--config.recipe_args.judge_weight=0.5` is
the judge-loss-weight ablation (not in the paper). `--config.model.checkpoint=""` trains the
same architecture from scratch by the supervised warm start instead (the pretraining data, in
the `warmstart` block). Measured figures: README.md, "Results".
"""

import ml_collections

from configs import base, common

VARIANTS = {
    # balance_labels None: on for the tiny model (its recycled judge items are mostly "correct"
    # once the task is mostly solved), off for the HF presets (the paper's rule).
    "spark": dict(recycle=True, balance_labels=None),
    "paper_labels": dict(recycle=True, balance_labels=False),   # the paper's recycling rule
    "grpo_only": dict(recycle=False, balance_labels=False),
}

# The official objective (InternLM/Spark `loss.py` and its 7B training script), shared by both
# variants.
SPARK_ALGO = dict(loss_type="bnpo", beta=0.001, kl_estimator="low_var_kl", epsilon_low=0.2,
                  epsilon_high=0.2, advantage="grpo", scale_rewards="group",
                  dynamic_sampling=False, num_iterations=1, num_minibatches=1)

# HF presets: an instruct model (no warm start), a local GSM8K-style JSONL, chat templates,
# paper-style boxed prompts. Judge / CoT-reflection prompts quote whole answers: long prompts.
HF_PRESET = dict(source="jsonl", fmt="boxed", chat_template=True, max_prompt_length=1024,
                 max_completion_length=768, bucket=64, num_eval=256)


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS, "size": common.MODELS},
                         variant="spark", size="tiny", smoke=False)
  c = base.get_config(smoke=arg.smoke, size=arg.size, algorithm="grpo")
  c.recipe = "spark"
  c.algo.update(SPARK_ALGO)
  # launch/eval.py: the master-key probe of the judge (arXiv 2507.08794) on 128 questions.
  c.reward_eval.master_keys = 4 if arg.smoke else 128
  tiny = arg.size in ("tiny", "smoke")
  if tiny and not arg.smoke:
    # bucket 8: task prompts pad to 8 tokens and SPARK prompts to <= 40 (every column costs).
    c.data.update(difficulty=1, fmt="short", num_train=20_000, num_eval=256, bucket=8,
                  max_completion_length=16)
    # As in configs/grpo.py, the demonstrator drops half its carries: a flaw the verifier
    # reward can fix, so task accuracy has room to rise above the warm start.
    c.warmstart.update(steps=3000, batch_size=128, learning_rate=1e-3, warmup_steps=20,
                       slip_rate=0.5)
    # 10 tokens: a judge's working, check line and verdict + EOS (an answer takes <= 4).
    c.rollout.update(num_generations=8, max_new_tokens=10, temperature=1.0)
    # Each step trains 16 task prompts, then (SPARK) 16 recycled judge / reflection items; the
    # self-judging evaluation every 25 steps draws the judge-accuracy curve.
    c.train.update(steps=150, batch_size=16, eval_every=25, eval_batch_size=128)
    c.optim.update(learning_rate=5e-5, warmup_steps=5)
  elif not tiny:
    c.data.update(**HF_PRESET)
    c.warmstart.update(steps=0)
    c.rollout.update(num_generations=8, max_new_tokens=768, temperature=1.0)
    c.train.update(steps=500, batch_size=8, eval_every=100, eval_batch_size=32)
    c.optim.update(learning_rate=5e-7, warmup_steps=0)
  variant = dict(VARIANTS[arg.variant])
  if variant["balance_labels"] is None:
    variant["balance_labels"] = tiny
  c.recipe_args = ml_collections.ConfigDict(dict(
      variant,
      pointwise_prob=0.3,         # mixed groups: pointwise w.p. 0.3, else pairwise (official code)
      judge_weight=1.0,           # loss weight of judge items; 1 = the paper (no weights)
      # Judge / reflection examples added to the warm start (tiny model only; HF models
      # already know the formats): "random" verdicts teach the format, "true" verification.
      format_warmstart=40_000 if tiny and not arg.smoke else (16 if arg.smoke else 0),
      format_warmstart_labels="true",
      format_warmstart_slip_rate=0.5,   # the demonstrator's carry slips in its judging too
      eval_problems=128 if not arg.smoke else 4,   # held-out problems for the self-judging eval
      eval_samples=4 if not arg.smoke else 2,      # K sampled answers each (judge set, best-of-K)
      max_round=2,                                 # test-time self-reflection rounds (official)
  ))
  link_recipe_args(c)
  return c


def link_recipe_args(c: ml_collections.ConfigDict) -> None:
  """Points the recipe's size fields at the config fields they mirror, so command-line
  overrides of those fields follow."""
  c.recipe_args.group_size = c.rollout.get_ref("num_generations")
  c.recipe_args.max_new_tokens = c.rollout.get_ref("max_new_tokens")
  c.recipe_args.batch_size = c.train.get_ref("eval_batch_size")
  c.recipe_args.bucket = c.data.get_ref("bucket")
  c.recipe_args.max_prompt_length = c.data.get_ref("max_prompt_length")
  c.recipe_args.chat_template = c.data.get_ref("chat_template")
  c.recipe_args.tokenizer = c.model.get_ref("tokenizer")
  c.recipe_args.checkpoint = c.model.get_ref("checkpoint")
