"""One mesh ("data", "fsdp", "tensor"), one parameter sharding table, batch placement.

Parameters carry `logical_axes` metadata (see `models/transformer.py`); `RULES` maps each
logical axis to mesh axes. Weights are split over "fsdp" along their model dimension (ZeRO-3
style: gathered per layer inside the step by XLA) and over "tensor" along heads / MLP width
(Megatron style), so the same table serves a laptop (mesh 1x1x1) and a pod.

Activations are pinned at a few named points by `constrain` (batch in, attention q/k/v, logits
out); it is a no-op unless a mesh is set (`with jax.set_mesh(mesh):`), so models stay mesh-free.

Multi-host: every process runs the same program after `initialize_distributed` (a thin wrapper
of `jax.distributed.initialize`: with no arguments JAX reads the coordinator, process count
and id from the TPU, SLURM, Open MPI or Kubernetes environment; elsewhere pass them, as
`config.distributed.*` does). `shard_batch` (and `feed`, for inputs of a jitted function)
takes the same full batch on every process and hands the devices only that process's rows;
`host_batch` takes each process's own rows (`process_rows` says which) and `local_rows` gives
them back, so no host ever holds the global batch; `gather` brings every row to every host.
Orbax checkpoints are written by every process, each its own shards (`checkpoint.py`).
"""

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rewardjax.types import subtree

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
        f"{count}; e.g. use {_valid_shape(count, fsdp, tensor)} "
        f"(valid: data*fsdp*tensor == {count}).")
  sizes = [count // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) != count:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} uses {int(np.prod(sizes))} devices but "
                     f"there are {count}; make data*fsdp*tensor == {count}, e.g. "
                     f"{_valid_shape(count, fsdp, tensor)}.")
  # Auto axes: the model is written for implicit (GSPMD) sharding with a few constraints.
  return jax.make_mesh(tuple(sizes), AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                           process_id: int = -1) -> None:
  """Joins this process to a multi-host run (`jax.distributed.initialize`), once.

  Call it before anything else touches jax (even `jax.devices()`). Empty / 0 / -1 arguments
  are left to JAX's cluster detection, which reads them from the TPU pod, SLURM, Open MPI or
  Kubernetes environment; elsewhere (e.g. several GPU hosts by hand) pass all three:
  `coordinator_address="host0:1234"` (process 0's address and a free port), the number of
  processes, and this process's id. A second call is a no-op.
  """
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(coordinator_address=coordinator_address or None,
                             num_processes=num_processes or None,
                             process_id=None if process_id < 0 else process_id)


def _valid_shape(count: int, fsdp: int, tensor: int) -> str:
  """A mesh shape for `count` devices, keeping fsdp and tensor when they fit."""
  if fsdp > 0 and tensor > 0 and count % (fsdp * tensor) == 0:
    return f"data={count // (fsdp * tensor)}, fsdp={fsdp}, tensor={tensor}"
  return f"data={count}, fsdp=1, tensor=1"


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
  """Places a pytree of host arrays (leading dim = rows) onto the mesh, rows over data axes.

  Every process passes the same full batch and hands over only its devices' rows (`host_batch`
  of `process_rows`); see `host_batch` for feeding each process's own rows.
  """
  if jax.process_count() > 1:
    rows = np.shape(jax.tree.leaves(batch)[0])[0]
    mine = process_rows(rows, mesh)
    return host_batch(jax.tree.map(lambda x: np.asarray(x)[mine], batch), mesh)

  def put(x):
    check_batch(np.shape(x)[0], mesh, "batch rows")
    return jax.device_put(x, batch_sharding(mesh, np.ndim(x)))

  return jax.tree.map(put, batch)


def feed(batch, mesh: Mesh | None = None):
  """`shard_batch` for inputs of a jitted function (prompts to sample, pairs to score).

  `mesh` defaults to the one set by `jax.set_mesh` (none: one process places nothing). One
  process may pass any number of rows: rows the data axes do not divide stay unplaced
  (uncommitted: the jitted function places them). Several processes need rows that divide.
  """
  mesh = jax.sharding.get_mesh() if mesh is None else mesh
  if jax.process_count() == 1:
    rows = np.shape(jax.tree.leaves(batch)[0])[0]
    if mesh.empty or not set(AXES) <= set(mesh.axis_names) or rows % batch_size_multiple(mesh):
      return jax.tree.map(jax.device_put, batch)
  elif mesh.empty:
    raise ValueError("several processes feed a batch without a mesh: pass one, or call "
                     "under `with jax.set_mesh(mesh):`")
  return shard_batch(batch, mesh)


def gather(tree):
  """Host numpy copies of every row of (possibly multi-host) arrays, on every process.

  A collective when an array spans several processes: every process must call it.
  """
  from jax.experimental import multihost_utils  # noqa: PLC0415 (rarely needed)

  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(get, tree)


