"""Held-out task accuracy (greedy and pass@k) and pairwise preference accuracy."""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from rewardjax import rollouts, sharding
from rewardjax.data import tokenizers
from rewardjax.rewards import verifiers


@dataclasses.dataclass(frozen=True)
class EvalSizes:
  """The shapes of evaluation generation (fixed, so repeated evaluations reuse programs).

  Attributes:
    max_new_tokens: completion length T of every generation.
    batch_size: prompts per generation call (the last batch is padded up to it).
    bucket: prompt lengths are padded to a multiple of this.
    max_prompt_length: prompts are truncated to this many tokens (None = never).
  """
  max_new_tokens: int
  batch_size: int
  bucket: int = 16
  max_prompt_length: int | None = None


def generate_texts(graphdef, params, tokenizer, prompts: Sequence[str], rng: jax.Array, *,
                   sizes: EvalSizes, temperature: float = 0.0, num_samples: int = 1,
                   stop_token_ids: tuple[int, ...] = ()) -> list[str]:
  """Completions of `prompts` (num_samples each, contiguous), generated in fixed-size batches.

  The last batch is padded with copies of the first prompt so every call has one shape. The
  tokenizer's EOS and `stop_token_ids` end a completion.
  """
  batch_size = sizes.batch_size
  texts = []
  for start in range(0, len(prompts), batch_size):
    chunk = list(prompts[start:start + batch_size])
    real = len(chunk)
    chunk += [chunk[0]] * (batch_size - real)
    tokens, mask = tokenizers.encode_prompts(tokenizer, chunk, bucket=sizes.bucket,
                                             max_length=sizes.max_prompt_length)
    out = rollouts.generate(
        (graphdef, params), *sharding.feed((tokens, mask)),
        jax.random.fold_in(rng, start), max_new_tokens=sizes.max_new_tokens,
        num_samples=num_samples, decoding=rollouts.Decoding(
            temperature=temperature, eos_token_id=tokenizer.eos_token_id,
            stop_token_ids=stop_token_ids, pad_token_id=tokenizers.pad_token_id(tokenizer)))
    completions = sharding.gather(out.completion_tokens)[:real * num_samples]
    texts += tokenizers.decode_completions(tokenizer, completions, stop_ids=stop_token_ids)
  return texts


def task_accuracy(graphdef, params, tokenizer, items: Sequence[dict], rng: jax.Array, *,
                  fmt: str, sizes: EvalSizes, reward_fn: Callable | None = None,
                  **generate_kwargs) -> dict[str, float]:
  """Greedy accuracy on `items` ({"prompt", "answer"}): mean verifier reward of one answer each.

  Returns `{"accuracy", "completion_length"}` (length in characters).
  """
  texts = generate_texts(graphdef, params, tokenizer, [it["prompt"] for it in items], rng,
                         sizes=sizes, **generate_kwargs)
  if reward_fn is None:
    rewards = verifiers.verify_batch(texts, [it["answer"] for it in items], fmt)
  else:
    rewards = reward_fn(list(items), texts)
  return {"accuracy": float(np.mean(rewards)),
          "completion_length": float(np.mean([len(t) for t in texts]))}


def pass_at_k(correct: np.ndarray, k: int) -> float:
  """Unbiased pass@k from n samples per problem with c correct: 1 - C(n-c, k) / C(n, k).

  Args:
    correct: [P, n] 0/1 verifier outcomes.
    k: samples allowed per problem, k <= n.

  References:
    Chen et al. 2021 (Codex), arXiv 2107.03374, Eq. 1.

  >>> round(pass_at_k(np.array([[1, 0, 0, 0]]), 2), 4)
  0.5
  """
  correct = np.asarray(correct)
  n = correct.shape[1]
  if not 1 <= k <= n:
    raise ValueError(f"pass@k needs 1 <= k <= n = {n}, got k={k}")
  c = correct.sum(axis=1)
  # prod_{i=n-c+1}^{n} (1 - k/i) is C(n-c, k) / C(n, k) without overflowing factorials.
  fail = np.array([np.prod(1.0 - k / np.arange(n - ci + 1, n + 1)) if n - ci >= k else 0.0
                   for ci in c])
  return float(np.mean(1.0 - fail))
