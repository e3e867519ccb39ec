"""Train-state bytes with and without LoRA (arXiv 2106.09685), from the abstract state only.

  python benchmarks/lora_memory.py                 # Qwen2.5-0.5B's architecture, rank 16
  python benchmarks/lora_memory.py --rank=64

The state is the trainer's (`train_state.state_layout`: AdamW of the base config, a reference policy
as GRPO with beta > 0 keeps), evaluated with `jax.eval_shape`, so nothing is allocated and the
numbers hold for any machine. Without LoRA the optimizer tracks every weight and the reference
is a full copy; with LoRA both cover the adapters only.
"""

import argparse
import dataclasses

import jax
import ml_collections

from rewardjax import train, train_state
from rewardjax.models import transformer

# Qwen2.5-0.5B (config.json of Qwen/Qwen2.5-0.5B-Instruct), float32 params.
QWEN2_5_0_5B = transformer.ModelConfig(
    vocab_size=151_936, hidden_size=896, intermediate_size=4_864, num_layers=24, num_heads=14,
    num_kv_heads=2, head_dim=64, tie_word_embeddings=True, qkv_bias=True, rope_theta=1e6)
OPTIM = ml_collections.ConfigDict(dict(
    learning_rate=1e-4, warmup_steps=0, schedule="constant", weight_decay=0.0, max_grad_norm=1.0,
    grad_accum_steps=1, b1=0.9, b2=0.99))


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def state_bytes(config: transformer.ModelConfig) -> dict:
  """Bytes of params, optimizer state, reference and the whole TrainState of `config`."""
  mesh = train.sharding.make_mesh(-1, 1, 1)
  with jax.set_mesh(mesh):
    _, abstract, _ = train_state.state_layout(
        lambda rngs: transformer.Transformer(config, rngs=rngs),
        train.make_optimizer(OPTIM, 100), mesh, jax.random.key(0), with_ref=True)
  return {"params": nbytes(abstract.params), "opt_state": nbytes(abstract.opt_state),
          "ref_params": nbytes(abstract.ref_params), "total": nbytes(abstract)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--rank", type=int, default=16)
  args = parser.parse_args()
  rows = {"full": state_bytes(QWEN2_5_0_5B),
          f"lora r={args.rank}": state_bytes(dataclasses.replace(
              QWEN2_5_0_5B, lora_rank=args.rank, lora_alpha=2.0 * args.rank))}
  print(f"{'state':<12}" + "".join(f"{k:>16}" for k in next(iter(rows.values()))))
  for name, row in rows.items():
    print(f"{name:<12}" + "".join(f"{v / 2**20:>13.1f} MB" for v in row.values()))


if __name__ == "__main__":
  main()
