"""Decode-step time against KV-cache length: where a rewardjax rollout spends its time.

    python benchmarks/decode_steps.py

Same tiny Qwen2-shaped model as `benchmarks/rollouts.py` (D 256, F 1024, 4 layers, 4/2 heads,
V 64; fp32) and 64 prompts. For each prompt length S, one `generate` call with 8 and one with 64
new tokens; (t64 - t8) / 56 is the cost of one decode step, whose KV cache grows from S + 8 to
S + 64 slots (`rollouts.DECODE_SEGMENTS`). A step cost that grows with S (fixed batch, model and
new tokens) is time spent reading the cache.
"""

import argparse

import jax
import machine  # noqa: E402 (benchmarks/machine.py, next to this script)
import numpy as np
from flax import nnx

from rewardjax import rollouts
from rewardjax.models.transformer import ModelConfig, Transformer


def call_seconds(model, prompts, new_tokens: int, repeats: int) -> float:
  mask = np.ones_like(prompts)
  return machine.median_seconds(lambda: rollouts.generate(
      model, prompts, mask, jax.random.key(0), max_new_tokens=new_tokens,
      decoding=rollouts.Decoding(eos_token_id=None)).tokens, repeats=repeats)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompts", type=int, default=64)
  parser.add_argument("--prompt_lens", type=lambda s: [int(x) for x in s.split(",")],
                      default=[16, 144])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  config = ModelConfig(vocab_size=64, hidden_size=256, intermediate_size=1024, num_layers=4,
                       num_heads=4, num_kv_heads=2, head_dim=64, qkv_bias=True,
                       tie_word_embeddings=False)
  model = nnx.split(Transformer(config, rngs=nnx.Rngs(0)), nnx.Param)
  rng = np.random.default_rng(0)
  for prompt_len in args.prompt_lens:
    prompts = rng.integers(1, 64, (args.prompts, prompt_len)).astype(np.int32)
    short, long = (call_seconds(model, prompts, t, args.repeats) for t in (8, 64))
    print(f"prompt {prompt_len:4d} tokens, cache <= {prompt_len + 64:4d} slots: "
          f"{(long - short) / 56 * 1e3:.2f} ms per decode step "
          f"(8 new tokens {short * 1e3:.1f} ms, 64 new tokens {long * 1e3:.1f} ms)")


if __name__ == "__main__":
  main()
