"""LoRA adapters on the transformer's projections (Hu et al., arXiv 2106.09685).

W' = W + (alpha / r) · A B, with A [*in, r] Gaussian-initialised and B [r, *out] zero (so a fresh
adapter leaves the model unchanged, §4.1). An `Adapter` is an `nnx.Module` attribute
`<target>_lora` of the `Attention` / `MLP` module next to the weight it adapts (`WEIGHTS`); it
exists only when `ModelConfig.lora_rank` > 0 and the target is in `lora_targets`, so a model
without LoRA has the same params pytree as before.

The low-rank term is added to the projection's *output*, x @ W + s · (x @ A) @ B, never to the
weight: the gradient then flows to A and B through two rank-r matmuls, and no [in, out]
weight-gradient matmul is formed for the frozen W.

Training only the adapters is a property of the params pytree (`split_trainable`): when it holds
adapters, only they (and scalar heads, PEFT's `modules_to_save`) are differentiated and have
optimizer state; the rest is frozen. The reference policy then needs no copy of the frozen
weights: `TrainState.ref_params` holds the reference's values of the trainable leaves only
(`types.TrainState.reference_params`). Exports merge the adapters into W (`merged_params`).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from rewardjax.types import overlay

# target -> (weight attribute it adapts, number of input dims of that weight).
WEIGHTS = {"q": ("q_dhk", 1), "k": ("k_dhk", 1), "v": ("v_dhk", 1), "o": ("o_hkd", 2),
           "gate": ("gate_df", 1), "up": ("up_df", 1), "down": ("down_fd", 1)}
TARGETS = tuple(WEIGHTS)
SUFFIX = "_lora"
# Leaves that train next to the adapters: scalar heads of reward / value models (a fresh head
# must learn; PEFT's `modules_to_save` for sequence classification).
ALSO_TRAINED = ("head",)


def parse_targets(targets: str | tuple) -> tuple[str, ...]:
  """"q,v" -> ("q", "v"); raises on a name outside `TARGETS`."""
  names = tuple(t.strip() for t in targets.split(",")) if isinstance(targets, str) else targets
  names = tuple(n for n in names if n)
  unknown = sorted(set(names) - set(TARGETS))
  if unknown:
    raise ValueError(f"lora_targets has {unknown}; valid: {list(TARGETS)}")
  return names


def _flat_dot(x, w, in_dims: int):
  # One [rows, in] @ [in, out] matmul (see transformer._dense: flat rows give plain dots).
  rows, size = x.shape[:x.ndim - in_dims], math.prod(w.shape[:in_dims])
  return (x.reshape(-1, size) @ w.reshape(size, -1)).reshape(*rows, *w.shape[in_dims:])


class Adapter(nnx.Module):
  """The low-rank term s · (x @ A) @ B of one projection, s = alpha / r.

  A [*in, r] ~ N(0, 1/fan_in) (Hu et al. §4.1: "random Gaussian"; the 1/fan_in variance keeps
  x @ A at the scale of x), B [r, *out] = 0. Logical axes: A's input dims are the weight's (so
  it shards like the weight's rows), the rank axis "lora_rank" is not in `sharding.Rules` and
  stays replicated, B's output dims are the weight's.
  """

  def __init__(self, weight: nnx.Param, in_dims: int, *, rank: int, alpha: float,
               rngs: nnx.Rngs):
    shape, dtype = weight[...].shape, weight[...].dtype
    axes = weight.get_metadata().get("logical_axes") or (None,) * len(shape)
    fan_in = math.prod(shape[:in_dims])
    self.a = nnx.Param(nnx.initializers.normal(fan_in ** -0.5)(
        rngs.params(), (*shape[:in_dims], rank), dtype),
                       logical_axes=(*axes[:in_dims], "lora_rank"))
    self.b = nnx.Param(jnp.zeros((rank, *shape[in_dims:]), dtype),
                       logical_axes=("lora_rank", *axes[in_dims:]))
    self.in_dims, self.scale = in_dims, alpha / rank

  def __call__(self, x, dtype):
    """[..., *in] -> [..., *out] in `dtype`."""
    h = _flat_dot(x, self.a[...].astype(dtype), self.in_dims)
    return _flat_dot(h, self.b[...].astype(dtype), 1) * jnp.asarray(self.scale, dtype)


def add_adapters(module: nnx.Module, config, rngs: nnx.Rngs, targets: tuple[str, ...]) -> None:
  """Sets `module.<t>_lora` for each t of `targets` that `config.lora_targets` names (none when
  `config.lora_rank` is 0: the module, its params and its rng draws are unchanged)."""
  if not config.lora_rank:
    return
  for t in parse_targets(config.lora_targets):
    if t in targets:
      weight, in_dims = WEIGHTS[t]
      setattr(module, t + SUFFIX, Adapter(getattr(module, weight), in_dims,
                                          rank=config.lora_rank, alpha=config.lora_alpha,
                                          rngs=rngs))


def _adapter(module, target):
  return getattr(module, target + SUFFIX, None)


def add(module: nnx.Module, target: str, y, x, dtype):
  """y + the `target` adapter's term of x; y itself (same array) without that adapter."""
  adapter = _adapter(module, target)
  return y if adapter is None else y + adapter(x, dtype)


def add_fused(module: nnx.Module, targets: tuple[str, ...], y, x, axis: int, sizes, dtype):
  """y + the adapters' terms of a fused projection (q|k|v or gate|up concatenated on `axis`).

  `sizes[i]` is target i's width on `axis` of y; its term [..., *out] is reshaped to y's layout
  with that width (e.g. q's [B, S, H, K] -> [B, S, Hkv, G, K]); a target without an adapter
  contributes zeros. Returns y itself when no target has an adapter.
  """
  if all(_adapter(module, t) is None for t in targets):
    return y
  parts = []
  for t, size in zip(targets, sizes):
    shape = (*y.shape[:axis], size, *y.shape[axis + 1:])
    adapter = _adapter(module, t)
    parts.append(jnp.zeros(shape, y.dtype) if adapter is None
                 else adapter(x, dtype).reshape(shape))
  return y + jnp.concatenate(parts, axis=axis)


def _path_trained(path) -> bool:
  return any(str(k).endswith(SUFFIX) or str(k) in ALSO_TRAINED for k in path)


def has_adapters(params) -> bool:
  """Whether a pure params dict holds LoRA adapters."""
  return any(any(str(k).endswith(SUFFIX) for k in path) for path in _paths(params))


def _paths(tree, prefix=()):
  if not isinstance(tree, dict):
    yield prefix
    return
  for k, v in tree.items():
    yield from _paths(v, (*prefix, k))


def _select(tree, keep, prefix=()):
  """The nested dict of `tree`'s leaves whose path satisfies `keep`; None if there are none."""
  if not isinstance(tree, dict):
    return tree if keep(prefix) else None
  out = {k: sub for k, v in tree.items() if (sub := _select(v, keep, (*prefix, k))) is not None}
  return out or None


def split_trainable(params) -> tuple[dict, dict | None]:
  """`(trainable, frozen)` pure dicts of a params dict; `(params, None)` (the same object)
  without adapters, where everything trains. `types.overlay(frozen, trainable)` rebuilds it."""
  if not has_adapters(params):
    return params, None
  return (_select(params, _path_trained),
          _select(params, lambda path: not _path_trained(path)) or {})


def trainable(params):
  """The trainable part of a params dict (`split_trainable`)."""
  return split_trainable(params)[0]


def merged_params(model: nnx.Module):
  """Pure params of `model` with every adapter folded into its weight, W + s · A B (float32
  math, cast back to W's dtype), adapters removed: what a LoRA-free model with the same
  architecture loads. Without adapters, `nnx.to_pure_dict` of its params, unchanged."""
  params = nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])

  def fold(mod, tree):
    for name, value in list(tree.items()):
      if not isinstance(value, dict):
        continue
      child = getattr(mod, name) if not isinstance(name, int) else mod[name]
      if isinstance(child, Adapter):
        weight_name = WEIGHTS[name[:-len(SUFFIX)]][0]
        w = tree[weight_name]
        delta = jnp.tensordot(jnp.asarray(value["a"], jnp.float32),
                              jnp.asarray(value["b"], jnp.float32), axes=1)
        tree[weight_name] = (jnp.asarray(w, jnp.float32) + child.scale * delta).astype(w.dtype)
        del tree[name]
      else:
        fold(child, value)

  if has_adapters(params):
    fold(model, params)
  return params


def reference_of(params):
  """The reference's own leaves at the start: a copy of the trainable ones (the frozen ones are
  shared with the policy, which never changes them). Without adapters, a copy of every leaf."""
  # A copy, not an alias: donating a state whose two fields share buffers would fail.
  return jax.tree.map(jnp.copy, trainable(params))


__all__ = ["Adapter", "TARGETS", "WEIGHTS", "add", "add_adapters", "add_fused", "has_adapters",
           "merged_params", "overlay", "parse_targets", "reference_of", "split_trainable",
           "trainable"]
