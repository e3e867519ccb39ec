"""The small pytrees that flow between stages: train state and the three kinds of batch.

Fields are typed `Any`: the same classes also carry shardings or ShapeDtypeStructs in their
leaves (jax.eval_shape, jit in/out shardings), so the shapes live in the comments.

Dimension letters: B rows, S prompt (or full) tokens, T completion tokens. Token arrays hold
prompt + completion, `[B, S + T]`; a completion's log-probs are read from positions S-1 .. S+T-2.

`extra` holds the per-row fields only some objectives read (soft labels, tie flags, ranks,
margins, KL rows ...), keyed by name; an objective lists the ones it needs
(`algorithms.base.Objective.needs`), and a batch without them fails with the field's name and
the data that produce it.
"""

from typing import Any

import flax.struct
import optax
from flax import nnx


def overlay(base, over):
  """The nested dict with `base`'s leaves, replaced (or completed) by `over`'s at the same paths.

  When `over` holds every leaf, the result's leaves are `over`'s own arrays (a full reference
  reads exactly as before); disjoint trees are united (frozen + trainable params).
  """
  if not isinstance(over, dict) or not isinstance(base, dict):
    return over
  return {**base, **{k: overlay(base[k], v) if k in base else v for k, v in over.items()}}


def subtree(tree, like):
  """`tree`'s entries at the paths of `like` (a nested dict over a subset of its keys)."""
  if not isinstance(like, dict):
    return tree
  return {k: subtree(tree[k], v) for k, v in like.items()}


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; `graphdef` and `tx` are static.

  `params` and `ref_params` are pure dicts (`nnx.to_pure_dict`), merged with `graphdef` inside
  the loss. The reference never enters the optimizer: it is read under stop_gradient only.

  `ref_params` holds the reference's values of the *trainable* leaves only; the frozen ones are
  shared with `params` (they never change), so read the reference through `reference_params()`.
  Without frozen leaves (no LoRA adapters, `models/lora.py`) it is a full copy, as it always
  was; with adapters it is a copy of the adapters alone, not a second copy of the weights.
  """
  step: Any
  params: Any
  opt_state: Any
  rng: Any
  ref_params: Any = None
  graphdef: nnx.GraphDef = flax.struct.field(pytree_node=False, default=None)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)
  companion: Any = None  # ModelState of a second model trained in the same step, or None

  def reference_params(self):
    """The reference policy's full params (pure dict), or None when there is no reference."""
    return None if self.ref_params is None else overlay(self.params, self.ref_params)


@flax.struct.dataclass
class ModelState:
  """A second model trained in the same jitted step as the policy, with its own optimizer:
  PPO's critic, Cooper's reward model (`algorithms.base.Companion`)."""
  params: Any
  opt_state: Any
  graphdef: nnx.GraphDef = flax.struct.field(pytree_node=False, default=None)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)


@flax.struct.dataclass
class CoupledBatch:
  """The batch of a step that trains two models: the policy's and the companion's.

  `companion` is a dict of arrays whose rows the companion's loss reads (PPO: the rollout rows
  with old values and returns; Cooper: reward-model pair rows).
  """
  policy: Any
  companion: Any


@flax.struct.dataclass
class RolloutBatch:
  """Sampled completions with everything the policy-gradient loss needs."""
  tokens: Any            # [B, S+T] prompt + completion
  attention_mask: Any    # [B, S+T] 1 = real token
  completion_mask: Any   # [B, T] 1 = completion token that counts in the loss
  old_logprobs: Any      # [B, T] log-probs under the old policy (the trainer's, or the sampler's)
  ref_logprobs: Any      # [B, T] log-probs under the reference policy
  advantages: Any        # [B] per sequence, or [B, T] per token (REINFORCE++)
  sampler_logprobs: Any  # [B, T] log-probs the sampler reported (== old_logprobs without TIS)
  kl_weights: Any = None  # [B] multiplier of the KL coefficient per row (None = 1; two-attempt)


@flax.struct.dataclass
class DistillationBatch:
  """The student's own sampled completions with a teacher's full next-token distributions."""
  tokens: Any            # [B, S+T] prompt + completion (the student's context)
  attention_mask: Any    # [B, S+T]
  completion_mask: Any   # [B, T] 1 = completion token that counts in the loss
  teacher_logprobs: Any  # [B, T, V] log-probs of the teacher at each completion position


@flax.struct.dataclass
class PreferenceBatch:
  """Pairs for the DPO family, stacked: rows [0, B) are chosen, rows [B, 2B) rejected.

  One forward pass over [2B, L] serves both halves (TRL's "concatenated forward"); objectives
  that need more rows (KTO's mismatched KL rows) append them after row 2B and say so.
  """
  tokens: Any            # [R, L] prompt + completion, right-padded (R = 2B, or more)
  attention_mask: Any    # [R, L]
  loss_mask: Any         # [R, L-1] 1 where token j+1 is a completion token
  ref_logps: Any         # [R] summed reference log-probs of the completions (0 if no reference)
  extra: Any = flax.struct.field(default_factory=dict)  # objective-specific fields
  # S_p > 0: R = 2B and rows b, b + B share tokens[:, :S_p] (the pair's left-padded prompt),
  # computed once per pair (`update.all_token_logprobs`); 0 = no such layout. Static.
  paired_prompt: int = flax.struct.field(pytree_node=False, default=0)


@flax.struct.dataclass
class SequenceBatch:
  """Token sequences with a loss mask: supervised steps and reward-model rows."""
  tokens: Any            # [R, S] (pairwise reward model: B chosen rows, then B rejected)
  attention_mask: Any    # [R, S]
  loss_mask: Any         # [R, S-1] 1 where the next token is a target
  extra: Any = flax.struct.field(default_factory=dict)  # objective-specific fields
