"""The train state, born sharded: its layout, its creation, and its restore from a checkpoint.

`state_layout` gives the abstract `types.TrainState` and its shardings without allocating it;
`create_state` builds it directly on those shardings (jit with out_shardings), from given
params or a random initialisation; `saveable` is the pytree a checkpoint stores, and
`restore` reads the newest readable checkpoint back onto the same shardings, bitwise
(`checkpoint.restore_latest`, with its fallback past an unreadable newest step).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from rewardjax import checkpoint, sharding, update
from rewardjax.models import lora
from rewardjax.types import ModelState, TrainState, overlay, subtree


def state_layout(model_fn, tx, mesh, rng, *, with_ref: bool, companion=None):
  """`(init, abstract_state, shardings)` of a TrainState, without allocating it.

  `model_fn(rngs)` builds the NNX module; `init(rng, params, companion_params=None)` builds the
  state, from `params` (a pure dict: warm start or pretrained) or, when None, from a random
  initialisation; leaves the model has and `params` lacks (LoRA adapters on a pretrained LM)
  are initialised fresh. Only the trainable leaves get optimizer state, and the reference keeps
  only its own copy of them (`types.TrainState.reference_params`). `companion` is
  `(base.Companion, its optimizer)` for a second trained model.
  """
  graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))),
                                        nnx.Param)
  params_sharding = sharding.param_shardings(abstract_params, mesh)
  companion_sharding = None
  if companion is not None:
    spec, companion_tx = companion
    companion_graphdef, abstract_companion = nnx.split(
        nnx.eval_shape(lambda: spec.model_fn(nnx.Rngs(0))), nnx.Param)
    companion_sharding = sharding.param_shardings(abstract_companion, mesh)

  def fresh(fn, rng):
    return nnx.to_pure_dict(nnx.split(fn(nnx.Rngs(rng)), nnx.Param)[1])

  def complete(params, abstract, fn, rng):
    """`params`, completed by a fresh initialisation when it lacks leaves (e.g. adapters)."""
    if params is None:
      return fresh(fn, rng)
    if jax.tree.structure(params) == jax.tree.structure(nnx.to_pure_dict(abstract)):
      return params
    return overlay(fresh(fn, rng), params)  # the unused fresh leaves are dead code under jit

  def init(rng, params, companion_params=None):
    params = complete(params, abstract_params, model_fn, rng)
    ref = lora.reference_of(params) if with_ref else None
    second = None
    if companion is not None:
      companion_params = complete(companion_params, abstract_companion, spec.model_fn, rng)
      second = ModelState(params=companion_params,
                          opt_state=update.init_optimizer(companion_tx, companion_params),
                          graphdef=companion_graphdef, tx=companion_tx)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=update.init_optimizer(tx, params),
                      rng=rng, ref_params=ref, graphdef=graphdef, tx=tx, companion=second)

  abstract = jax.eval_shape(init, rng, None)
  return init, abstract, sharding.state_shardings(abstract, params_sharding, mesh,
                                                  companion_sharding)


def create_state(model_fn, tx, mesh, rng, *, params=None, with_ref: bool, companion=None,
                 companion_params=None):
  """A TrainState born sharded: eval_shape -> shardings -> jit(init, out_shardings)."""
  init, _, shardings = state_layout(model_fn, tx, mesh, rng, with_ref=with_ref,
                                    companion=companion)
  # `subtree`: params may lack leaves `init` adds (LoRA adapters on a pretrained LM).
  if params is not None:
    params = jax.device_put(params, subtree(shardings.params, params))
  if companion_params is not None:
    companion_params = jax.device_put(companion_params,
                                      subtree(shardings.companion.params, companion_params))
  return jax.jit(init, out_shardings=shardings)(rng, params, companion_params), shardings


def saveable(state: TrainState) -> dict:
  tree = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
          "rng": state.rng, "ref_params": state.ref_params}
  if state.companion is not None:  # absent otherwise: older checkpoints keep their layout
    tree["companion"] = {"params": state.companion.params,
                         "opt_state": state.companion.opt_state}
  return tree


def restore(manager, model_fn, tx, mesh, rng, *, with_ref: bool,
            config_fingerprint: str | None = None, companion=None):
  """`(state, extra, state_sharding)` of the newest checkpoint in `manager`, bitwise, laid out
  as `create_state` would; state and extra are None when the manager holds no checkpoint."""
  _, abstract, shardings = state_layout(model_fn, tx, mesh, rng, with_ref=with_ref,
                                        companion=companion)
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        saveable(abstract), saveable(shardings))
  restored = checkpoint.restore_latest(manager, target, config_fingerprint=config_fingerprint)
  if restored is None:
    return None, None, shardings
  tree, extra = restored
  second = tree.pop("companion", None)
  if second is not None:
    second = abstract.companion.replace(**second)
  return abstract.replace(**tree, companion=second), extra, shardings
