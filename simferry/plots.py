"""The report's figures, as PNG files, drawn from grouped run records.

Figures are built on ``matplotlib.figure.Figure`` (Agg canvas) rather than pyplot, so
no global backend or state is touched: reports can be written from any process, with or
without a display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simferry.report import (
    Group,
    Run,
    linear_fit,
    series,
    sim_io_points,
    train_io_points,
)

SEGMENTS = [
    ("startup_s", "start-up", "#bbbbbb"),
    ("sim_compute_s", "simulation compute", "#9ecae1"),
    ("sim_io_s", "simulation IO", "#08519c"),
    ("train_compute_s", "training compute", "#fdae6b"),
    ("train_io_s", "training IO", "#a63603"),
]
#: At most this many runs in the timeline figure (one per implementation).
MAX_TIMELINES = 6


def _figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _label(g: Group, name: str) -> str:
    return f"{name}\n{g.size()}, {g.first['total_gib']:.3g} GiB"


def colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

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
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def bandwidth(by_series: dict[str, list[Group]], path: Path) -> Path:
    """IO bandwidth against data size, for simulation writes and trainer reads."""
    fig, axes = _figure(10, 4, 1, 2)
    palette = colors(list(by_series))
    xs_all: list[float] = []
    for ax, key, title in (
        (axes[0][0], "sim_bw_gbs", "simulations writing"),
        (axes[0][1], "train_bw_gbs", "trainers reading"),
    ):
        for name, groups in by_series.items():
            x = [g.first["total_gb"] for g in groups]
            med = np.array([g.median(key) for g in groups])
            lo = np.array([g.spread(key)[0] for g in groups])
            hi = np.array([g.spread(key)[1] for g in groups])
            ax.errorbar(
                x, med, yerr=[med - lo, hi - med], marker="o", capsize=3,
                color=palette[name], label=name,
            )  # fmt: skip
            xs_all += x
        ax.set_title(f"IO bandwidth, {title}")
        ax.set_xlabel("data size, inputs + targets (GB)")
        ax.set_ylabel("GB/s (bytes / IO time per task)")
        ax.grid(alpha=0.3)
    if xs_all and max(xs_all) / max(min(xs_all), 1e-12) > 5:
        from matplotlib.ticker import NullFormatter

        for ax in axes[0]:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
    axes[0][0].legend(fontsize=7)
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
            [
                float(rec.get("serialize_s", 0) + rec.get("transfer_s", 0))
                + float(rec.get("deserialize_s", 0))
                for r in g.runs
                for rec in r.records
                if rec.get("kind") == kind
            ]
            or [math.nan]
            for _, g in labelled
        ]
        ax.boxplot(data, orientation="horizontal", tick_labels=names, showmeans=True)
        flat = [v for d in data for v in d if v > 0]
        if flat and max(flat) / min(flat) > 20:
            ax.set_xscale("log")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("IO time per task (s)")
        ax.set_title(f"IO time distribution, {title}")
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def timeline(runs: list[tuple[str, Run]], path: Path) -> Path:
    """Gantt chart of each task: waiting, running (with its IO share), result hand-off."""
    fig, axes = _figure(10, 0.8 + sum(1.0 + 0.22 * len(r.records) for _, r in runs), len(runs))
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
            io = float(rec.get("serialize_s", 0) + rec.get("transfer_s", 0))
            io += float(rec.get("deserialize_s", 0))
            ax.barh(row, min(io, max(end - start, 0)), left=start, color="black", height=0.25)
            ax.barh(row, got - end, left=end, color="#756bb1", height=0.8)
        ax.set_yticks(
            range(len(recs)), [f"{r.get('kind')} {r.get('index')}" for r in recs], fontsize=6
        )
        ax.invert_yaxis()
        ax.set_title(f"{name}: {run.m['num_sims']} sims x {run.m['grid_size']}²", fontsize=9)
        ax.set_xlabel("seconds since the first task was submitted")
    from matplotlib.patches import Patch

    handles = [
        Patch(color="#dddddd", label="submitted, not started"),
        Patch(color="#3182bd", label="simulation running"),
        Patch(color="#e6550d", label="trainer running"),
        Patch(color="black", label="time in IO (summed, not its position)"),
        Patch(color="#756bb1", label="result hand-off to main process"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path, format="png")
    return path


def io_fit(by_series: dict[str, list[Group]], path: Path) -> Path:
    """IO time against data size with each transport's least-squares line, extrapolated."""
    fig, axes = _figure(10, 4.2, 1, 2)
    palette = colors(list(by_series))
    for ax, points, title, xlabel in (
        (axes[0][0], train_io_points, "trainer IO vs dataset size", "dataset read (GB)"),
        (axes[0][1], sim_io_points, "simulation IO vs data written", "GB written per simulation"),
    ):
        for name, groups in by_series.items():
            xs, ys = points(groups)
            if not xs:
                continue
            ax.scatter(xs, ys, s=12, color=palette[name], label=name)
            fit = linear_fit(xs, ys)
            if fit is None:
                continue
            grid = np.geomspace(max(fit.xmin, 1e-12), fit.xmax, 30)
            line = np.array([fit.at(x) for x in grid])
            ax.plot(grid[line > 0], line[line > 0], color=palette[name])
            if fit.slope <= 0:
                continue  # not growing with size: nothing to extrapolate
            ext = np.geomspace(fit.xmax, 10 * fit.xmax, 30)
            ax.plot(
                ext, [fit.at(x) for x in ext], color=palette[name], linestyle="--",
                label=f"  fit, R²={fit.r2:.2f}; dashed = extrapolation",
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("IO time (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return _save(fig, path)


def write_plots(groups: Sequence[Group], out: Path) -> list[Path]:
    """Write every figure the data supports into ``out``; return their paths."""
    if not groups:
        return []
    out.mkdir(parents=True, exist_ok=True)
    by_series = series(groups)
    labelled = [(name, g) for name, gs in by_series.items() for g in gs]
    labelled.sort(key=lambda item: (item[1].first["total_gb"], item[0]))
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
