"""Draws a run's learning curves as PNG: `python launch/plot.py --workdir=runs/spark`.

One workdir: `<workdir>/curves.png` (the picture `launch/train.py` leaves at the end of a run),
one panel per main metric of `<workdir>/metrics.jsonl`. Several workdirs: one panel per metric,
one line per run, written to `--out` (default `<first workdir>/compare.png`).
All logic lives in `rewardjax.plots.plot_runs`. For example:

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


def main(argv):
  del argv
  from rewardjax import plots  # noqa: PLC0415 (after flag parsing, so --help is fast)

  try:
    print(plots.plot_runs(_WORKDIR.value, _OUT.value, _METRICS.value))
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(str(e)) from None


if __name__ == "__main__":
  app.run(main)
