"""Metrics out of the loop: one progress line per job, `<workdir>/metrics.jsonl`, TensorBoard.

A job is a list of stages (e.g. a warm start, then training); each gets its own progress line
with its rate and ETA, and a job ETA that adds the later stages' step counts. The loop
dispatches update t+1 before fetching update t's metrics, so `fetch` (one `device_get` for
the whole dict) only waits for a step that is already finished:

  with MetricsWriter(workdir, stages=[("warmstart", w), ("train", n)]) as writer:
    writer.stage("warmstart")
    ...                                            # writer.write(s, fetch(m), prefix="warmstart")
    writer.stage("train", initial=start)           # prints the warm start's time and mean rate
    previous = None
    for t in range(start, n):
      state, metrics = update(state, batch, rng)   # dispatch update t+1; do not wait
      if previous is not None:
        writer.write(t, fetch(previous))           # update t's metrics, already computed
      previous = metrics
    writer.write(n, fetch(previous))
    writer.eval_started()                          # eval time is kept out of the stage's rate
    writer.write(n, evaluate(state), prefix="eval")
    writer.summary(initial=first_eval, final=last_eval, extra={"steps": n})

`step` is the number of updates applied (TrainState.step after the update), so a stage ends
at its step count. Only process 0 writes files and draws progress in a multi-host run.
"""

import dataclasses
import json
import math
import numbers
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, SupportsFloat

import jax
import numpy as np

from rewardjax import plots

# Console postfix, in this order, when a metric with this name (or last `/` component, or
# `<name>_mean`) is present.
POSTFIX_KEYS = ("loss", "reward", "accuracy", "kl", "entropy")
# A terminal line is redrawn in place at most 5 times a second; a log file (stderr not a TTY)
# gets a new line at most every 30 s, so a 10k-step run does not write 10k lines.
TTY_REFRESH_SECONDS = 0.2
LOG_REFRESH_SECONDS = 30.0
_BAR_WIDTH = 20


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


def format_duration(seconds: float | None) -> str:
  """Formats seconds as "m:ss", or "h:mm:ss" from one hour on; "?" when unknown.

  >>> format_duration(75.4), format_duration(3725.0), format_duration(None)
  ('1:15', '1:02:05', '?')
  """
  if seconds is None or not math.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _rate(seconds_per_step: float | None) -> str:
  # Slow steps (RL rollouts) read better as s/step than as 0.025 steps/s.
  if seconds_per_step is None:
    return "? steps/s"
  if seconds_per_step >= 1.0:
    return f"{seconds_per_step:.3g} s/step"
  return f"{1.0 / max(seconds_per_step, 1e-9):.3g} steps/s"


def progress_line(stage: str, step: int, total: int, seconds_per_step: float | None,
                  later_stages: Sequence[tuple[str, int]] = (),
                  postfix: Mapping[str, str] | None = None) -> str:
  """One progress line: bar, n/total, rate, the stage's ETA and the job's ETA.

  The job ETA is the stage's remaining steps at its rate, plus the later stages' step counts
  as such (they have no measured rate yet, and a guessed one would mislead).

  Args:
    stage: stage name, e.g. "warmstart".
    step: steps done (the last written step).
    total: the stage's step count.
    seconds_per_step: measured time per step, or None before it is known ("?").
    later_stages: (name, steps) of the stages still to run after this one.
    postfix: name -> formatted value, appended as "name=value".

  Returns:
    The line, without a newline.

  >>> line = progress_line("warmstart", 1200, 3000, 0.5, [("train", 600)], {"loss": "0.53"})
  >>> for part in line.split(" | "):
  ...   print(part)
  warmstart [########............] 1200/3000  40%
  2 steps/s
  ETA 15:00
  job ETA 15:00 + train 600 steps
  loss=0.53
  >>> progress_line("train", 1, 600, None)
  'train [....................] 1/600   0% | ? steps/s | ETA ?'
  """
  fraction = min(max(step / max(total, 1), 0.0), 1.0)
  filled = int(fraction * _BAR_WIDTH)
  bar = "#" * filled + "." * (_BAR_WIDTH - filled)
  eta = None if seconds_per_step is None else max(total - step, 0) * seconds_per_step
  parts = [f"{stage} [{bar}] {step}/{total} {int(fraction * 100):3d}%", _rate(seconds_per_step),
           f"ETA {format_duration(eta)}"]
  if later_stages:
    parts.append(f"job ETA {format_duration(eta)}"
                 + "".join(f" + {name} {steps} steps" for name, steps in later_stages))
  if postfix:
    parts.append(" ".join(f"{k}={v}" for k, v in postfix.items()))
  return " | ".join(parts)


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return str(value)


