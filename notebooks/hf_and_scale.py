# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Hugging Face models in, log-probs without [B, T, V], 8 devices, and a pod plan on a CPU
#
# The parts of rewardjax that scale: a Hugging Face model directory loads as a parameter pytree
# whose logits equal `transformers`', generation is a jitted KV-cache loop, token log-probs are
# computed chunk by chunk so the [B, T, V] logits never exist, a training step is sharded over
# a device mesh (data, fsdp, tensor), and the same step compiles ahead of time for a TPU
# topology that is not there. Everything here runs on a CPU runtime (about two minutes); CI
# executes it with tiny settings.

# %%
# Colab: clone and install rewardjax with the `aot` extra (libtpu, for section 5; about a
# minute); elsewhere nothing happens when rewardjax is importable (`pip install -e ".[aot]"`).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("rewardjax") is None:
  subprocess.run("git clone -q --depth 1 https://github.com/rewardjax/rewardjax.git && "
                 "pip install -q -e 'rewardjax[aot]'", shell=True, check=True)
  sys.path.insert(0, os.path.abspath("rewardjax"))

# %%
from rewardjax import notebook

# 8 emulated CPU devices for section 4: set before anything touches a JAX device.
settings = notebook.setup("hf_and_scale", cpu_devices=8)
TINY = settings.tiny  # True: CI's seconds-long sizes

import importlib.util  # noqa: E402
import os  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from configs import common  # noqa: E402
from rewardjax import pretrained, sharding, train  # noqa: E402
from rewardjax.data import tokenizers  # noqa: E402
from rewardjax.evaluation import accuracy  # noqa: E402
from rewardjax.kernels import logprobs  # noqa: E402
from rewardjax.models import hf  # noqa: E402

# %% [markdown]
# ## 1. A Hugging Face model directory
#
# Any Qwen2 / Llama / Mistral-style directory (config.json, *.safetensors, tokenizer files)
# loads with `hf.from_pretrained`; here the model shipped with rewardjax (a 0.6M-parameter
# `qwen2` model, char tokenizer), so nothing is downloaded. In Colab, a real one:
# `from huggingface_hub import snapshot_download;
# CHECKPOINT = snapshot_download("Qwen/Qwen2.5-0.5B-Instruct")`. When PyTorch is installed the
# same directory is loaded by `transformers` and the logits compared.

# %%
CHECKPOINT = pretrained.ARITH
model = hf.from_pretrained(CHECKPOINT)
tokenizer = tokenizers.load_tokenizer(CHECKPOINT)
print(type(model).__name__, model.config)
prompts = ["47+38=", "91-7=", "26+59=", "60-33="]
tokens, mask = tokenizers.encode_prompts(tokenizer, prompts, bucket=8)
positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # left padding: count real tokens
ours = np.asarray(model(jnp.asarray(tokens), positions=jnp.asarray(positions),
                        attention_mask=jnp.asarray(mask)))
if importlib.util.find_spec("torch") is not None:
  import torch
  import transformers

  reference = transformers.AutoModelForCausalLM.from_pretrained(CHECKPOINT).eval()
  with torch.no_grad():
    theirs = reference(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                       position_ids=torch.tensor(positions)).logits.numpy()
  print("max |logits - transformers logits| over real tokens:",
        float(np.abs(ours - theirs)[mask.astype(bool)].max()))

# %% [markdown]
# ## 2. Generation
#
# `rollouts.generate` prefills the prompts once and decodes with a KV cache inside one jitted
# loop; `accuracy.generate_texts` wraps it with the tokenizer (greedy here; temperature and
# several samples per prompt for RL).

# %%
graphdef, params = nnx.split(model, nnx.Param)
texts = accuracy.generate_texts(graphdef, params, tokenizer, prompts, jax.random.key(0),
                                sizes=accuracy.EvalSizes(max_new_tokens=6, batch_size=4,
                                                         bucket=8))
for prompt, text in zip(prompts, texts):
  print(f"{prompt!r} -> {text!r}")

# %% [markdown]
# ## 3. Token log-probs without the [B, T, V] logits
#
# Policy-gradient and DPO losses need log π(y_t) per completion token. With a 152k vocabulary
# the float32 logits of 8 × 2,048 tokens take 10 GB, and their gradient as much again.
# `kernels.logprobs.token_logprobs_from_hidden` unembeds `chunk_size` positions at a time inside
# a scan and recomputes each chunk in the backward pass, so no pass holds more than
# [B, chunk, V]. First: it equals the full log-softmax on the shipped model; then the compiled
# programs' temporary memory (XLA's own `memory_analysis`) for the gradient of a sum of
# log-probs as T grows, at D = 256, V = 32,768, B = 2.

# %%
hidden = model.hidden_states(jnp.asarray(tokens), positions=jnp.asarray(positions),
                             attention_mask=jnp.asarray(mask))[0][:, :-1]
targets = jnp.asarray(tokens)[:, 1:]
chunked = logprobs.token_logprobs_from_hidden(hidden, model.unembedding(), targets,
                                              chunk_size=4, return_entropy=False)
