"""Two-attempt (multi-turn) rollouts: the second prompt, per-turn rewards and KL weights.

Attempt 1 samples y1 ~ pi(. | x1); the second prompt x2 = revise(x1, y1) shows the first
attempt with a fixed instruction p1 that says there *might* be an error and asks to fix it,
without revealing whether y1 is correct; attempt 2 samples y2 ~ pi(. | x2). Both attempts' rows
enter the training batch (`algorithms.grpo` with `turns=2`); only each attempt's own completion
tokens train: y1's tokens inside x2 are prompt of the second row. The batch groups the G rows of
a prompt per turn, so group advantages give each turn its own baseline.

Revise prompts (`REVISE_PROMPTS`):
  "reflection"  SPARK's answer-reflection format with a neutral template (the format the shipped
                char model was pretrained on: shown an answer that may be wrong, it re-answers):
                "check&fix\\nAns:41\\n47-8=" ("short"), or the boxed counterpart.
  "append"      x1 + y1 + p1, SCoRe's layout (arXiv 2409.12917 §3, Appendix), for text models.
SD-Zero's teacher prompt (`feedback_prompt`) is the revise prompt with the binary reward as text
feedback: a wrong attempt is shown with the explicit "this answer is wrong" template.

SCoRe (arXiv 2409.12917 §5): `score_turn_rewards` and `score_kl_weights` give the per-turn
rewards and KL weights of Stage I (Eq. 3) and Stage II (Eqs. 4-5); `TurnSchedule` runs Stage I
for the first `stage_one_steps` steps, then Stage II.
"""

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from rewardjax.recipes import spark
from rewardjax.rewards import verifiers

# SCoRe's self-correction instruction p1 (arXiv 2409.12917, Appendix, MATH prompt), shortened:
# it says there might be an error and asks to rewrite the solution, never whether y1 is right.
SCORE_INSTRUCTION = ("There might be an error in the solution above because of lack of "
                     "understanding of the question. Please correct the error, if any, and "
                     "rewrite the solution.")
WRONG_FEEDBACK = "The solution above is incorrect."
RIGHT_FEEDBACK = "The solution above is correct."
# SPARK answer-reflection templates (`recipes.spark.TemplateSet.answer_reflection`): index 0 is
# neutral ("check&fix", "Ans"), the "explicit" block from index 20 says the answer is wrong.
NEUTRAL_TEMPLATE, WRONG_TEMPLATE = 0, 20
STAGES = ("I", "II")


def _answer(text: str, fmt: str) -> str:
  """The extracted answer of `text`, or the stripped text when none is found."""
  answer = verifiers.extract_answer(text, fmt)
  return text.strip() if answer is None else answer


def _reflection(item: dict, text: str, fmt: str, template: int) -> str:
  formatter = spark.Formatter(fmt)
  return formatter.reflection("answer_reflection", formatter.question(item),
                              _answer(text, fmt), template)


def _reflection_prompt(item: dict, text: str, fmt: str, reward: float | None) -> str:
  return _reflection(item, text, fmt, WRONG_TEMPLATE if reward == 0.0 else NEUTRAL_TEMPLATE)


def _append_prompt(item: dict, text: str, fmt: str, reward: float | None) -> str:
  del fmt
  feedback = "" if reward is None else (RIGHT_FEEDBACK if reward > 0 else WRONG_FEEDBACK) + " "
  return f"{item['prompt']}{text}\n\n{feedback}{SCORE_INSTRUCTION}\n"


REVISE_PROMPTS = {"reflection": _reflection_prompt, "append": _append_prompt}


def revise_prompt(name: str, item: dict, text: str, fmt: str) -> str:
  """The second-attempt prompt x2 = revise(x1, y1) of `REVISE_PROMPTS[name]` (no feedback).

  >>> item = {"prompt": "47-8=", "question": "47-8", "answer": "39"}
  >>> revise_prompt("reflection", item, "41", "short")
  'check&fix\\nAns:41\\n47-8='
  """
  return _revise_fn(name)(item, text, fmt, None)


def feedback_prompt(name: str, item: dict, text: str, reward: float, fmt: str) -> str:
  """SD-Zero's reviser context: the revise prompt of attempt `text` with its binary reward as
  text feedback ("reflection": the explicit wrong-answer template when reward == 0, the neutral
  one otherwise; "append": a sentence stating correctness before p1).

  >>> item = {"prompt": "47-8=", "question": "47-8", "answer": "39"}
  >>> feedback_prompt("reflection", item, "41", 0.0, "short")
  'wrong! redo\\nBadAns:41\\n47-8='
  """
  return _revise_fn(name)(item, text, fmt, float(reward))


def _revise_fn(name: str):
  if name not in REVISE_PROMPTS:
    raise ValueError(f"revise prompt {name!r}; valid: {sorted(REVISE_PROMPTS)}")
  return REVISE_PROMPTS[name]


def second_items(items: Sequence[dict], texts: Sequence[str], *, revise: str,
                 fmt: str) -> list[dict]:
  """The second-attempt items: each row's item with prompt revise(x1, y1) and "turn": 2 (the
  answer and every other field kept, so the same reward composition scores attempt 2)."""
  if len(items) != len(texts):
    raise ValueError(f"{len(items)} items for {len(texts)} first attempts")
  return [dict(it, prompt=revise_prompt(revise, it, t, fmt), turn=2)
          for it, t in zip(items, texts)]


