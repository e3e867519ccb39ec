"""The one pure, jittable update step `(state, batch, rng) -> (state, metrics)`, and the
forward pieces objectives use (token log-probs, summed sequence log-probs, rollout scoring).

Every algorithm's step is `update` with its objective bound: the objective runs the model inside
the loss closure (model -> token log-probs -> `rewardjax.losses`), the gradient is taken with
respect to `state.params` only, and the optimizer is applied. `train.py` jits the step once with
explicit shardings and `donate_argnames=("state",)`.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rewardjax import optim
from rewardjax.kernels import logprobs as logprobs_lib
from rewardjax.models import lora
from rewardjax.types import TrainState, overlay


def completion_hidden(model, tokens: jax.Array, attention_mask: jax.Array, start: int,
                      length: int, *, group_size: int = 1) -> jax.Array:
  """Hidden states [B, length, D] that predict tokens[:, start:start+length] (token j is
  predicted by the hidden state at j-1).

  With `group_size` G > 1, rows [p*G, (p+1)*G) must share their first `start` tokens and mask
  (a GRPO group's prompt, a DPO pair's): the prompt is then computed once per group
  (`Transformer.shared_prefix_hidden_states`), and the result equals the unshared pass to
  float tolerance, gradients included. The caller guarantees the sharing; `check_shared_prompts`
  checks host arrays.
  """
  if group_size == 1:
    hidden, _ = model.hidden_states(tokens, attention_mask=attention_mask)
    return jax.lax.dynamic_slice_in_dim(hidden, start - 1, length, axis=1)
  prompt_hidden_PxD, completion_hidden_BxTxD = model.shared_prefix_hidden_states(
      tokens[::group_size, :start], attention_mask[::group_size, :start],
      tokens[:, start:start + length], attention_mask[:, start:start + length])
  first_BxD = jnp.repeat(prompt_hidden_PxD, group_size, axis=0)
  return jnp.concatenate([first_BxD[:, None], completion_hidden_BxTxD[:, :length - 1]], axis=1)


def check_shared_prompts(tokens, attention_mask, start: int, group_size: int) -> None:
  """Raises unless every group of `group_size` consecutive host rows shares tokens[:, :start]
  and its mask (the layout `completion_hidden` with group_size > 1 relies on)."""
  if group_size == 1:
    return
  for name, x in (("tokens", tokens), ("attention_mask", attention_mask)):
    x = np.asarray(x)[:, :start]
    if x.shape[0] % group_size or not (
        x.reshape(-1, group_size, start) == x[::group_size, None]).all():
      raise ValueError(
          f"rows of each group of {group_size} must share the prompt ({name}[:, :{start}] "
          "differs within a group, or the rows do not split into groups): a source whose "
          "group rows have different prompts cannot share the prompt pass")


def token_logprobs(model, tokens: jax.Array, attention_mask: jax.Array, start: int,
                   length: int, *, chunk_size: int = 1024,
                   group_size: int = 1) -> tuple[jax.Array, jax.Array]:
  """Log-probs and entropies [B, length] of tokens[:, start:start+length] under `model`.

  Hidden states start-1 .. start+length-2 are unembedded in chunks, never materialising
  [B, length, V] (`kernels/logprobs.py`); `group_size` > 1 computes each group's shared prompt
  once (`completion_hidden`).
  """
  hidden_BxTxD = completion_hidden(model, tokens, attention_mask, start, length,
                                   group_size=group_size)
  targets_BxT = jax.lax.dynamic_slice_in_dim(tokens, start, length, axis=1)
  return logprobs_lib.token_logprobs_from_hidden(
      hidden_BxTxD, model.unembedding(), targets_BxT, chunk_size=chunk_size)


def token_distributions(model, tokens: jax.Array, attention_mask: jax.Array, start: int,
                        length: int) -> jax.Array:
  """Full next-token log-probs [B, length, V] (float32) at tokens[:, start:start+length].

  Materialises [B, length, V] logits: for objectives over the whole vocabulary (on-policy
  self-distillation) with small vocabularies; `token_logprobs` never forms them.
  """
  hidden_BxTxD = completion_hidden(model, tokens, attention_mask, start, length)
  return jax.nn.log_softmax(model.logits(hidden_BxTxD), axis=-1)  # logits are float32


def all_token_logprobs(model, tokens: jax.Array, attention_mask: jax.Array, *,
                       chunk_size: int = 1024, paired_prompt: int = 0) -> jax.Array:
  """Log-probs [B, S-1] of tokens 1 .. S-1 of right-padded rows (entry j: token j+1).

  `paired_prompt` = S_p > 0: rows b and b + B/2 are a pair (a preference batch's chosen and
  rejected rows) sharing tokens[:, :S_p], their left-padded prompt; the prompt is computed once
  per pair (`completion_hidden` with groups of 2) and the entries of prompt tokens (j < S_p - 1,
  which no loss reads: the loss mask is 0 there) are 0.
  """
  if not paired_prompt:
    logps_BxL, _ = token_logprobs(model, tokens, attention_mask, 1, tokens.shape[1] - 1,
                                  chunk_size=chunk_size)
    return logps_BxL
  rows, length = tokens.shape
  if rows % 2:
    raise ValueError(f"paired_prompt needs chosen and rejected rows, got {rows} rows")
  # Pair b's rows next to each other (b, b + B/2) for the grouped pass, then back. Only token
  # ids and log-probs move between the two orders, never activations.
  def regroup(x, outer):  # rows as [outer, B / outer] -> [B / outer, outer], flattened
    return x.reshape(outer, rows // outer, -1).swapaxes(0, 1).reshape(rows, -1)

  logps_BxT, _ = token_logprobs(model, regroup(tokens, 2), regroup(attention_mask, 2),
                                paired_prompt, length - paired_prompt, chunk_size=chunk_size,
                                group_size=2)
  return jnp.pad(regroup(logps_BxT, rows // 2), ((0, 0), (paired_prompt - 1, 0)))


def sequence_logps(model, tokens, attention_mask, loss_mask, *, chunk_size: int = 1024,
                   paired_prompt: int = 0):
  """Summed completion log-probs [B] and completion lengths [B] of right-padded sequences
  (`paired_prompt`: see `all_token_logprobs`)."""
  logps_BxL = all_token_logprobs(model, tokens, attention_mask, chunk_size=chunk_size,
                                 paired_prompt=paired_prompt)
  return (logps_BxL * loss_mask).sum(axis=1), loss_mask.sum(axis=1)


def init_optimizer(tx: optax.GradientTransformation, params):
  """The optimizer state of `params`' trainable leaves (all of them without LoRA adapters)."""
  return tx.init(lora.trainable(params))


