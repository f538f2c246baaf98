"""The reference's homework table and more, built from run directories only.

Every figure is recomputed from ``records.jsonl`` (one line per task), so a number in
``table.md`` can be traced to the tasks that produced it; ``summary.json`` supplies only
what no task sees (start-up time, status) and ``config.toml`` every parameter. Runs are
grouped only when every parameter and the set of hosts they ran on are the same, so a
median never mixes configurations; repeats are shown as medians, with their spread.
"""

from __future__ import annotations

import csv
import math
import statistics
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simferry.baselines import Baseline
from simferry.records import read_records, read_summary
from simferry.workload.simulation import STEPS

GB = 1e9

#: ``table.md``: the wide table, one quantity and one unit per column.
TABLE_HEADER = [
    "Implementation",
    "Hosts",
    "Worker pools",
    "Inputs (GiB)",
    "Inputs + targets (GiB)",
    "Simulation run (s)",
    "Simulation IO (s)",
    "Training run (s)",
    "Training IO (s)",
    "Write bandwidth (GB/s)",
    "Read bandwidth (GB/s)",
    "Start-up + trainer wait (s)",
    "Runs",
]

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
    "inputs_gib",
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
    "startup_total_s",
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
    "hosts",
    "seed",
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
    """One CSV row: the summary's configuration plus figures aggregated from the records.

    A name means the same quantity here as in ``summary.json``; what a report derives
    gets a name of its own (``startup_total_s``: start-up plus the wait for trainers).
    """
    m: dict[str, Any] = {k: summary.get(k) for k in CSV_FIELDS}
    m["implementation"] = summary.get("implementation", "?")
    m["status"] = summary.get("status", "failed")
    m["trainers"] = summary.get("trainers")
    if summary.get("startup_s") is not None:
        m["startup_total_s"] = summary["startup_s"] + summary.get("trainer_ready_s", 0.0)
    m["hosts"] = ",".join(hosts_of(records)) or None
    m["inputs_gib"] = inputs_gib(summary)
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


def hosts_of(records: Sequence[dict[str, Any]]) -> list[str]:
    """The distinct hosts the tasks ran on, as the workers recorded them."""
    return sorted({str(r["host"]) for r in records if r.get("host")})


def node_cell(hosts: int, pools: Any) -> str:
    """ "Number of Nodes" as hosts really used; emulated worker pools are named as such.

    Two pools on one host are one node: the cell then reads "2 pools, 1 host". A run
    without records (hosts unknown) shows its pool count.
    """
    if not hosts:
        return "" if pools is None else str(pools)
    if pools is None or int(pools) <= hosts:  # more hosts: executors on nodes of their own
        return str(hosts)
    return f"{pools} pools, {hosts} host" + ("s" if hosts != 1 else "")


#: Summary fields that stand for parameters when a run directory has no ``config.toml``.
SUMMARY_PARAMS = ("launcher", "transport", "mode", "num_sims", "grid_size", "step_seconds")


def run_params(summary: dict[str, Any]) -> dict[str, Any]:
    """Every parameter that can change a run's numbers, flattened (``workload.seed``...).

    Read from the run's ``config.toml``; the trainer and pool counts the launcher resolved
    come from the summary (the config may say "default").
    """
    params: dict[str, Any] = {}
    path = Path(str(summary.get("run_dir", ""))) / "config.toml"
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        config = {}
    for section in ("workload", "launcher", "transport"):
        for k, v in dict(config.get(section, {})).items():
            params[f"{section}.{k}"] = v
    if not params:
        params = {k: summary.get(k) for k in SUMMARY_PARAMS}
    params.pop("launcher.display", None)
    for k in ("nodes", "trainers"):
        params[k] = summary.get(k)
    return params


@dataclass
class Run:
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    m: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.m["status"] == "ok"

    @property
    def key(self) -> tuple[Any, ...]:
        """What must match for two runs to be repeats: implementation, parameters, hosts."""
        params = tuple(sorted((k, repr(v)) for k, v in self.params.items()))
        return (self.m.get("implementation"), params, self.m.get("hosts"))


