"""The process reward model (PRM) objective and its records: a score at the end of every step.

A PRM is the reward model's scalar model (`models.heads.ScalarModel`) read at every position:
step k of a completion is scored by the head on the hidden state of its last token (the
separator), p_k = sigmoid(score), and trained with binary cross-entropy on per-step labels
(Math-Shepherd, arXiv 2312.08935 §3.3; PRM800K, arXiv 2305.20050 §2). The built-in records are
the "steps" task's solutions with their first-error step labels (`data.steps.prm_records`);
a file's records give {"prompt", "completion", "step_labels"}. Held-out metrics: step accuracy,
and how often the lowest step score flags a wrong solution (a PRM used as a verifier).

Row layout: R = B, one row per completion; extra "step_positions" [R, K] (token index of each
step's end in the row), "step_labels" [R, K], "step_mask" [R, K], K = completion width.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rewardjax import losses, sharding
from rewardjax.data import steps as steps_lib
from rewardjax.rewards import process


def step_scores(model, tokens, attention_mask, step_positions):
  """Head scores [R, K] at the step ends (logits of "this step is correct")."""
  hidden_RxSxD, _ = model.backbone.hidden_states(tokens, attention_mask=attention_mask)
  scores_RxS = model.head(hidden_RxSxD)
  return jnp.take_along_axis(scores_RxS, step_positions, axis=1)


def prm_objective(model, batch):
  """`losses.pointwise_binary_loss` of every step's score against its label (masked mean over
  the steps of the batch); metrics prefixed as in `pointwise_binary_loss` plus "steps"."""
  scores_RxK = step_scores(model, batch.tokens, batch.attention_mask,
                           batch.extra["step_positions"])
  mask_RxK = batch.extra["step_mask"]
  loss, metrics = losses.pointwise_binary_loss(
      scores_RxK.reshape(-1), batch.extra["step_labels"].reshape(-1), mask_RxK.reshape(-1))
  return loss, {**metrics, "steps": mask_RxK.sum() / mask_RxK.shape[0]}


def step_records(problems, *, fmt, seed, options):
  """The built-in task's step-labelled solutions (`data.steps.prm_records`)."""
  del options
  if fmt != "steps":
    raise ValueError(f"the process reward model trains on the multi-step task: set "
                     f"data.fmt='steps' and data.difficulty={steps_lib.CHAIN_LEVEL} (got "
                     f"fmt={fmt!r})")
  return steps_lib.prm_records(problems, seed=seed)


def step_arrays(items: Sequence[dict], *, setup):
  """Rows prompt | completion (`reward_model_records.response_rows`) and the step fields."""
  from rewardjax.algorithms import reward_model_records  # noqa: PLC0415 (it imports this)

  arrays = reward_model_records.response_rows(setup, [it["prompt"] for it in items],
                                         [it["completion"] for it in items])
  # Completion tokens start after the (left-padded) prompt block; the row's loss mask marks them.
  prompt_width = int(np.argmax(arrays["loss_mask"].any(axis=0))) + 1
  completion_tokens = arrays["tokens"][:, prompt_width:]
  completion_mask = arrays["attention_mask"][:, prompt_width:]
  layout = process.step_layout(completion_tokens, completion_mask,
                               process.separator_id(setup.tokenizer))
  labels = np.zeros(layout["step_mask"].shape, np.float32)
  for i, it in enumerate(items):
    n = int(layout["step_mask"][i].sum())
    if n != len(it["step_labels"]):
      raise ValueError(f"record {i}: {len(it['step_labels'])} step labels but its completion "
                       f"has {n} steps (lines ended by {steps_lib.SEPARATOR!r}): "
                       f"{it['completion']!r}")
    labels[i, :n] = it["step_labels"]
  return arrays, {"step_positions": (prompt_width + layout["step_end"]).astype(np.int32),
                  "step_labels": labels, "step_mask": layout["step_mask"]}


def step_rows(batch_size, options):
  del options
  return batch_size


@functools.partial(jax.jit, static_argnums=0)
def _heldout_scores(graphdef, params, tokens, attention_mask, step_positions):
  return step_scores(nnx.merge(graphdef, params), tokens, attention_mask, step_positions)


def evaluate(setup, problems, state, rng, *, options=None) -> dict:
  """Held-out step accuracy (p > 1/2 vs label) and solution accuracy (all steps > 1/2 vs all
  labels 1) on the held-out questions' step records (seed + 1)."""
  del rng, options
  if not problems:
    return {}
  records = steps_lib.prm_records(problems, seed=setup.seed + 1)
  arrays, extra = step_arrays(records, setup=setup)
  scores = np.asarray(sharding.gather(_heldout_scores(
      state.graphdef, state.params, *sharding.feed((arrays["tokens"], arrays["attention_mask"],
                                                    extra["step_positions"])))))
  m, y = extra["step_mask"] > 0, extra["step_labels"] > 0.5
  predicted = scores > 0
  solution_predicted = np.where(m, predicted, True).all(axis=1)
  solution_label = np.where(m, y, True).all(axis=1)
  return {"step_accuracy": float((predicted == y)[m].mean()),
          "solution_accuracy": float((solution_predicted == solution_label).mean()),
          "wrong_solutions": float(1.0 - solution_label.mean())}
