"""The reference's homework table and more, built from run directories only.

Every figure is recomputed from ``records.jsonl`` (one line per task), so a number in
``table.md`` can be traced to the tasks that produced it; ``summary.json`` supplies only
what no task sees (start-up time, configuration, status). Repeats of one configuration
are grouped and shown as medians, with their spread.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simferry.records import read_records, read_summary
from simferry.workload.simulation import STEPS

GB = 1e9

TABLE_HEADER = [
    "Implementation",
    "Number of Nodes",
    "Training Data Size (GB, inputs)",
    "Inputs + Targets (GiB)",
    "Simulation Run / IO Time (sec)",
    "Training Run / IO Time (sec)",
]
#: The columns ``table.md`` adds to the reference's.
EXTRA_HEADER = ["Write / Read Bandwidth (GB/s)", "Start-up (sec)", "Runs"]

CSV_FIELDS = [
    "implementation",
    "launcher",
    "transport",
    "mode",
    "nodes",
    "num_sims",
    "grid_size",
    "trainers",
    "step_seconds",
    "inputs_gb",
    "total_gb",
    "total_gib",
    "sim_run_s",
    "sim_io_s",
    "train_run_s",
    "train_io_s",
    "sim_bw_gbs",
    "train_bw_gbs",
    "startup_s",
    "trainer_ready_s",
    "wall_s",
    "io_share",
    "sim_serialize_s",
    "sim_transfer_s",
    "sim_deserialize_s",
    "train_serialize_s",
    "train_transfer_s",
    "train_deserialize_s",
    "sim_bytes",
    "train_bytes",
    "samples_written",
    "samples_read",
    "peak_rss_bytes",
    "time_to_first_step_s",
    "overlap_fraction",
    "trainer_idle_s",
    "status",
    "error",
    "run_dir",
]

#: What serialize / transfer / deserialize mean for each transport (shown under the table).
IO_NOTES = {
    "futures": (
        "pass-by-value, no store. *serialize*: pickling a task's arrays inside the worker "
        "(simulation results, trainer weights); *transfer*: the hand-offs, measured with "
        "timestamps (simulation end to its result usable in the main process, trainer "
        "submission to its start with the data as arguments, trainer end to result "
        "received), plus landing each sample in the float32 training buffer; *deserialize*: "
        "unpickling the simulations' results inside each trainer."
    ),
    "filesystem": (
        "one .npy file per array. Arrays are written raw (header + bytes), so serialization "
        "and the write are one step, counted as *transfer*: write to a temporary file and "
        "rename (simulations), memory-map, page in and convert into the float32 training "
        "buffer (trainers), weights save. *serialize* and *deserialize* are 0."
    ),
    "shm": (
        "the file-system path on tmpfs (/dev/shm): the same split, with shared-memory pages "
        "instead of a disk."
    ),
    "redis": (
        "raw array bytes in chunks plus a small JSON header, nothing pickled, so all of it "
        "is *transfer*: one MULTI/EXEC pipeline per sample written (simulations), two round "
        "trips per sample read plus the float32 conversion (trainers), weights save."
    ),
    "proxystore": (
        "pass-by-proxy: each array goes into a ProxyStore Store (np.save bytes), its proxy "
        "rides on the task result. *transfer*: putting arrays into the store (simulations), "
        "resolving proxies -- fetch and np.load -- plus the float32 conversion (trainers), "
        "and the hand-offs of the proxies through the launcher, timed as for futures; "
        "*serialize*/*deserialize*: pickling the proxies, a few hundred bytes each."
    ),
    "adios2": (
        "one ADIOS2 stream per simulation, one step per sample, all *transfer*. BP5: "
        "writing steps to the file (simulations), reading them in step order plus the "
        "float32 conversion (trainers). SST: in phased runs a simulation only hands its "
        "steps to its staging writer process (a pipe), and the transfer shows in the "
        "trainers' reads, which also wait for the slowest reader of each stream; in "
        "streaming runs a simulation's puts include waiting for every trainer to join. "
        "Weights are a small BP5 file either way."
    ),
}
GENERIC_NOTE = "time inside the transport's calls, split as the transport reports it."


def load_summaries(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Summaries of run directories, with ``run_dir`` pointing where they are now."""
    out = []
    for d in run_dirs:
        if (d / "summary.json").exists():
            s = read_summary(d)
            s["run_dir"] = str(d)
            out.append(s)
    return out


