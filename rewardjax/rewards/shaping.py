"""Reward shaping on host arrays: DAPO's soft overlong punishment, non-finite reward handling."""

import numpy as np
from jaxtyping import Bool, Float, Int


def overlong_penalty(lengths: Int[np.ndarray, " B"], *, max_length: int, buffer: int,
                     penalty: float = 1.0) -> Float[np.ndarray, " B"]:
  """DAPO soft overlong punishment added to the task reward.

    r_len(L) = 0                                   if L <= L_max - L_buf
             = (L_max - L_buf - L) / L_buf * c     if L_max - L_buf < L <= L_max
             = -c                                  if L > L_max

  Args:
    lengths: [B] completion lengths in tokens.
    max_length: L_max, the generation budget.
    buffer: L_buf, the length of the linear ramp (0 disables the penalty).
    penalty: c, the penalty at the budget.

  Returns:
    [B] float32 penalties in [-c, 0].

  References:
    DAPO, arXiv 2503.14476, Eq. 13.

  >>> overlong_penalty(np.array([4, 7, 8]), max_length=8, buffer=4).tolist()
  [0.0, -0.75, -1.0]
  """
  lengths = np.asarray(lengths, np.float32)
  if buffer <= 0:
    return np.zeros_like(lengths)
  start = max_length - buffer
  ramp = (start - lengths) / buffer * penalty
  return np.where(lengths <= start, 0.0, np.where(lengths <= max_length, ramp, -penalty)).astype(
      np.float32)


def finite_groups(rewards: Float[np.ndarray, " B"], group_size: int) -> Bool[np.ndarray, " B"]:
  """True for rows whose whole group has finite rewards; one NaN/inf discards its group.

  Group statistics need every member, so a non-finite reward cannot be dropped alone.

  >>> finite_groups(np.array([1.0, np.nan, 0.0, 1.0]), 2).tolist()
  [False, False, True, True]
  """
  ok_PxG = np.isfinite(np.asarray(rewards, np.float64)).reshape(-1, group_size)
  return np.repeat(ok_PxG.all(axis=1), group_size)
