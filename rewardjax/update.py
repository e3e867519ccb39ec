"""The one pure, jittable update step `(state, batch, rng) -> (state, metrics)`, and the
forward pieces objectives use (token log-probs, summed sequence log-probs, rollout scoring).

Every algorithm's step is `update` with its objective bound: the objective runs the model inside
the loss closure (model -> token log-probs -> `rewardjax.losses`), the gradient is taken with
respect to `state.params` only, and the optimizer is applied. `train.py` jits the step once with
explicit shardings and `donate_argnames=("state",)`.
"""

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from rewardjax import optim
from rewardjax.kernels import logprobs as logprobs_lib
from rewardjax.types import TrainState


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


def token_distributions(model, tokens: jax.Array, attention_mask: jax.Array, start: int,
                        length: int) -> jax.Array:
  """Full next-token log-probs [B, length, V] (float32) at tokens[:, start:start+length].

  Materialises [B, length, V] logits: for objectives over the whole vocabulary (on-policy
  self-distillation) with small vocabularies; `token_logprobs` never forms them.
  """
  hidden, _ = model.hidden_states(tokens, attention_mask=attention_mask)
  hidden_BxTxD = jax.lax.dynamic_slice_in_dim(hidden, start - 1, length, axis=1)
  return jax.nn.log_softmax(model.logits(hidden_BxTxD), axis=-1)  # logits are float32


def all_token_logprobs(model, tokens: jax.Array, attention_mask: jax.Array, *,
                       chunk_size: int = 1024) -> jax.Array:
  """Log-probs [B, S-1] of tokens 1 .. S-1 of right-padded rows (entry j: token j+1)."""
  logps_BxL, _ = token_logprobs(model, tokens, attention_mask, 1, tokens.shape[1] - 1,
                                chunk_size=chunk_size)
  return logps_BxL


def sequence_logps(model, tokens, attention_mask, loss_mask, *, chunk_size: int = 1024):
  """Summed completion log-probs [B] and completion lengths [B] of right-padded sequences."""
  logps_BxL = all_token_logprobs(model, tokens, attention_mask, chunk_size=chunk_size)
  return (logps_BxL * loss_mask).sum(axis=1), loss_mask.sum(axis=1)


def apply_gradients(state, grads, loss, metrics) -> tuple[Any, dict]:
  """One optimizer update of `state.params` (a TrainState or a companion's ModelState); adds
  loss, grad_norm and skipped_updates. A TrainState's step counts the update."""
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                 skipped_updates=optim.skipped_updates(opt_state))
  state = state.replace(params=params, opt_state=opt_state)
  if isinstance(state, TrainState):
    state = state.replace(step=state.step + 1)
  return state, metrics


def update(state: TrainState, batch: Any, rng: jax.Array, *, loss: Callable,
           companion_loss: Callable | None = None,
           companion_name: str = "companion") -> tuple[TrainState, dict]:
  """The update step: `loss(model, batch)` under value_and_grad w.r.t. `state.params`.

  `loss` is an objective with its hyper-parameters bound (`algorithms.base.bind`). Forward
  passes are deterministic (no dropout), so `rng` is unused; it is kept for the step contract.

  With `companion_loss` (a second model trained in the same step, `state.companion`), `batch`
  is a `CoupledBatch`: `loss` reads `batch.policy`, `companion_loss(companion_model,
  batch.companion)` is differentiated w.r.t. the companion's params and applied with its own
  optimizer. Both gradients are taken at the step's starting params (the two models share no
  parameters). The companion's metrics are "<companion_name>/<metric>".
  """
  del rng
  policy_batch = batch if companion_loss is None else batch.policy

  def loss_of(params):
    return loss(nnx.merge(state.graphdef, params), policy_batch)

  (value, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  new_state, metrics = apply_gradients(state, grads, value, metrics)
  if companion_loss is None:
    return new_state, metrics
  c = state.companion

  def companion_loss_of(params):
    return companion_loss(nnx.merge(c.graphdef, params), batch.companion)

  (c_value, c_metrics), c_grads = jax.value_and_grad(companion_loss_of, has_aux=True)(c.params)
  companion, c_metrics = apply_gradients(c, c_grads, c_value, c_metrics)
  metrics.update({f"{companion_name}/{k}": v for k, v in c_metrics.items()})
  return new_state.replace(companion=companion), metrics


def score_rollouts(params, ref_params, graphdef, tokens, attention_mask, completion_length: int,
                   *, chunk_size: int = 1024) -> tuple[jax.Array | None, jax.Array | None]:
  """Old-policy and reference log-probs [B, T] of the completions, in one jitted pass.

  Either may be skipped by passing None for its params (without truncated importance sampling
  the sampler's own log-probs are the old-policy ones, so the RL batch scores only the
  reference). Both are constants of the update (stop_gradient).
  """
  prompt_length = tokens.shape[1] - completion_length

  def score(p):
    if p is None:
      return None
    logps, _ = token_logprobs(nnx.merge(graphdef, p), tokens, attention_mask, prompt_length,
                              completion_length, chunk_size=chunk_size)
    return jax.lax.stop_gradient(logps)

  return score(params), score(ref_params)