def process_rows(rows: int, mesh: Mesh) -> slice:
  """The rows [start, stop) of a `rows`-row global batch that this process's devices hold.

  Raises when `rows` does not divide over the data axes, or when the mesh gives this process
  rows that are not one contiguous block (order the mesh's devices by process).

  >>> process_rows(8, make_mesh(devices=jax.devices()[:1]))   # one process feeds every row
  slice(0, 8, None)
  """
  check_batch(rows, mesh, "global batch rows")
  index_map = batch_sharding(mesh, 1).addressable_devices_indices_map((rows,))
  blocks = sorted({(i[0].start or 0, rows if i[0].stop is None else i[0].stop)
                   for i in index_map.values()})
  start, stop = blocks[0][0], blocks[-1][1]
  if sum(b - a for a, b in blocks) != stop - start:
    raise ValueError(f"process {jax.process_index()} holds rows {blocks} of the batch, not one "
                     "contiguous block; build the mesh over devices ordered by process.")
  return slice(start, stop)


def host_batch(local_batch, mesh: Mesh):
  """Global arrays from each process's own rows (`local_batch[i]` = global row start + i).

  Process p passes rows `process_rows(global_rows, mesh)` of the global batch; the result is the
  global batch, rows over the data axes, without any host holding all of it. With one process
  this equals `shard_batch`.
  """
  # Row blocks are the (data, fsdp) coordinates; a process may hold several (or share one).
  local = set(jax.local_devices())
  coords = np.argwhere(np.vectorize(lambda d: d in local)(mesh.devices))
  local_blocks = len({(c[0], c[1]) for c in coords})

  def put(x):
    x = np.asarray(x)
    if x.shape[0] % local_blocks:
      raise ValueError(f"process {jax.process_index()} feeds {x.shape[0]} rows to {local_blocks} "
                       f"row shards of the data axes; use a multiple of {local_blocks}.")
    check_batch(x.shape[0] // local_blocks * batch_size_multiple(mesh), mesh, "global batch rows")
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

  return jax.tree.map(put, local_batch)


def local_rows(x: jax.Array) -> np.ndarray:
  """The rows of a row-sharded global array that this process holds, as one numpy block.

  The inverse of `host_batch`: each host decodes and rewards its own rollouts without
  gathering the others'. With one process this is `np.asarray(x)`.
  """
  blocks = {}
  for shard in x.addressable_shards:  # replicas (e.g. over "tensor") hold the same rows
    blocks.setdefault(shard.index[0].start or 0, shard.data)
  return np.concatenate([np.asarray(blocks[k]) for k in sorted(blocks)])


def constrain(x: jax.Array, axes: tuple) -> jax.Array:
  """`with_sharding_constraint(x, P(*axes))` under a set ("data", "fsdp", "tensor") mesh.

  A no-op without a mesh (`jax.set_mesh`), so models stay mesh-free and run on one device.
  A dimension its mesh axes do not divide (e.g. 2 kv heads on 4 tensor ranks, one decode
  prompt on 4 data ranks) is left to the compiler rather than padded.

  >>> constrain(jax.numpy.ones((4, 2)), (BATCH_AXES, None)).shape   # no mesh set: unchanged
  (4, 2)
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(AXES) <= set(mesh.axis_names):
    return x
  spec = []
  for dim, axis in zip(x.shape, axes):
    names = axis if isinstance(axis, tuple) else (axis,)
    size = int(np.prod([mesh.shape[n] for n in names if n is not None]))
    spec.append(axis if axis is not None and dim % size == 0 else None)
  return jax.lax.with_sharding_constraint(x, P(*spec))


def state_shardings(abstract_state, params_sharding: dict, mesh: Mesh,
                    companion_sharding: dict | None = None):
  """Shardings for a whole train state: params (and ref params) by the table, opt state alike.

  Optimizer moments have the shapes of the parameters they track, so an optimizer leaf whose
  shape matches a parameter's takes that parameter's sharding; counters stay replicated. A
  companion model (`TrainState.companion`) gets `companion_sharding` for its params and the
  same rule for its optimizer state.
  """
  def like(params, shardings):
    by_shape = {}
    for leaf, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(shardings)):
      by_shape.setdefault(tuple(leaf.shape), sharding)
    return lambda leaf: by_shape.get(tuple(getattr(leaf, "shape", ())), replicated(mesh))

  companion = abstract_state.companion
  if companion is not None:
    companion = companion.replace(
        params=companion_sharding,
        opt_state=jax.tree.map(like(companion.params, companion_sharding), companion.opt_state))
  return abstract_state.replace(
      step=replicated(mesh), rng=replicated(mesh), params=params_sharding,
      opt_state=jax.tree.map(like(abstract_state.params, params_sharding),
                             abstract_state.opt_state),
      # The reference holds the trainable leaves only (all of them without LoRA adapters).
      ref_params=None if abstract_state.ref_params is None else subtree(
          params_sharding, abstract_state.ref_params),
      companion=companion)
