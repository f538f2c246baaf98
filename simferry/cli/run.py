"""``simferry run``: the workflow once, with one launcher and one transport."""

from __future__ import annotations

import argparse

from simferry.analysis.report import homework
from simferry.cli.common import Subparsers, add_run_flags, config_from_args, print_json, progress
from simferry.engine.run import check_run, execute
from simferry.launchers.dragon import execute_under_dragon, needs_runtime, run_config_under_dragon
from simferry.records import read_summary


def register(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="run the workflow once with one launcher and transport")
    add_run_flags(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if needs_runtime(cfg):  # typed in a plain shell: the same run under `dragon`
        check_run(cfg)
        if not args.json:
            return run_config_under_dragon(cfg, args.quiet)[0]
        run_dir = execute_under_dragon(cfg)
    else:
        run_dir = execute(cfg, progress(args))
    summary = read_summary(run_dir)
    if args.json:
        print_json({"run_dir": run_dir, "summary": summary})
        return 0
    if args.quiet:
        return 0
    print(homework([summary]), end="")
    verified = summary.get("verified_samples", {})
    expected = summary["samples_expected"]
    if sorted(set(verified.values())) == [expected]:
        print(f"{expected} samples verified by each of {len(verified)} trainer(s)")
    print(f"run directory: {run_dir}")
    return 0
