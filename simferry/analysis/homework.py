"""``homework.md``: the reference's five-column table, ready to paste into its README.

The header, the cell format (``11.22 / 0.094``) and the data size (the reference's own
formula) are the reference's, so a row from here and a published row mean the same
thing; ``baseline_section`` sets them side by side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simferry.analysis.baselines import Baseline
from simferry.analysis.model import Group, inputs_gib
from simferry.analysis.tables import differences_note, markdown_table
from simferry.units import GIB

#: The reference README's header, character for character.
HOMEWORK_HEADER = [
    "Implementation",
    "Number of Nodes",
    "Training Data Size (GB)",
    "Simulation Run / IO Time (sec)",
    "Training Run / IO Time (sec)",
]
BY_VALUE_MARK = " †"
SIZE_NOTE = (
    "Training Data Size (GB) follows the reference's formula: inputs only, "
    "num_sims x 10 x grid² x 8 bytes / 1024³ (the reference labels this GB; 32 "
    "simulations of 512² give its 0.62)."
)
NODES_NOTE = (
    "Number of Nodes counts the distinct hosts the tasks ran on; worker pools emulated on "
    "one host are named as pools."
)
BY_VALUE_NOTE = (
    "† Pass-by-value (no store): the reference prints NA here; simferry shows the IO as "
    "measured, i.e. pickling inside the workers, the timed hand-offs between the main "
    "process and the workers, and unpickling inside the trainers (see table.md)."
)


def by_value(g: Group) -> bool:
    """Whether the group's transport hands data over as task arguments and results."""
    return bool(g.summary["pass_by_value"])


def size_cell(gib: float) -> str:
    """Two decimals like the reference; significant digits for the tiny test sizes."""
    if math.isnan(gib):
        return "NA"
    return f"{gib:.2f}" if gib >= 0.005 else f"{gib:.2g}"


def pair(run: float | None, io: float | None) -> str:
    """A "run / IO" cell in the reference's format; NA where there is no number."""

    def fmt(x: float | None, digits: int) -> str:
        return "NA" if x is None or math.isnan(x) else f"{x:.{digits}f}"

    return f"{fmt(run, 2)} / {fmt(io, 3)}"


def homework_row(g: Group) -> list[str]:
    """A group's row in the reference's five columns; pass-by-value rows carry the mark."""
    mark = BY_VALUE_MARK if by_value(g) else ""
    return [
        (g.tag + mark).replace("|", "\\|"),
        g.nodes,
        size_cell(inputs_gib(g.first)),
        pair(g.median("sim_run_s"), g.median("sim_io_s")),
        pair(g.median("train_run_s"), g.median("train_io_s")),
    ]


def failed_row(s: dict[str, Any]) -> list[str]:
    """A run without results: its size and, in the time columns, why."""
    reason = f"{s.get('status', 'failed')}: {s.get('error', '')}".replace("|", "\\|")
    reason = reason.replace("\n", " ")
    return [str(s.get("implementation", "?")), str(s.get("nodes", "")), size_cell(inputs_gib(s)),
            reason, ""]  # fmt: skip


def homework_table(groups: Sequence[Group], not_ok: Sequence[dict[str, Any]]) -> str:
    """The table and its notes (what ``run``, ``compare`` and ``report`` print)."""
    rows = [homework_row(g) for g in groups] + [failed_row(s) for s in not_ok]
    notes = [SIZE_NOTE, NODES_NOTE]
    differ = differences_note(groups)
    if differ:
        notes.append(differ.rstrip("\n"))
    if any(by_value(g) for g in groups):
        notes.append(BY_VALUE_NOTE)
    if any(g.n > 1 for g in groups):
        notes.append("Cells are medians over repeats of one configuration (table.md: spread).")
    return markdown_table(HOMEWORK_HEADER, rows) + "\n" + "\n\n".join(notes) + "\n"


# --- published numbers beside the user's -------------------------------------------------


def ratio(here: float, published: Any) -> str:
    if published is None or math.isnan(here) or float(published) <= 0:
        return "NA"
    return f"{here / float(published):.2f}"