# --- per-run metrics from records -------------------------------------------------------


def task_io(rec: dict[str, Any]) -> float:
    return float(rec.get("serialize_s", 0) + rec.get("transfer_s", 0) + rec.get("deserialize_s", 0))


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else math.nan


def phase_span(recs: Sequence[dict[str, Any]], fallback: Any) -> float:
    """First task submitted to last result received, as the main process saw them."""
    if recs and all(r.get("submitted", 0) > 0 and r.get("received", 0) > 0 for r in recs):
        return max(r["received"] for r in recs) - min(r["submitted"] for r in recs)
    return float(fallback) if fallback is not None else math.nan


def run_metrics(summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One CSV row: the summary's configuration plus figures aggregated from the records."""
    m: dict[str, Any] = {k: summary.get(k) for k in CSV_FIELDS}
    m["implementation"] = summary.get("implementation", "?")
    m["status"] = summary.get("status", "failed")
    m["trainers"] = summary.get("trainers")
    if summary.get("startup_s") is not None:
        m["startup_s"] = summary["startup_s"] + summary.get("trainer_ready_s", 0.0)
    for kind, prefix in (("sim", "sim"), ("train", "train")):
        recs = [r for r in records if r.get("kind") == kind]
        io = [task_io(r) for r in recs]
        nbytes = sum(int(r.get("bytes", 0)) for r in recs)
        m[f"{prefix}_run_s"] = phase_span(recs, summary.get(f"{prefix}_run_s"))
        m[f"{prefix}_io_s"] = _mean(io) if recs else summary.get(f"{prefix}_io_s", math.nan)
        m[f"{prefix}_bytes"] = nbytes
        m[f"{prefix}_bw_gbs"] = nbytes / sum(io) / GB if recs and sum(io) > 0 else math.nan
        for part in ("serialize", "transfer", "deserialize"):
            m[f"{prefix}_{part}_s"] = _mean([float(r.get(f"{part}_s", 0)) for r in recs])
    m["samples_written"] = sum(int(r.get("samples", 0)) for r in records if r.get("kind") == "sim")
    m["samples_read"] = sum(int(r.get("samples", 0)) for r in records if r.get("kind") == "train")
    m["peak_rss_bytes"] = max((int(r.get("peak_rss", 0)) for r in records), default=0)
    run = m["sim_run_s"] + m["train_run_s"]
    m["io_share"] = (m["sim_io_s"] + m["train_io_s"]) / run if run > 0 else math.nan
    return m


@dataclass
class Run:
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    m: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.m["status"] == "ok"


def load_run(summary: dict[str, Any]) -> Run:
    path = summary.get("run_dir")
    records = read_records(Path(path)) if path else []
    return Run(summary, records, run_metrics(summary, records))


# --- repeats ----------------------------------------------------------------------------

GROUP_KEY = ("implementation", "mode", "nodes", "num_sims", "grid_size", "trainers")


@dataclass
class Group:
    """Repeats of one configuration (same implementation, size, nodes, trainers, mode)."""

    runs: list[Run] = field(default_factory=list)

    @property
    def first(self) -> dict[str, Any]:
        return self.runs[0].m

    @property
    def label(self) -> str:
        """The implementation, marked when it ran in streaming mode (phased is the reference)."""
        streaming = self.first.get("mode") == "streaming"
        return str(self.first["implementation"]) + (" (streaming)" if streaming else "")

    @property
    def n(self) -> int:
        return len(self.runs)

    def values(self, name: str) -> list[float]:
        vals = [r.m.get(name) for r in self.runs]
        return [float(v) for v in vals if v is not None and not math.isnan(float(v))]

    def median(self, name: str) -> float:
        vals = self.values(name)
        return float(statistics.median(vals)) if vals else math.nan

    def spread(self, name: str) -> tuple[float, float, float]:
        """(min, max, coefficient of variation) across repeats; CV is nan for one run."""
        vals = self.values(name)
        if not vals:
            return math.nan, math.nan, math.nan
        mean = statistics.fmean(vals)
        cv = statistics.stdev(vals) / mean if len(vals) > 1 and mean > 0 else math.nan
        return min(vals), max(vals), cv

    def size(self) -> str:
        f = self.first
        return f"{f['num_sims']} sims x {f['grid_size']}²"


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Successful runs grouped by configuration, ordered by nodes, data size, first seen."""
    groups: dict[tuple[Any, ...], Group] = {}
    for r in runs:
        if r.ok:
            groups.setdefault(tuple(r.m.get(k) for k in GROUP_KEY), Group()).runs.append(r)
    order = {key: i for i, key in enumerate(groups)}
    return sorted(
        groups.values(),
        key=lambda g: (
            g.first["nodes"] or 0,
            g.first["total_gb"] or 0,
            order[tuple(g.first.get(k) for k in GROUP_KEY)],
        ),
    )


# --- table ------------------------------------------------------------------------------

PARTS = ("serialize", "transfer", "deserialize")


def _num(x: Any, fmt: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _pair(run: Any, io: Any) -> str:
    if run is None:
        return "— / —"
    return f"{_num(run, '.2f')} / {_num(io, '.3f')}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def gb_cell(x: Any) -> str:
    """Sizes as the reference prints them (3 decimals), with digits for tiny test sizes."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.3f}" if x >= 0.001 or x == 0 else f"{x:.2g}"


def sizes(s: dict[str, Any]) -> tuple[Any, Any]:
    """(inputs GB, inputs + targets GiB) from a summary, or from its sims and grid size."""
    if s.get("inputs_gb") is None and s.get("num_sims") and s.get("grid_size"):
        inputs = int(s["num_sims"]) * STEPS * int(s["grid_size"]) ** 2 * 8
        return inputs / GB, 2 * inputs / 2**30
    return s.get("inputs_gb"), s.get("total_gib")


def failed_row(s: dict[str, Any], n_cols: int) -> list[str]:
    status = s.get("status", "failed")
    size = [gb_cell(x) for x in sizes(s)]
    cells = [_cell(s.get("implementation", "?")), str(s.get("nodes", "")), *size]
    cells.append(_cell(f"{status}: {s.get('error', '')}"))
    return cells + [""] * (n_cols - len(cells))


def table_rows(summaries: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The reference's columns, one row per summary (``simferry run`` prints this)."""
    rows = []
    for s in summaries:
        if s.get("status") != "ok":
            rows.append(failed_row(s, len(TABLE_HEADER)))
            continue
        rows.append(
            [
                s["implementation"],
                str(s["nodes"]),
                gb_cell(s["inputs_gb"]),
                gb_cell(s["total_gib"]),
                _pair(s.get("sim_run_s"), s.get("sim_io_s")),
                _pair(s.get("train_run_s"), s.get("train_io_s")),
            ]
        )
    return rows


def group_row(g: Group) -> list[str]:
    f = g.first
    bw = f"{_num(g.median('sim_bw_gbs'), '.3g')} / {_num(g.median('train_bw_gbs'), '.3g')}"
    return [
        g.label,
        str(f["nodes"]),
        gb_cell(f["inputs_gb"]),
        gb_cell(f["total_gib"]),
        _pair(g.median("sim_run_s"), g.median("sim_io_s")),
        _pair(g.median("train_run_s"), g.median("train_io_s")),
        bw,
        _num(g.median("startup_s"), ".2f"),
        str(g.n),
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _range(g: Group, name: str, fmt: str) -> str:
    lo, hi, _ = g.spread(name)
    return f"{_num(lo, fmt)}-{_num(hi, fmt)}"


def _cv(g: Group, name: str) -> str:
    return _num(g.spread(name)[2] * 100, ".0f") + "%"


def spread_table(groups: Sequence[Group]) -> str:
    header = [
        "Implementation",
        "Nodes",
        "Data",
        "Runs",
        "Sim IO min-max (s)",
        "Train IO min-max (s)",
        "Sim + train run min-max (s)",
        "CV of IO (sim / train)",
    ]
    rows = []
    for g in groups:
        if g.n < 2:
            continue
        totals = [r.m["sim_run_s"] + r.m["train_run_s"] for r in g.runs]
        rows.append(
            [
                g.label,
                str(g.first["nodes"]),
                g.size(),
                str(g.n),
                _range(g, "sim_io_s", ".3f"),
                _range(g, "train_io_s", ".3f"),
                f"{min(totals):.2f}-{max(totals):.2f}",
                f"{_cv(g, 'sim_io_s')} / {_cv(g, 'train_io_s')}",
            ]
        )
    return markdown_table(header, rows) if rows else ""


STREAMING_NOTE = (
    "\n*Wall*: the whole run, start-up included. *First step*: first simulation submitted "
    "to a trainer's first optimizer step. *Overlap*: share of optimizer steps finished "
    "before the last simulation ended. *Idle*: mean time a trainer waited for data.\n"
)


def streaming_table(groups: Sequence[Group]) -> str:
    """Streaming runs beside the phased run of the same configuration, when there is one."""

    def key(g: Group) -> tuple[Any, ...]:
        return tuple(g.first.get(k) for k in GROUP_KEY if k != "mode")

    phased = {key(g): g for g in groups if g.first.get("mode") != "streaming"}
    header = ["Implementation", "Data", "Wall (s)", "Phased wall (s)", "Streaming / phased"]
    header += ["First step (s)", "Overlap", "Trainer idle (s)"]
    rows = []
    for g in groups:
        if g.first.get("mode") != "streaming":
            continue
        wall = g.median("wall_s")
        base = phased[key(g)].median("wall_s") if key(g) in phased else math.nan
        rows.append(
            [
                g.label,
                g.size(),
                _num(wall, ".2f"),
                _num(base, ".2f"),
                _num(wall / base, ".2f"),
                _num(g.median("time_to_first_step_s"), ".2f"),
                _num(g.median("overlap_fraction") * 100, ".0f") + "%",
                _num(g.median("trainer_idle_s"), ".2f"),
            ]
        )
    return markdown_table(header, rows) if rows else ""


def breakdown_table(groups: Sequence[Group]) -> str:
    header = [
        "Implementation",
        "Nodes",
        "Data",
        "Simulation serialize / transfer / deserialize (s)",
        "Training serialize / transfer / deserialize (s)",
    ]
    rows = []
    for g in groups:
        parts = [
            " / ".join(_num(g.median(f"{p}_{part}_s"), ".4f") for part in PARTS)
            for p in ("sim", "train")
        ]
        rows.append([g.label, str(g.first["nodes"]), g.size(), *parts])
    return markdown_table(header, rows)


def io_notes(transports: Sequence[str], displays: dict[str, str]) -> str:
    lines = []
    for t in dict.fromkeys(transports):
        lines.append(f"- **{displays.get(t, t)}** ({t}): {IO_NOTES.get(t, GENERIC_NOTE)}")
    return "\n".join(lines) + "\n"


def render_table(groups: Sequence[Group], not_ok: Sequence[dict[str, Any]]) -> str:
    """``table.md``: the reference's table (medians of repeats) and how to read it."""
    header = TABLE_HEADER + EXTRA_HEADER
    rows = [group_row(g) for g in groups] + [failed_row(s, len(header)) for s in not_ok]
    parts = ["# simferry results\n", markdown_table(header, rows)]
    parts.append(
        "\nMedians over the runs counted in *Runs*. *Run time*: first task submitted to the "
        "last result received. *IO time*: mean per task of the time inside transport calls "
        "(serialize + transfer + deserialize); training IO covers reading every sample into "
        "the float32 training buffer and saving the weights. *Bandwidth*: bytes moved by a "
        "phase's tasks over their summed IO time (what one task stream achieves, not the "
        "aggregate). *Start-up*: starting the transport and the launcher, plus any wait for trainer "
        "workers still starting when the simulations ended (the local launcher imports "
        "torch in them meanwhile).\n"
    )
    spread = spread_table(groups)
    if spread:
        parts += ["\n## Spread across repeats\n\n", spread]
    streaming = streaming_table(groups)
    if streaming:
        parts += ["\n## Streaming mode (online training)\n\n", streaming, STREAMING_NOTE]
    if groups:
        parts += ["\n## IO breakdown (mean per task, median over repeats)\n\n"]
        parts.append(breakdown_table(groups))
        transports = [str(g.first["transport"]) for g in groups]
        displays = {str(g.first["transport"]): _display(g.label) for g in groups}
        parts += ["\n## How IO is measured, per transport\n\n", io_notes(transports, displays)]
    return "".join(parts)


def _display(implementation: str) -> str:
    return implementation.split(" + ", 1)[-1]


# --- outputs ----------------------------------------------------------------------------


def write_csv(runs: Sequence[Run], not_ok: Sequence[dict[str, Any]], path: Path) -> None:
    """One row per run (repeats not merged), failed and skipped ones with their reason."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in runs:
            if r.ok:
                writer.writerow({k: _csv_value(v) for k, v in r.m.items()})
        for s in not_ok:
            writer.writerow({k: _csv_value(s.get(k)) for k in CSV_FIELDS})


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def load_runs(summaries: Sequence[dict[str, Any]]) -> tuple[list[Run], list[dict[str, Any]]]:
    """Every summary's run with its records, and the summaries of runs that did not succeed."""
    runs = [load_run(s) for s in summaries]
    return runs, [s for s, r in zip(summaries, runs, strict=True) if not r.ok]


def write_table(summaries: Sequence[dict[str, Any]], out_dir: Path) -> str:
    """Write ``table.md`` and ``results.csv`` into ``out_dir``; return the markdown."""
    runs, not_ok = load_runs(summaries)
    return _write_table(runs, not_ok, out_dir)


def _write_table(runs: Sequence[Run], not_ok: Sequence[dict[str, Any]], out_dir: Path) -> str:
    text = render_table(group_runs(runs), not_ok)
    (out_dir / "table.md").write_text(text, encoding="utf-8")
    write_csv(runs, not_ok, out_dir / "results.csv")
    return text


def write_report(
    summaries: Sequence[dict[str, Any]],
    out_dir: Path,
    note: Callable[[str], None] | None = None,
) -> str:
    """``table.md``, ``results.csv``, ``plots/*.png`` and ``observations.md``; return the table.

    ``summaries`` may include placeholders ``{"implementation", "status", "error"}`` for
    runs that were skipped or never started: they appear with their reason.
    """
    from simferry.observations import write_observations
    from simferry.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    runs, not_ok = load_runs(summaries)
    text = _write_table(runs, not_ok, out_dir)
    groups = group_runs(runs)
    for path in write_plots(groups, out_dir / "plots"):
        if note:
            note(f"plot: {path}")
    write_observations(groups, not_ok, out_dir / "observations.md")
    return text


def format_size(gb: float) -> str:
    """Data sizes in the observations: GB with enough digits to tell small ones apart."""
    return f"{gb:.3g} GB"


# --- series across data sizes and their fits --------------------------------------------


def series(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups of one implementation across data sizes, keyed by a label that tells them apart.

    Node and trainer counts join the label only when the report mixes them; the mode is
    already in every label.
    """
    varying = [k for k in ("nodes", "trainers") if len({g.first.get(k) for g in groups}) > 1]
    out: dict[str, list[Group]] = {}
    for g in groups:
        extra = ", ".join(f"{g.first.get(k)} {k}" for k in varying)
        out.setdefault(g.label + (f" ({extra})" if extra else ""), []).append(g)
    return out


@dataclass(frozen=True)
class Fit:
    """Least-squares line ``y = intercept + slope * x`` over ``n`` points in [xmin, xmax]."""

    slope: float
    intercept: float
    r2: float
    n: int
    xmin: float
    xmax: float

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """Fit a line; ``None`` when fewer than two distinct x values make it meaningless."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return Fit(slope, intercept, r2, len(xs), min(xs), max(xs))


def train_io_points(groups: Sequence[Group]) -> tuple[list[float], list[float]]:
    """(dataset GB each trainer reads, trainer IO s): one point per run, repeats included."""
    xs, ys = [], []
    for g in groups:
        for r in g.runs:
            if not math.isnan(r.m["train_io_s"]):
                xs.append(float(r.m["total_gb"]))
                ys.append(float(r.m["train_io_s"]))
    return xs, ys


def sim_io_points(groups: Sequence[Group]) -> tuple[list[float], list[float]]:
    """(GB one simulation writes, its IO s): one point per simulation task."""
    xs, ys = [], []
    for g in groups:
        for r in g.runs:
            for rec in r.records:
                if rec.get("kind") == "sim":
                    xs.append(int(rec.get("bytes", 0)) / GB)
                    ys.append(task_io(rec))
    return xs, ys
