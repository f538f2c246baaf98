"""``table.md`` and ``results.csv``: every measured quantity, one unit per column.

Cells are medians over a group's repeats; ``results.csv`` keeps one row per run so the
medians can be recomputed; failed and skipped runs keep their row, with the reason.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simferry.analysis.model import (
    CSV_FIELDS,
    SIZE_PARAMS,
    Group,
    Run,
    differing,
    group_runs,
    inputs_gib,
    load_runs,
    recorded,
)

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
    "Training float32 conversion (s)",
    "Write bandwidth (GB/s)",
    "Read bandwidth (GB/s)",
    "Start-up + trainer wait (s)",
    "Runs",
]


GENERIC_NOTE = "time inside the transport's calls, split as the transport reports it."


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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (cells must already be escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


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


def failed_row(s: dict[str, Any], n_cols: int) -> list[str]:
    """A run that did not finish: its size and why, in the columns after the size."""
    status = s.get("status", "failed")
    size = [gb_cell(inputs_gib(s)), gb_cell(recorded(s).get("total_gib"))]
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
        _num(g.median("train_convert_s"), ".3f"),
        _num(g.median("sim_bw_gbs"), ".3g"),
        _num(g.median("train_bw_gbs"), ".3g"),
        _num(g.median("startup_total_s"), ".2f"),
        str(g.n),
    ]


def _range(g: Group, name: str, fmt: str) -> str:
    lo, hi, _ = g.spread(name)
    return f"{_num(lo, fmt)}-{_num(hi, fmt)}"


def _cv(g: Group, name: str) -> str:
    return _num(g.spread(name)[2] * 100, ".0f") + "%"


def per_group_table(groups: Sequence[Group], columns: dict[str, Callable[[Group], str]]) -> str:
    """A table with a row per group, named by implementation, nodes and data size."""
    header = ["Implementation", "Nodes", "Data", *columns]
    rows = [
        [_cell(g.tag), g.nodes, g.size(), *(cell(g) for cell in columns.values())] for g in groups
    ]
    return markdown_table(header, rows)


def _run_range(g: Group) -> str:
    totals = [r.m["sim_run_s"] + r.m["train_run_s"] for r in g.runs]
    return f"{min(totals):.2f}-{max(totals):.2f}"


#: ``spread_table``'s columns after the group's name.
SPREAD_COLUMNS: dict[str, Callable[[Group], str]] = {
    "Runs": lambda g: str(g.n),
    "Sim IO min-max (s)": lambda g: _range(g, "sim_io_s", ".3f"),
    "Train IO min-max (s)": lambda g: _range(g, "train_io_s", ".3f"),
    "Sim + train run min-max (s)": _run_range,
    "CV of IO (sim / train)": lambda g: f"{_cv(g, 'sim_io_s')} / {_cv(g, 'train_io_s')}",
}


def spread_table(groups: Sequence[Group]) -> str:
    """Minimum, maximum and variation of every group that has repeats ("" if none has)."""
    repeated = [g for g in groups if g.n >= 2]
    return per_group_table(repeated, SPREAD_COLUMNS) if repeated else ""


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


def _parts(g: Group, phase: str) -> str:
    return " / ".join(_num(g.median(f"{phase}_{part}_s"), ".4f") for part in PARTS)


def breakdown_table(groups: Sequence[Group]) -> str:
    """Each phase's IO time split into serialize / transfer / deserialize."""
    return per_group_table(
        groups,
        {
            "Simulation serialize / transfer / deserialize (s)": lambda g: _parts(g, "sim"),
            "Training serialize / transfer / deserialize (s)": lambda g: _parts(g, "train"),
        },
    )


def io_notes(groups: Sequence[Group]) -> str:
    """One line per transport: how its IO time splits, as its run recorded it."""
    last = {str(g.first["transport"]): g.summary for g in groups}
    lines = [
        f"- **{s['transport_display']}** ({t}): {s['io_note'] or GENERIC_NOTE}"
        for t, s in last.items()
    ]
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
        "reading every sample into memory (a memory map with its pages populated) and "
        "saving the weights, like the reference's np.load and torch.save. *Training "
        "float32 conversion*: landing what was read in the float32 training buffer, timed "
        "apart (— for runs recorded before it was; their training IO includes it). "
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
        parts += ["\n## How IO is measured, per transport\n\n", io_notes(groups)]
    return "".join(parts)


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


def write_table(summaries: Sequence[dict[str, Any]], out_dir: Path) -> str:
    """Write ``table.md`` and ``results.csv`` into ``out_dir``; return the markdown."""
    runs, not_ok = load_runs(summaries)
    return write_runs_table(runs, not_ok, out_dir)


def write_runs_table(runs: Sequence[Run], not_ok: Sequence[dict[str, Any]], out_dir: Path) -> str:
    """Write ``table.md`` and ``results.csv`` for runs already loaded; return the markdown."""
    text = render_table(group_runs(runs), not_ok)
    (out_dir / "table.md").write_text(text, encoding="utf-8")
    write_csv(runs, not_ok, out_dir / "results.csv")
    return text