def load_run(summary: dict[str, Any]) -> Run:
    path = summary.get("run_dir")
    records = read_records(Path(path)) if path else []
    m = run_metrics(summary, records)
    params = run_params(summary)
    m["seed"] = params.get("workload.seed")
    return Run(summary, records, m, params)


# --- repeats ----------------------------------------------------------------------------

#: Parameters that tell data sizes apart: shown in their own columns, not in labels.
SIZE_PARAMS = {"workload.num_sims", "workload.grid_size", "num_sims", "grid_size"}


@dataclass
class Group:
    """Repeats of one configuration: the same parameters, on the same set of hosts."""

    runs: list[Run] = field(default_factory=list)
    #: The parameters (``name=value``) that set this group apart from others of its label.
    differs: list[str] = field(default_factory=list)

    @property
    def first(self) -> dict[str, Any]:
        return self.runs[0].m

    @property
    def label(self) -> str:
        """The implementation, marked when it ran in streaming mode (phased is the reference)."""
        streaming = self.first.get("mode") == "streaming"
        return str(self.first["implementation"]) + (" (streaming)" if streaming else "")

    @property
    def tag(self) -> str:
        """The label plus whatever parameter sets this group apart from its namesakes."""
        return self.label + (f" ({', '.join(self.differs)})" if self.differs else "")

    @property
    def params(self) -> dict[str, Any]:
        return self.runs[0].params

    @property
    def hosts(self) -> int:
        return len(self.first["hosts"].split(",")) if self.first.get("hosts") else 0

    @property
    def nodes(self) -> str:
        return node_cell(self.hosts, self.first.get("nodes"))

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
    """Successful runs grouped by configuration, ordered by nodes, data size, first seen.

    Runs of one implementation whose parameters differ form separate groups, and each
    group names the parameters (other than the data size) that differ.
    """
    groups: dict[tuple[Any, ...], Group] = {}
    for r in runs:
        if r.ok:
            groups.setdefault(r.key, Group()).runs.append(r)
    order = {key: i for i, key in enumerate(groups)}
    mark_differences(list(groups.values()))
    return sorted(
        groups.values(),
        key=lambda g: (g.first["nodes"] or 0, g.first["total_gb"] or 0, order[g.runs[0].key]),
    )


def differing(groups: Sequence[Group]) -> dict[str, list[Any]]:
    """Parameters (and the host set) whose values are not the same in every group given."""
    names = {k for g in groups for k in g.params} | {"hosts"}
    out = {}
    for name in sorted(names):
        values = [g.first.get("hosts") if name == "hosts" else g.params.get(name) for g in groups]
        if len({repr(v) for v in values}) > 1:
            out[name] = values
    return out


def mark_differences(groups: Sequence[Group]) -> None:
    """Set ``differs`` on groups sharing a label but not every non-size parameter."""
    by_label: dict[str, list[Group]] = {}
    for g in groups:
        by_label.setdefault(g.label, []).append(g)
    for same in by_label.values():
        diff = {k: v for k, v in differing(same).items() if k not in SIZE_PARAMS}
        for i, g in enumerate(same):
            shown = {k.split(".")[-1]: v[i] for k, v in reversed(diff.items())}
            g.differs = [f"{k}={v}" for k, v in sorted(shown.items())]


def differences_note(groups: Sequence[Group]) -> str:
    """One sentence per implementation whose rows differ in more than the data size."""
    lines = []
    seen: set[str] = set()
    for g in groups:
        if g.differs and g.label not in seen:
            seen.add(g.label)
            same = [x for x in groups if x.label == g.label]
            diff = {k: v for k, v in differing(same).items() if k not in SIZE_PARAMS}
            what = "; ".join(
                f"{k.split('.')[-1]} ({', '.join(dict.fromkeys(map(str, v)))})"
                for k, v in diff.items()
            )
            lines.append(
                f"- {g.label}: {len(same)} rows, as the runs differ in {what}; each row is "
                "the median of its own runs only."
            )
    return "\n".join(lines) + "\n" if lines else ""


# --- table ------------------------------------------------------------------------------

PARTS = ("serialize", "transfer", "deserialize")


