"""Draws a run's learning curves as PNG: `python launch/plot.py --workdir=runs/spark`.

One workdir: `<workdir>/curves.png` (the picture `launch/train.py` leaves at the end of a run),
one panel per main metric of `<workdir>/metrics.jsonl`. Several workdirs: one panel per metric,
one line per run, written to `--out` (default `<first workdir>/compare.png`):

    python launch/plot.py --workdir=/tmp/dpo --workdir=/tmp/ipo --metrics=eval/pair_accuracy
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "Run directory holding metrics.jsonl; "
                                     "repeat the flag to overlay several runs.", required=True)
_METRICS = flags.DEFINE_list("metrics", None, "Metrics to draw (default: the eval metrics, then "
                             "the main train metrics).")
_OUT = flags.DEFINE_string("out", "", "Output PNG (default: <workdir>/curves.png for one run, "
                           "<first workdir>/compare.png for several).")


def plot(workdirs: list[str], out: str = "", metrics: list[str] | None = None) -> str:
  """What `main` runs: the PNG's path; a clear error when there is nothing to draw."""
  from rewardjax import plots  # noqa: PLC0415 (after flag parsing, so --help is fast)

  for workdir in workdirs:
    if not os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
      raise SystemExit(f"--workdir={workdir}: no metrics.jsonl there; pass the directory a "
                       "`launch/train.py --workdir=...` run wrote.")
  if len(workdirs) == 1 and not metrics:
    path = plots.write_curves(workdirs[0], out_name=os.path.basename(out) or "curves.png")
    if path and out and os.path.abspath(path) != os.path.abspath(out):
      os.replace(path, out)
      path = out
  else:
    labels = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
    if len(set(labels)) < len(labels):  # same leaf name in different folders: full paths
      labels = workdirs
    path = plots.compare_curves(
        dict(zip(labels, workdirs)),
        out or os.path.join(workdirs[0], "compare.png" if len(workdirs) > 1 else "curves.png"),
        metrics)
  if path is None:
    raise SystemExit(f"nothing to draw: no metric{' of ' + ','.join(metrics) if metrics else ''}"
                     " has two or more logged points in " + ", ".join(workdirs))
  return path


def main(argv):
  del argv
  print(plot(_WORKDIR.value, _OUT.value, _METRICS.value))


if __name__ == "__main__":
  app.run(main)
