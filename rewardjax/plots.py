"""Learning curves as PNG: `<workdir>/metrics.jsonl` -> `<workdir>/curves.png`.

A run's curves can be read without TensorBoard (e.g. over ssh, or in a notebook listing):
`MetricsWriter.summary` calls `write_curves` at the end of every run; `launch/plot.py` draws
them again for any workdir, or overlays several runs (`compare_curves`, one line per run).

  path = write_curves(workdir)  # None when there is nothing to plot
  path = compare_curves({"dpo": "/tmp/dpo", "ipo": "/tmp/ipo"}, "/tmp/dpo_vs_ipo.png")
"""

import json
import math
import os
from collections.abc import Mapping, Sequence

# Eval metrics first (the headline ones before the rest), then these train metrics when present.
_EVAL_FIRST = ("eval/accuracy", "eval/judge_accuracy")
_TRAIN_METRICS = ("train/reward", "train/loss", "train/kl", "train/entropy", "train/accuracy",
                  "train/judge/reward")
MAX_PANELS = 16
_COLUMNS = 4


def read_curves(path: str) -> dict[str, list[tuple[int, float]]]:
  """Metric name -> [(step, value)] sorted by step, from a metrics.jsonl file.

  Nulls (NaN or inf when written) are dropped. A resumed run appends the steps logged after its
  last checkpoint again, so the last value per (metric, step) wins. Lines that are not JSON
  objects (e.g. one cut short by a killed run) are skipped.
  """
  by_name: dict[str, dict[int, float]] = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
        step = int(record["step"])  # also rejects a line that is valid JSON but not an object
      except (ValueError, TypeError, KeyError):
        continue
      for name, value in record.items():
        if name in ("step", "time") or "/" not in name:
          continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
          continue
        if math.isfinite(value):
          by_name.setdefault(name, {})[step] = float(value)
  return {name: sorted(points.items()) for name, points in by_name.items()}


def choose_panels(curves: dict[str, list[tuple[int, float]]]) -> list[str]:
  """The metrics to draw, in order: eval metrics, then up to 6 train metrics; at most 16.

  A metric needs at least 2 points to be a curve.

  >>> choose_panels({"eval/b": [(0, 1.0), (1, 2.0)], "eval/accuracy": [(0, 0.5), (1, 0.6)],
  ...                "eval/c": [(1, 1.0)], "train/loss": [(1, 2.0), (2, 1.0)]})
  ['eval/accuracy', 'eval/b', 'train/loss']
  """
  drawable = {name for name, points in curves.items() if len(points) >= 2}
  evals = sorted(name for name in drawable if name.startswith("eval/"))
  first = [name for name in _EVAL_FIRST if name in drawable]
  evals = first + [name for name in evals if name not in first]
  train = [name for name in _TRAIN_METRICS if name in drawable]
  return (evals + train)[:MAX_PANELS]