def _number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def summary_table(initial: Mapping[str, Any], final: Mapping[str, Any],
                  extra: Mapping[str, Any] | None = None) -> str:
  """The final table: metric | initial | final | change, then the `extra` rows.

  `change` is final - initial for numbers present in both; a metric in one column only has
  blanks in the other.

  >>> print(summary_table({"accuracy": 0.73, "loss": 1.5}, {"accuracy": 0.87, "format": 0.9},
  ...                     {"steps": 600}))
  metric    initial  final  change
  --------  -------  -----  ------
  accuracy     0.73   0.87   +0.14
  loss          1.5
  format               0.9
  --------  -------  -----  ------
  steps     600
  """
  names = list(initial) + [k for k in final if k not in initial]
  rows = [("metric", "initial", "final", "change")]
  for name in names:
    a, b = initial.get(name), final.get(name)
    change = ""
    if _number(a) and _number(b):
      delta = float(b) - float(a)
      change = f"{delta:+.6g}" if math.isfinite(delta) else f"{delta:.6g}"  # "nan", not "+nan"
    rows.append((name, _cell(a), _cell(b), change))
  widths = [max(len(row[i]) for row in rows) for i in range(4)]
  widths[0] = max([widths[0]] + [len(k) for k in extra or {}])
  rule = "  ".join("-" * w for w in widths)

  def line(row):
    cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
    return "  ".join(cells).rstrip()

  lines = [line(rows[0]), rule] + [line(row) for row in rows[1:]]
  if extra:
    lines.append(rule)
    # Run-level values (steps, wall time) are not before/after pairs: one left-aligned value.
    lines += [f"{k.ljust(widths[0])}  {_cell(v)}" for k, v in extra.items()]
  return "\n".join(lines)


