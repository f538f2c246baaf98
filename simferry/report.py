"""The reference's homework table (and a CSV of every run), built from run directories only."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simferry.records import read_summary

TABLE_HEADER = [
    "Implementation",
    "Number of Nodes",
    "Training Data Size (GB, inputs)",
    "Inputs + Targets (GiB)",
    "Simulation Run / IO Time (sec)",
    "Training Run / IO Time (sec)",
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
    "inputs_gb",
    "total_gib",
    "sim_run_s",
    "sim_io_s",
    "train_run_s",
    "train_io_s",
    "startup_s",
    "wall_s",
    "status",
    "error",
    "run_dir",
]


def load_summaries(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    return [read_summary(d) for d in run_dirs if (d / "summary.json").exists()]


def _pair(run: Any, io: Any) -> str:
    if run is None:
        return "— / —"
    return f"{run:.2f} / {io:.3f}"


def table_rows(summaries: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in summaries:
        if s.get("status") != "ok":
            status = s.get("status", "failed")
            reason = s.get("error", "")
            cells = [s["implementation"], str(s.get("nodes", "")), "", ""]
            rows.append([*cells, f"{status}: {reason}", ""])
            continue
        rows.append(
            [
                s["implementation"],
                str(s["nodes"]),
                f"{s['inputs_gb']:.3f}",
                f"{s['total_gib']:.3f}",
                _pair(s.get("sim_run_s"), s.get("sim_io_s")),
                _pair(s.get("train_run_s"), s.get("train_io_s")),
            ]
        )
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(summaries: Sequence[dict[str, Any]], out_dir: Path) -> str:
    """Write ``table.md`` and ``results.csv`` into ``out_dir``; return the markdown."""
    text = markdown_table(TABLE_HEADER, table_rows(summaries))
    (out_dir / "table.md").write_text(text, encoding="utf-8")
    with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for s in summaries:
            writer.writerow(s)
    return text