def write_curves(workdir: str, *, out_name: str = "curves.png") -> str | None:
  """Draws a grid of small line plots (one per metric, x = step) to `<workdir>/<out_name>`.

  Args:
    workdir: run directory holding metrics.jsonl.
    out_name: file name of the PNG inside `workdir`.

  Returns:
    The PNG's path, or None when there is nothing to plot (no metrics.jsonl, or no metric
    with at least 2 points).
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  curves = read_curves(path)
  names = choose_panels(curves)
  if not names:
    return None
  out = os.path.join(workdir, out_name)
  draw_panels([(name, {"": curves[name]}) for name in names], out)
  return out


def compare_curves(runs: Mapping[str, str], out: str,
                   metrics: Sequence[str] | None = None) -> str | None:
  """Overlays several runs: one panel per metric, one line per run, to the PNG `out`.

  Args:
    runs: legend label -> run directory holding metrics.jsonl (a directory without one is an
      error: a comparison that silently drops a run would mislead).
    out: path of the PNG to write (its directory must exist).
    metrics: the metrics to draw, in order; default: `choose_panels` of every metric any run
      has. A metric that no run has as a curve (>= 2 points) is left out.

  Returns:
    `out`, or None when no metric has a curve in any run.
  """
  curves = {}
  for label, workdir in runs.items():
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
      raise FileNotFoundError(f"run {label!r}: no metrics.jsonl in {workdir} (is it a workdir "
                              "of a finished or running `launch/train.py`?)")
    curves[label] = read_curves(path)
  if metrics is None:
    merged = {}
    for run in curves.values():
      for name, points in run.items():
        if len(points) > len(merged.get(name, ())):
          merged[name] = points
    metrics = choose_panels(merged)
  panels = [(name, {label: run[name] for label, run in curves.items()
                    if len(run.get(name, ())) >= 2}) for name in metrics]
  panels = [(name, lines) for name, lines in panels if lines]
  if not panels:
    return None
  draw_panels(panels, out)
  return out


def plot_runs(workdirs: Sequence[str], out: str = "",
              metrics: Sequence[str] | None = None) -> str:
  """What `launch/plot.py` draws: `write_curves` of one run, or `compare_curves` of several.

  Args:
    workdirs: run directories holding metrics.jsonl (labels: their last path components).
    out: output PNG; default `<workdir>/curves.png` for one run without `metrics`, else
      `<first workdir>/compare.png` (several runs) or `<workdir>/curves.png` (one, chosen
      metrics).
    metrics: metrics to draw (default: `choose_panels`).

  Returns:
    The PNG's path.

  Raises:
    FileNotFoundError: a workdir has no metrics.jsonl.
    ValueError: no chosen metric has two or more points.
  """
  for workdir in workdirs:
    if not os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
      raise FileNotFoundError(f"--workdir={workdir}: no metrics.jsonl there; pass the directory "
                              "a `launch/train.py --workdir=...` run wrote.")
  if len(workdirs) == 1 and not metrics:
    path = write_curves(workdirs[0], out_name=os.path.basename(out) or "curves.png")
    if path and out and os.path.abspath(path) != os.path.abspath(out):
      os.replace(path, out)
      path = out
  else:
    labels = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
    if len(set(labels)) < len(labels):  # same leaf name in different folders: full paths
      labels = list(workdirs)
    path = compare_curves(
        dict(zip(labels, workdirs)),
        out or os.path.join(workdirs[0], "compare.png" if len(workdirs) > 1 else "curves.png"),
        metrics)
  if path is None:
    chosen = " of " + ",".join(metrics) if metrics else ""
    raise ValueError(f"nothing to draw: no metric{chosen} has two or more logged points in "
                     + ", ".join(workdirs))
  return path


def draw_panels(panels: list[tuple[str, dict[str, list[tuple[int, float]]]]], out: str):
  """Writes a grid of panels as one PNG (3.2 x 2.4 inches each at 100 dpi, 4 per row).

  Args:
    panels: [(title, {legend label: [(step, value)]})]; the label "" draws no legend.
    out: path of the PNG.

  Returns:
    The matplotlib Figure (already saved).
  """
  # Lazy: `import rewardjax` stays light. A bare Figure on the Agg canvas, not pyplot: no
  # display is needed, the caller's pyplot backend (e.g. a notebook's inline one) is left alone,
  # and no global figure list keeps it alive, so there is nothing to close.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  columns = min(len(panels), _COLUMNS)
  rows = math.ceil(len(panels) / columns)
  fig = Figure(figsize=(3.2 * columns, 2.4 * rows))
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, columns, squeeze=False)
  for ax, (name, lines) in zip(axes.flat, panels):
    for label, points in lines.items():
      steps, values = zip(*points)
      ax.plot(steps, values, marker="." if len(steps) <= 20 else None, linewidth=1.2,
              label=label or None)
    if any(lines):
      ax.legend(fontsize=7)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
  fig.tight_layout()
  fig.savefig(out, dpi=100)
  return fig
