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
# # GRPO from the shipped model: reward up, accuracy up
#
# Group Relative Policy Optimization (DeepSeekMath, arXiv 2402.03300 §4.1) samples G answers
# per prompt, scores each with a verifier, and uses the group-normalised reward
# (r − mean) / std as every token's advantage in a PPO-clipped loss, with no critic.
#
# The built-in task is two-digit arithmetic written by a tiny char-level model. The shipped
# model (`rewardjax/pretrained/arith`, 0.6M parameters) imitated a demonstrator that drops the
# carry on half the questions that have one, so about 78% of its held-out answers are right;
# the verifier's reward is what can remove the slip. `configs/grpo.py` is the run below:
# 16 prompts × 8 samples per step, 300 steps (under CI: 4 steps and a small evaluation).
# Runs on a CPU runtime in about two minutes.

# %%
# Colab: clone and install rewardjax (about a minute); elsewhere nothing happens when rewardjax
# is importable (`pip install -e .` in the repo).
import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec("rewardjax") is None:
  subprocess.run("git clone -q --depth 1 https://github.com/rewardjax/rewardjax.git && "
                 "pip install -q -e rewardjax", shell=True, check=True)
  sys.path.insert(0, os.path.abspath("rewardjax"))

# %%
from rewardjax import notebook

settings = notebook.setup("grpo")
TINY = settings.tiny  # True: CI's seconds-long sizes

import os  # noqa: E402

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from flax import nnx  # noqa: E402

from configs import common  # noqa: E402
from rewardjax import plots, train  # noqa: E402
from rewardjax.evaluation import accuracy  # noqa: E402
from rewardjax.models import hf  # noqa: E402
from rewardjax.rewards import verifiers  # noqa: E402

# %% [markdown]
# ## 1. The config and the starting model's answers
#
# A config is a small ml-collections tree; `common.load_config` builds it exactly as
# `python launch/train.py --config=configs/grpo.py --config.train.steps=4` would. The `algo`
# block is the objective (TRL `GRPOConfig` names). Greedy answers of the shipped model to a few
# held-out questions, marked with the verifier's reward:

# %%
overrides = {"train.steps": 4, "train.eval_every": 2, "data.num_eval": 32} if TINY else {}
config = common.load_config(os.path.join(settings.repo, "configs/grpo.py"), overrides)
print({k: config.algo[k] for k in ("loss_type", "beta", "kl_estimator", "epsilon_low",
                                   "epsilon_high", "scale_rewards", "num_iterations")})
print({k: config.rollout[k] for k in ("num_generations", "max_new_tokens", "temperature")})
tokenizer = train.load_tokenizer(config)
problems, _ = train.load_data(config, tokenizer, record_kind="answer")
shown = problems["heldout"][:12]
sizes = accuracy.EvalSizes(config.rollout.max_new_tokens, batch_size=len(shown),
                           bucket=config.data.bucket)


def greedy_answers(checkpoint: str) -> list[tuple[str, str, float]]:
  """(prompt, greedy answer, verifier reward) for the shown questions."""
  graphdef, params = nnx.split(hf.from_pretrained(checkpoint), nnx.Param)
  texts = accuracy.generate_texts(graphdef, params, tokenizer, [it["prompt"] for it in shown],
                                  jax.random.key(0), sizes=sizes)
  return [(it["prompt"], text, verifiers.math_verify(text, it["answer"], config.data.fmt))
          for it, text in zip(shown, texts)]


before = greedy_answers(config.model.checkpoint)
for prompt, text, reward in before:
  print(f"{prompt!r:12s} -> {text!r:8s} reward {reward:.0f}")

# %% [markdown]
# ## 2. Training
#
# `train.run` is the whole job (`launch/train.py` calls it): rollouts → verifier rewards →
# group advantages → clipped loss → one jitted update per minibatch, held-out greedy accuracy
# every `eval_every` steps. It writes `metrics.jsonl`, TensorBoard events, orbax checkpoints,
# the trained model as a Hugging Face directory (`hf/`) and `curves.png` into the workdir.

# %%
summary = train.run(config, settings.workdir)

# %% [markdown]
# ## 3. Curves
#
# The mean verifier reward of the rollouts (training prompts, sampled at temperature 1) and the
# greedy accuracy on held-out questions, from the run's `metrics.jsonl`
# (`python launch/plot.py --workdir=<workdir>` draws every metric of a run).

# %%
curves = plots.read_curves(os.path.join(settings.workdir, "metrics.jsonl"))
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, name, title in ((axes[0], "train/reward", "rollout reward (train prompts)"),
                        (axes[1], "eval/accuracy", "greedy accuracy (held-out)")):
  steps, values = zip(*curves[name])
  ax.plot(steps, values, marker="." if len(steps) <= 20 else None)
  ax.set(title=title, xlabel="GRPO step", ylabel=name)
  ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()
print(f"held-out accuracy {summary['initial/accuracy']:.3f} -> {summary['final/accuracy']:.3f}")

# %% [markdown]
# ## 4. The same questions after training
#
# The slips GRPO removed (reward 0 → 1) and any it introduced:

# %%
after = greedy_answers(os.path.join(settings.workdir, "hf"))
for (prompt, old, old_reward), (_, new, new_reward) in zip(before, after):
  change = {(0, 1): "fixed", (1, 0): "broken"}.get((round(old_reward), round(new_reward)), "")
  print(f"{prompt!r:12s} before {old!r:8s} after {new!r:8s} {change}")
