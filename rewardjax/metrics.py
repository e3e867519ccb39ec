"""Metrics out of the loop: console progress bar, `<workdir>/metrics.jsonl`, TensorBoard.

The loop dispatches update t+1 before fetching update t's metrics, so `fetch` (one
`device_get` for the whole dict) only waits for a step that is already finished:

  with MetricsWriter(workdir, total_steps=n, initial_step=start) as writer:
    previous = None
    for t in range(start, n):
      state, metrics = update(state, batch, rng)   # dispatch update t+1; do not wait
      if previous is not None:
        writer.write(t, fetch(previous))           # update t's metrics, already computed
      previous = metrics
    writer.write(n, fetch(previous))

`step` is the number of updates applied (TrainState.step after the update), so the bar ends
at `total_steps`. Only process 0 writes files and draws the bar in a multi-host run.
"""

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, SupportsFloat

import jax
import numpy as np
import tqdm

# Console postfix, in this order, when a metric with this name (or last `/` component, or
# `<name>_mean`) is present.
POSTFIX_KEYS = ("loss", "reward", "accuracy", "kl", "entropy")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, Mapping):
      flat.update(_flatten(v, f"{name}/"))
    else:
      flat[name] = v
  return flat


def fetch(metrics_tree: Mapping[str, Any]) -> dict[str, float]:
  """Copies a (nested) dict of scalar arrays to the host in one transfer, as python floats.

  Nested keys are joined with "/". Call it on step t-1's metrics after dispatching step t.

  Args:
    metrics_tree: dict (possibly nested) of scalar jax/numpy arrays or numbers.

  Returns:
    Flat dict name -> float.

  Raises:
    ValueError: a value is not a scalar (names the key and its shape).

  >>> import jax.numpy as jnp
  >>> fetch({"loss": jnp.float32(0.5), "kl": {"k3": jnp.array(2)}})
  {'loss': 0.5, 'kl/k3': 2.0}
  """
  flat = _flatten(metrics_tree)
  host = jax.device_get(flat)
  out = {}
  for name in flat:  # device_get returns keys sorted; keep the caller's order
    value = host[name]
    shape = np.shape(value)
    if shape != ():
      raise ValueError(f"Metric {name!r} must be a scalar, got shape {shape}.")
    out[name] = float(value)
  return out


def _jsonable(value: float) -> float | None:
  # JSON has no NaN/Infinity (json.dumps would write invalid tokens); null marks them.
  return value if math.isfinite(value) else None


def _postfix(metrics: Mapping[str, float]) -> dict[str, str]:
  postfix = {}
  for key in POSTFIX_KEYS:
    for name, value in metrics.items():
      if key in (name, name.rsplit("/", 1)[-1], name.removesuffix("_mean")):
        postfix[key] = f"{value:.4g}"
        break
  return postfix


class MetricsWriter:
  """Writes step metrics to JSONL, TensorBoard and a tqdm bar; a context manager.

  JSONL line: {"step": int, "time": unix seconds, "<prefix>/<name>": float or null, ...};
  NaN and ±inf are written as null. The file is appended to (a resumed run repeats the steps
  logged after its last checkpoint; readers keep the last line per step) and line-buffered, so
  a killed run loses nothing. TensorBoard scalars go to `<workdir>/tensorboard` as
  "<prefix>/<name>".

  Args:
    workdir: run directory (created if missing).
    total_steps: bar length.
    initial_step: bar start, e.g. the restored step.
    console: draw the progress bar (messages from `print` appear either way).
    tensorboard: write TensorBoard event files (imports tensorboardX lazily).
    is_main: whether this process writes; default `jax.process_index() == 0`.
  """

  def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0,
               console: bool = True, tensorboard: bool = True, is_main: bool | None = None):
    self.workdir = workdir
    self.is_main = jax.process_index() == 0 if is_main is None else is_main
    self._jsonl = None
    self._tb = None
    if self.is_main:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
      if tensorboard:
        import tensorboardX  # lazy: pulls in protobuf

        self._tb = tensorboardX.SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))
    self._bar = tqdm.tqdm(total=total_steps, initial=initial_step, unit="step",
                          dynamic_ncols=True, disable=not (console and self.is_main),
                          file=sys.stderr)

  def write(self, step: int, metrics: Mapping[str, SupportsFloat], *,
            prefix: str = "train") -> None:
    """Logs `metrics` (name -> number) for `step`.

    "train" metrics advance the bar to `step` and set its postfix; other prefixes (e.g. "eval")
    are printed as one line above the bar.
    """
    if not self.is_main:
      return
    floats = {k: float(v) for k, v in metrics.items()}
    values = {f"{prefix}/{k}": v for k, v in floats.items()}
    record = {"step": int(step), "time": time.time()}
    record.update({k: _jsonable(v) for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for name, value in values.items():
        self._tb.add_scalar(name, value, global_step=int(step))
    if prefix == "train":
      self._bar.set_postfix(_postfix(floats), refresh=False)
      if step > self._bar.n:
        self._bar.update(step - self._bar.n)
    else:
      shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
      self.print(f"step {step} {shown}")

  def print(self, msg: str) -> None:
    """Prints `msg` above the progress bar (process 0 only)."""
    if self.is_main:
      tqdm.tqdm.write(str(msg), file=sys.stdout)

  def summary(self, results: Mapping[str, Any]) -> None:
    """Prints a final two-column table of `results` and saves it to `<workdir>/summary.json`."""
    if not self.is_main:
      return
    rows = [(str(k), f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in results.items()]
    width = max([len("metric")] + [len(k) for k, _ in rows])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    self.print("\n".join(lines))
    jsonable = {k: _jsonable(v) if isinstance(v, float) else v for k, v in results.items()}
    with open(os.path.join(self.workdir, "summary.json"), "w") as f:
      json.dump(jsonable, f, indent=2, default=str)

  def close(self) -> None:
    """Closes the bar and flushes and closes the files; idempotent."""
    self._bar.close()
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
