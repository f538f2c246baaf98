"""The report's figures, as PNG files, drawn from grouped run records.

Figures are built on ``matplotlib.figure.Figure`` (Agg canvas) rather than pyplot, so
no global backend or state is touched: reports can be written from any process, with or
without a display. Legends sit outside the axes (constrained layout makes room), so they
never cover data; log axes are used only over more than a decade, with unlabelled minor
ticks, so tick labels never overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from simferry.analysis.fits import (
    MAX_EXTRAPOLATION,
    sim_io_points,
    size_fit,
    slope_known,
    train_io_points,
)
from simferry.analysis.model import Group, Run, inputs_gib, series, task_io

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# matplotlib is imported inside the functions that draw: importing it takes about half a
# second, and every command that prints a table imports this package, while only those
# that write a report directory draw.

SEGMENTS = [
    ("startup_s", "start-up", "#bbbbbb"),
    ("sim_compute_s", "simulation compute", "#9ecae1"),
    ("sim_io_s", "simulation IO", "#08519c"),
    ("train_compute_s", "training compute", "#fdae6b"),
    ("train_io_s", "training IO", "#a63603"),
]
#: At most this many runs in the timeline figure (one per implementation).
MAX_TIMELINES = 6


def _figure(
    width: float, height: float, rows: int = 1, cols: int = 1, sharex: bool = False
) -> tuple[Figure, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: see the note at the top
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=sharex)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _legend_below(fig: Figure, ax: Any, ncols: int = 3) -> None:
    """One legend for the figure, under the axes, where it cannot cover a point."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=7)


