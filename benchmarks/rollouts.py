"""Rollout throughput: rewardjax `generate` vs transformers `generate` on the same tiny Qwen2.

Run: `python benchmarks/rollouts.py` (CPU; about a minute). Both sides sample exactly
`--new_tokens` tokens per prompt at temperature 1 with no top-k/top-p and no EOS, so they do
identical work. Prints new tokens/s of each (median of `--repeats` timed runs after a warm-up;
the rewardjax compile time is reported separately), their ratio, the achieved model FLOP/s and
the machine's measured f32 matmul FLOP/s. transformers runs with 2 torch threads (the
configuration of record) and with 1, since OpenMP barriers collapse on a shared machine.

Model FLOPs per call (stated so the figure can be checked):
  2 * P * (B * (S + T - 1))  +  4 * N * H * K * sum over generated tokens of the context length
where P = parameters used in matmuls (all but the embedding table, lm_head included), B prompts,
S prompt tokens, T new tokens; the prefill processes S positions per prompt and each of the
T - 1 decode steps one more; attention does q.k and p.v over the tokens seen so far.
"""

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import machine  # noqa: E402 (benchmarks/machine.py, next to this script)
import numpy as np
import torch
import transformers
from flax import nnx

from rewardjax import rollouts
from rewardjax.models.transformer import ModelConfig, Transformer


def copy_qwen2(hf_model, config: ModelConfig) -> Transformer:
  """A rewardjax Transformer holding the weights of a transformers Qwen2ForCausalLM."""
  sd = {k: v.detach().float().numpy() for k, v in hf_model.state_dict().items()}
  d, h, kv, k = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
  model = Transformer(config, rngs=nnx.Rngs(0))
  model.embed_vd[...] = jnp.asarray(sd["model.embed_tokens.weight"])
  model.final_norm.scale[...] = jnp.asarray(sd["model.norm.weight"])
  if not config.tie_word_embeddings:
    model.lm_head_dv[...] = jnp.asarray(sd["lm_head.weight"].T)
  for i, layer in enumerate(model.layers):
    p = f"model.layers.{i}."
    attn = layer.attention
    layer.input_norm.scale[...] = jnp.asarray(sd[p + "input_layernorm.weight"])
    layer.post_attention_norm.scale[...] = jnp.asarray(sd[p + "post_attention_layernorm.weight"])
    attn.q_dhk[...] = jnp.asarray(sd[p + "self_attn.q_proj.weight"].T.reshape(d, h, k))
    attn.k_dhk[...] = jnp.asarray(sd[p + "self_attn.k_proj.weight"].T.reshape(d, kv, k))
    attn.v_dhk[...] = jnp.asarray(sd[p + "self_attn.v_proj.weight"].T.reshape(d, kv, k))
    attn.o_hkd[...] = jnp.asarray(sd[p + "self_attn.o_proj.weight"].T.reshape(h, k, d))
    attn.q_bias_hk[...] = jnp.asarray(sd[p + "self_attn.q_proj.bias"].reshape(h, k))
    attn.k_bias_hk[...] = jnp.asarray(sd[p + "self_attn.k_proj.bias"].reshape(kv, k))
    attn.v_bias_hk[...] = jnp.asarray(sd[p + "self_attn.v_proj.bias"].reshape(kv, k))
    layer.mlp.gate_df[...] = jnp.asarray(sd[p + "mlp.gate_proj.weight"].T)
    layer.mlp.up_df[...] = jnp.asarray(sd[p + "mlp.up_proj.weight"].T)
    layer.mlp.down_fd[...] = jnp.asarray(sd[p + "mlp.down_proj.weight"].T)
  return model


def model_flops(config: ModelConfig, matmul_params: int, batch: int, prompt_len: int,
                new_tokens: int) -> float:
  """Forward FLOPs of one generate call (formula in the module docstring)."""
  positions = batch * (prompt_len + new_tokens - 1)
  context = batch * sum(prompt_len + t for t in range(new_tokens))
  attention = 4 * config.num_layers * config.num_heads * config.head_dim * context
  return 2.0 * matmul_params * positions + attention


