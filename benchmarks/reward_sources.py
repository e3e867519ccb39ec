"""Model-scored rewards next to the sampler: rows per second of each reward source on one batch.

Run: `python benchmarks/reward_sources.py` (CPU; about a minute). One RL batch of the embedded
default (the shipped model, 16 prompts x 8 samples, 6 new tokens) is sampled with
`rollouts.generate`; then each reward source of `rewardjax.rewards.sources` scores the same
128 rollouts. Prints, per source, rows/s (median of `--repeats` timed calls after a warm-up
call that compiles) and its cost relative to the sampler: a judge that costs more than the
rollouts it judges is visible here. The judge generates its own working (10 tokens per row)
with the same sampler, so it is expected to cost about one rollout batch.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import machine  # noqa: E402 (benchmarks/machine.py, next to this script)
import numpy as np  # noqa: E402

from rewardjax import pretrained, rollouts, sharding  # noqa: E402
from rewardjax.data import tasks, tokenizers  # noqa: E402
from rewardjax.models import hf  # noqa: E402
from rewardjax.rewards import composition, sources  # noqa: E402
from rewardjax.types import TrainState  # noqa: E402

SOURCES = {"verifier": {}, "reward_model": dict(reward_model=pretrained.ARITH_RM),
           "sar": {}, "endogenous": {}, "coherent": dict(base_model=pretrained.ARITH),
           "judge": dict(judge_read="probability")}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--prompts", type=int, default=16)
  parser.add_argument("--samples", type=int, default=8)
  parser.add_argument("--new_tokens", type=int, default=6)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    tokenizer = tokenizers.load_tokenizer(pretrained.ARITH)
    graphdef, params = sources.place(hf.from_pretrained(pretrained.ARITH), mesh)
    state = TrainState(step=0, params=params, opt_state=None, rng=None, ref_params=params,
                       graphdef=graphdef)
    items = tasks.problems(args.prompts, split="heldout", difficulty=1, seed=0, fmt="short",
                           heldout_fraction=0.1)
    prompt_tokens, prompt_mask = tokenizers.encode_prompts(
        tokenizer, [it["prompt"] for it in items], bucket=8, max_length=64)
    decoding = rollouts.Decoding(temperature=1.0, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizers.pad_token_id(tokenizer))

    def sample():
      out = rollouts.generate((graphdef, params), *sharding.feed((prompt_tokens, prompt_mask)),
                              jax.random.key(0), max_new_tokens=args.new_tokens,
                              num_samples=args.samples, decoding=decoding)
      return jax.block_until_ready(out)

    out = sample()
    rows = args.prompts * args.samples
    sampler_s = machine.median_seconds(sample, repeats=args.repeats)
    # The host arrays `algorithms.grpo.sample` hands to the reward stage.
    arrays = {k: np.asarray(getattr(out, k)) for k in (
        "tokens", "prompt_mask", "completion_mask", "completion_tokens", "lengths",
        "model_logprobs")}
    texts = tokenizers.decode_completions(tokenizer, arrays["completion_tokens"])
    scored = composition.Scored([it for it in items for _ in range(args.samples)], texts,
                                arrays, state)
    print(f"{machine.describe()}, {jax.device_count()} device(s)")
    print(f"batch: {args.prompts} prompts x {args.samples} samples = {rows} rows, "
          f"{args.new_tokens} new tokens")
    print(f"{'source':<14}{'rows/s':>12}{'s/batch':>10}{'x sampler time':>16}")
    print(f"{'sampler':<14}{rows / sampler_s:>12.0f}{sampler_s:>10.3f}{1.0:>16.2f}")
    for name, options in SOURCES.items():
      term = sources.composition_from_options(
          sources.RewardOptions(terms=name, **options), tokenizer=tokenizer, mesh=mesh,
          fmt="short").terms[0]
      term.fn(scored)  # compile
      seconds = machine.median_seconds(lambda fn=term.fn: fn(scored), repeats=args.repeats)
      print(f"{name:<14}{rows / seconds:>12.0f}{seconds:>10.3f}{seconds / sampler_s:>16.2f}")


if __name__ == "__main__":
  main()
