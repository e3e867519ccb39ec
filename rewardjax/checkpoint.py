"""Orbax checkpoints with exact resume: one pytree of arrays plus one JSON dict per step.

Layout: `<workdir>/checkpoints/<step>/{state,extra}`. `state` is any pytree of arrays (params,
optimizer state, rng keys, step); every shard is written by the process that owns it and read
straight onto the shardings of the abstract state, so no array is ever gathered on one host.
`extra` is a JSON dict for everything that is not an array: data position, the config JSON and
its fingerprint, python / numpy rng state.

Exactness: arrays are stored with their dtype (tensorstore), so a restore is bitwise; a run
killed after a save and resumed from it equals the uninterrupted run when the loop is a pure
function of (state, extra).

Typed PRNG keys (`jax.random.key(...)`, dtype `key<impl>`) cannot be serialized as such: `save`
stores `jax.random.key_data(key)` (uint32, one trailing dimension more) and `restore_latest`
wraps the data back with the implementation named by the abstract leaf's dtype. Legacy uint32
keys (`jax.random.PRNGKey`) are ordinary arrays and need nothing.

Async saves: `save` returns once the arrays are copied off the devices (so the caller may
donate them to the next step) and writes in the background; `wait` blocks until done.
"""

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

# Key in `extra` that holds the fingerprint `restore_latest` compares.
FINGERPRINT_KEY = "config_fingerprint"

# Config fields whose change alters the state's structure or meaning (or breaks "resumed ==
# uninterrupted"). Dotted paths select nested fields; absent fields hash as absent. Left out on
# purpose: mesh (restore reshards), checkpoint / eval / export settings, and train.steps (so a
# run can be extended; with a decaying schedule that changes the remaining learning rates).
# Fields added after checkpoints and shipped models existed, with the value that reproduces the
# runs before them: a field at that value is left out of the fingerprint, so those runs keep
# their fingerprints (a LoRA-free config hashes as it did before LoRA existed).
LATER_FIELDS = {"model.lora_rank": 0, "model.lora_alpha": 16.0,
                "model.lora_targets": "q,k,v,o,gate,up,down", "model.remat": "none",
                "model.rope_type": "default", "model.rope_factor": 1.0,
                "model.rope_low_freq_factor": 1.0, "model.rope_high_freq_factor": 4.0,
                "model.rope_original_max_position": 8192}

# Fields (or whole blocks) that change neither the state nor the training (limits that only
# stop a run: the reward timeout, the divergence guard): never hashed, so a resume may change
# them, and shipped models' fingerprints (which hash the whole config) stay as they were.
UNHASHED_FIELDS = ("rewards.timeout_seconds", "guard")

FINGERPRINT_KEYS = ("seed", "algorithm", "recipe", "recipe_args", "model", "data", "warmstart",
                    "rollout", "algo", "optim", "train.batch_size", "rewards")


def _handlers() -> dict[str, ocp.CheckpointHandler]:
  return {"state": ocp.StandardCheckpointHandler(), "extra": ocp.JsonCheckpointHandler()}


def make_manager(workdir: str, *, max_to_keep: int = 3, save_interval_steps: int = 100,
                 async_save: bool = True) -> ocp.CheckpointManager:
  """Checkpoint manager over `<workdir>/checkpoints`, keeping the newest `max_to_keep`.

  `save` writes only on multiples of `save_interval_steps` (and always the first save of a
  manager) unless forced. Call `manager.close()` (after `wait`) when the run ends.

  Args:
    workdir: run directory, local (made absolute) or a remote URL such as gs://.
    max_to_keep: number of most recent checkpoints kept; older ones are deleted.
    save_interval_steps: steps between non-forced saves.
    async_save: write in a background thread after the device-to-host copy.

  Returns:
    An `orbax.checkpoint.CheckpointManager` for `save`, `restore_latest` and `wait`.
  """
  if max_to_keep < 1 or save_interval_steps < 1:
    raise ValueError(f"max_to_keep and save_interval_steps must be >= 1, got {max_to_keep} "
                     f"and {save_interval_steps}.")
  # Orbax (tensorstore) rejects relative local paths.
  root = workdir if "://" in workdir else os.path.abspath(workdir)
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         save_interval_steps=save_interval_steps,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(os.path.join(root, "checkpoints"), options=options,
                               item_handlers=_handlers())