def time_calls(fn, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompts", type=int, default=64)
  parser.add_argument("--prompt_len", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  # 2 threads is the configuration of record; 1 thread is also timed because torch's OpenMP
  # barriers collapse when the machine is shared (measured 10x slower at load average 5).
  parser.add_argument("--torch_threads", type=lambda s: [int(x) for x in s.split(",")],
                      default=[2, 1])
  args = parser.parse_args()
  torch.manual_seed(0)

  hf_config = transformers.Qwen2Config(
      vocab_size=64, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
      max_position_embeddings=512)
  hf_model = transformers.Qwen2ForCausalLM(hf_config).eval()
  config = ModelConfig(
      vocab_size=64, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=4,
      num_kv_heads=2, head_dim=64, qkv_bias=True, tie_word_embeddings=False,
      rms_norm_eps=hf_config.rms_norm_eps, rope_theta=hf_config.rope_parameters["rope_theta"])
  model = copy_qwen2(hf_model, config)
  graphdef, params = nnx.split(model, nnx.Param)
  matmul_params = sum(x.size for x in jax.tree.leaves(params)) - model.embed_vd[...].size

  rng = np.random.default_rng(0)
  prompts = rng.integers(1, 64, (args.prompts, args.prompt_len)).astype(np.int32)
  mask = np.ones_like(prompts)
  new_tokens = args.prompts * args.new_tokens
  flops = model_flops(config, matmul_params, args.prompts, args.prompt_len, args.new_tokens)

  prompts_jax, mask_jax = jnp.asarray(prompts), jnp.asarray(mask)
  calls = [0]

  def run_rewardjax():
    calls[0] += 1
    out = rollouts.generate((graphdef, params), prompts_jax, mask_jax,
                            jax.random.key(calls[0]), max_new_tokens=args.new_tokens,
                            decoding=rollouts.Decoding(eos_token_id=None, temperature=1.0,
                                                       top_k=0, top_p=1.0))
    out.completion_tokens.block_until_ready()
    assert int(out.lengths.min()) == args.new_tokens

  prompts_torch, mask_torch = torch.from_numpy(prompts).long(), torch.from_numpy(mask).long()

  def run_transformers(threads):
    torch.set_num_threads(threads)
    with torch.inference_mode():
      out = hf_model.generate(
          input_ids=prompts_torch, attention_mask=mask_torch, do_sample=True, temperature=1.0,
          top_k=0, top_p=1.0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
          eos_token_id=None, pad_token_id=0)
    assert out.shape[1] == args.prompt_len + args.new_tokens

  start = time.perf_counter()
  run_rewardjax()
  compile_s = time.perf_counter() - start
  runs = {"rewardjax": run_rewardjax}
  runs.update({threads: functools.partial(run_transformers, threads)
               for threads in args.torch_threads})
  for run in runs.values():  # warm-up
    run()
  # Interleaved, so that on a shared machine every contender sees the same background load.
  times = {name: [] for name in runs}
  for _ in range(args.repeats):
    for name, run in runs.items():
      times[name] += time_calls(run, 1)
  rj_s = statistics.median(times.pop("rewardjax"))
  hf_s = {threads: statistics.median(t) for threads, t in times.items()}
  best_threads = min(hf_s, key=hf_s.get)

  peak = machine.matmul_flops_per_s()
  print(f"model: {matmul_params / 1e6:.2f}M matmul params, {args.prompts} prompts x "
        f"{args.prompt_len} tokens -> {args.new_tokens} new tokens each; jax {jax.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
  print(f"rewardjax    : {new_tokens / rj_s:9.0f} new tokens/s  ({rj_s * 1e3:.0f} ms/call; "
        f"compile = first call - median call = {compile_s - rj_s:.1f} s)")
  for threads, seconds in hf_s.items():
    print(f"transformers : {new_tokens / seconds:9.0f} new tokens/s  ({seconds * 1e3:.0f} ms/call, "
          f"torch {threads} thread{'s' if threads > 1 else ''})")
  print(f"ratio rewardjax / transformers: {hf_s[args.torch_threads[0]] / rj_s:.2f}x at "
        f"{args.torch_threads[0]} torch threads, {hf_s[best_threads] / rj_s:.2f}x against the "
        f"faster ({best_threads})")
  print(f"model FLOP/s : rewardjax {flops / rj_s / 1e9:.1f} GFLOP/s, transformers "
        f"{flops / hf_s[best_threads] / 1e9:.1f} GFLOP/s ({flops / 1e9:.2f} GFLOP per call); "
        f"measured f32 matmul {peak / 1e9:.1f} GFLOP/s (2048^2, jnp, all cores)")
  print(machine.describe(peak))

if __name__ == "__main__":
  main()
