"""The Pareto front plot writes a readable PNG, with or without trials."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image

from kubenas.runtime.front_plot import PlotPoint, plot_front

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert 300 <= height <= 2000 and 300 <= width <= 2000
    assert height < width


def test_writes_a_png_of_trials_infeasible_points_and_the_front(tmp_path: Path) -> None:
    points = [
        PlotPoint(12.0, 0.91, feasible=True, on_front=True, label="t3"),
        PlotPoint(4.0, 0.85, feasible=True, on_front=True, label="t7"),
        PlotPoint(30.0, 0.93, feasible=True, on_front=True, label="t1"),
        PlotPoint(20.0, 0.80, feasible=True, on_front=False, label="t2"),
        PlotPoint(8.0, 0.70, feasible=True, on_front=False),
        PlotPoint(50.0, 0.95, feasible=False, on_front=False, label="t9"),
    ]
    path = tmp_path / "front.png"
    plot_front(
        path,
        points,
        "latency_ms",
        "val_accuracy",
        x_larger_better=False,
        y_larger_better=True,
        x_log=True,
        title="accuracy vs latency",
    )
    _assert_png(path)


def test_both_larger_is_better_directions_plot(tmp_path: Path) -> None:
    points = [
        PlotPoint(1.0, 3.0, feasible=True, on_front=True, label="a"),
        PlotPoint(3.0, 1.0, feasible=True, on_front=True),
        PlotPoint(1.0, 1.0, feasible=True, on_front=False),
    ]
    path = tmp_path / "front.png"
    plot_front(path, points, "x", "y", x_larger_better=True, y_larger_better=True)
    _assert_png(path)


def test_an_empty_list_still_writes_a_figure(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    plot_front(path, [], "flops", "val_accuracy", x_larger_better=False, y_larger_better=True)
    _assert_png(path)
