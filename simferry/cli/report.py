"""``simferry report``: the homework table, CSV, plots and observations from run directories."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from simferry.analysis import baselines
from simferry.analysis.model import load_summaries
from simferry.analysis.report import REPORT_FILES, write_report
from simferry.cli.common import Subparsers, add_output_flags, print_json
from simferry.errors import UsageError
from simferry.records import make_run_dir


def register(sub: Subparsers) -> None:
    p = sub.add_parser("report", help="table, CSV, plots and observations from run directories")
    p.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directories, or directories holding them (a compare or sweep directory)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output directory, which must not hold a report yet "
        "(default: a new directory under reports/)",
    )
    p.add_argument(
        "--baseline",
        metavar="NAME",
        help="set published numbers beside yours, e.g. polaris (the reference's rows)",
    )
    add_output_flags(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    dirs = find_run_dirs(args.run_dirs)
    if not dirs:
        raise UsageError("No run directories (with a summary.json) found in the paths given.")
    baseline = baselines.load(args.baseline) if args.baseline else None
    out = report_dir(args.out)
    summaries = load_summaries(dirs)
    table = write_report(summaries, out, baseline=baseline)
    if args.json:
        print_json({"out": out, "runs": summaries})
    elif not args.quiet:
        print(table, end="")
        print(f"homework.md, table.md, results.csv, plots/ and observations.md written to {out}")
    return 0


def report_dir(out: Path | None) -> Path:
    """Where the report goes: never over an earlier report, which a person may still need."""
    if out is None:
        return make_run_dir(Path("reports"), "report")
    taken = [name for name in REPORT_FILES if (out / name).exists()]
    if taken:
        raise UsageError(
            f"{out} already holds a report ({', '.join(taken)}); pass a new --out "
            "directory, or leave --out out to write to a new one under reports/."
        )
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    return out


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Run directories among ``paths``, or under them (a compare or sweep directory)."""
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p} does not exist.")
        if (p / "summary.json").exists():
            found.append(p)
        else:
            found.extend(sorted(s.parent for s in p.rglob("summary.json")))
    return found
