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
# # SPARK on a CPU: one model as policy *and* judge
#
# SPARK (arXiv 2509.22624) runs ordinary RL with verifiable rewards (GRPO) on task prompts and,
# instead of throwing the scored rollouts away, **recycles** them into new prompts with known
# labels: *pointwise* judgements ("is this answer correct?"), *pairwise* comparisons ("which of
# (A) and (B) is correct?") and *reflection* ("here is a wrong solution, fix it"). The same
# model trains on them with the same GRPO loss and verifier, so it learns to judge its own
# answers, and at test time it can check and revise them.
#
# This notebook runs the whole recipe on the built-in arithmetic task with a tiny char-level
# model: a shortened training run, then one recycling step on the model's real rollouts, then
# the test-time self-reflection loop. Everything it calls lives in `rewardjax`
# (`rewardjax/recipes/spark.py`, `rewardjax/evaluation/self_reflection.py`).
#
# Runs on a CPU runtime (a few minutes); CI executes it with tiny settings (seconds).

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

settings = notebook.setup("spark")
TINY = settings.tiny  # True: CI's seconds-long sizes

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from configs import spark as spark_config  # noqa: E402
from rewardjax import plots, train  # noqa: E402
from rewardjax.evaluation import accuracy, self_reflection  # noqa: E402
from rewardjax.models import hf  # noqa: E402
from rewardjax.recipes import spark  # noqa: E402
from rewardjax.rewards import verifiers  # noqa: E402

# %% [markdown]
# ## 1. The prompts SPARK makes
#
# Each kind keeps the paper's structure (instruction, question, answer(s), judgement cue). For
# the char-level model the templates are a few dozen characters; a judge writes its working
# (its own answer, 3 digits), a check line comparing it digit by digit with the judged answer
# ("=" same, "x" different), and a one-letter verdict on the last line, the line the verifier
# reads.
# HF models get the paper-style wording and box their verdict (`spark.Formatter("boxed")`).
# There are 24 pointwise templates (12 Yes/No, 12 A/B), 20 pairwise and 30 per reflection kind.

# %%
short = spark.Formatter("short")
prompt, yes, no = short.pointwise("47-8", "41", index=0)
print(repr(prompt), "-> a correct judgement:", repr(short.judge_completion("39", no, "41")))
print(repr(short.pairwise("47-8", "39", "41", index=3)), "->",
      repr(short.judge_completion("39", "A", "39")))
print(repr(short.reflection("answer_reflection", "47-8", "41", index=25)), "-> '39'")
print(spark.Formatter("boxed").pointwise("What is 47-8?", "41", index=0)[0])

# %% [markdown]
# ## 2. A shortened training run
#
# `configs/spark.py` is the full embedded job (150 steps). Here 40 steps (under CI, 4 steps and
# smaller evaluations). It starts from the shipped pretrained model (`rewardjax/pretrained/arith`,
# made by `configs/pretrain.py`: the task plus judge and reflection examples on synthetic slips,
# standing in for the judging an instruct model brings). Each step trains the task prompts (infer
# period, whose rollouts are recycled), then a full batch of recycled prompts when the cache
# holds one (reward period), and the run evaluates every `eval_every` steps.

# %%
config = spark_config.get_config()
if TINY:
  config.train.update(steps=4, eval_every=2)
  config.data.num_eval = 32
  config.recipe_args.eval_problems = 16
else:
  config.train.update(steps=40, eval_every=10)
workdir = settings.workdir
summary = train.run(config, workdir)

# %%
for key in ("accuracy", "judge_accuracy", "reflection_fix_rate", "self_reflection_accuracy",
            "best_of_n_accuracy"):
  print(f"{key:26s} before {summary[f'initial/{key}']:.3f}   after {summary[f'final/{key}']:.3f}")

