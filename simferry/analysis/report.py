"""A report directory: ``homework.md``, ``table.md``, ``results.csv``, ``plots/``, ``observations.md``.

The one place that knows every file a report holds, so commands that write reports and
those that refuse to overwrite one agree on the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from simferry.analysis.baselines import Baseline
from simferry.analysis.homework import homework_table, write_homework
from simferry.analysis.model import group_runs, load_runs
from simferry.analysis.observations import write_observations
from simferry.analysis.plots import write_plots
from simferry.analysis.tables import write_runs_table

#: Every file and folder ``write_report`` writes, so callers can refuse to overwrite them.
REPORT_FILES = ("homework.md", "table.md", "results.csv", "observations.md", "plots")


def homework(summaries: Sequence[dict[str, Any]]) -> str:
    """The homework table of some runs, as ``simferry run`` prints it."""
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
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, not_ok = load_runs(summaries)
    write_runs_table(runs, not_ok, out_dir)
    groups = group_runs(runs)
    for path in write_plots(groups, out_dir / "plots"):
        if note:
            note(f"plot: {path}")
    write_observations(groups, not_ok, out_dir / "observations.md")
    return write_homework(groups, not_ok, out_dir / "homework.md", baseline)
