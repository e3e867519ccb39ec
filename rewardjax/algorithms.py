"""Host-side batch builders, one per algorithm: text records -> device batches.

The RL builder is the data flow end to end: prompts -> `rollouts.generate` -> rewards ->
advantages -> old / reference log-probs. The preference and reward-model builders tokenise
pairs into the stacked (chosen; rejected) layout of `types.PreferenceBatch`. `train.py` picks
one builder and one update step from `ALGORITHMS` and binds their options with
`functools.partial`.
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np

from rewardjax import advantages as advantages_lib
from rewardjax import rollouts, sharding, update
from rewardjax.data import tokenizers
from rewardjax.rewards import shaping, verifiers
from rewardjax.types import PreferenceBatch, RolloutBatch, SequenceBatch


def verifier_rewards(items: Sequence[dict], completions: Sequence[str], *,
                     fmt: str) -> np.ndarray:
  """Default reward: 1 if the completion's answer equals the item's "answer", else 0."""
  return verifiers.verify_batch(completions, [it["answer"] for it in items], fmt)


def rl_batch(state, step: int, rng: jax.Array, *, items_at: Callable, tokenizer,
             reward_fn: Callable, score_fn: Callable, mesh, group_size: int,
             advantage: str, scale_rewards: str, max_new_tokens: int, temperature: float,
             top_p: float, top_k: int, bucket: int, max_prompt_length: int,
             dynamic_sampling: bool, max_resample_rounds: int, overlong_buffer: int,
             overlong_penalty: float, stop_token_ids: tuple[int, ...] = ()):
  """Samples G completions for each prompt of step `step` and scores them.

  `items_at(step, round)` returns the P prompt records of a step (round > 0: extra prompts for
  DAPO dynamic sampling, which keeps only groups whose rewards differ, up to
  `max_resample_rounds` rounds, then fills with the remaining groups). Groups with a
  non-finite reward are dropped from the loss (zero mask) and counted. An item's optional
  "weight" field multiplies its rows' advantages (a per-prompt loss weight; default 1).

  Returns `(RolloutBatch on the mesh, host metrics dict, records)`, where `records` holds each
  row's item, completion text and reward (for recipes).
  """
  pad_id = tokenizers.pad_token_id(tokenizer)
  kept, spare, metrics = [], [], {}
  num_prompts, prompt_length = None, 0
  for round_index in range(max_resample_rounds + 1 if dynamic_sampling else 1):
    items = items_at(step, round_index)
    num_prompts = num_prompts or len(items)
    prompt_tokens, prompt_mask = tokenizers.encode_prompts(
        tokenizer, [it["prompt"] for it in items], bucket=bucket, max_length=max_prompt_length)
    out = rollouts.generate(
        (state.graphdef, state.params), *sharding.feed((prompt_tokens, prompt_mask), mesh),
        jax.random.fold_in(rng, round_index),
        max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        temperature=temperature, top_k=top_k, top_p=top_p, num_samples=group_size,
        stop_token_ids=stop_token_ids, pad_token_id=pad_id)
    # Every process decodes and rewards every row (same values everywhere; host work only).
    host = sharding.gather({"tokens": out.tokens, "prompt_mask": out.prompt_mask,
                           "completion_mask": out.completion_mask,
                           "completion_tokens": out.completion_tokens,
                           "lengths": out.lengths, "model_logprobs": out.model_logprobs})
    prompt_length = max(prompt_length, host["prompt_mask"].shape[1])
    texts = tokenizers.decode_completions(tokenizer, host["completion_tokens"],
                                          stop_ids=stop_token_ids)
    row_items = [it for it in items for _ in range(group_size)]
    rewards = np.asarray(reward_fn(row_items, texts), np.float32)
    task_rewards = rewards.copy()
    rewards = rewards + shaping.overlong_penalty(
        host["lengths"], max_length=max_new_tokens, buffer=overlong_buffer,
        penalty=overlong_penalty)
    finite = shaping.finite_groups(rewards, group_size)
    if round_index == 0:
      metrics.update({
          "reward": float(np.nanmean(np.where(finite, task_rewards, np.nan)))
          if finite.any() else float("nan"),
          "nonfinite_reward_groups": float((~finite).sum() / group_size),
          "completion_length": float(host["lengths"].mean()),
          "clipped_ratio": float((host["completion_mask"][:, -1] > 0).mean())})
    for p in range(len(items)):
      rows = slice(p * group_size, (p + 1) * group_size)
      group = dict(tokens=host["tokens"][rows], prompt_mask=host["prompt_mask"][rows],
                   completion_mask=host["completion_mask"][rows],
                   model_logprobs=host["model_logprobs"][rows],
                   rewards=np.where(finite[rows], rewards[rows], 0.0),
                   finite=finite[rows], items=row_items[rows], texts=texts[rows])
      informative = finite[rows].all() and (np.ptp(rewards[rows]) > 0 or group_size == 1)
      (kept if informative or not dynamic_sampling else spare).append(group)
    if len(kept) >= num_prompts:
      break
  groups = (kept + spare)[:num_prompts]
  if dynamic_sampling:
    metrics["kept_groups"] = float(min(len(kept), num_prompts))
  # Prompts of different rounds may bucket to different lengths: left-pad to the longest.

  def left_pad(x, value=0):
    return np.pad(x, ((0, 0), (prompt_length - (x.shape[1] - max_new_tokens), 0)),
                  constant_values=value)

  tokens = np.concatenate([left_pad(g["tokens"], pad_id) for g in groups])
  completion_mask = np.concatenate([g["completion_mask"] * g["finite"][:, None]
                                    for g in groups]).astype(np.int32)
  prompt_mask = np.concatenate([np.pad(g["prompt_mask"], ((0, 0), (
      prompt_length - g["prompt_mask"].shape[1], 0))) for g in groups])
  attention_mask = np.concatenate([prompt_mask, completion_mask], axis=1).astype(np.int32)
  rewards = np.concatenate([g["rewards"] for g in groups]).astype(np.float32)
  advantage_fn = advantages_lib.get_advantage_fn(advantage)
  kwargs = {"scale_rewards": scale_rewards} if advantage == "grpo" else {}
  advantages_B = np.asarray(jax.device_get(advantage_fn(jax.device_put(rewards), group_size,
                                                        **kwargs)), np.float32)
  advantages_B = advantages_B * np.concatenate([g["finite"] for g in groups])
  # An item's optional "weight" w >= 0 (a recipe's per-prompt loss weight, e.g. SPARK's
  # judge_weight) scales its rows' advantages: -min(rho w A, clip(rho) w A) = w * the surrogate,
  # so this weights the policy term of the loss exactly (the KL term keeps weight 1).
  advantages_B = advantages_B * np.array([float(it.get("weight", 1.0)) for g in groups
                                          for it in g["items"]], np.float32)
  tokens_d, attention_d = sharding.shard_batch((tokens, attention_mask), mesh)
  # The sampler's own log-probs (temperature 1, the sampling params) are the old-policy ones:
  # no second forward pass. Only the reference is scored; without one the KL term is zero.
  old_logprobs = sharding.shard_batch(
      np.concatenate([g["model_logprobs"] for g in groups]).astype(np.float32), mesh)
  _, ref_logprobs = score_fn(None, state.ref_params, tokens_d, attention_d)
  if ref_logprobs is None:
    ref_logprobs = old_logprobs
  batch = RolloutBatch(
      tokens=tokens_d, attention_mask=attention_d,
      completion_mask=sharding.shard_batch(completion_mask, mesh),
      old_logprobs=old_logprobs, ref_logprobs=ref_logprobs,
      advantages=sharding.shard_batch(advantages_B, mesh))
  records = [dict(item=it, text=t, reward=float(r)) for g in groups
             for it, t, r in zip(g["items"], g["texts"], g["rewards"])]
  return batch, metrics, records


def pair_arrays(tokenizer, prompts, first, second, *, bucket, max_prompt_length,
                 max_completion_length):
  """Tokens [2B, S+T] = (prompt | first) rows then (prompt | second) rows, and masks."""
  prompt_tokens, prompt_mask = tokenizers.encode_prompts(
      tokenizer, list(prompts) * 2, bucket=bucket, max_length=max_prompt_length)
  completion_tokens, completion_mask = tokenizers.encode_completions(
      tokenizer, list(first) + list(second), bucket=bucket, max_length=max_completion_length)
  tokens = np.concatenate([prompt_tokens, completion_tokens], axis=1)
  attention_mask = np.concatenate([prompt_mask, completion_mask], axis=1)
  target_mask = np.concatenate([np.zeros_like(prompt_mask), completion_mask], axis=1)
  return tokens, attention_mask, target_mask[:, 1:].astype(np.int32)


def preference_batch(state, step: int, rng: jax.Array, *, items_at: Callable, tokenizer,
                     ref_logps_fn: Callable, mesh, bucket: int, max_prompt_length: int,
                     max_completion_length: int):
  """A `PreferenceBatch` for step `step` from `{"prompt", "chosen", "rejected"}` records."""
  del rng
  items = items_at(step, 0)
  tokens, attention_mask, loss_mask = pair_arrays(
      tokenizer, [it["prompt"] for it in items], [it["chosen"] for it in items],
      [it["rejected"] for it in items], bucket=bucket, max_prompt_length=max_prompt_length,
      max_completion_length=max_completion_length)
  tokens, attention_mask, loss_mask = sharding.shard_batch((tokens, attention_mask, loss_mask),
                                                           mesh)
  ref_logps = ref_logps_fn(state.ref_params, tokens, attention_mask, loss_mask)
  return PreferenceBatch(tokens=tokens, attention_mask=attention_mask, loss_mask=loss_mask,
                         ref_logps=ref_logps), {}, items


def reward_model_batch(state, step: int, rng: jax.Array, *, items_at: Callable, tokenizer,
                       mesh, bucket: int, max_prompt_length: int, max_completion_length: int):
  """A `SequenceBatch` of chosen rows then rejected rows for a pairwise reward model."""
  del state, rng
  items = items_at(step, 0)
  arrays = pair_arrays(tokenizer, [it["prompt"] for it in items],
                        [it["chosen"] for it in items], [it["rejected"] for it in items],
                        bucket=bucket, max_prompt_length=max_prompt_length,
                        max_completion_length=max_completion_length)
  tokens, attention_mask, loss_mask = sharding.shard_batch(arrays, mesh)
  return SequenceBatch(tokens=tokens, attention_mask=attention_mask, loss_mask=loss_mask), {}, items


def sft_batch(items: Sequence[dict], tokenizer, mesh, *, bucket: int, max_prompt_length: int,
              max_completion_length: int) -> SequenceBatch:
  """A `SequenceBatch` of `{"prompt", "completion"}` records; the loss covers the completion."""
  prompt_tokens, prompt_mask = tokenizers.encode_prompts(
      tokenizer, [it["prompt"] for it in items], bucket=bucket, max_length=max_prompt_length)
  completion_tokens, completion_mask = tokenizers.encode_completions(
      tokenizer, [it["completion"] for it in items], bucket=bucket,
      max_length=max_completion_length)
  tokens = np.concatenate([prompt_tokens, completion_tokens], axis=1)
  attention_mask = np.concatenate([prompt_mask, completion_mask], axis=1)
  loss_mask = np.concatenate([np.zeros_like(prompt_mask), completion_mask], axis=1)[:, 1:]
  return SequenceBatch(*sharding.shard_batch((tokens, attention_mask, loss_mask), mesh))


def minibatches(batch, num_minibatches: int):
  """Splits a batch's rows into `num_minibatches` contiguous, equal parts (device slices)."""
  rows = jax.tree.leaves(batch)[0].shape[0]
  if rows % num_minibatches:
    raise ValueError(f"{rows} rows do not split into num_minibatches={num_minibatches}")
  size = rows // num_minibatches
  return [jax.tree.map(lambda x, i=i: x[i * size:(i + 1) * size], batch)
          for i in range(num_minibatches)]


# algorithm -> (batch builder, update step). The trainer binds both with functools.partial.
ALGORITHMS = {
    "grpo": (rl_batch, update.policy_update),
    "dpo": (preference_batch, update.preference_update),
    "reward_model": (reward_model_batch, update.reward_model_update),
}
