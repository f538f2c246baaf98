"""Regenerate the docs' example sweep: ``make readme-figures`` (arguments: sweep flags).

Runs ``simferry sweep`` into a temporary directory, copies its ``homework.md``,
``table.md``, ``observations.md`` and ``plots/`` into ``docs/``, and replaces the table in
``docs/benchmarks.md`` between the ``sweep-table`` markers with the homework table, so the
docs always show generated numbers.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from simferry.cli import main

DOCS = Path(__file__).resolve().parent
README = DOCS / "benchmarks.md"
BEGIN, END = "<!-- sweep-table:begin -->", "<!-- sweep-table:end -->"


def main_table(table_md: str) -> str:
    """The first markdown table of a report file (``homework.md``: the reference's columns)."""
    lines = table_md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Implementation"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end]) + "\n"


def splice(readme: str, table: str) -> str:
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} section to fill.")
    before, rest = readme.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    return f"{before}{BEGIN}\n{table}{END}{after}"


def regenerate(sweep_args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="simferry-readme-") as tmp:
        out = Path(tmp) / "sweep"
        code = main(["sweep", *sweep_args, "--out", str(out), "--runs-dir", tmp])
        if code != 0:
            return code
        for name in ("homework.md", "table.md", "observations.md"):
            shutil.copyfile(out / name, DOCS / name)
        shutil.rmtree(DOCS / "plots", ignore_errors=True)
        shutil.copytree(out / "plots", DOCS / "plots")
        table = main_table((out / "homework.md").read_text(encoding="utf-8"))
    README.write_text(splice(README.read_text(encoding="utf-8"), table), encoding="utf-8")
    print(f"updated {README} and {DOCS}/")
    return 0


if __name__ == "__main__":
    sys.exit(regenerate(sys.argv[1:]))
