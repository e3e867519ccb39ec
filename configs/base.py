"""Base config: every field the trainer reads, with the embedded CPU defaults.

Paper variants are small diffs of this file (configs/grpo.py, dpo.py, reward_model.py,
spark.py). A field set to 0 / "" means "off"; no field is None so command-line overrides keep
their type (`--config.algo.beta=0.0`).

    python launch/train.py --config=configs/grpo.py --workdir=/tmp/grpo
"""

import dataclasses

import ml_collections

from configs import common
from rewardjax import algorithms, guards, pretrained
from rewardjax.evaluation import reward_eval
from rewardjax.rewards import sources


def get_config(smoke: bool = False, size: str = "tiny",
               algorithm: str = "grpo") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.algorithm = algorithm         # rewardjax.algorithms.ALGORITHMS: grpo | dpo | reward_model | sft
  c.recipe = ""                   # "" or a module of rewardjax/recipes, e.g. "spark"

  c.model = ml_collections.ConfigDict(dict(
      checkpoint="", tokenizer="", dtype="float32", param_dtype="float32",
      attention_impl="xla", remat="none", rope_theta=10_000.0, rms_norm_eps=1e-6,
      rope_type="default", rope_factor=1.0, rope_low_freq_factor=1.0,
      rope_high_freq_factor=4.0, rope_original_max_position=8192,
      # LoRA (arXiv 2106.09685, rewardjax/models/lora.py): rank 0 = off (every weight trains);
      # r > 0 trains only rank-r adapters on `lora_targets` (scale lora_alpha / r), and the
      # reference policy is the frozen base (no second copy of the weights).
      lora_rank=0, lora_alpha=16.0, lora_targets="q,k,v,o,gate,up,down"))
  c.model.update({k: v for k, v in common.MODELS["tiny"].items()})
  if size in common.MODELS:  # the architecture (a checkpoint's config.json overrides it)
    c.model.update({k: v for k, v in common.MODELS[size].items() if k != "checkpoint_name"})
  if size == "tiny" and not smoke:
    # The shipped pretrained model (configs/pretrain.py), loaded as a Hugging Face directory;
    # --config.model.checkpoint="" trains the "tiny" architecture from a warm start instead.
    c.model.checkpoint = pretrained.ARITH

  c.data = ml_collections.ConfigDict(dict(
      source="arithmetic",          # "arithmetic" | "jsonl" | "hf" | "tfds"
      path="",                      # jsonl file / HF dataset dir / TFDS name
      eval_path="",                 # held-out file (else a hashed split of `path`)
      tfds_data_dir="",
      difficulty=1, fmt="short", heldout_fraction=0.1,
      num_train=20_000, num_eval=256,
      chat_template=False,          # wrap prompts with the tokenizer's chat template
      max_prompt_length=64, max_completion_length=16, bucket=16))

  # Supervised warm start so a from-scratch model begins with non-zero accuracy. slip_rate:
  # the demonstrator forgets the carry this often (tasks.sft_examples), a flaw RL can fix.
  # from_checkpoint: run it on top of model.checkpoint (else a checkpoint replaces it).
  c.warmstart = ml_collections.ConfigDict(dict(
      steps=0, batch_size=64, learning_rate=3e-3, warmup_steps=20, slip_rate=0.0,
      from_checkpoint=False))

  # The reward of sampling algorithms without a recipe: weighted terms over
  # rewardjax.rewards.sources.SOURCES ("verifier,sar:0.2") and each source's options.
  c.rewards = ml_collections.ConfigDict(dataclasses.asdict(sources.RewardOptions()))

  # Reward evaluation of reward-model and DPO runs (rewardjax.evaluation.reward_eval): the
  # built-in RewardBench-style benchmark and best-of-N reranking; off (0) unless a config turns
  # it on (configs/reward_model.py, configs/dpo.py).
  c.reward_eval = ml_collections.ConfigDict(dataclasses.asdict(
      reward_eval.RewardEvalOptions(questions=0, best_of_n=0)))

  c.rollout = ml_collections.ConfigDict(dict(
      num_generations=8, max_new_tokens=8, temperature=1.0, top_p=1.0, top_k=0))

  # The algorithm's own block: its defaults (rewardjax/algorithms/<module>.py DEFAULTS), one
  # meaning per field; a paper variant is a diff of it.
  c.algo = ml_collections.ConfigDict(dict(algorithms.get(algorithm).defaults))

  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-4, warmup_steps=0, schedule="constant", weight_decay=0.0,
      max_grad_norm=1.0, grad_accum_steps=1, b1=0.9, b2=0.99))

  c.train = ml_collections.ConfigDict(dict(
      steps=100, batch_size=16,     # prompts per step (RL) or pairs per step (DPO / RM)
      eval_every=50, eval_batch_size=128, export_hf=True))

  c.checkpoint = ml_collections.ConfigDict(dict(every=25, keep=2, async_save=True))
  # Divergence guard (rewardjax.guards.GuardOptions): `patience` consecutive steps with a
  # non-finite loss or a metric beyond its bound stop the run; patience=0 turns it off.
  c.guard = ml_collections.ConfigDict(dataclasses.asdict(guards.GuardOptions()))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.distributed = ml_collections.ConfigDict(dict(
      initialize=False, coordinator_address="", num_processes=0, process_id=-1))
  c.recipe_args = ml_collections.ConfigDict()  # filled by a recipe's config

  if smoke:
    c.model.update(common.MODELS["smoke"])
    c.warmstart.update(steps=2, batch_size=8, warmup_steps=0)
    c.train.update(steps=2, batch_size=4, eval_every=2, eval_batch_size=8)
    c.rollout.update(num_generations=2, max_new_tokens=4)
    c.data.update(num_train=64, num_eval=8)
    c.checkpoint.update(every=1)
  return c
