"""Learning curves as one PNG: `<workdir>/metrics.jsonl` -> `<workdir>/curves.png`.

A run's curves can be read without TensorBoard (e.g. over ssh, or in a notebook listing):
`MetricsWriter.summary` calls `write_curves` at the end of every run.

  path = write_curves(workdir)  # None when there is nothing to plot
"""

import json
import math
import os

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
  # Lazy: `import rewardjax` stays light. A bare Figure on the Agg canvas, not pyplot: no
  # display is needed, the caller's pyplot backend (e.g. a notebook's inline one) is left alone,
  # and no global figure list keeps it alive, so there is nothing to close.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  columns = min(len(names), _COLUMNS)
  rows = math.ceil(len(names) / columns)
  fig = Figure(figsize=(3.2 * columns, 2.4 * rows))
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, columns, squeeze=False)
  for ax, name in zip(axes.flat, names):
    steps, values = zip(*curves[name])
    ax.plot(steps, values, marker="." if len(steps) <= 20 else None, linewidth=1.2)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(names):]:
    ax.set_visible(False)
  fig.tight_layout()
  out = os.path.join(workdir, out_name)
  fig.savefig(out, dpi=100)
  return out
