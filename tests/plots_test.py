"""Tests for rewardjax.plots: reading metrics.jsonl, choosing panels, writing the PNG."""

import json

from rewardjax import plots


def _write_metrics(path):
  lines = [json.dumps(r) for r in [
      {"step": 0, "time": 1.0, "eval/accuracy": 0.25},
      {"step": 1, "time": 2.0, "train/loss": 2.0},
      {"step": 2, "time": 3.0, "train/loss": None},  # NaN when written: dropped
      {"step": 2, "time": 3.5, "train/loss": 1.5},
      {"step": 3, "time": 4.0, "train/loss": 1.0},
      {"step": 3, "time": 4.5, "eval/accuracy": 0.5},
      {"step": 3, "time": 5.0, "train/loss": 9.0},  # a resumed run repeats step 3 ...
      {"step": 3, "time": 6.0, "train/loss": 0.75},  # ... and its last value wins
      {"step": 4, "time": 7.0, "train/loss": 0.5},
      {"step": 5, "time": 8.0, "train/loss": 0.25},
      {"step": 5, "time": 8.5, "eval/accuracy": 0.75, "eval/format": 1.0},
  ]]
  lines.insert(3, '{"step": 2, "time": 3.2, "train/lo')  # a line cut short by a killed run
  path.write_text("\n".join(lines) + "\n")


def test_read_curves_keeps_last_value_per_step_and_skips_nulls_and_bad_lines(tmp_path):
  _write_metrics(tmp_path / "metrics.jsonl")
  curves = plots.read_curves(str(tmp_path / "metrics.jsonl"))
  assert curves["train/loss"] == [(1, 2.0), (2, 1.5), (3, 0.75), (4, 0.5), (5, 0.25)]
  assert curves["eval/accuracy"] == [(0, 0.25), (3, 0.5), (5, 0.75)]
  # eval/format has one point: not a curve.
  assert plots.choose_panels(curves) == ["eval/accuracy", "train/loss"]


def test_choose_panels_order_and_cap():
  two = [(0, 0.0), (1, 1.0)]
  curves = {f"eval/m{i:02d}": two for i in range(20)}
  curves.update({"eval/judge_accuracy": two, "eval/accuracy": two, "train/kl": two,
                 "train/reward": two, "train/other": two})
  names = plots.choose_panels(curves)
  assert len(names) == plots.MAX_PANELS
  assert names[:3] == ["eval/accuracy", "eval/judge_accuracy", "eval/m00"]
  assert "train/kl" not in names  # 22 eval curves fill the 16 panels first
  curves = {k: v for k, v in curves.items() if not k.startswith("eval/m")}
  assert plots.choose_panels(curves) == ["eval/accuracy", "eval/judge_accuracy", "train/reward",
                                         "train/kl"]


def test_write_curves_writes_a_png(tmp_path):
  _write_metrics(tmp_path / "metrics.jsonl")
  path = plots.write_curves(str(tmp_path))
  assert path == str(tmp_path / "curves.png")
  assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_nothing_to_plot_returns_none(tmp_path):
  assert plots.write_curves(str(tmp_path)) is None  # no metrics.jsonl
  (tmp_path / "metrics.jsonl").write_text("")
  assert plots.write_curves(str(tmp_path)) is None  # empty
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "time": 1.0, "train/loss": 1.0}\nnot json\n')
  assert plots.write_curves(str(tmp_path)) is None  # one point only
  assert not (tmp_path / "curves.png").exists()


def test_metrics_summary_writes_curves_and_survives_a_plotting_error(tmp_path, capsys,
                                                                     monkeypatch):
  from rewardjax import metrics

  with metrics.MetricsWriter(str(tmp_path), stages=[("train", 2)], console=False,
                             tensorboard=False) as writer:
    writer.write(1, {"loss": 1.0})
    writer.write(2, {"loss": 0.5})
    writer.summary(initial={}, final={})
  assert capsys.readouterr().out.splitlines()[-1] == f"curves: {tmp_path / 'curves.png'}"
  assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")

  def broken(workdir):
    raise RuntimeError("no fonts")

  monkeypatch.setattr(plots, "write_curves", broken)
  with metrics.MetricsWriter(str(tmp_path / "b"), console=False, tensorboard=False) as writer:
    writer.summary(initial={"accuracy": 0.5}, final={"accuracy": 0.75})
  assert capsys.readouterr().out.splitlines()[-1] == "curves not written: no fonts"
  assert (tmp_path / "b" / "summary.json").exists()