def _scale(ax: Any, axis: str, values: Sequence[float]) -> None:
    """Log scale only when the values span more than a decade; minor ticks unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # heavy

    pos = [v for v in values if v > 0 and math.isfinite(v)]
    which = ax.xaxis if axis == "x" else ax.yaxis
    if not pos or max(pos) / min(pos) <= 10:
        which.set_major_locator(MaxNLocator(nbins=5))
        return
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    # A short span needs 1-2-5 or 1-3 steps to show labels at all; a long one would crowd.
    span = max(pos) / min(pos)
    subs = (1.0, 2.0, 5.0) if span < 30 else (1.0, 3.0) if span < 300 else (1.0,)
    which.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    which.set_minor_formatter(NullFormatter())


def _label(g: Group, name: str) -> str:
    return f"{name}\n{g.size()}, {inputs_gib(g.first):.3g} GB"


def colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps  # heavy: see the note at the top

    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _parts(g: Group) -> dict[str, float]:
    vals = {k: g.median(k) for k in ("startup_s", "sim_io_s", "train_io_s")}
    vals["sim_compute_s"] = max(0.0, g.median("sim_run_s") - vals["sim_io_s"])
    vals["train_compute_s"] = max(0.0, g.median("train_run_s") - vals["train_io_s"])
    return {k: 0.0 if math.isnan(v) else v for k, v in vals.items()}


def runtime_breakdown(labelled: list[tuple[str, Group]], path: Path) -> Path:
    """Stacked bars: where each implementation's time went, at each data size."""
    fig, axes = _figure(9, 1.2 + 0.45 * len(labelled))
    ax = axes[0][0]
    y = np.arange(len(labelled))
    left = np.zeros(len(labelled))
    parts = [_parts(g) for _, g in labelled]
    for key, name, color in SEGMENTS:
        width = np.array([p[key] for p in parts])
        ax.barh(y, width, left=left, color=color, label=name, height=0.7)
        left += width
    ax.set_yticks(y, [_label(g, name) for name, g in labelled], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (medians over repeats; IO = mean per task)")
    ax.set_title("Run time split into start-up, compute and IO")
    _legend_below(fig, ax, ncols=5)
    return _save(fig, path)


def bandwidth(by_series: dict[str, list[Group]], path: Path) -> Path:
    """IO bandwidth for simulation writes and trainer reads: bars at one size, else lines."""
    fig, axes = _figure(10, 4.2, 1, 2)
    palette = colors(list(by_series))
    sizes = {inputs_gib(g.first) for gs in by_series.values() for g in gs}
    for ax, key, title in (
        (axes[0][0], "sim_bw_gbs", "simulations writing"),
        (axes[0][1], "train_bw_gbs", "trainers reading"),
    ):
        values: list[float] = []
        for i, (name, groups) in enumerate(by_series.items()):
            x = [inputs_gib(g.first) for g in groups]
            med = np.array([g.median(key) for g in groups])
            lo = np.array([g.spread(key)[0] for g in groups])
            hi = np.array([g.spread(key)[1] for g in groups])
            err = [med - lo, hi - med]
            if len(sizes) == 1:
                ax.bar(i, med, yerr=err, capsize=3, color=palette[name], label=name)
            else:
                ax.errorbar(
                    x, med, yerr=err, marker="o", capsize=3, color=palette[name], label=name
                )
                values += x
        if len(sizes) == 1:
            ax.set_xticks(range(len(by_series)), [""] * len(by_series))
            ax.set_xlabel(f"at {next(iter(sizes)):.3g} GB of training data (colours: legend)")
        else:
            _scale(ax, "x", values)
            ax.set_xlabel("training data size (GB, the homework's column)")
        ax.set_title(f"IO bandwidth, {title}")
        ax.set_ylabel("GB/s (10⁹ bytes / IO time per task)")
        ax.grid(alpha=0.3, axis="y")
    _legend_below(fig, axes[0][0])
    return _save(fig, path)


def io_distribution(labelled: list[tuple[str, Group]], path: Path) -> Path:
    """Per-task IO time of every simulation and trainer, as box plots."""
    fig, axes = _figure(10, 1.2 + 0.4 * len(labelled), 1, 2)
    names = [_label(g, name) for name, g in labelled]
    for ax, kind, title in (
        (axes[0][0], "sim", "simulation tasks"),
        (axes[0][1], "train", "trainer tasks"),
    ):
        data = [
            [task_io(rec) for r in g.runs for rec in r.records if rec.get("kind") == kind]
            or [math.nan]
            for _, g in labelled
        ]
        ax.boxplot(data, orientation="horizontal", tick_labels=names, showmeans=True)
        _scale(ax, "x", [v for d in data for v in d])
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("IO time per task (s)")
        ax.set_title(f"IO time distribution, {title}")
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def timeline(runs: list[tuple[str, Run]], path: Path) -> Path:
    """Gantt chart of each task: waiting, running (with its IO share), result hand-off."""
    height = 1.2 + sum(1.0 + 0.22 * len(r.records) for _, r in runs)
    fig, axes = _figure(10, height, len(runs), sharex=True)
    for ax, (name, run) in zip([a[0] for a in axes], runs, strict=True):
        recs = sorted(run.records, key=lambda r: (r.get("kind") != "sim", r.get("index", 0)))
        t0 = min((r.get("submitted") or r["start"]) for r in recs)
        for row, rec in enumerate(recs):
            sub = (rec.get("submitted") or rec["start"]) - t0
            start, end = rec["start"] - t0, rec["end"] - t0
            got = (rec.get("received") or rec["end"]) - t0
            color = "#3182bd" if rec.get("kind") == "sim" else "#e6550d"
            ax.barh(row, start - sub, left=sub, color="#dddddd", height=0.8)
            ax.barh(row, end - start, left=start, color=color, height=0.8)
            io = task_io(rec)
            ax.barh(row, min(io, max(end - start, 0)), left=start, color="black", height=0.25)
            ax.barh(row, got - end, left=end, color="#756bb1", height=0.8)
        ax.set_yticks(
            range(len(recs)), [f"{r.get('kind')} {r.get('index')}" for r in recs], fontsize=6
        )
        ax.invert_yaxis()
        ax.set_title(f"{name}: {run.m['num_sims']} sims x {run.m['grid_size']}²", fontsize=9)
    axes[-1][0].set_xlabel("seconds since the first task was submitted")
    from matplotlib.patches import Patch  # heavy: see the note at the top

    handles = [
        Patch(color="#dddddd", label="submitted, not started"),
        Patch(color="#3182bd", label="simulation running"),
        Patch(color="#e6550d", label="trainer running"),
        Patch(color="black", label="time in IO (summed, not its position)"),
        Patch(color="#756bb1", label="result hand-off to main process"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=3, fontsize=7)
    return _save(fig, path)


def io_fit(by_series: dict[str, list[Group]], path: Path) -> Path:
    """IO time against data size; a line only from 3 or more sizes, dashed up to 10x."""
    fig, axes = _figure(10, 4.6, 1, 2)
    palette = colors(list(by_series))
    for ax, points, title, xlabel in (
        (axes[0][0], train_io_points, "trainer IO vs training data size", "training data"),
        (axes[0][1], sim_io_points, "simulation IO vs data written", "written per simulation"),
    ):
        xs_all: list[float] = []
        ys_all: list[float] = []
        for name, groups in by_series.items():
            xs, ys = points(groups)
            if not xs:
                continue
            xs_all += xs
            ys_all += ys
            ax.scatter(xs, ys, s=12, color=palette[name], label=name)
            fit = size_fit(xs, ys)
            if fit is None:
                continue
            grid = np.linspace(fit.xmin, fit.xmax, 30)
            ax.plot(grid, [fit.at(x) for x in grid], color=palette[name])
            if not slope_known(fit):
                continue  # no trend to extrapolate
            ext = np.linspace(fit.xmax, MAX_EXTRAPOLATION * fit.xmax, 30)
            ax.plot(ext, [fit.at(x) for x in ext], color=palette[name], linestyle="--")
            xs_all.append(MAX_EXTRAPOLATION * fit.xmax)
        _scale(ax, "x", xs_all)
        _scale(ax, "y", ys_all)
        ax.set_title(title)
        ax.set_xlabel(xlabel + " (GB = 1024³ bytes)")
        ax.set_ylabel("IO time (s)")
        ax.grid(alpha=0.3)
    _legend_below(fig, axes[0][0])
    fig.suptitle(
        "points: runs (left), tasks (right); lines: least squares, only from 3 or more sizes; "
        "dashed: extrapolation, at most 10x the largest size",
        fontsize=7,
    )
    return _save(fig, path)


def write_plots(groups: Sequence[Group], out: Path) -> list[Path]:
    """Write every figure the data supports into ``out``; return their paths."""
    if not groups:
        return []
    out.mkdir(parents=True, exist_ok=True)
    by_series = series(groups)
    labelled = [(name, g) for name, gs in by_series.items() for g in gs]
    labelled.sort(key=lambda item: (inputs_gib(item[1].first), item[0]))
    # The timeline shows the largest data size each implementation ran at.
    largest = [(name, max(gs, key=lambda g: g.first["total_gb"])) for name, gs in by_series.items()]
    samples = [(name, g.runs[0]) for name, g in largest if g.runs[0].records][:MAX_TIMELINES]
    paths = [
        runtime_breakdown(labelled, out / "runtime_breakdown.png"),
        bandwidth(by_series, out / "bandwidth.png"),
        io_distribution(labelled, out / "io_distribution.png"),
        io_fit(by_series, out / "io_fit.png"),
    ]
    if samples:
        paths.append(timeline(samples, out / "timeline.png"))
    return paths