def value_and_grad(loss_of: Callable, params):
  """`((value, aux), grads)` of `loss_of(params)`, differentiated w.r.t. the trainable leaves
  only (`lora.split_trainable`): with LoRA adapters the frozen weights are closed-over
  constants, so no weight gradient is formed for them. `grads` holds the trainable leaves."""
  trainable, frozen = lora.split_trainable(params)
  if frozen is None:
    return jax.value_and_grad(loss_of, has_aux=True)(params)
  return jax.value_and_grad(lambda t: loss_of(overlay(frozen, t)), has_aux=True)(trainable)


def apply_gradients(state, grads, loss, metrics) -> tuple[Any, dict]:
  """One optimizer update of `state.params`' trainable leaves (a TrainState or a companion's
  ModelState; `grads` from `value_and_grad`); adds loss, grad_norm, skipped_updates and
  param_rms. A TrainState's step counts the update."""
  trainable, frozen = lora.split_trainable(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, trainable)
  trained = optax.apply_updates(trainable, updates)
  # param_rms: the root mean square trained parameter (~0.02-1 whatever the model size), read
  # by the divergence guard (`guards.GuardOptions.max_param_rms`); summed in float32.
  size = sum(x.size for x in jax.tree.leaves(trained))
  param_rms = optax.global_norm(jax.tree.map(lambda x: x.astype(jnp.float32), trained)) / (
      math.sqrt(size))
  params = trained if frozen is None else overlay(frozen, trained)
  metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                 skipped_updates=optim.skipped_updates(opt_state), param_rms=param_rms)
  state = state.replace(params=params, opt_state=opt_state)
  if isinstance(state, TrainState):
    state = state.replace(step=state.step + 1)
  return state, metrics


@dataclasses.dataclass(frozen=True)
class RefSync:
  """Reference synchronisation (TRL `sync_ref_model`; TR-DPO, arXiv 2404.09656, §3).

  Every `every` updates, ref <- alpha * params + (1 - alpha) * ref (an exponential moving
  average of the policy: a slowly-updated teacher). alpha is `alpha`, or, when `alpha_end` > 0,
  cosine-annealed from `alpha` to `alpha_end` over `total` updates (Co-rewarding-II, official
  tmlr-group/Co-rewarding `fsdp_vllm.py::update_alpha`).
  """
  alpha: float
  every: int
  alpha_end: float = 0.0
  total: int = 0

  def alpha_at(self, step):
    """alpha(t) = alpha_end + (alpha - alpha_end) * (1 + cos(pi * t / total)) / 2, t clipped to
    [0, total]; the constant alpha without annealing."""
    if not self.alpha_end:
      return jnp.float32(self.alpha)
    t = jnp.clip(step, 0, max(self.total, 1)).astype(jnp.float32)
    return jnp.float32(self.alpha_end) + 0.5 * jnp.float32(self.alpha - self.alpha_end) * (
        1.0 + jnp.cos(jnp.float32(math.pi) * t / max(self.total, 1)))