full = jnp.take_along_axis(jax.nn.log_softmax(model.logits(hidden), axis=-1),
                           targets[..., None], axis=-1)[..., 0]
print("max |chunked - full| log-prob:", float(jnp.abs(chunked - full).max()))

D, V, B = 256, 32_768, 2


def full_logprobs(h, w, y):
  logp = jax.nn.log_softmax(jnp.einsum("btd,dv->btv", h, w), axis=-1)
  return jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0].sum()


def chunked_logprobs(h, w, y):
  return logprobs.token_logprobs_from_hidden(h, w, y, chunk_size=128,
                                             return_entropy=False).sum()


def temp_mib(fn, length):
  shapes = (jax.ShapeDtypeStruct((B, length, D), jnp.float32),
            jax.ShapeDtypeStruct((D, V), jnp.float32),
            jax.ShapeDtypeStruct((B, length), jnp.int32))
  compiled = jax.jit(jax.grad(fn, argnums=(0, 1))).lower(*shapes).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


lengths = [128, 512] if TINY else [128, 256, 512, 1024, 2048]
memory = {name: [temp_mib(fn, t) for t in lengths]
          for name, fn in (("full logits", full_logprobs), ("chunked (128)", chunked_logprobs))}
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for name, mib in memory.items():
  ax.plot(lengths, mib, marker="o", label=name)
ax.plot(lengths, [B * t * V * 4 / 2**20 for t in lengths], "k--", linewidth=1,
        label="one [B, T, V] float32 array")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(lengths, [str(t) for t in lengths])
ax.minorticks_off()
ax.set(xlabel="completion length T", ylabel="XLA temporary MiB",
       title=f"gradient of summed token log-probs, V={V:,}")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## 4. A training step sharded over 8 devices
#
# `setup(..., cpu_devices=8)` above asked XLA for 8 CPU devices, as a TPU host has 4 or 8
# chips. The config's `mesh` block names the axes: `data` splits the rollouts, `fsdp` splits
# the parameters and optimizer state (and the rollouts), `tensor` the heads and MLP. The
# parameters carry logical axis names; `sharding.param_shardings` maps them onto the mesh. Then
# `train.run` trains GRPO from the shipped model on a 2 × 4 (data × fsdp) mesh: the same jitted
# step as on one device, its state born sharded.

# %%
mesh = sharding.make_mesh(data=2, fsdp=4, tensor=1)
_, abstract = nnx.split(nnx.eval_shape(lambda: hf.from_pretrained(CHECKPOINT)), nnx.Param)
placement = sharding.param_shardings(abstract, mesh)
for path, leaf in jax.tree_util.tree_leaves_with_path(placement):
  name = jax.tree_util.keystr(path)
  if "['layers']" not in name or name.startswith("['layers'][0]"):  # one layer shows them all
    print(f"{name:50s} {leaf.spec}")
# The [V, D] embedding: its V rows split over fsdp, each block on the 2 devices of its column.
embedding = jax.device_put(nnx.to_pure_dict(params)["embed_vd"], placement["embed_vd"])
jax.debug.visualize_array_sharding(embedding)

config = common.load_config(os.path.join(settings.repo, "configs/grpo.py"), {
    "mesh.data": 2, "mesh.fsdp": 4, "train.steps": 2 if TINY else 20,
    "train.eval_every": 2 if TINY else 10, "data.num_eval": 32 if TINY else 128})
summary = train.run(config, os.path.join(settings.workdir, "grpo_8_devices"))

# %% [markdown]
# ## 5. A pod plan on this CPU: ahead-of-time compilation
#
# libtpu (the `aot` extra) describes a TPU topology without the chips, so the very step
# `train.run` jits is lowered with the config's shardings on abstract inputs and compiled for
# it: XLA's per-chip memory and FLOPs, and a roofline step time, with nothing allocated.
# `python launch/compile.py --config=configs/grpo.py:qwen2_5_7b --topology=v5p:4x4x4` prints
# the same table from the command line (the README lists pod plans up to Llama-3.1-70B). Here
# Qwen2.5-0.5B's GRPO update (16 prompts × 8 completions of 512 tokens) on a v5e 2 × 2 slice,
# about a minute of compiling: it does not fit in the chips' 16 GiB, and the report says by
# how much and what to change (under CI, the smoke model, which fits).

# %%
if importlib.util.find_spec("libtpu") is None:
  print("libtpu is not installed: pip install -e '.[aot]'")
else:
  from rewardjax import aot

  pod = {"model.param_dtype": "bfloat16", "model.dtype": "bfloat16",
         "model.attention_impl": "pallas", "model.remat": "block"}
  name = "grpo.py:smoke" if TINY else "grpo.py:qwen2_5_0_5b"  # the preset is already bf16 etc.
  pod_config = common.load_config(os.path.join(settings.repo, "configs", name),
                                  pod if TINY else {})
  print(aot.HEADER)
  for report in aot.iter_reports(pod_config, aot.AotOptions(topology="v5e:2x2",
                                                            stages=("update",))):
    print(aot.table_row(report))
    print(report.advice() or "fits")
