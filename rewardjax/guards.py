"""Guards of a run: the workdir lock, the stop signal (preemption), the divergence detector.

`train.run` holds all three while it trains:

- `workdir_lock(workdir)`: one run per workdir. A second run on the same directory is refused
  with the holder's pid and host (two runs would log every step twice and delete each other's
  checkpoints). The lock is a JSON file `<workdir>/LOCK` created atomically (O_EXCL), removed on
  exit; a lock whose process is gone (same host, dead pid) is stale and taken over.
- `stop_signals()`: SIGTERM (preemption on TPU / GPU capacity, `kill`, a scheduler) and SIGINT
  (Ctrl-C) set a flag instead of killing the process; the loop saves a checkpoint of the
  current step and exits (`Preempted`). A second signal kills as usual.
- `DivergenceGuard`: reads each step's metrics and stops the run (`Diverged`) when a metric is
  non-finite or beyond its bound for `patience` consecutive steps, naming the step, the metric
  and the last checkpoint written before the divergence began.
"""

import contextlib
import dataclasses
import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping

LOCK_FILE = "LOCK"


class WorkdirLockedError(RuntimeError):
  """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def _read_holder(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):  # half-written by a process killed mid-write: no holder
    return {}


@contextlib.contextmanager
def workdir_lock(workdir: str, *, report=print):
  """Holds `<workdir>/LOCK` for the duration of the `with` block.

  Only process 0 of a multi-host run takes it (the others run the same job). A remote workdir
  (a URL such as gs://) is not locked: there is no atomic create-if-absent for it here.

  Args:
    workdir: the run directory (created if missing).
    report: called with a message when a stale lock is taken over.

  Raises:
    WorkdirLockedError: a live process (or one on another host) holds the lock; the message
      names its pid, host and start time, and the file to delete if that run is gone.
  """
  import jax  # noqa: PLC0415 (process index; this module is otherwise jax-free)

  if "://" in workdir or jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  me = {"pid": os.getpid(), "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S")}
  for _ in range(3):  # create; on a stale lock, remove it and create again
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read_holder(path)
      pid, host = holder.get("pid"), holder.get("host")
      if holder and host == me["host"] and isinstance(pid, int) and _alive(pid):
        raise WorkdirLockedError(
            f"{workdir} is in use by another run (pid {pid} on {host}, started "
            f"{holder.get('started')}). Two runs on one workdir would log every step twice "
            f"and delete each other's checkpoints: wait for it, stop it, or pass another "
            f"--workdir.") from None
      if holder and host != me["host"]:
        raise WorkdirLockedError(
            f"{workdir} is in use by a run on another host (pid {pid} on {host}, started "
            f"{holder.get('started')}); this host cannot check whether it is alive. If that "
            f"run has ended, delete {path}; otherwise pass another --workdir.") from None
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      report(f"removed a stale lock of {workdir} (pid {pid} on {host} is not running)")
      continue
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(me, f)
    break
  else:
    raise WorkdirLockedError(f"could not take the lock {path}; another run keeps taking it")
  try:
    yield
  finally:
    if _read_holder(path).get("pid") == me["pid"]:
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)


class Preempted(RuntimeError):  # noqa: N818 (an outcome, like KeyboardInterrupt)
  """The run stopped on a signal after saving a checkpoint of its current step."""

  def __init__(self, step: int, signum: int, workdir: str):
    self.step, self.signum = step, signum
    super().__init__(
        f"stopped by {signal.Signals(signum).name} after step {step}; saved a checkpoint of "
        f"step {step} in {workdir}. Run the same command to resume from it.")


@contextlib.contextmanager
def stop_signals(signums=(signal.SIGTERM, signal.SIGINT)):
  """Yields a `threading.Event` set by the first of `signums` (its number in `event.signum`).

  The first signal only sets the event (the loop finishes its step, saves and raises
  `Preempted`); the handler is then reset to the previous one, so a second signal acts as
  usual (Ctrl-C twice interrupts at once). Outside the main thread, where Python cannot install
  handlers, the event is never set.
  """
  event = threading.Event()
  event.signum = None
  if threading.current_thread() is not threading.main_thread():
    yield event
    return
  previous = {s: signal.getsignal(s) for s in signums}

  def handler(signum, frame):
    del frame
    event.signum = signum
    event.set()
    for s, h in previous.items():
      signal.signal(s, h)

  for s in signums:
    signal.signal(s, handler)
  try:
    yield event
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def stop_requested(event: threading.Event) -> bool:
  """Whether any process got a stop signal (every process must save: a collective decision).

  With several processes one small all-gather per step makes them agree; a single process
  reads its flag.
  """
  import jax  # noqa: PLC0415

  if jax.process_count() == 1:
    return event.is_set()
  import numpy as np  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415

  flags = multihost_utils.process_allgather(np.int32(event.signum or 0))
  if not event.is_set() and flags.max() > 0:
    event.signum = int(flags.max())
    event.set()
  return bool(flags.max() > 0)


@dataclasses.dataclass(frozen=True)
class GuardOptions:
  """The config's `guard` block: when a run counts as diverged.

  A step is bad when its loss or gradient norm is non-finite (the optimizer already skips such
  updates; a run of them means training stopped), |loss| > max_abs_loss, grad_norm >
  max_grad_norm, kl > max_kl, entropy < min_entropy (a policy collapsed to one token: a
  learning rate of 1e6 saturates every logit) or param_rms > max_param_rms (the root mean
  square parameter, ~0.02-1 in a healthy model of any size). Metrics a step does not report
  are not checked. `patience` consecutive bad steps stop the run; 0 turns the guard off.
  The defaults are generous: they flag runs that are broken, not runs that are merely bad.
  """
  patience: int = 5
  max_abs_loss: float = 1e6
  max_grad_norm: float = 1e8
  max_kl: float = 1e3
  min_entropy: float = 1e-6
  max_param_rms: float = 1e3


class Diverged(RuntimeError):  # noqa: N818 (an outcome)
  """Training diverged (see `DivergenceGuard`)."""


def bad_metrics(metrics: Mapping[str, float], options: GuardOptions) -> list[str]:
  """The reasons this step's `metrics` (train metrics: "loss", "grad_norm", "kl", "entropy",
  "param_rms") count as diverged under `options`, e.g. ["loss=nan is not finite"]."""
  bounds = {"loss": (None, options.max_abs_loss), "grad_norm": (None, options.max_grad_norm),
            "kl": (None, options.max_kl), "entropy": (options.min_entropy, None),
            "param_rms": (None, options.max_param_rms)}
  reasons = []
  for name, (low, high) in bounds.items():
    if name not in metrics or metrics[name] is None:
      continue
    value = float(metrics[name])
    if name in ("loss", "grad_norm", "param_rms") and not math.isfinite(value):
      reasons.append(f"{name}={value} is not finite")
    elif high is not None and abs(value) > high:
      reasons.append(f"{name}={value:.4g} > {high:g}")
    elif low is not None and value < low:
      reasons.append(f"{name}={value:.4g} < {low:g}")
  return reasons


def check_divergence(history: list, step: int, metrics: Mapping[str, float],
                     options: GuardOptions) -> list:
  """The run of consecutive bad steps after `step`: `history` + [(step, reasons)], or [] when
  `step` is healthy. Raises `Diverged` when it reaches `options.patience` steps."""
  if options.patience <= 0:
    return []
  reasons = bad_metrics(metrics, options)
  if not reasons:
    return []
  history = [*history, (step, reasons)]
  if len(history) >= options.patience:
    first = history[0][0]
    raise Diverged(
        f"training diverged: {options.patience} consecutive bad steps, {first} to {step} "
        f"(step {step}: {'; '.join(reasons)}). Lower --config.optim.learning_rate (a new "
        f"--workdir: the optimizer is part of the checkpoint's config), or loosen "
        f"--config.guard.* (patience=0 turns the guard off).")
  return history