# %% [markdown]
# The two curves SPARK is about: the policy's accuracy on held-out task questions (greedy) and
# its accuracy as a judge of held-out answers (pointwise verdicts against the verifier), both
# evaluated every `eval_every` steps of the same run (`<workdir>/metrics.jsonl`; the run also
# left `<workdir>/curves.png`, and `python launch/plot.py --workdir=<workdir>` redraws it).

# %%
curves = plots.read_curves(os.path.join(workdir, "metrics.jsonl"))
fig, ax = plt.subplots(figsize=(5, 3))
for name, label in (("eval/accuracy", "task accuracy"), ("eval/judge_accuracy", "judge accuracy")):
  steps, values = zip(*curves[name])
  ax.plot(steps, values, marker="o", label=label)
ax.set_xlabel("RL step")
ax.set_ylabel("held-out accuracy")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## 3. One recycling step on real rollouts
#
# Sample G completions for P training prompts with the trained model, score them with the
# verifier, and recycle them exactly as an infer step does (official code InternLM/Spark
# `new_data_gen.py`): judge items first (pointwise with probability 0.3 for mixed groups, else
# pairwise; all-correct and all-wrong groups give one pointwise item), then reflection items
# (CoT for the first half of the prompts, answer reflection for the second), each capped at P/2.

# %%
model = hf.from_pretrained(os.path.join(workdir, "hf"))
tokenizer = train.load_tokenizer(config)
problems, _ = train.load_data(config, tokenizer, record_kind="answer")  # the built-in task
graphdef, params = nnx.split(model, nnx.Param)
P, G = config.train.batch_size, config.rollout.num_generations
items = problems["train"][:P]
texts = accuracy.generate_texts(graphdef, params, tokenizer, [it["prompt"] for it in items],
                                jax.random.key(0), temperature=1.0, num_samples=G,
                                sizes=accuracy.EvalSizes(config.rollout.max_new_tokens,
                                                         batch_size=P, bucket=config.data.bucket))
rollouts = [{"item": items[j // G], "text": t,
             "reward": verifiers.math_verify(t, items[j // G]["answer"], "short")}
            for j, t in enumerate(texts)]
for p in range(min(P, 4)):
  group = rollouts[p * G:(p + 1) * G]
  print(items[p]["prompt"], "truth", items[p]["answer"], "| rollouts",
        [(r["text"], int(r["reward"])) for r in group])

# %%
recycled = spark.recycle(rollouts, group_size=G, formatter=short,
                         rng=np.random.default_rng([config.seed, 0]))
for it in recycled:
  print(f"{it['kind']:18s} label {it['answer']!r:6s} prompt {it['prompt']!r}")

# %% [markdown]
# ## 4. Test-time self-reflection and best-of-N
#
# Greedy: answer, judge the answer with pointwise template #1, and if the verdict is not "Y",
# re-answer with an "incorrect answer, solve again" reflection prompt, up to `max_round = 2`
# times (official code InternLM/Spark `evaluation_tts.py`). (`train.run` above also reported
# best-of-N: the sample whose "Y" verdict the model's own judge finds most likely.)

# %%
heldout = problems["heldout"][:8 if TINY else 64]
judge_prompts = [short.pointwise(it["question"], it["answer"], 0)[0] for it in heldout[:4]]
for p, verdict in zip(judge_prompts, accuracy.generate_texts(
    graphdef, params, tokenizer, judge_prompts, jax.random.key(2),
    sizes=accuracy.EvalSizes(config.rollout.max_new_tokens, batch_size=4,
                             bucket=config.data.bucket))):
  print(repr(p), "->", repr(verdict))

# %%
print(self_reflection.self_reflect(
    graphdef, params, tokenizer, heldout, jax.random.key(1), formatter=short, max_round=2,
    judge_index=spark.TEST_TIME_JUDGE, revise_index=spark.TEST_TIME_REVISE,
    sizes=accuracy.EvalSizes(config.rollout.max_new_tokens, batch_size=len(heldout),
                             bucket=config.data.bucket)))
