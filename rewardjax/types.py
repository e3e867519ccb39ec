"""The small pytrees that flow between stages: train state and the three kinds of batch.

Fields are typed `Any`: the same classes also carry shardings or ShapeDtypeStructs in their
leaves (jax.eval_shape, jit in/out shardings), so the shapes live in the comments.

Dimension letters: B rows, S prompt (or full) tokens, T completion tokens. Token arrays hold
prompt + completion, `[B, S + T]`; a completion's log-probs are read from positions S-1 .. S+T-2.
"""

from typing import Any

import flax.struct
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; `graphdef` and `tx` are static.

  `params` and `ref_params` are pure dicts (`nnx.to_pure_dict`), merged with `graphdef` inside
  the loss. The reference never enters the optimizer: it is read under stop_gradient only.
  """
  step: Any
  params: Any
  opt_state: Any
  rng: Any
  ref_params: Any = None
  graphdef: nnx.GraphDef = flax.struct.field(pytree_node=False, default=None)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)


@flax.struct.dataclass
class RolloutBatch:
  """Sampled completions with everything the policy-gradient loss needs."""
  tokens: Any            # [B, S+T] prompt + completion
  attention_mask: Any    # [B, S+T] 1 = real token
  completion_mask: Any   # [B, T] 1 = completion token that counts in the loss
  old_logprobs: Any      # [B, T] log-probs under the sampling policy
  ref_logprobs: Any      # [B, T] log-probs under the reference policy
  advantages: Any        # [B]


@flax.struct.dataclass
class PreferenceBatch:
  """Pairs for the DPO family, stacked: rows [0, B) are chosen, rows [B, 2B) rejected.

  One forward pass over [2B, L] serves both halves (TRL's "concatenated forward").
  """
  tokens: Any            # [2B, L] prompt + completion, right-padded
  attention_mask: Any    # [2B, L]
  loss_mask: Any         # [2B, L-1] 1 where token j+1 is a completion token
  ref_logps: Any         # [2B] summed reference log-probs of the completions


@flax.struct.dataclass
class SequenceBatch:
  """Token sequences with a loss mask: supervised warm start and reward-model pairs."""
  tokens: Any            # [B, S] (reward model: B/2 chosen rows, then B/2 rejected)
  attention_mask: Any    # [B, S]
  loss_mask: Any         # [B, S-1] 1 where the next token is a target
