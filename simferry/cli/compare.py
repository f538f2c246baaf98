"""``simferry compare``: every usable transport on one configuration, then the report.

A transport that cannot run here is a skipped row with its reason rather than an error,
so one missing package does not hide the others' numbers; only when nothing can run is
the whole command refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from simferry import plugins
from simferry.analysis.report import write_report
from simferry.cli.common import (
    OUTPUT_ARGS,
    Subparsers,
    add_run_flags,
    config_from_args,
    flag,
    print_json,
    print_report_paths,
    progress,
    silent,
)
from simferry.config import RunConfig
from simferry.engine.run import check_run, execute, implementation
from simferry.errors import Interrupted, SimferryError, UsageError
from simferry.launchers.dragon import execute_under_dragon, needs_runtime
from simferry.records import make_run_dir, read_summary


def register(sub: Subparsers) -> None:
    p = sub.add_parser("compare", help="run every usable transport on one config; print the table")
    add_run_flags(p, compare=True)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, not {args.repeat}.")
    configs, mismatched = plan(args)
    refused = refusals(configs)
    out = make_run_dir(configs[0].runs_dir, "compare")
    shout = Console(stderr=True)  # errors and skips, shown under --quiet too
    summaries: list[dict[str, Any]] = []
    for label, why in mismatched.items():
        shout.print(f"[yellow]skipping {label}: {why}[/]")
        summaries.append({"implementation": label, "status": "skipped", "error": why})
    failed = 0
    for cfg in configs:
        label = implementation(cfg)
        reason = skip_reason(cfg) or refused.get(label)
        if reason:
            shout.print(f"[yellow]skipping {label}: {reason}[/]")
            summaries.append({**_size(cfg), "implementation": label, "status": "skipped",
                              "error": reason})  # fmt: skip
            continue
        failed += run_repeats(cfg, args, out, summaries)
    table = write_report(summaries, out)
    if args.json:
        print_json({"out": out, "runs": summaries})
    elif not args.quiet:
        print(table, end="")
        print_report_paths(out)
    return 1 if failed else 0


def plan(args: argparse.Namespace) -> tuple[list[RunConfig], dict[str, str]]:
    """The configs to compare, and the rows that cannot run for want of their launcher.

    Unknown names fail before anything runs; a transport that needs another launcher
    (ddict) runs with the first one it allows, or is a skipped row where that is missing.
    """
    names = (
        [t.strip() for t in args.transports.split(",") if t.strip()]
        if args.transports
        else list(plugins.transports())
    )
    launcher = vars(args).get("launcher", "local")
    elsewhere: dict[str, str] = {}
    mismatched: dict[str, str] = {}
    for n in list(names):
        tcls = plugins.transport_config_class(n)
        if tcls.launchers is not None and launcher not in tcls.launchers:
            alt = tcls.launchers[0]
            acls = plugins.launcher_config_class(alt)
            why = acls(name=alt).unavailable_reason() or tcls(name=n).unavailable_reason()
            if why is None:
                elsewhere[n] = alt
                continue
            mismatched[f"{acls.display or alt} + {tcls.display or n}"] = why
            names.remove(n)
    if not names:
        raise UsageError(
            "None of the transports compared can run here: "
            + "; ".join(f"{k}: {v.rstrip('.')}" for k, v in mismatched.items())
            + "."
            if mismatched
            else "--transports names no transport; pass e.g. --transports futures,shm."
        )
    configs = [config_from_args(args, transport=n, launcher=elsewhere.get(n)) for n in names]
    configs = [v for c in configs for v in variants(c, args)]
    refuse_leftovers(args, configs)
    return configs, mismatched


def refuse_leftovers(args: argparse.Namespace, configs: list[RunConfig]) -> None:
    """A flag that no compared transport has is a mistake, not something to ignore."""
    leftovers = {
        k
        for k in vars(args)
        if k not in OUTPUT_ARGS | {"transports", "launcher", "runs_dir", "config", "repeat"}
        and not any(
            k in type(part).model_fields
            for c in configs
            for part in (c.workload, c.launcher, c.transport)
        )
    }
    if leftovers:
        raise UsageError(
            f"{', '.join(flag(k) for k in leftovers)} does not apply to any transport compared."
        )


def refusals(configs: list[RunConfig]) -> dict[str, str]:
    """What a run would refuse, by label, found before the comparison directory exists.

    All of it is an error (exit 2) when no transport can run; else those rows are skipped.
    """
    refused: dict[str, str] = {}
    runnable = [c for c in configs if not skip_reason(c)]
    for cfg in runnable:
        try:
            check_run(cfg)
        except UsageError as exc:
            refused[implementation(cfg)] = str(exc)
            if len(refused) == len(runnable):
                raise
    return refused


def run_repeats(
    cfg: RunConfig, args: argparse.Namespace, out: Path, summaries: list[dict[str, Any]]
) -> int:
    """Run ``cfg`` --repeat times into ``out``; 1 when it failed (it is not run again)."""
    console = Console(stderr=True, quiet=silent(args))
    label = implementation(cfg)
    under_dragon = needs_runtime(cfg)
    for n in range(1, args.repeat + 1):
        console.print(f"[bold]{label}[/]" + (f", run {n}/{args.repeat}" if args.repeat > 1 else ""))
        try:
            if under_dragon:  # the run under dragon draws its own progress, unless quiet
                run_dir = execute_under_dragon(cfg, silent(args), parent=out)
            else:
                run_dir = execute(cfg, progress(args, f"{cfg.transport.name} "), parent=out)
            summaries.append(read_summary(run_dir))
        except Interrupted:
            raise
        except SimferryError as exc:
            Console(stderr=True).print(f"[red]{label} failed: {exc}[/]")
            summaries.append({**_size(cfg), "implementation": label, "status": "failed",
                              "error": str(exc)})  # fmt: skip
            return 1
    return 0


def _size(cfg: RunConfig) -> dict[str, int]:
    """What a row that did not run still shows: its size (the table's size columns)."""
    return {"num_sims": cfg.workload.num_sims, "grid_size": cfg.workload.grid_size}


def variants(cfg: RunConfig, args: argparse.Namespace) -> list[RunConfig]:
    """One config per variant a transport compares (its connectors, engines), unless the
    command line chose one."""
    found = type(cfg.transport).compare_variants
    if not found or any(k in vars(args) for v in found for k in v):
        return [cfg]
    return [cfg.model_copy(update={"transport": cfg.transport.variant(v)}) for v in found]


def skip_reason(cfg: RunConfig) -> str | None:
    """Why ``compare`` leaves this transport out here (software missing, wrong launcher)."""
    allowed = cfg.transport.launchers
    if allowed is not None and cfg.launcher.name not in allowed:
        return f"needs --launcher {' or '.join(allowed)}"
    return cfg.transport.unavailable_reason() or cfg.launcher.unavailable_reason()
