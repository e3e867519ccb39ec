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
# # Self-rewarding rounds on a CPU: how far a model gets as its own judge
#
# Self-Rewarding Language Models (Yuan et al., arXiv 2401.10020) train in rounds. In each round
# the current model answers fresh prompts K times, judges its own answers (LLM-as-a-Judge,
# §2.2), pairs the highest- against the lowest-scored answer of each prompt, dropping ties
# (§2.3), and trains DPO on those pairs starting from itself, which is also the reference
# (iterative DPO, §2.4). The paper reports that over three rounds both abilities improve: the
# answers, and the model's accuracy as a judge.
#
# This notebook runs `configs/self_rewarding.py` on the built-in arithmetic task with the
# shipped char-level model and changes only the judge, to see how much of the loop's progress
# comes from the judge's quality:
#
# * `self`: the model judges itself with the pointwise judge prompt it was pretrained on (the
#   SPARK template: its own working, then a verdict; the score is p(yes) / (p(yes) + p(no))), the
#   paper's setting;
# * `reward_model`: the shipped reward model (`rewardjax/pretrained/arith_rm`, σ of its score);
# * `verifier`: the task's checker as an oracle judge, the upper baseline.
#
# The library code is `rewardjax/rounds.py` (one round: sample, judge, pair, refresh the
# reference, reset Adam) and `rewardjax/recipes/self_rewarding.py`. Runs on a CPU runtime
# (about 4 minutes); CI executes it with tiny settings (seconds), whose numbers mean nothing.

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

settings = notebook.setup("self_rewarding")
TINY = settings.tiny  # True: CI's seconds-long sizes

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from configs import common  # noqa: E402
from rewardjax import checkpoint, plots, rounds, sharding, train, train_state  # noqa: E402

# %% [markdown]
# ## 1. The rounds
#
# The full config is small enough to run here as it is: 4 rounds; in each, K = 4 answers
# (temperature 1) to each of 2,048 fresh training questions, the judge's scores, one pair per
# question whose best and worst answers score differently, then 40 DPO steps of 32 pairs (β 0.1)
# against the round's starting model, with fresh Adam moments. The model is evaluated (greedy
# accuracy on 2,048 held-out questions) at the start and after every round. Under CI: 2 rounds
# of 1 step on 16 questions.

# %%
JUDGES = ("self", "reward_model", "verifier")
if TINY:
  JUDGES = ("self", "verifier")  # under CI, without the reward-model judge (its compilation)
  sizes = {"train.steps": 2, "train.eval_every": 1, "recipe_args.steps_per_round": 1,
           "recipe_args.prompts_per_round": 16, "train.batch_size": 8, "data.num_train": 512,
           "data.num_eval": 16, "train.eval_batch_size": 16}
else:
  sizes = {}
configs = {judge: common.load_config(
    os.path.join(settings.repo, f"configs/self_rewarding.py:judge={judge}"), sizes)
    for judge in JUDGES}
c = configs["self"]
print(f"rounds {c.train.steps // c.recipe_args.steps_per_round} x "
      f"{c.recipe_args.steps_per_round} DPO steps x {c.train.batch_size} pairs; "
      f"{c.recipe_args.prompts_per_round} questions x K={c.rollout.num_generations} answers per "
      f"round; rule {c.recipe_args.rule!r}; loss {c.algo.loss_type!r}, beta {c.algo.beta}")
for judge, config in configs.items():
  print(f"judge={judge:13s} rewards.terms={config.rewards.terms!r}")

# %% [markdown]
# `rewards.terms` is the judge: the self-judge and the reward model are scored with the verifier
# at weight 0, so the verifier's verdict is logged next to the judge's score but never enters a
# pair. That is what lets the run measure the judge: `judge_verifier_agreement` (over the pairs
# of one question's answers that the verifier separates, the fraction the judge orders the same
# way) and `pair_label_accuracy` (among pairs of one right and one wrong answer, the fraction
# whose chosen answer is the right one).

# %%
workdirs, summaries = {}, {}
for judge, config in configs.items():
  workdirs[judge] = os.path.join(settings.workdir, judge)
  summaries[judge] = train.run(config, workdirs[judge])

# %% [markdown]
# ## 2. Per-round curves
#
# Each round logs its statistics once, as `train/round/<name>` at the round's first step
# (`<workdir>/<judge>/metrics.jsonl`); the held-out evaluation after round r is
# `eval/accuracy` at step r × steps_per_round. Top row: held-out accuracy after each round, the
# accuracy of the round's own samples (the policy sharpening), and the number of pairs the round
# made. Bottom row: the judge's quality, its agreement with the verifier and the label accuracy
# of its pairs, and the mean judge-score gap between chosen and rejected answers.