def sync_reference(ref_params, params, step: jax.Array, sync: RefSync):
  """`ref_params` moved towards `params` when `step` % sync.every == 0, else unchanged.

  ref' = alpha(step) * params + (1 - alpha(step)) * ref on synchronising steps (float32 math,
  cast back to each leaf's dtype); jittable (`jnp.where`, no host branch).

  Args:
    ref_params: the reference pytree.
    params: the policy pytree, same structure.
    step: scalar int, the number of updates applied (TrainState.step after the update).
    sync: alpha, period and annealing (`RefSync`).

  Returns:
    (new ref pytree, alpha applied: a float32 scalar, 0 on steps that do not synchronise).

  References:
    TR-DPO, arXiv 2404.09656, §3 ("soft update"); TRL `SyncRefModelCallback`
    (`ref_model_mixup_alpha`, `ref_model_sync_steps`).
  """
  alpha = jnp.where(step % sync.every == 0, sync.alpha_at(step), 0.0).astype(jnp.float32)

  def mix(r, p):
    return (alpha * p.astype(jnp.float32) + (1.0 - alpha) * r.astype(jnp.float32)).astype(
        r.dtype)

  return jax.tree.map(mix, ref_params, params), alpha


def update(state: TrainState, batch: Any, rng: jax.Array, *, loss: Callable,
           companion_loss: Callable | None = None,
           companion_name: str = "companion",
           ref_sync: RefSync | None = None) -> tuple[TrainState, dict]:
  """The update step: `loss(model, batch)` under value_and_grad w.r.t. `state.params`.

  `loss` is an objective with its hyper-parameters bound (`algorithms.base.bind`). Forward
  passes are deterministic (no dropout), so `rng` is unused; it is kept for the step contract.

  With `companion_loss` (a second model trained in the same step, `state.companion`), `batch`
  is a `CoupledBatch`: `loss` reads `batch.policy`, `companion_loss(companion_model,
  batch.companion)` is differentiated w.r.t. the companion's params and applied with its own
  optimizer. Both gradients are taken at the step's starting params (the two models share no
  parameters). The companion's metrics are "<companion_name>/<metric>".

  With `ref_sync`, the reference is then moved towards the updated params (`sync_reference`,
  metric "ref_sync/alpha"); without it the step is unchanged, bit for bit.
  """
  del rng
  policy_batch = batch if companion_loss is None else batch.policy

  def loss_of(params):
    return loss(nnx.merge(state.graphdef, params), policy_batch)

  (value, metrics), grads = value_and_grad(loss_of, state.params)
  new_state, metrics = apply_gradients(state, grads, value, metrics)
  if ref_sync is not None:
    if lora.has_adapters(state.params) and (ref_sync.alpha != 1.0 or ref_sync.alpha_end):
      # The reference stores only the adapters; a moving average of A and B is not the average
      # of the policies (A B is not linear in them), so only copies (alpha = 1) are exact.
      raise ValueError("a reference sync with mixup alpha < 1 (an EMA teacher) is not "
                       "supported with LoRA adapters (model.lora_rank > 0): set "
                       "ref_model_mixup_alpha=1, or train without LoRA")
    ref, alpha = sync_reference(new_state.ref_params, lora.trainable(new_state.params),
                                new_state.step, ref_sync)
    new_state = new_state.replace(ref_params=ref)
    metrics["ref_sync/alpha"] = alpha
  if companion_loss is None:
    return new_state, metrics
  c = state.companion

  def companion_loss_of(params):
    return companion_loss(nnx.merge(c.graphdef, params), batch.companion)

  (c_value, c_metrics), c_grads = value_and_grad(companion_loss_of, c.params)
  companion, c_metrics = apply_gradients(c, c_grads, c_value, c_metrics)
  metrics.update({f"{companion_name}/{k}": v for k, v in c_metrics.items()})
  return new_state.replace(companion=companion), metrics


def score_rollouts(params, ref_params, graphdef, tokens, attention_mask, completion_length: int,
                   *, chunk_size: int = 1024,
                   group_size: int = 1) -> tuple[jax.Array | None, jax.Array | None]:
  """Old-policy and reference log-probs [B, T] of the completions, in one jitted pass.

  Either may be skipped by passing None for its params (without truncated importance sampling
  the sampler's own log-probs are the old-policy ones, so the RL batch scores only the
  reference). Both are constants of the update (stop_gradient). `group_size` > 1 computes the
  prompt shared by each group of rows once (`completion_hidden`).
  """
  prompt_length = tokens.shape[1] - completion_length

  def score(p):
    if p is None:
      return None
    logps, _ = token_logprobs(nnx.merge(graphdef, p), tokens, attention_mask, prompt_length,
                              completion_length, chunk_size=chunk_size, group_size=group_size)
    return jax.lax.stop_gradient(logps)

  return score(params), score(ref_params)