def _is_key(x: Any) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, extra: Mapping[str, Any],
         force: bool = False) -> bool:
  """Saves the array pytree `state` and the JSON dict `extra` as checkpoint `step`.

  Args:
    manager: from `make_manager`.
    step: training step the state belongs to (the number of updates already applied).
    state: pytree of jax arrays; typed PRNG keys are stored as their key data.
    extra: JSON-serialisable dict. Put the `config_fingerprint(...)` value under
      `FINGERPRINT_KEY` ("config_fingerprint") to have `restore_latest` check it.
    force: save even off the `save_interval_steps` grid.

  Returns:
    True if a save was started; False if skipped (off-interval, or `step` already saved,
    e.g. the final save of a run that resumed at its last step).
  """
  if step in manager.all_steps():
    return False
  json.dumps(extra)  # fail now, in the caller, rather than later in a background thread
  state = jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)
  args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                            extra=ocp.args.JsonSave(dict(extra)))
  return bool(manager.save(step, args=args, force=force))


def wait(manager: ocp.CheckpointManager) -> None:
  """Blocks until every pending asynchronous save is on disk."""
  manager.wait_until_finished()


def _path_str(path: Sequence[Any]) -> str:
  """'params/w/0' for a jax key path; orbax metadata uses dict keys where jax has attributes."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _as_abstract(x: Any) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))


def _key_data_abstract(x: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
  data = jax.eval_shape(jax.random.key_data, x)
  # A NamedSharding over the key shape also fits the data: the extra trailing dim replicates.
  return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)


def _key_impl(x: jax.ShapeDtypeStruct) -> Any:
  # jax.random.key_impl needs an array, so ask a tracer of the abstract key.
  impl = []
  jax.eval_shape(lambda k: impl.append(jax.random.key_impl(k)), x)
  return impl[0]


class ConfigMismatchError(ValueError):
  """A readable checkpoint written by a different config: never a reason to fall back."""


class StructureMismatchError(ValueError):
  """A checkpoint whose leaves differ from the state's (another model, or damaged metadata)."""


