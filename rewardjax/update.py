"""Pure, jittable update steps: `(state, batch, rng) -> (state, metrics)`.

Each step runs the model inside one small loss closure (model -> token log-probs -> loss), takes
the gradient with respect to `state.params` only, and applies the optimizer. The objective is
passed in as `loss_fn`, a `functools.partial` of a `rewardjax.losses` function with its
hyper-parameters bound, so the same step serves every loss_type. `train.py` jits each step once
with explicit shardings and `donate_argnames=("state",)`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rewardjax import optim
from rewardjax.kernels import logprobs as logprobs_lib
from rewardjax.types import PreferenceBatch, RolloutBatch, SequenceBatch, TrainState


def token_logprobs(model, tokens: jax.Array, attention_mask: jax.Array, start: int,
                   length: int, *, chunk_size: int = 1024) -> tuple[jax.Array, jax.Array]:
  """Log-probs and entropies [B, length] of tokens[:, start:start+length] under `model`.

  Token j is predicted by the hidden state at j-1, so hidden states start-1 .. start+length-2
  are unembedded, in chunks, never materialising [B, length, V] (`kernels/logprobs.py`).
  """
  hidden, _ = model.hidden_states(tokens, attention_mask=attention_mask)
  hidden_BxTxD = jax.lax.dynamic_slice_in_dim(hidden, start - 1, length, axis=1)
  targets_BxT = jax.lax.dynamic_slice_in_dim(tokens, start, length, axis=1)
  return logprobs_lib.token_logprobs_from_hidden(
      hidden_BxTxD, model.unembedding(), targets_BxT, chunk_size=chunk_size)


def _apply_gradients(state: TrainState, grads, loss, metrics) -> tuple[TrainState, dict]:
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                 skipped_updates=optim.skipped_updates(opt_state))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def policy_update(state: TrainState, batch: RolloutBatch, rng: jax.Array, *,
                  loss_fn: Callable, chunk_size: int = 1024) -> tuple[TrainState, dict]:
  """One optimizer step of a policy-gradient loss (GRPO family, GSPO, CISPO, DAPO ...).

  `loss_fn(logprobs, old_logprobs, ref_logprobs, advantages, mask, entropy=...)` is a partial
  of `losses.grpo_loss`.
  """
  del rng  # the forward pass is deterministic (no dropout)
  completion_length = batch.completion_mask.shape[1]
  prompt_length = batch.tokens.shape[1] - completion_length

  def loss_of(params):
    model = nnx.merge(state.graphdef, params)
    logps_BxT, entropy_BxT = token_logprobs(model, batch.tokens, batch.attention_mask,
                                            prompt_length, completion_length,
                                            chunk_size=chunk_size)
    return loss_fn(logps_BxT, batch.old_logprobs, batch.ref_logprobs, batch.advantages,
                   batch.completion_mask, entropy=entropy_BxT)

  (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  return _apply_gradients(state, grads, loss, metrics)


def sequence_logps(model, tokens, attention_mask, loss_mask, *, chunk_size: int = 1024):
  """Summed completion log-probs [B] and completion lengths [B] of right-padded sequences."""
  logps_BxL, _ = token_logprobs(model, tokens, attention_mask, 1, tokens.shape[1] - 1,
                                chunk_size=chunk_size)
  return (logps_BxL * loss_mask).sum(axis=1), loss_mask.sum(axis=1)


def preference_update(state: TrainState, batch: PreferenceBatch, rng: jax.Array, *,
                      loss_fn: Callable, chunk_size: int = 1024) -> tuple[TrainState, dict]:
  """One optimizer step of a DPO-family loss on stacked (chosen; rejected) rows.

  `loss_fn(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps)` is a partial
  of `losses.dpo_loss`.
  """
  del rng
  pairs = batch.tokens.shape[0] // 2

  def loss_of(params):
    model = nnx.merge(state.graphdef, params)
    logps_2B, _ = sequence_logps(model, batch.tokens, batch.attention_mask, batch.loss_mask,
                                 chunk_size=chunk_size)
    return loss_fn(logps_2B[:pairs], logps_2B[pairs:], batch.ref_logps[:pairs],
                   batch.ref_logps[pairs:])

  (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  return _apply_gradients(state, grads, loss, metrics)


def reward_model_update(state: TrainState, batch: SequenceBatch, rng: jax.Array, *,
                        loss_fn: Callable) -> tuple[TrainState, dict]:
  """One optimizer step of a pairwise reward-model loss; rows [0, B/2) chosen, [B/2, B) rejected.

  `state.graphdef` is a `models.ScalarModel`; `loss_fn(chosen_rewards, rejected_rewards)` is a
  partial of `losses.bradley_terry_loss` (or another pairwise loss).
  """
  del rng
  pairs = batch.tokens.shape[0] // 2

  def loss_of(params):
    scores_B = nnx.merge(state.graphdef, params)(batch.tokens, attention_mask=batch.attention_mask)
    return loss_fn(scores_B[:pairs], scores_B[pairs:])

  (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  return _apply_gradients(state, grads, loss, metrics)


def sft_update(state: TrainState, batch: SequenceBatch, rng: jax.Array, *,
               chunk_size: int = 1024) -> tuple[TrainState, dict]:
  """One supervised step: token-mean negative log-likelihood of the `loss_mask` tokens."""
  del rng

  def loss_of(params):
    model = nnx.merge(state.graphdef, params)
    logps_BxL, _ = token_logprobs(model, batch.tokens, batch.attention_mask, 1,
                                  batch.tokens.shape[1] - 1, chunk_size=chunk_size)
    count = jnp.maximum(batch.loss_mask.sum(), 1)
    nll = -(logps_BxL * batch.loss_mask).sum() / count
    return nll, {"geometric_mean_token_prob": jnp.exp(-nll)}

  (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  return _apply_gradients(state, grads, loss, metrics)


def score_rollouts(params, ref_params, graphdef, tokens, attention_mask, completion_length: int,
                   *, chunk_size: int = 1024) -> tuple[jax.Array | None, jax.Array | None]:
  """Old-policy and reference log-probs [B, T] of the completions, in one jitted pass.

  Either may be skipped by passing None for its params (the sampler already returns the
  old-policy log-probs, `Rollout.model_logprobs`, so the RL loop only scores the reference).
  Both are constants of the update (stop_gradient).
  """
  prompt_length = tokens.shape[1] - completion_length

  def score(p):
    if p is None:
      return None
    logps, _ = token_logprobs(nnx.merge(graphdef, p), tokens, attention_mask, prompt_length,
                              completion_length, chunk_size=chunk_size)
    return jax.lax.stop_gradient(logps)

  return score(params), score(ref_params)