def _num(x: Any, fmt: str) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


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
    """A run that did not finish: its size and why, in the columns after the size."""
    status = s.get("status", "failed")
    size = [gb_cell(inputs_gib(s)), gb_cell(sizes(s)[1])]
    cells = [_cell(s.get("implementation", "?")), "", str(s.get("nodes", "")), *size]
    cells.append(_cell(f"{status}: {s.get('error', '')}"))
    return cells + [""] * (n_cols - len(cells))


def group_row(g: Group) -> list[str]:
    """``table.md``'s row: medians over the group's runs, one quantity per column."""
    f = g.first
    med = {k: g.median(k) for k in ("sim_run_s", "sim_io_s", "train_run_s", "train_io_s")}
    return [
        _cell(g.tag),
        str(g.hosts or "—"),
        str(f["nodes"]),
        gb_cell(inputs_gib(f)),
        gb_cell(f["total_gib"]),
        _num(med["sim_run_s"], ".2f"),
        _num(med["sim_io_s"], ".3f"),
        _num(med["train_run_s"], ".2f"),
        _num(med["train_io_s"], ".3f"),
        _num(g.median("sim_bw_gbs"), ".3g"),
        _num(g.median("train_bw_gbs"), ".3g"),
        _num(g.median("startup_total_s"), ".2f"),
        str(g.n),
    ]


def inputs_gib(s: dict[str, Any]) -> float:
    """The reference's "Training Data Size (GB)": inputs only, in units of 1024³ bytes.

    The reference computes ``num_sims x 10 x grid² x 8 / 1024³`` and labels it GB, so
    its 0.62 is 32 simulations of 512²; the homework table uses the same formula.
    """
    if not s.get("num_sims") or not s.get("grid_size"):
        return math.nan
    return int(s["num_sims"]) * STEPS * int(s["grid_size"]) ** 2 * 8 / 2**30


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
                _cell(g.tag),
                g.nodes,
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


#: Parameters a phased run shares with its streaming counterpart only by coincidence.
STREAMING_ONLY = {"workload.mode", "mode", "workload.replay_buffer"}


def streaming_table(groups: Sequence[Group]) -> str:
    """Streaming runs beside the phased run of the same configuration, when there is one."""

    def key(g: Group) -> tuple[Any, ...]:
        params = {k: v for k, v in g.params.items() if k not in STREAMING_ONLY}
        return (g.first.get("implementation"), repr(sorted(params.items())), g.first.get("hosts"))

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
                _cell(g.tag),
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
        rows.append([_cell(g.tag), g.nodes, g.size(), *parts])
    return markdown_table(header, rows)


def io_notes(transports: Sequence[str], displays: dict[str, str]) -> str:
    lines = []
    for t in dict.fromkeys(transports):
        lines.append(f"- **{displays.get(t, t)}** ({t}): {IO_NOTES.get(t, GENERIC_NOTE)}")
    return "\n".join(lines) + "\n"


def render_table(groups: Sequence[Group], not_ok: Sequence[dict[str, Any]]) -> str:
    """``table.md``: every measured quantity (medians of repeats) and how to read it."""
    rows = [group_row(g) for g in groups] + [failed_row(s, len(TABLE_HEADER)) for s in not_ok]
    parts = ["# simferry results\n", markdown_table(TABLE_HEADER, rows)]
    parts.append(
        "\nMedians over the runs counted in *Runs*; runs are medians together only when "
        "every parameter and the hosts they ran on are the same. *Hosts*: distinct hosts "
        "the tasks ran on; *Worker pools*: the launcher's node count (pools emulated on one "
        "host count once as hosts). *Inputs (GiB)*: the reference's \"Training Data Size "
        '(GB)", num_sims x 10 x grid² x 8 bytes / 1024³. *Run time*: first task '
        "submitted to the last result received. *IO time*: mean per task of the time "
        "inside transport calls (serialize + transfer + deserialize); training IO covers "
        "reading every sample into the float32 training buffer and saving the weights. "
        "*Bandwidth*: bytes moved by a phase's tasks over their summed IO time (what one "
        "task stream achieves, not the aggregate), in 10⁹ bytes per second. *Start-up + "
        "trainer wait*: summary.json's startup_s (starting the transport and the "
        "launcher) plus its trainer_ready_s (waiting for trainer workers still starting "
        "when the simulations ended; the local launcher imports torch in them meanwhile).\n"
    )
    note = differences_note(groups)
    if note:
        parts += ["\n", note]
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


