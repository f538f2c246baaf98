"""Plot layout rules, checked on rendered figures: readable ticks, legends off the data."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from simferry.analysis.model import group_runs, load_runs, load_summaries
from simferry.analysis.plots import _figure, _legend_below, _scale, write_plots

from .runs import fake_run


def visible_labels(fig, axis) -> list:  # type: ignore[no-untyped-def]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lo, hi = axis.get_view_interval()
    return [
        t.get_window_extent(renderer)
        for t, v in zip(axis.get_ticklabels(), axis.get_ticklocs(), strict=True)
        if t.get_text() and min(lo, hi) <= v <= max(lo, hi)
    ]


@pytest.mark.parametrize("span", [3, 20, 200, 640, 1e5])
def test_tick_labels_never_overlap_and_are_never_missing(span: float) -> None:
    fig, axes = _figure(5, 4)
    ax = axes[0][0]
    xs = [1e-3, 1e-3 * span]
    ax.plot(xs, [1, 2])
    _scale(ax, "x", xs)
    boxes = sorted(visible_labels(fig, ax.xaxis), key=lambda b: b.x0)
    assert len(boxes) >= 2, span
    assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes)), span


def test_legend_sits_outside_the_axes() -> None:
    fig, axes = _figure(5, 4)
    ax = axes[0][0]
    for i in range(4):
        ax.plot([0, 1], [i, i + 1], label=f"series {i}")
    _legend_below(fig, ax)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_one_size_gives_bars_and_the_timeline_shares_its_x_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.container import BarContainer

    from simferry.analysis import plots

    drawn = {}
    save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path: drawn.setdefault(path.stem, fig) and save(fig, path)
    )
    dirs = [fake_run(tmp_path, t, transport=t, num_sims=3) for t in ("filesystem", "shm")]
    runs, _ = load_runs(load_summaries(dirs))
    write_plots(group_runs(runs), tmp_path / "plots")
    assert sorted(drawn) == [
        "bandwidth",
        "io_distribution",
        "io_fit",
        "runtime_breakdown",
        "timeline",
    ]
    bw = drawn["bandwidth"].axes[0]
    assert any(isinstance(c, BarContainer) for c in bw.containers)
    top, bottom = drawn["timeline"].axes[:2]
    assert top.get_shared_x_axes().joined(top, bottom)
