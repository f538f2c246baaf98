"""Runs and groups of repeats, built from run directories only.

Every figure is recomputed from ``records.jsonl`` (one line per task), so a number in a
table can be traced to the tasks that produced it; ``summary.json`` supplies only what no
task sees (start-up time, status) and ``config.toml`` every parameter. Runs are grouped
only when every parameter and the set of hosts they ran on are the same, so a median
never mixes configurations; repeats are shown as medians, with their spread.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simferry.records import data_sizes, read_records, read_summary
from simferry.units import GB, GIB

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
    "train_convert_s",
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


def load_summaries(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Summaries of run directories, with ``run_dir`` pointing where they are now."""
    out = []
    for d in run_dirs:
        if (d / "summary.json").exists():
            s = read_summary(d)
            s["run_dir"] = str(d)
            out.append(s)
    return out


def task_io(rec: dict[str, Any]) -> float:
    """A task's IO time: every second it spent inside transport calls, however split."""
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
    m["inputs_bytes"] = summary.get("inputs_bytes")
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
    # Runs recorded before the conversion was timed apart have it inside their reads.
    trains = [r for r in records if r.get("kind") == "train" and "convert_s" in r]
    m["train_convert_s"] = _mean([float(r["convert_s"]) for r in trains])
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
    """One run: its summary, its task records and the metrics derived from them."""

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
    """A run from its summary, with its records read from the run directory if it has one."""
    summary = recorded(summary)
    path = summary.get("run_dir")
    records = read_records(Path(path)) if path else []
    m = run_metrics(summary, records)
    params = run_params(summary)
    m["seed"] = params.get("workload.seed")
    return Run(summary, records, m, params)


def load_runs(summaries: Sequence[dict[str, Any]]) -> tuple[list[Run], list[dict[str, Any]]]:
    """Every summary's run with its records, and the summaries of runs that did not succeed."""
    runs = [load_run(s) for s in summaries]
    return runs, [s for s, r in zip(summaries, runs, strict=True) if not r.ok]


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
    def summary(self) -> dict[str, Any]:
        """The first run's summary, with what older summaries lack derived."""
        return recorded(self.runs[0].summary)

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


def series(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups of one configuration across data sizes, keyed by the label that tells them apart.

    The label carries every parameter other than the size that differs between groups
    of one implementation (``Group.tag``), so a series never mixes configurations.
    """
    out: dict[str, list[Group]] = {}
    for g in groups:
        out.setdefault(g.tag, []).append(g)
    return out


def recorded(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary with every field reports read, derived where the summary predates it.

    This is the one place such fields are derived. Placeholders for runs that never
    started carry only their size parameters, so their data sizes follow from those.
    Summaries written before runs described their transport get the transport part of
    their label, no IO note (the table then gives its generic sentence), and
    pass-by-value for futures only, the one transport that then handed data over by value.
    """
    out = dict(summary)
    if out.get("inputs_bytes") is None and out.get("num_sims") and out.get("grid_size"):
        out.update(data_sizes(int(out["num_sims"]), int(out["grid_size"])))
    out.setdefault("transport_display", str(out.get("implementation", "?")).split(" + ", 1)[-1])
    out.setdefault("io_note", "")
    out.setdefault("pass_by_value", out.get("transport") == "futures")
    return out


def inputs_gib(s: dict[str, Any]) -> float:
    """The reference's "Training Data Size (GB)": inputs only, in units of 1024³ bytes.

    The reference computes ``num_sims x 10 x grid² x 8 / 1024³`` and labels it GB, so
    its 0.62 is 32 simulations of 512²; the homework table uses the same formula.
    """
    inputs = recorded(s).get("inputs_bytes")
    return math.nan if inputs is None else int(inputs) / GIB
