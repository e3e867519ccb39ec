"""Tests for rewardjax.checkpoint: bitwise round trips, retention, mismatch errors, sharding."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rewardjax import checkpoint, optim


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: dict
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def _make_state(w_shape=(8, 4)):
  tx = optim.make_optimizer(optim.AdamW(learning_rate=0.1, warmup_steps=2, weight_decay=0.1,
                                        grad_accum_steps=2), total_steps=10)
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=w_shape), jnp.float32),
            "emb": jnp.asarray(rng.normal(size=(3, 4)), jnp.bfloat16)}
  opt_state = tx.init(params)
  # Two micro-steps (one NaN) so counters, moments and the accumulator are all non-trivial.
  for scale in (1.0, jnp.nan, 0.5):
    grads = jax.tree.map(lambda p, s=scale: (jnp.ones_like(p) * s).astype(p.dtype), params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  return _State(step=jnp.int32(3), params=params, opt_state=opt_state,
                rng={"typed": jax.random.split(jax.random.key(42), 8),
                     "legacy": jax.random.PRNGKey(7)},
                tx=tx)


def _bits(tree):
  """Leaves as raw bytes, typed keys via their key data: equality here is bitwise."""
  def to_bytes(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.asarray(jax.device_get(x)).tobytes()
  return jax.tree.map(to_bytes, tree)


def test_round_trip_is_bitwise_and_survives_donation(tmp_path):
  state = jax.jit(_make_state)()
  expected = _bits(state)
  manager = checkpoint.make_manager(str(tmp_path), async_save=True)
  extra = {"data_position": 12, "np_rng": {"state": [1, 2, 3]}, checkpoint.FINGERPRINT_KEY: "ab"}
  assert checkpoint.save(manager, 3, state, extra=extra)
  # The train loop donates the state to the next step while the save is still writing.
  for leaf in jax.tree.leaves(state):
    leaf.delete()
  checkpoint.wait(manager)
  abstract = jax.eval_shape(_make_state)
  restored, restored_extra = checkpoint.restore_latest(
      checkpoint.make_manager(str(tmp_path)), abstract, config_fingerprint="ab")
  assert restored_extra == extra
  assert _bits(restored) == expected
  assert restored.rng["typed"].dtype == abstract.rng["typed"].dtype
  assert jax.tree.structure(restored) == jax.tree.structure(abstract)
  # The resumed key stream continues exactly where the saved one was.
  np.testing.assert_array_equal(jax.random.uniform(restored.rng["typed"][3], (4,)),
                                jax.random.uniform(jax.random.split(jax.random.key(42), 8)[3],
                                                   (4,)))


def test_no_checkpoint_returns_none(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path))
  assert checkpoint.restore_latest(manager, {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}) is None


def test_keeps_newest_n_and_respects_interval(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path), max_to_keep=2, save_interval_steps=2,
                                    async_save=False)
  saved = [checkpoint.save(manager, s, {"w": jnp.full((2,), float(s))}, extra={"s": s})
           for s in range(1, 6)]
  # The first save always happens; then only even steps.
  assert saved == [True, True, False, True, False]
  assert checkpoint.save(manager, 5, {"w": jnp.full((2,), 5.0)}, extra={"s": 5}, force=True)
  assert checkpoint.save(manager, 5, {"w": jnp.zeros(2)}, extra={}, force=True) is False
  assert manager.all_steps() == [4, 5]
  state, extra = checkpoint.restore_latest(manager, {"w": jax.ShapeDtypeStruct((2,),
                                                                               jnp.float32)})
  assert extra == {"s": 5}
  np.testing.assert_array_equal(state["w"], [5.0, 5.0])


def test_shape_mismatch_names_leaf_and_both_shapes(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path), async_save=False)
  checkpoint.save(manager, 1, {"params": {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}}, extra={})
  abstract = {"params": {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32),
                         "b": jax.ShapeDtypeStruct((2,), jnp.float32)}}
  with pytest.raises(ValueError, match=r"'params/w' has shape \(4, 2\).*\(4, 3\).*--workdir"):
    checkpoint.restore_latest(manager, abstract)
  missing = {"params": {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32)}}
  with pytest.raises(ValueError, match=r"'params/b' is only in the checkpoint.*--workdir"):
    checkpoint.restore_latest(manager, missing)


def test_fingerprint_mismatch_names_both(tmp_path):
  manager = checkpoint.make_manager(str(tmp_path), async_save=False)
  old = checkpoint.config_fingerprint({"model": {"d": 16}})
  new = checkpoint.config_fingerprint({"model": {"d": 32}})
  checkpoint.save(manager, 1, {"w": jnp.zeros(2)}, extra={checkpoint.FINGERPRINT_KEY: old})
  abstract = {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}
  with pytest.raises(ValueError, match=f"{old}.*{new}.*new --workdir or pass the same config"):
    checkpoint.restore_latest(manager, abstract, config_fingerprint=new)
  assert checkpoint.restore_latest(manager, abstract, config_fingerprint=old) is not None


def test_restores_onto_8_device_sharding(tmp_path):
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  data = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  state = {"w": jnp.arange(32.0).reshape(8, 4), "keys": jax.random.split(jax.random.key(1), 8),
           "step": jnp.int32(5)}
  manager = checkpoint.make_manager(str(tmp_path), async_save=False)
  checkpoint.save(manager, 5, state, extra={})
  abstract = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=data),
              "keys": jax.ShapeDtypeStruct((8,), state["keys"].dtype, sharding=data),
              "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated)}
  restored, _ = checkpoint.restore_latest(manager, abstract)
  for name in abstract:
    assert restored[name].sharding.is_equivalent_to(abstract[name].sharding,
                                                    restored[name].ndim), name
  assert len(restored["w"].addressable_shards) == 8
  assert restored["w"].addressable_shards[3].data.shape == (1, 4)
  assert _bits(restored) == _bits(state)
  # Resharding a sharded checkpoint (e.g. resuming on a different mesh) is exact too.
  checkpoint.save(manager, 6, restored, extra={})
  fully_replicated = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), abstract)
  again, _ = checkpoint.restore_latest(manager, fully_replicated)
  assert again["w"].sharding.is_fully_replicated
  assert _bits(again) == _bits(state)


def test_config_fingerprint_is_order_insensitive_and_selective():
  base = {"model": {"d": 16, "n": 2}, "optim": {"lr": 1e-3}, "log_every": 10}
  shuffled = {"log_every": 99, "optim": {"lr": 1e-3}, "model": {"n": 2, "d": 16}}
  assert checkpoint.config_fingerprint(base) == checkpoint.config_fingerprint(shuffled)
  assert len(checkpoint.config_fingerprint(base)) == 16
  changed = {**base, "optim": {"lr": 2e-3}}
  assert checkpoint.config_fingerprint(base) != checkpoint.config_fingerprint(changed)
  assert (checkpoint.config_fingerprint(base, keys=("model.d",))
          == checkpoint.config_fingerprint(changed, keys=("model.d",)))
  with pytest.raises(ValueError, match="log_every"):
    checkpoint.config_fingerprint({"log_every": 1}, keys=("model",))