def flat_summary(initial: Mapping[str, Any], final: Mapping[str, Any],
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The summary as one flat dict: "initial/<k>", "final/<k>" and the `extra` keys.

  >>> flat_summary({"acc": 0.5}, {"acc": 0.75}, {"steps": 2})
  {'initial/acc': 0.5, 'final/acc': 0.75, 'steps': 2}
  """
  return {**{f"initial/{k}": v for k, v in initial.items()},
          **{f"final/{k}": v for k, v in final.items()}, **(extra or {})}


def _to_json(value: Any) -> Any:
  if isinstance(value, bool) or not isinstance(value, numbers.Number):
    return value
  if isinstance(value, numbers.Integral):
    return int(value)  # numpy ints are not JSON serialisable
  return _jsonable(float(value))


def _isatty(stream) -> bool:
  return bool(getattr(stream, "isatty", lambda: False)())


@dataclasses.dataclass
class _Stage:
  """Progress of the running stage; times come from the writer's clock."""
  name: str
  total: int
  initial: int
  started: float
  step: int
  eval_seconds: float = 0.0  # spent in evals since `started`; kept out of the rate
  anchor: tuple[int, float, float] | None = None  # (step, time, eval_seconds) at 1st write
  seconds_per_step: float | None = None
  postfix: dict[str, str] = dataclasses.field(default_factory=dict)


class MetricsWriter:
  """Writes step metrics to JSONL and TensorBoard and draws the job's progress; a context manager.

  JSONL line: {"step": int, "time": unix seconds, "<prefix>/<name>": float or null, ...};
  NaN and ±inf are written as null. The file is appended to (a resumed run repeats the steps
  logged after its last checkpoint; readers keep the last line per step) and line-buffered, so
  a killed run loses nothing. TensorBoard scalars go to `<workdir>/tensorboard` as
  "<prefix>/<name>".

  Progress goes to stderr: on a terminal one line redrawn in place, otherwise (a log file) a
  new line at most every LOG_REFRESH_SECONDS. Messages (`print`, eval lines, the summary) go
  to stdout, above the progress line.

  Args:
    workdir: run directory (created if missing).
    stages: (name, steps) of the job's stages in order; a write with prefix `name` advances
      that stage.
    console: draw progress (messages from `print`, eval lines and the summary appear either way).
    tensorboard: write TensorBoard event files (imports tensorboardX lazily).
    is_main: whether this process writes; default `jax.process_index() == 0`.
    clock: monotonic seconds for rates and ETAs (tests pass a fake one).
  """

  def __init__(self, workdir: str, *, stages: Sequence[tuple[str, int]] = (),
               console: bool = True, tensorboard: bool = True, is_main: bool | None = None,
               clock: Callable[[], float] = time.monotonic):
    names = [name for name, _ in stages]
    if len(set(names)) != len(names):
      raise ValueError(f"Stage names must be unique, got {names}.")
    self.workdir = workdir
    self.is_main = jax.process_index() == 0 if is_main is None else is_main
    self._stages = [(name, int(steps)) for name, steps in stages]
    self._console = console and self.is_main
    self._clock = clock
    self._stage: _Stage | None = None
    self._eval_start: float | None = None
    self._line: str | None = None  # the progress line on screen (TTY), to redraw after messages
    self._last_draw: float | None = None
    self._jsonl = None
    self._tb = None
    if self.is_main:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
      if tensorboard:
        import tensorboardX  # lazy: pulls in protobuf

        self._tb = tensorboardX.SummaryWriter(logdir=os.path.join(workdir, "tensorboard"))

  def stage(self, name: str, *, initial: int = 0) -> None:
    """Finishes the running stage (a line with its time and mean rate) and starts `name`.

    Args:
      name: one of the `stages` names.
      initial: the stage's starting step, e.g. the restored step of a resumed run.
    """
    steps = dict(self._stages)
    if name not in steps:
      raise ValueError(f"Unknown stage {name!r}; stages are {list(steps)}.")
    self._finish_stage()
    self._stage = _Stage(name, steps[name], initial, self._clock(), initial)
    self._draw(force=True)

  def rewind(self, step: int, stages: Sequence[str] = ("train", "eval", "round")) -> int:
    """Drops the JSONL records of `stages` logged after `step` (a resumed run redoes those
    steps, and would otherwise log them, and their evals, twice); returns how many.

    A record is dropped when its step is > `step` and every metric in it belongs to one of
    `stages` (the warm start numbers its own steps from 0 and is kept). TensorBoard keeps its
    events: it shows the later value of a repeated step.
    """
    if not self.is_main:
      return 0
    path = os.path.join(self.workdir, "metrics.jsonl")
    self._jsonl.close()
    with open(path, encoding="utf-8") as f:
      lines = f.readlines()
    prefixes = tuple(f"{s}/" for s in stages)

    def later(line: str) -> bool:
      try:
        record = json.loads(line)
      except ValueError:  # a line cut by a kill: drop it too
        return True
      names = [k for k in record if k not in ("step", "time")]
      return record.get("step", 0) > step and all(k.startswith(prefixes) for k in names)

    kept = [line for line in lines if not later(line)]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)
    self._jsonl = open(path, "a", buffering=1)
    return len(lines) - len(kept)

  def eval_started(self) -> float:
    """Marks the start of an evaluation; the next non-stage write reports and excludes its time.

    Returns:
      The clock's time now.
    """
    self._eval_start = self._clock()
    return self._eval_start

  def write(self, step: int, metrics: Mapping[str, SupportsFloat], *,
            prefix: str = "train") -> None:
    """Logs `metrics` (name -> number) for `step` as "<prefix>/<name>".

    A stage prefix advances that stage's progress to `step` (starting the stage from step 0 if
    `stage` was not called) and sets its postfix; other prefixes (e.g. "eval") are printed as
    one line, "eval @ step 100 (12.3s): accuracy=0.84", with the time since `eval_started`.
    """
    if not self.is_main:
      return
    now = self._clock()
    floats = {k: float(v) for k, v in metrics.items()}
    values = {f"{prefix}/{k}": v for k, v in floats.items()}
    record = {"step": int(step), "time": time.time()}
    record.update({k: _jsonable(v) for k, v in values.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for name, value in values.items():
        # NaN is expected (e.g. a judge accuracy over no items) and kept in the JSONL as null;
        # tensorboardX would warn about it on every write.
        if math.isfinite(value):
          self._tb.add_scalar(name, value, global_step=int(step))
    if prefix in dict(self._stages):
      if self._stage is None or self._stage.name != prefix:
        self.stage(prefix)
      self._advance(int(step), now, _postfix(floats))
      return
    took = ""
    if self._eval_start is not None:
      seconds = now - self._eval_start
      self._eval_start = None
      if self._stage is not None:
        self._stage.eval_seconds += seconds
      took = f" ({seconds:.1f}s)" if seconds < 60 else f" ({format_duration(seconds)})"
    shown = " ".join(f"{k}={v:.4g}" for k, v in floats.items())
    self.print(f"{prefix} @ step {step}{took}: {shown}")

  def _advance(self, step: int, now: float, postfix: dict[str, str]) -> None:
    s = self._stage
    s.step, s.postfix = max(s.step, step), postfix
    # The first write's interval includes jit compilation: rates are measured from it onward,
    # so a one-off 50-minute compile or warm start never turns into a 500-hour ETA.
    if s.anchor is None:
      s.anchor = (step, now, s.eval_seconds)
    elif step > s.anchor[0]:
      seconds = now - s.anchor[1] - (s.eval_seconds - s.anchor[2])
      s.seconds_per_step = max(seconds, 0.0) / (step - s.anchor[0])
    self._draw(force=False)

  def _draw(self, force: bool) -> None:
    if not self._console or self._stage is None:
      return
    now, tty = self._clock(), _isatty(sys.stderr)
    interval = TTY_REFRESH_SECONDS if tty else LOG_REFRESH_SECONDS
    if not force and self._last_draw is not None and now - self._last_draw < interval:
      return
    s = self._stage
    later = self._stages[[name for name, _ in self._stages].index(s.name) + 1:]
    line = progress_line(s.name, s.step, s.total, s.seconds_per_step, later, s.postfix)
    self._last_draw = now
    if tty:
      # A line wider than the terminal wraps, and "\r" would then leave one copy per redraw.
      self._line = line[:shutil.get_terminal_size().columns - 1]
      sys.stderr.write("\r" + self._line + "\x1b[K")
    else:
      sys.stderr.write(line + "\n")
    sys.stderr.flush()

  def _clear_line(self) -> None:
    if self._line is not None:
      sys.stderr.write("\r\x1b[K")
      sys.stderr.flush()

  def _finish_stage(self) -> None:
    s, self._stage = self._stage, None
    if s is None or not self._console:
      return
    wall = self._clock() - s.started
    done = s.step - s.initial
    rate = f", {_rate((wall - s.eval_seconds) / done)}" if done > 0 else ""
    evals = f", evals {format_duration(s.eval_seconds)} excluded" if s.eval_seconds else ""
    state = "done" if s.step >= s.total else "stopped"
    self._clear_line()
    self._line = None
    sys.stderr.write(f"{s.name} {state}: {s.step}/{s.total}, {done} steps in "
                     f"{format_duration(wall)}{rate}{evals}\n")
    sys.stderr.flush()

  def print(self, msg: str) -> None:
    """Prints `msg` above the progress line (process 0 only)."""
    if not self.is_main:
      return
    self._clear_line()
    sys.stdout.write(f"{msg}\n")
    sys.stdout.flush()
    if self._line is not None:
      sys.stderr.write(self._line + "\x1b[K")
      sys.stderr.flush()

  def summary(self, initial: Mapping[str, Any], final: Mapping[str, Any],
              extra: Mapping[str, Any] | None = None) -> None:
    """Prints `summary_table` and saves summary.json and curves.png in the workdir.

    summary.json holds `flat_summary`; curves.png is `plots.write_curves` of metrics.jsonl
    (its path is printed; a plotting error is printed instead of raised).

    Args:
      initial: metrics before training (e.g. the first eval).
      final: metrics after training (e.g. the last eval).
      extra: run-level values (steps, wall seconds, ...) shown below the table.
    """
    if not self.is_main:
      return
    self._finish_stage()  # the summary comes after the job's last progress line
    self.print(summary_table(initial, final, extra))
    flat = {k: _to_json(v) for k, v in flat_summary(initial, final, extra).items()}
    with open(os.path.join(self.workdir, "summary.json"), "w") as f:
      json.dump(flat, f, indent=2, default=str)
    self._jsonl.flush()  # the curves read the file this writer appends to
    try:
      path = plots.write_curves(self.workdir)
    except Exception as e:  # a plotting failure must not lose the finished run's summary
      self.print(f"curves not written: {e}")
    else:
      if path is not None:
        self.print(f"curves: {path}")

  def close(self) -> None:
    """Finishes the running stage and flushes and closes the files; idempotent."""
    self._finish_stage()
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