def at_published_config(g: Group, base: Baseline) -> bool:
    """Whether a group ran what the baseline ran, so a ratio between them means something."""
    m = base.machine
    f = g.first
    return (
        f.get("num_sims") == m["num_sims"]
        and f.get("grid_size") == m["grid_size"]
        and g.hosts in (0, m["nodes"])
        and f.get("mode", "phased") == "phased"
    )


def ratios(g: Group, row: dict[str, Any]) -> str:
    """Here ÷ published, as "simulation run / IO; training run / IO"."""
    sim = f"{ratio(g.median('sim_run_s'), row.get('sim_run_s'))} / "
    sim += ratio(g.median("sim_io_s"), row.get("sim_io_s"))
    train = f"{ratio(g.median('train_run_s'), row.get('train_run_s'))} / "
    train += ratio(g.median("train_io_s"), row.get("train_io_s"))
    return f"{sim}; {train}"


def published_row(row: dict[str, Any], base: Baseline) -> list[str]:
    return [
        f"{row['implementation']} (published, {base.machine['name']})",
        str(base.machine["nodes"]),
        f"{base.machine['size_gb']:.2f}",
        pair(row.get("sim_run_s"), row.get("sim_io_s")),
        pair(row.get("train_run_s"), row.get("train_io_s")),
        "",
    ]


def machine_here(groups: Sequence[Group]) -> str:
    """This machine in words, from the first run's ``environment.json``."""
    for g in groups:
        path = Path(str(g.first.get("run_dir", ""))) / "environment.json"
        try:
            env = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cpu = env.get("cpu_model") or "CPU model not recorded"
        mem = env.get("memory_bytes")
        gpus = env.get("gpu_models") or []
        parts = [f"host {env.get('host', '?')}", f"{cpu}, {env.get('cores', '?')} cores"]
        if mem:
            parts.append(f"{mem / GIB:.0f} GiB of memory")
        parts.append(", ".join(gpus) if gpus else "no GPU used")
        return "; ".join(parts) + f" (from {path})"
    return "not recorded (no environment.json in the runs given)"


def baseline_section(groups: Sequence[Group], base: Baseline) -> str:
    """Published rows, each followed by the user's rows of the same transport, with ratios.

    A ratio is given only at the published configuration (size, host count, phased
    mode); elsewhere the rows stand side by side and the difference is said.
    """
    m = base.machine
    header = [*HOMEWORK_HEADER, "Here ÷ published (simulation run / IO; training run / IO)"]
    rows: list[list[str]] = []
    used: set[int] = set()
    for row in base.rows:
        rows.append(published_row(row, base))
        for g in groups:
            if g.first.get("transport") == row.get("transport"):
                used.add(id(g))
                same = at_published_config(g, base)
                rows.append([*homework_row(g), ratios(g, row) if same else "other configuration"])
    for g in groups:
        if id(g) not in used:
            rows.append([*homework_row(g), "no published row"])
    size = f"{m['num_sims']} simulations of {m['grid_size']}², {m['nodes']} node"
    lines = [
        f"## Beside the published numbers ({m['name']})\n",
        markdown_table(header, rows),
        f"Published: {m['name']}, {m['description']}; {size} ({m['size_gb']} GB by the "
        f"formula above); source: {m['source']}.",
        "",
        f"Here: {machine_here(groups)}.",
        "",
        "The machines differ in CPU, memory, GPUs and file systems, and the published rows "
        "ran under Parsl and DragonHPC: a ratio between rows of different launchers "
        "includes the launchers' difference as well as the machines'.",
    ]
    if not any(at_published_config(g, base) for g in groups):
        lines += [
            "",
            f"None of these rows ran the published configuration ({size}), so no ratio is "
            f"given; `simferry compare --num-sims {m['num_sims']} --grid-size "
            f"{m['grid_size']}` runs it.",
        ]
    return "\n".join(lines) + "\n"


def write_homework(
    groups: Sequence[Group],
    not_ok: Sequence[dict[str, Any]],
    path: Path,
    baseline: Baseline | None = None,
) -> str:
    """Write ``homework.md`` (and the baseline comparison when asked); return its text."""
    text = "# Data transfer performance (homework table)\n\n" + homework_table(groups, not_ok)
    if baseline is not None:
        text += "\n" + baseline_section(groups, baseline)
    path.write_text(text, encoding="utf-8")
    return text
