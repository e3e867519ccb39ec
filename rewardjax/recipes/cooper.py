"""Cooper: the policy and its reward model trained together (arXiv 2508.05613).

Official code ZJU-REAL/cooper (`recipe/cooper/dp_reward.py`, `collaborate.py`,
`fsdp_workers.py`). The policy is trained by GRPO on the reward model's score (R = sigma(logit),
the config's `rewards` block with `reward_model="companion"`); in the same jitted step the
reward model (a `base.Companion`) takes one Bradley-Terry step on pairs drawn from the step's
rollouts, so the policy cannot keep exploiting a fixed scorer:

  positive  per prompt, the first rollout the rule-based verifier accepts (math-verify vs the
            label); a prompt without one gives no pair (valid = 0)
  negative  the paper asks an assistant LLM for a wrong-but-plausible solution of similar
            length and keeps it if math-verify rejects it. Here the policy's own rejected
            rollout of the same prompt plays that part (a wrong solution the policy finds
            plausible); when every rollout is right, the correct answer with one digit changed
            (a slip the verifier rejects) stands in for the assistant's.

  loss      masked mean over valid pairs of -log sigma(s+ - s-) (`losses.bradley_terry_loss`)

The reward model starts from `recipe_args.reward_model` (an HF `*ForSequenceClassification`
directory or a reward-model run's workdir) and scores the policy's text with the policy's
tokenizer (the two must share it); the co-trained reward model is exported to
`<workdir>/hf_reward_model` at the end. Its matched baseline is the same run with the reward model
frozen: `configs/cooper.py:variant=frozen`.
"""

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from rewardjax import losses
from rewardjax.data import tokenizers
from rewardjax.models import heads
from rewardjax.recipes import Recipe
from rewardjax.rewards import sources, verifiers


def _slip(answer: str, rng: np.random.Generator) -> str:
  """The answer with its last digit changed: a wrong answer of the same length."""
  digit = int(answer[-1])
  return answer[:-1] + str((digit + int(rng.integers(1, 10))) % 10)


def pairs(groups: Sequence[dict], *, fmt: str, rng: np.random.Generator) -> list[tuple]:
  """(prompt, positive, negative, valid) per prompt group, as the recipe's docstring says."""
  out = []
  for g in groups:
    item = g["items"][0]
    correct = verifiers.verify_batch(g["texts"], [item["answer"]] * len(g["texts"]), fmt)
    positives = [t for t, c in zip(g["texts"], correct) if c > 0]
    negatives = [t for t, c in zip(g["texts"], correct) if c == 0]
    if not positives:
      out.append((item["prompt"], g["texts"][0], g["texts"][0], 0.0))
      continue
    negative = negatives[0] if negatives else _slip(str(item["answer"]), rng)
    valid = float(verifiers.math_verify(negative, item["answer"], fmt) == 0)
    out.append((item["prompt"], positives[0], negative, valid))
  return out


def reward_model_loss(model, batch: dict):
  """Bradley-Terry on the companion batch: rows [0, P) positives, [P, 2P) negatives; `valid`
  is repeated on both halves so every row of the batch has one (rows are sharded together)."""
  scores = model(batch["tokens"], attention_mask=batch["attention_mask"])
  half = scores.shape[0] // 2
  loss, metrics = losses.bradley_terry_loss(scores[:half], scores[half:],
                                            mask=batch["valid"][:half])
  return loss, {**metrics, "valid_pairs": batch["valid"][:half].sum()}


def make_companion(args: dict, *, tokenizer, fmt: str, seed: int):
  """The reward model as a `base.Companion`, loaded from `args["reward_model"]`."""
  from rewardjax.algorithms import base  # noqa: PLC0415 (algorithms import recipes)
  from rewardjax.models import hf_reward  # noqa: PLC0415

  directory = hf_reward.resolve_reward_model_dir(args["reward_model"])
  model = hf_reward.load_reward_model(directory)
  config = model.backbone.config
  # It reads the policy's token ids (a reward model trained alongside shares the tokenizer).
  tokenizers.check_vocab(tokenizer, config.vocab_size)
  params = nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])

  def make_batch(groups, step):
    rng = np.random.default_rng([seed, step])
    rows = pairs(groups, fmt=fmt, rng=rng)
    prompts = [r[0] for r in rows] * 2
    texts = [r[1] for r in rows] + [r[2] for r in rows]
    tokens, mask, _ = sources.encode_rows(tokenizer, prompts, texts,
                                          max_length=args["max_length"], bucket=16)
    valid = np.array([r[3] for r in rows] * 2, np.float32)
    return {"tokens": tokens, "attention_mask": mask, "valid": valid}

  return base.Companion(
      name="reward_model",
      model_fn=lambda rngs: heads.ScalarModel(config, rngs=rngs, bias=False),
      init_params=lambda lm_params, rng: jax.tree.map(np.asarray, params),
      loss=reward_model_loss, learning_rate=args["learning_rate"], make_batch=make_batch,
      export=lambda model, directory: hf_reward.save_reward_model(
          model, directory, pad_token_id=tokenizers.pad_token_id(tokenizer)))


def make_recipe(args: dict, *, stream, problems: dict, fmt: str, seed: int, rewards,
                tokenizer=None) -> Recipe:
  """Cooper as a `Recipe`: the task stream, the config's reward composition (the companion
  reward model's sigma(score)) and the reward model as a companion trained every step."""
  del problems
  tokenizer = tokenizer or tokenizers.char_tokenizer()
  companion = make_companion(args, tokenizer=tokenizer, fmt=fmt, seed=seed)
  return Recipe(source=stream, rewards=rewards, companion=companion)
