"""DPO step time: rewardjax vs TRL's DPOTrainer on the same tiny Qwen2, alternating in one run.

Run: `python benchmarks/dpo_step.py` (CPU, about 2 minutes; TRL is timed when installed).
One optimizer step: 16 (prompt, chosen, rejected) pairs, prompt 16 tokens (<bos> + 15) and
completions of 48 tokens (47 + <eos>) each, so every one of the 32 rows is 64 tokens; reference
log-probs of both completions (beta = 0.1, sigmoid loss), the policy's forward and backward, and
AdamW, float32. rewardjax runs the DPO program's batch stages and update step
(`algorithms.preference.build`: `make_batch`, `make_step`), jitted by `train.jit_step`, as
`train.run` does (reference log-probs computed each step, as TRL does without
`precompute_ref_log_probs`); TRL runs `DPOTrainer.train()` (with `gradient_checkpointing=False`,
so both do the same arithmetic), and a callback times each TRL step and then one rewardjax
step. Medians over `--steps` steps after `--warmup`; run it on an idle machine.

Model FLOPs per step, with F(n, c) as in `grpo_step.py` (2 P n + 4 L H K c):
  step = F(ref) + 3 * F(train),  both over 2 * pairs rows of prompt + completion positions
(what TRL computes); rewardjax computes each pair's prompt once, and prints what it executes.
"""

import argparse
import os
import sys
import tempfile

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpo_step  # noqa: E402  (shared workload helpers: tokenizer, model, FLOPs, report)

from rewardjax import sharding  # noqa: E402
from rewardjax.algorithms import preference  # noqa: E402


def records(args, count: int) -> list[dict]:
  """`count` pairs of random texts: prompt_len - 1 characters (+ <bos>), completions of
  completion_len - 1 characters (+ <eos>)."""
  prompts = grpo_step.random_texts(count, args.prompt_len - 1, seed=1)
  chosen = grpo_step.random_texts(count, args.completion_len - 1, seed=2)
  rejected = grpo_step.random_texts(count, args.completion_len - 1, seed=3)
  return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)]


def rewardjax_step(model_dir: str, items: list[dict], args):
  """A zero-argument function running one full rewardjax DPO step (batch stages + update)."""
  tok = grpo_step.tokenizer()
  mesh = sharding.make_mesh()
  state, state_sharding = grpo_step.initial_state(model_dir, mesh)
  # File records (not the built-in task): `pairs` records per step from a `RecordStream`.
  setup = grpo_step.make_setup(tok, mesh, grpo_step.tiny_qwen2(), batch_size=args.pairs,
                               prompt_len=args.prompt_len, completion_len=args.completion_len,
                               chunk_size=args.chunk_size,
                               records={"train": items, "heldout": []})
  options = ml_collections.ConfigDict(dict(preference.DEFAULTS, loss_type="sigmoid",
                                           beta=args.beta))
  run, holder = grpo_step.timed_program(preference.build(options, setup), state,
                                        state_sharding, mesh)

  def checked():
    run()
    assert holder["batch"].tokens.shape == (2 * args.pairs, args.prompt_len + args.completion_len)

  return checked


def trl_run(model_dir: str, items: list[dict], args, between_steps):
  """Trains TRL's DPOTrainer for warmup + steps steps; returns its per-step seconds."""
  import torch  # noqa: PLC0415
  from datasets import Dataset  # noqa: PLC0415
  from trl import DPOConfig, DPOTrainer  # noqa: PLC0415

  torch.set_num_threads(args.torch_threads)
  callback, times = grpo_step.step_timer(between_steps)
  steps = args.warmup + args.steps
  config = DPOConfig(
      output_dir=os.path.join(args.workdir, "trl"), per_device_train_batch_size=args.pairs,
      beta=args.beta, loss_type=["sigmoid"], learning_rate=1e-6, max_steps=steps,
      logging_steps=10**6, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
      fp16=False, seed=0, dataloader_num_workers=0, disable_dropout=True,
      gradient_checkpointing=False, max_length=args.prompt_len + args.completion_len)
  rows = (items * steps)[:args.pairs * steps]
  dataset = Dataset.from_dict({k: [r[k] for r in rows] for k in ("prompt", "chosen", "rejected")})
  trainer = DPOTrainer(model=model_dir, args=config, train_dataset=dataset,
                       processing_class=grpo_step.tokenizer(), callbacks=[callback])
  trainer.train()
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pairs", type=int, default=16)
  parser.add_argument("--prompt_len", type=int, default=16, help="tokens, <bos> included")
  parser.add_argument("--completion_len", type=int, default=48, help="tokens, <eos> included")
  parser.add_argument("--beta", type=float, default=0.1)
  parser.add_argument("--steps", type=int, default=7)
  grpo_step.add_runner_arguments(parser)
  args = parser.parse_args()
  args.workdir = args.workdir or tempfile.mkdtemp(prefix="dpo_step_")
  model_dir = os.path.join(args.workdir, "model")
  config = grpo_step.write_model(model_dir)
  items = records(args, args.pairs * 4)
  rj_step = None if args.trl_only else rewardjax_step(model_dir, items, args)
  rj_times, trl_times = grpo_step.time_both(
      rj_step, lambda between: trl_run(model_dir, items, args, between), args)

  rows, length = 2 * args.pairs, args.prompt_len + args.completion_len
  p = grpo_step.matmul_params(config)
  flops = 4 * grpo_step.forward_flops(config, p, rows, length)
  # rewardjax: each pair's prompt once (`preference.paired_prompt_length`).
  executed = 4 * (grpo_step.forward_flops(config, p, args.pairs, args.prompt_len)
                  + grpo_step.forward_flops(config, p, rows, args.completion_len,
                                            first_position=args.prompt_len))
  print(f"workload: {args.pairs} pairs, prompt {args.prompt_len} + completions "
        f"{args.completion_len} / {args.completion_len} tokens, beta {args.beta}, sigmoid, "
        f"float32; model {grpo_step.matmul_params(config) / 1e6:.2f}M matmul params")
  grpo_step.report(rj_times, trl_times, flops, args, executed)


if __name__ == "__main__":
  main()
