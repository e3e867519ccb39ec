"""Tests for rewardjax.plots: reading metrics.jsonl, choosing panels, writing the PNG."""

import json
import pathlib
import subprocess
import sys

import pytest

from rewardjax import plots

ROOT = pathlib.Path(__file__).resolve().parent.parent


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


def _png_shape(path):
  from matplotlib import image

  return image.imread(str(path)).shape[:2]


def test_compare_curves_overlays_runs_on_a_hand_written_pair(tmp_path, monkeypatch):
  for name, scale in (("dpo", 1.0), ("ipo", 2.0)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "time": 0.0, "train/loss": scale / (s + 1),
                    "eval/accuracy": 0.1 * s * scale}) + "\n" for s in range(4)))
  figures = []
  draw = plots.draw_panels
  monkeypatch.setattr(plots, "draw_panels", lambda *a: figures.append(draw(*a)) or figures[-1])
  out = tmp_path / "compare.png"
  runs = {"dpo": str(tmp_path / "dpo"), "ipo": str(tmp_path / "ipo")}
  assert plots.compare_curves(runs, str(out)) == str(out)
  assert _png_shape(out) == (240, 640)  # two panels in one row, 320 x 240 pixels each
  axes = [ax for ax in figures[0].axes if ax.get_visible()]
  assert [ax.get_title() for ax in axes] == ["eval/accuracy", "train/loss"]
  lines = {line.get_label(): line.get_ydata().tolist() for line in axes[1].get_lines()}
  assert lines == {"dpo": [1.0, 0.5, 1 / 3, 0.25], "ipo": [2.0, 1.0, 2 / 3, 0.5]}
  # A chosen metric only one run has is drawn for that run; one no run has is left out.
  (tmp_path / "ipo" / "metrics.jsonl").write_text(
      '{"step": 0, "eval/accuracy": 0.0}\n{"step": 1, "eval/accuracy": 1.0}\n')
  plots.compare_curves(runs, str(out), metrics=["train/loss", "train/nothing"])
  assert [line.get_label() for line in figures[-1].axes[0].get_lines()] == ["dpo"]
  assert len([ax for ax in figures[-1].axes if ax.get_visible()]) == 1
  assert plots.compare_curves(runs, str(out), metrics=["train/nothing"]) is None
  with pytest.raises(FileNotFoundError, match="run 'x': no metrics.jsonl"):
    plots.compare_curves({"x": str(tmp_path)}, str(out))


def test_plot_runs_one_run_and_several(tmp_path):
  _write_metrics(tmp_path / "metrics.jsonl")
  assert plots.plot_runs([str(tmp_path)]) == str(tmp_path / "curves.png")
  assert _png_shape(tmp_path / "curves.png") == (240, 640)  # eval/accuracy, train/loss
  other = tmp_path / "other"
  other.mkdir()
  _write_metrics(other / "metrics.jsonl")
  out = plots.plot_runs([str(tmp_path), str(other)], metrics=["train/loss"])
  assert out == str(tmp_path / "compare.png") and _png_shape(out) == (240, 320)
  with pytest.raises(FileNotFoundError, match="no metrics.jsonl there"):
    plots.plot_runs([str(tmp_path / "missing")])
  with pytest.raises(ValueError, match="nothing to draw"):
    plots.plot_runs([str(tmp_path)], metrics=["eval/none"])


def test_launch_plot_command(tmp_path):
  _write_metrics(tmp_path / "metrics.jsonl")
  command = [sys.executable, str(ROOT / "launch" / "plot.py"), f"--workdir={tmp_path}"]
  result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().endswith("curves.png")
  result = subprocess.run(command[:2] + [f"--workdir={tmp_path}/none"], capture_output=True,
                          text=True, cwd=ROOT)
  assert result.returncode == 1 and "no metrics.jsonl there" in result.stderr