#: Every file and folder ``write_report`` writes, so callers can refuse to overwrite them.
REPORT_FILES = ("homework.md", "table.md", "results.csv", "observations.md", "plots")


def homework(summaries: Sequence[dict[str, Any]]) -> str:
    """The homework table of some runs, as ``simferry run`` prints it."""
    from simferry.homework import homework_table

    runs, not_ok = load_runs(summaries)
    return homework_table(group_runs(runs), not_ok)


def write_report(
    summaries: Sequence[dict[str, Any]],
    out_dir: Path,
    note: Callable[[str], None] | None = None,
    baseline: Baseline | None = None,
) -> str:
    """``homework.md``, ``table.md``, ``results.csv``, ``plots/*.png``, ``observations.md``.

    Returns ``homework.md``'s text, the table every command prints. ``summaries`` may
    include placeholders ``{"implementation", "status", "error"}`` for runs that were
    skipped or never started: they appear with their reason.
    """
    from simferry.homework import write_homework
    from simferry.observations import write_observations
    from simferry.plots import write_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    runs, not_ok = load_runs(summaries)
    _write_table(runs, not_ok, out_dir)
    groups = group_runs(runs)
    for path in write_plots(groups, out_dir / "plots"):
        if note:
            note(f"plot: {path}")
    write_observations(groups, not_ok, out_dir / "observations.md")
    return write_homework(groups, not_ok, out_dir / "homework.md", baseline)


# --- series across data sizes and their fits --------------------------------------------


def series(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups of one configuration across data sizes, keyed by the label that tells them apart.

    The label carries every parameter other than the size that differs between groups
    of one implementation (``Group.tag``), so a series never mixes configurations.
    """
    out: dict[str, list[Group]] = {}
    for g in groups:
        out.setdefault(g.tag, []).append(g)
    return out


#: Distinct data sizes below which no size trend is fitted: a line through two points
#: always fits (R² = 1) and says nothing about the trend's shape or its noise.
MIN_FIT_SIZES = 3
#: Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
       2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069,
       2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t95(df: int) -> float:
    return T95[df - 1] if df <= len(T95) else 2.0 if df <= 60 else 1.98


@dataclass(frozen=True)
class Fit:
    """Least-squares line ``y = intercept + slope * x`` over ``n`` points in [xmin, xmax].

    ``slope_se`` is the slope's standard error (nan with only two points); ``sizes`` the
    number of distinct x values.
    """

    slope: float
    intercept: float
    r2: float
    n: int
    xmin: float
    xmax: float
    slope_se: float = math.nan
    sizes: int = 0

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x

    def ci95(self) -> tuple[float, float]:
        """The slope's 95% confidence interval (Student's t with n - 2 degrees of freedom)."""
        half = t95(self.n - 2) * self.slope_se if self.n > 2 else math.inf
        return self.slope - half, self.slope + half


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
    n = len(xs)
    se = math.sqrt(ss_res / (n - 2) / sxx) if n > 2 else math.nan
    return Fit(slope, intercept, r2, n, min(xs), max(xs), se, len(set(xs)))


def size_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """A size trend, only from at least ``MIN_FIT_SIZES`` distinct data sizes."""
    return linear_fit(xs, ys) if len(set(xs)) >= MIN_FIT_SIZES else None


def train_io_points(groups: Sequence[Group]) -> tuple[list[float], list[float]]:
    """(training data size in the homework's GB, trainer IO s): one point per run."""
    xs, ys = [], []
    for g in groups:
        for r in g.runs:
            if not math.isnan(r.m["train_io_s"]):
                xs.append(inputs_gib(r.m))
                ys.append(float(r.m["train_io_s"]))
    return xs, ys


def sim_io_points(groups: Sequence[Group]) -> tuple[list[float], list[float]]:
    """(GB, 1024³ bytes, one simulation writes; its IO s): one point per simulation task."""
    xs, ys = [], []
    for g in groups:
        for r in g.runs:
            for rec in r.records:
                if rec.get("kind") == "sim":
                    xs.append(int(rec.get("bytes", 0)) / 2**30)
                    ys.append(task_io(rec))
    return xs, ys