def score_turn_rewards(r1: Float[Array, " B"], r2: Float[Array, " B"], alpha: float,
                       stage: str) -> tuple[Float[Array, " B"], Float[Array, " B"]]:
  """SCoRe's per-turn rewards (R1, R2) from the verifier rewards of the two attempts.

    Stage I  (Eq. 3):       R1 = 0,   R2 = r2
    Stage II (Eqs. 4, 5):   R1 = r1,  R2 = r2 + alpha (r2 - r1)

  Stage I optimises only the second attempt (attempt 1 is held near the base model by its KL
  weight, `score_kl_weights`); Stage II rewards both and adds the bonus alpha (r2 - r1) to
  attempt 2 only: incorrect -> correct earns +alpha, correct -> incorrect costs -alpha.

  Args:
    r1: [B] reward of attempt 1 (0/1 verifier).
    r2: [B] reward of attempt 2 of the same rows.
    alpha: the bonus weight, "a positive constant, ideally significantly larger than 1.0"
      (the paper states no number; rewardjax's SCoRe config uses 10).
    stage: "I" or "II".

  Returns:
    (R1 [B], R2 [B]) float32.

  References:
    SCoRe, arXiv 2409.12917, §5.1 Eq. 3 (Stage I), §5.2 Eqs. 4-5 (Stage II, reward bonus).

  >>> r1, r2 = jnp.array([0.0, 0.0, 1.0, 1.0]), jnp.array([0.0, 1.0, 0.0, 1.0])
  >>> [x.tolist() for x in score_turn_rewards(r1, r2, 10.0, "II")]
  [[0.0, 0.0, 1.0, 1.0], [0.0, 11.0, -10.0, 1.0]]
  >>> [x.tolist() for x in score_turn_rewards(r1, r2, 10.0, "I")]
  [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]]
  """
  if stage not in STAGES:
    raise ValueError(f"stage={stage!r}; valid: {STAGES}")
  if r1.shape != r2.shape or r1.ndim != 1:
    raise ValueError(f"r1 {r1.shape} and r2 {r2.shape} must both be [B]")
  r1, r2 = jnp.asarray(r1, jnp.float32), jnp.asarray(r2, jnp.float32)
  if stage == "I":
    return jnp.zeros_like(r1), r2
  return r1, r2 + alpha * (r2 - r1)


def score_kl_weights(stage: str, beta1: float, beta2: float) -> tuple[float, float]:
  """Per-turn KL weights (w1, w2), multipliers of the loss's KL coefficient beta1.

    Stage I:   coefficients (beta2 + beta1, beta1)  ->  weights ((beta2 + beta1) / beta1, 1)
    Stage II:  coefficients (beta1, beta1)          ->  weights (1, 1)

  Eq. 3 writes only beta2 on attempt 1; the base objective's small beta1 still applies to both
  attempts (arXiv 2409.12917 §5.1). beta2 = 10 beta1 in the paper; neither number is stated.

  >>> score_kl_weights("I", 0.01, 0.1), score_kl_weights("II", 0.01, 0.1)
  ((11.0, 1.0), (1.0, 1.0))
  """
  if stage not in STAGES:
    raise ValueError(f"stage={stage!r}; valid: {STAGES}")
  if beta2 and beta1 <= 0:
    raise ValueError(f"a first-turn KL beta2={beta2} needs beta1 > 0 (got {beta1})")
  if stage == "II" or not beta2:
    return 1.0, 1.0
  return (beta2 + beta1) / beta1, 1.0


@dataclasses.dataclass(frozen=True)
class TurnSchedule:
  """Per-turn rewards and KL weights of a two-attempt batch, by training step.

  Steps [0, stage_one_steps) are SCoRe's Stage I, later steps Stage II (the paper interleaves
  the stages for a few rounds; one switch is its simplest schedule). With stage_one_steps = 0
  and alpha = 0 this is the naive two-attempt baseline: R = (r1, r2), KL weights 1.

  Attributes:
    stage_one_steps: steps of Stage I before Stage II.
    alpha: Stage II bonus weight (Eq. 5).
    beta: the loss's KL coefficient beta1.
    first_turn_kl: beta2, added to beta1 on attempt 1 in Stage I.
  """
  stage_one_steps: int = 0
  alpha: float = 0.0
  beta: float = 0.0
  first_turn_kl: float = 0.0

  def stage(self, step: int) -> str:
    return "I" if step < self.stage_one_steps else "II"

  def rewards(self, r1: np.ndarray, r2: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Host (R1, R2) float32 [B] of `score_turn_rewards` at `step`'s stage."""
    out = score_turn_rewards(jnp.asarray(r1), jnp.asarray(r2), self.alpha, self.stage(step))
    return tuple(np.asarray(x, np.float32) for x in out)

  def kl_weights(self, step: int) -> tuple[float, float]:
    return score_kl_weights(self.stage(step), self.beta, self.first_turn_kl)


def turn_metrics(r1: np.ndarray, r2: np.ndarray) -> dict[str, float]:
  """Training-batch self-correction metrics of 0/1 rewards [B]: per-turn reward, Δ(t1, t2),
  Δ(i→c) (share wrong at attempt 1 and right at 2) and Δ(c→i) (the reverse)."""
  c1, c2 = np.asarray(r1) > 0.5, np.asarray(r2) > 0.5
  return {"turn1/reward": float(np.mean(r1)), "turn2/reward": float(np.mean(r2)),
          "turn/delta": float(c2.mean() - c1.mean()),
          "turn/delta_i_to_c": float((~c1 & c2).mean()),
          "turn/delta_c_to_i": float((c1 & ~c2).mean())}