# %%
def per_round(workdir, steps_per_round):
  """{metric: (rounds, values)}: the eval after each round and the rounds' own statistics."""
  curves = plots.read_curves(os.path.join(workdir, "metrics.jsonl"))
  out = {"accuracy": ([s // steps_per_round for s, _ in curves["eval/accuracy"]
                       if s % steps_per_round == 0],
                      [v for s, v in curves["eval/accuracy"] if s % steps_per_round == 0])}
  for name in ("sample_accuracy", "pairs", "judge_verifier_agreement", "pair_label_accuracy",
               "score_gap"):
    points = curves.get(f"train/round/{name}", [])  # a NaN (nothing to measure) is dropped
    out[name] = ([(s - 1) // steps_per_round + 1 for s, _ in points], [v for _, v in points])
  return out


PANELS = {"accuracy": ("held-out accuracy", "after round (0 = start)"),
          "sample_accuracy": ("accuracy of the round's samples", "round"),
          "pairs": ("pairs made", "round"),
          "judge_verifier_agreement": ("judge–verifier agreement", "round"),
          "pair_label_accuracy": ("pair label accuracy", "round"),
          "score_gap": ("judge score: chosen − rejected", "round")}
results = {judge: per_round(wd, configs[judge].recipe_args.steps_per_round)
           for judge, wd in workdirs.items()}
fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
for ax, (metric, (ylabel, xlabel)) in zip(axes.flat, PANELS.items()):
  for color, (judge, result) in enumerate(results.items()):
    xs, ys = result[metric]
    ax.plot(xs, ys, marker="o", color=f"C{color}", label=f"judge: {judge}")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
  ax.grid(alpha=0.3)
fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="upper right", ncol=len(results))
fig.suptitle("Self-rewarding rounds: one judge per run", x=0.3)
fig.tight_layout(rect=(0, 0, 1, 0.95))
plt.show()

# %%
for judge, result in results.items():
  print(f"judge={judge}")
  print("  held-out accuracy  " + " -> ".join(f"{100 * v:.1f}" for v in result["accuracy"][1]))
  for name in ("judge_verifier_agreement", "pair_label_accuracy", "pairs"):
    scale = 1 if name == "pairs" else 100
    print(f"  {name:25s}" + ", ".join(f"{scale * v:.{0 if name == 'pairs' else 1}f}"
                                     for v in result[name][1]))

# %% [markdown]
# What the full-size run shows (the same numbers as the README's round-based table):
#
# * **The loop is only as good as its judge.** With the verifier as judge, accuracy climbs every
#   round (77.6 → 85.7 → 89.3 → 90.2 → 92.7%); with the shipped reward model, whose pairs are
#   right about 83–86% of the time, it climbs too but less (→ 89.5%); with the model as its own
#   judge it gains once (80.9% after round 1) and then stays flat (79.9, 79.8, 80.9%).
# * **The self-judge does not improve with the policy.** Its agreement with the verifier stays at
#   62–66% in all four rounds, and so does the label accuracy of its pairs (64–67%), while the
#   policy's own samples become more accurate (72.6 → 79.6%). The paper's judge improves over its
#   rounds (arXiv 2401.10020 §3, reward-modeling results); here the judge re-solves each question
#   in its working and so shares the policy's slips: about a third of its pairs teach the wrong
#   answer, enough for one gain, not for a climb.
# * **Pairs get fewer** (708 → 382 for the self-judge) as the policy sharpens: more questions get
#   K equal answers, hence equal scores and no pair. The self-judge's scores are nearly 0 or 1
#   (its chosen − rejected gap is 0.8), so confident and wrong a third of the time.

# %% [markdown]
# ## 3. Pairs the self-judge made
#
# The pairs of the last round are in the checkpoint (a round's records are part of the
# recipe's state, so a killed run resumes mid-round without regenerating them), and the model
# that judged them is the run's reference (the round's starting model). Below, the run is
# restored as `launch/eval.py` restores it and a few pairs are judged again by that reference
# with `rounds.judge`, next to the verifier's verdicts.

# %%
config, workdir = configs["self"], workdirs["self"]
mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
with jax.set_mesh(mesh):
  job = train.make_job(config, mesh)
  tx = train.make_optimizer(config.optim, config.train.steps * job.program.num_iterations
                            * job.program.num_minibatches)
  manager = checkpoint.make_manager(workdir)
  state, extra, _ = train_state.restore(manager, job.program.model_fn, tx, mesh,
                                        jax.random.key(config.seed), with_ref=job.program.with_ref)
  manager.close()
  last = extra["recipe"]  # the round source's state: {"round", "records", "memory"}
  records = last["records"][:8]
  ctx = rounds.RoundContext(setup=job.setup, source=job.recipe.source, judge=job.recipe.rewards,
                            options=job.recipe.rounds)
  questions = [{k: r[k] for k in ("prompt", "question", "answer")} for r in records]
  scores, correct, _ = rounds.judge(ctx, state.replace(params=state.reference_params()),
                                    questions, [[r["chosen"], r["rejected"]] for r in records],
                                    round_index=last["round"])
print(f"round {last['round'] + 1}: {len(last['records'])} pairs; the first {len(records)}:")
print(f"{'question':10} {'truth':>6}   {'chosen':>7} {'p(yes)':>7}   {'rejected':>8} {'p(yes)':>7}")
mark = {True: "✓", False: "✗"}
for r, s, ok in zip(records, scores, correct):
  print(f"{r['question']:10} {r['answer']:>6}   {r['chosen']:>5} {mark[bool(ok[0])]} {s[0]:7.3f}   "
        f"{r['rejected']:>6} {mark[bool(ok[1])]} {s[1]:7.3f}")

# %% [markdown]
# The judge's verdicts are near-certain either way, and when it is wrong it prefers a wrong
# answer to the right one just as firmly; a DPO step on such a pair pushes the policy towards the
# judge's own slip. With the verifier as judge every chosen answer is right and every rejected
# one wrong, which is why that run keeps improving.
