"""One mesh ("data", "fsdp", "tensor"), one parameter sharding table, batch placement.

Parameters carry `logical_axes` metadata (see `models/transformer.py`); `RULES` maps each
logical axis to mesh axes. Weights are split over "fsdp" along their model dimension (ZeRO-3
style: gathered per layer inside the step by XLA) and over "tensor" along heads / MLP width
(Megatron style), so the same table serves a laptop (mesh 1x1x1) and a pod.
"""

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both: fsdp ranks see different rows


@dataclasses.dataclass(frozen=True)
class Rules:
  """Logical parameter axis -> mesh axis (None = replicated). One row per role."""
  vocab: str | None = "tensor"     # embedding / unembedding rows
  embed: str | None = "fsdp"       # model dim D: the ZeRO-3 split
  heads: str | None = "tensor"     # query heads H
  kv_heads: str | None = "tensor"  # key/value heads (replicated when fewer than tensor ranks)
  head_dim: str | None = None      # K stays whole: RoPE rotates across it
  mlp: str | None = "tensor"       # MLP width F


RULES = Rules()


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
  """A ("data", "fsdp", "tensor") mesh; `-1` takes the devices left over.

  Raises a ValueError naming the device count and a valid shape when the sizes do not divide.
  """
  devices = jax.devices() if devices is None else devices
  count = len(devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))}: at most one axis may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if known <= 0 or count % known:
    raise ValueError(
        f"mesh {dict(zip(AXES, sizes))} needs a multiple of {known} devices but there are "
        f"{count}; e.g. use data=-1, fsdp=1, tensor=1 (valid: data*fsdp*tensor == {count}).")
  sizes = [count // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != count:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} uses {int(np.prod(sizes))} devices but "
                     f"there are {count}; make data*fsdp*tensor == {count} or set data=-1.")
  # Auto axes: the model is written for implicit (GSPMD) sharding with a few constraints.
  return jax.make_mesh(tuple(sizes), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _spec_for(axes, shape, mesh: Mesh, rules: Rules) -> P:
  spec, used = [], set()
  for name, dim in zip(axes, shape):
    mesh_axis = getattr(rules, name, None) if name else None
    # A dimension the mesh axis does not divide (e.g. 2 kv heads on 4 tensor ranks) is
    # replicated rather than padded; each mesh axis is used at most once per array.
    if mesh_axis is None or mesh_axis in used or dim % mesh.shape[mesh_axis]:
      spec.append(None)
    else:
      spec.append(mesh_axis)
      used.add(mesh_axis)
  return P(*spec)


def param_shardings(abstract_params: nnx.State, mesh: Mesh, rules: Rules = RULES) -> dict:
  """NamedShardings (a pure dict, like `nnx.to_pure_dict(params)`) from `logical_axes`."""

  def one(variable):
    axes = variable.get_metadata().get("logical_axes") or (None,) * variable.ndim
    return NamedSharding(mesh, _spec_for(axes, variable.shape, mesh, rules))

  return nnx.to_pure_dict(
      jax.tree.map(one, abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Rows over ("data", "fsdp"), other dims whole."""
  return NamedSharding(mesh, P(BATCH_AXES, *(None,) * (ndim - 1)))


def batch_size_multiple(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(batch_size: int, mesh: Mesh, what: str = "batch size") -> None:
  """Raises when `batch_size` rows cannot be split evenly over the data axes."""
  multiple = batch_size_multiple(mesh)
  if batch_size % multiple:
    raise ValueError(
        f"{what} {batch_size} does not divide over the data axes (data*fsdp = {multiple}); "
        f"use a multiple of {multiple}, e.g. {max(multiple, batch_size // multiple * multiple)}.")


def shard_batch(batch, mesh: Mesh):
  """Places a pytree of host arrays (leading dim = rows) onto the mesh, rows over data axes."""
  return jax.tree.map(lambda x: jax.device_put(x, batch_sharding(mesh, np.ndim(x))), batch)


def state_shardings(abstract_state, params_sharding: dict, mesh: Mesh):
  """Shardings for a whole train state: params (and ref params) by the table, opt state alike.

  Optimizer moments have the shapes of the parameters they track, so an optimizer leaf whose
  shape matches a parameter's takes that parameter's sharding; counters stay replicated.
  """
  by_shape = {}
  for leaf, sharding in zip(jax.tree.leaves(abstract_state.params),
                            jax.tree.leaves(params_sharding)):
    by_shape.setdefault(tuple(leaf.shape), sharding)

  def like_params(leaf):
    return by_shape.get(tuple(getattr(leaf, "shape", ())), replicated(mesh))

  return abstract_state.replace(
      step=replicated(mesh), rng=replicated(mesh), params=params_sharding,
      opt_state=jax.tree.map(like_params, abstract_state.opt_state),
      ref_params=None if abstract_state.ref_params is None else params_sharding)