def _check_matches(manager: ocp.CheckpointManager, step: int, abstract: Any) -> None:
  """Raises StructureMismatchError naming the first leaf whose path, shape or dtype differs."""
  stored_tree = manager.item_metadata(step)["state"]
  stored_tree = getattr(stored_tree, "tree", stored_tree)
  stored = {_path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(stored_tree)[0]}
  wanted = {_path_str(p): a for p, a in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  where = f"Checkpoint step {step} in {manager.directory} does not match the current state:"
  advice = ("It was written by a run with a different model or optimizer config; use a fresh "
            "--workdir (or resume with the original config).")
  for path in sorted(set(stored) ^ set(wanted)):
    side = "only in the checkpoint" if path in stored else "only in the current state"
    raise StructureMismatchError(f"{where} leaf '{path}' is {side}. {advice}")
  for path, want in wanted.items():
    have = stored[path]
    if tuple(have.shape) != tuple(want.shape):
      raise StructureMismatchError(
          f"{where} leaf '{path}' has shape {tuple(have.shape)} in the checkpoint but "
          f"{tuple(want.shape)} now. {advice}")
    if np.dtype(have.dtype) != np.dtype(want.dtype):
      raise StructureMismatchError(
          f"{where} leaf '{path}' has dtype {np.dtype(have.dtype)} in the checkpoint but "
          f"{np.dtype(want.dtype)} now. {advice}")


def _read_extra(manager: ocp.CheckpointManager, step: int) -> dict:
  return dict(manager.restore(step, args=ocp.args.Composite(
      extra=ocp.args.JsonRestore()))["extra"])


def latest_extra(manager: ocp.CheckpointManager) -> dict | None:
  """The JSON `extra` of the newest checkpoint (config, step, ...), or None if there is none."""
  wait(manager)  # an in-flight save of this process is not yet visible as a step
  step = manager.latest_step()
  return None if step is None else _read_extra(manager, step)


# Where `restore_latest` moves checkpoints it cannot read (next to `checkpoints/`, outside the
# directory orbax lists, so they are neither restored nor deleted by `max_to_keep`).
CORRUPT_DIR = "checkpoints_unreadable"


def _restore_step(manager: ocp.CheckpointManager, step: int, abstract: Any,
                  config_fingerprint: str | None) -> tuple[Any, dict]:
  """`(state, extra)` of checkpoint `step` (see `restore_latest`); raises if unreadable."""
  extra = _read_extra(manager, step)
  stored_fingerprint = extra.get(FINGERPRINT_KEY)
  if config_fingerprint is not None and stored_fingerprint != config_fingerprint:
    raise ConfigMismatchError(
        f"Checkpoint step {step} in {manager.directory} was written with config fingerprint "
        f"{stored_fingerprint!r}, but the current config has {config_fingerprint!r}. Use a new "
        f"--workdir or pass the same config as the run that wrote it.")
  on_disk = jax.tree.map(lambda x: _key_data_abstract(x) if _is_key(x) else x, abstract)
  _check_matches(manager, step, on_disk)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(on_disk), extra=ocp.args.JsonRestore()))
  state = jax.tree.map(
      lambda a, x: jax.random.wrap_key_data(x, impl=_key_impl(a)) if _is_key(a) else x,
      abstract, restored["state"])
  return state, dict(restored["extra"])


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _move_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves checkpoint `step` to `<workdir>/checkpoints_unreadable/<step>` (process 0 moves;
  every process then re-lists the steps). Returns the new path."""
  root = os.path.dirname(str(manager.directory).rstrip("/"))
  target = os.path.join(root, CORRUPT_DIR, str(step))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    suffix = 0
    while os.path.exists(target):  # an earlier move of the same step number
      suffix += 1
      target = os.path.join(root, CORRUPT_DIR, f"{step}.{suffix}")
    os.rename(os.path.join(str(manager.directory), str(step)), target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # noqa: PLC0415

    multihost_utils.sync_global_devices(f"rewardjax_checkpoint_moved_{step}")
  manager.reload()
  return target


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any, *,
                   config_fingerprint: str | None = None,
                   report=print) -> tuple[Any, dict] | None:
  """Restores the newest readable checkpoint onto the shardings of `abstract_state`, bitwise.

  Fallback: when the newest step cannot be read (a truncated array file, a missing metadata or
  extra file, an interrupted copy) and an older step can, each unreadable newer step is
  reported (`report(message)`: which step, what is wrong) and moved to
  `<workdir>/checkpoints_unreadable/<step>` (kept for inspection, never deleted), and the older
  step is restored. When no step is readable nothing is moved and the newest step's error is
  raised (a checkpoint of another model, or of an older rewardjax layout, fails on every step
  alike and must not be mistaken for corruption).

  Args:
    manager: from `make_manager`.
    abstract_state: pytree with the structure of the saved state whose leaves are
      `jax.ShapeDtypeStruct`s carrying `.sharding` (from `jax.eval_shape` plus the sharding
      table) or concrete arrays (their shape, dtype and sharding are used). Leaves without a
      sharding land on the default device. Typed-key leaves (dtype `key<impl>`) come back as
      typed keys of that implementation.
    config_fingerprint: if given, must equal `extra[FINGERPRINT_KEY]` of the checkpoint.
    report: called with one message per unreadable step moved aside.

  Returns:
    None if `manager` holds no checkpoint, else `(state, extra)`: `state` has the structure,
    dtypes and shardings of `abstract_state`; `extra` is the saved JSON dict.

  Raises:
    ConfigMismatchError (a ValueError): the newest readable `extra` holds another fingerprint.
    ValueError: a leaf is missing, extra, or differs in shape or dtype in every step (the
      message names the first such leaf path of the newest step); or no step is readable.
  """
  wait(manager)  # an in-flight save of this process is not yet visible as a step
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None
  abstract = jax.tree.map(_as_abstract, abstract_state)
  failures = []
  for step in steps:
    try:
      restored = _restore_step(manager, step, abstract, config_fingerprint)
    except ConfigMismatchError:
      raise
    except Exception as error:  # noqa: BLE001 (any read failure: try the previous step)
      failures.append((step, error))
      continue
    for bad, error in failures:
      moved = _move_aside(manager, bad)
      report(f"checkpoint step {bad} is unreadable ({_first_line(error)}); moved it to "
             f"{moved} and resumed from step {step}, the newest readable one")
    return restored
  newest, error = failures[0]
  if all(isinstance(e, StructureMismatchError) for _, e in failures):
    raise error  # every step alike: the state changed, not the files
  raise ValueError(
      f"No checkpoint in {manager.directory} is readable (steps {[s for s, _ in failures]}); "
      f"the newest, step {newest}: {_first_line(error)}. Use a new --workdir, or move "
      f"{manager.directory} aside to start over.") from error


def _select(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
  node: Any = config
  for part in dotted.split("."):
    if not isinstance(node, Mapping) or part not in node:
      return False, None
    node = node[part]
  return True, node


def _without_later_defaults(config_dict: Mapping[str, Any]) -> dict:
  """`config_dict` without the `LATER_FIELDS` that hold their reproducing value and without
  the `UNHASHED_FIELDS` (a copy)."""
  out = dict(config_dict)
  unhashed = dict.fromkeys(UNHASHED_FIELDS, object())  # an object equals only itself
  for path, value in (LATER_FIELDS | unhashed).items():
    block, _, name = path.rpartition(".")
    if not block:  # a whole top-level block
      out.pop(name, None)
      continue
    present = isinstance(out.get(block), Mapping) and name in out[block]
    if present and (path in unhashed or out[block][name] == value):
      out[block] = {k: v for k, v in out[block].items() if k != name}
  return out


def config_fingerprint(config_dict: Mapping[str, Any],
                       keys: Sequence[str] | None = FINGERPRINT_KEYS) -> str:
  """Stable 16-hex-digit hash of the config fields that fix the state's structure and meaning.

  fingerprint = sha256(json({key: value for key in keys}, sort_keys=True))[:16]

  The same values give the same hash in any process and python version (no `hash()`); tuples
  and lists hash alike, non-JSON values by `repr`.

  Args:
    config_dict: the config as nested dicts (e.g. `ConfigDict.to_dict()`).
    keys: dotted field paths to include (absent ones hash as absent); None hashes everything.

  Returns:
    A 16-character hex string.

  Raises:
    ValueError: none of `keys` is present (the hash would not depend on the config at all).

  >>> config_fingerprint({"model": {"d": 16}, "seed": 0}) == config_fingerprint(
  ...     {"seed": 0, "model": {"d": 16}, "log_every": 5})
  True
  >>> config_fingerprint({"model": {"d": 16}}) == config_fingerprint({"model": {"d": 32}})
  False
  """
  if hasattr(config_dict, "to_dict"):  # ml_collections.ConfigDict is not a Mapping
    config_dict = config_dict.to_dict()
  config_dict = _without_later_defaults(config_dict)
  if keys is None:
    payload = dict(config_dict)
  else:
    found = {k: _select(config_dict, k) for k in keys}
    if not any(present for present, _ in found.values()):
      raise ValueError(f"None of the fingerprint keys {list(keys)} is in the config (top-level "
                       f"fields: {sorted(config_dict)}); pass keys=... naming real fields.")
    payload = {k: value if present else "<absent>" for k, (present, value) in found.items()}
  text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:16]
