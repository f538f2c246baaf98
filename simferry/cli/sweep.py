"""``simferry sweep``: a grid of configurations, each repeated, ending with the report.

The grid and its resumable runs are ``engine.sweep``'s; this module turns the flags into
that grid, shows one progress bar over all runs, and writes the report. Re-running the
same command with the same ``--out`` resumes a sweep.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as Bars

from simferry import plugins
from simferry.analysis.model import load_summaries
from simferry.analysis.report import write_report
from simferry.cli.common import (
    ALIASES,
    Subparsers,
    add_model_flags,
    add_output_flags,
    flag,
    print_json,
    print_report_paths,
)
from simferry.config import RunConfig, WorkloadConfig, load_config
from simferry.engine.sweep import Point, Sweep, implementation_label, make_grid
from simferry.errors import Interrupted, UsageError
from simferry.records import make_run_dir

#: Flags whose values are comma-separated lists in a sweep.
GRID_FLAGS = {"num_sims": "--num-sims", "grid_size": "--grid-size", "nodes": "--nodes"}
#: Arguments of the sweep itself, never passed to a run's configuration.
OWN_ARGS = {
    "command",
    "func",
    "quiet",
    "json",
    "config",
    "transports",
    "launchers",
    "repeat",
    "out",
    "runs_dir",
}


def register(sub: Subparsers) -> None:
    p = sub.add_parser("sweep", help="a grid of sizes, transports and launchers, with repeats")
    add_sweep_flags(p)
    p.set_defaults(func=cmd_sweep)


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("grid (comma-separated lists)")
    g.add_argument(
        "--num-sims",
        *ALIASES["num_sims"],
        dest="num_sims",
        help="simulation counts, e.g. 4,8 (default: 8, or --config's)",
    )
    g.add_argument(
        "--grid-size",
        *ALIASES["grid_size"],
        dest="grid_size",
        help="grid sizes, e.g. 64,128 (default: 256, or --config's)",
    )
    g.add_argument("--nodes", help="node counts, e.g. 1,2 (default: 1, or --config's)")
    g.add_argument(
        "--transports",
        metavar="NAME,NAME",
        help="transports, of "
        + ", ".join(sorted(plugins.transports()))
        + " (default: --config's, else every transport usable here)",
    )
    g.add_argument(
        "--launchers",
        metavar="NAME,NAME",
        help="launchers, of "
        + ", ".join(sorted(plugins.launchers()))
        + " (default: --config's, else local)",
    )
    g.add_argument("--repeat", type=int, default=1, help="runs per point (default: 1)")
    g.add_argument(
        "--out", type=Path, help="sweep directory; reuse one to resume (default: a new one)"
    )
    add_config_flags(p)
    add_output_flags(p)


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """Every config field but the grid's, applied to each point that has it."""
    seen = set(GRID_FLAGS.values())
    add_model_flags(p.add_argument_group("workload"), WorkloadConfig, seen)
    group = p.add_argument_group("launcher and transport options")
    for cls in [*plugins.launchers().values(), *plugins.transports().values()]:
        add_model_flags(group, cls, seen)
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="where the sweep directory goes unless --out names one (default: runs)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="a config.toml whose settings every point starts from; flags override it "
        "(default: none)",
    )


def parse_list(text: str | None, flag: str, default: Sequence[Any], kind: type = str) -> list[Any]:
    if text is None:
        return list(default)
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [kind(t) for t in items]
    except ValueError:
        raise UsageError(
            f"{flag} takes a comma-separated list of integers such as 4,8; got {text!r}."
        ) from None
    if not values:
        raise UsageError(f"{flag} needs at least one value.")
    return list(dict.fromkeys(values))


def base_config(args: argparse.Namespace) -> RunConfig | None:
    """The --config every point starts from, if one was given."""
    path = vars(args).get("config")
    return load_config(path) if path else None


def grid(args: argparse.Namespace) -> list[Point]:
    """The sweep's points from its list flags, with --config's values as defaults."""
    base = base_config(args)
    defaults = base.workload if base else WorkloadConfig()
    transports = parse_list(
        args.transports,
        "--transports",
        [base.transport.name] if base else list(plugins.transports()),
    )
    launchers = parse_list(args.launchers, "--launchers", [base.launcher.name if base else "local"])
    for name in transports:
        plugins.transport_config_class(name)  # unknown names fail before anything runs
    for name in launchers:
        plugins.launcher_config_class(name)
    sims = parse_list(args.num_sims, "--num-sims", [defaults.num_sims], int)
    sizes = parse_list(args.grid_size, "--grid-size", [defaults.grid_size], int)
    nodes = parse_list(
        args.nodes, "--nodes", [(base and base.launcher.model_dump().get("nodes")) or 1], int
    )
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, not {args.repeat}.")
    return make_grid(launchers, transports, nodes, sims, sizes, chosen=vars(args))


def run_options(args: argparse.Namespace, points: Sequence[Point]) -> dict[str, Any]:
    """The flags that go into every run's configuration; refuse ones no run can use."""
    values = {k: v for k, v in vars(args).items() if k not in OWN_ARGS and k not in GRID_FLAGS}
    fields = set(WorkloadConfig.model_fields)
    for p in points:
        fields |= set(plugins.launcher_config_class(p.launcher).model_fields)
        fields |= set(plugins.transport_config_class(p.transport).model_fields)
    unused = [k for k in values if k not in fields]
    if unused:
        flags = ", ".join(flag(k) for k in unused)
        raise UsageError(f"{flags} does not apply to any launcher or transport in this sweep.")
    base = base_config(args)
    if base is None:
        return values
    # The config's settings, under the flags; each point takes those its plug-ins have.
    start: dict[str, Any] = {}
    for part in (base.workload, base.launcher, base.transport):
        start.update(part.model_dump(exclude_none=True))
    start.pop("name", None)
    return {**{k: v for k, v in start.items() if k not in GRID_FLAGS}, **values}


class SweepBar:
    """One bar over all runs of the sweep (with an ETA); also each run's task progress.

    The bar is refreshed by hand, never by a thread, because launchers fork workers
    while it is on screen.
    """

    def __init__(self, total: int, done: int, quiet: bool) -> None:
        self.total = total
        self.done = float(done)
        self.start_done = done
        self.t0 = time.perf_counter()
        self.quiet = quiet
        self.label = ""
        self.per_task = 0.0
        self.run_done = 0.0
        self.bars: Bars | None = None
        if not quiet and sys.stderr.isatty():
            self.bars = Bars(
                TextColumn("sweep"),
                BarColumn(),
                TextColumn("{task.completed:.1f}/{task.total:.0f} runs"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}  {task.description}"),
                console=Console(stderr=True),
                auto_refresh=False,
            )
            self.task = self.bars.add_task("", total=total, completed=done, eta="?")
            self.bars.start()

    def eta(self) -> str:
        ran = self.done - self.start_done
        if ran <= 0:
            return "?"
        left = (time.perf_counter() - self.t0) / ran * (self.total - self.done)
        return f"{left:.0f} s" if left < 120 else f"{left / 60:.1f} min"

    def _show(self) -> None:
        if self.bars is not None:
            self.bars.update(self.task, completed=self.done, eta=self.eta(), description=self.label)
            self.bars.refresh()

    def message(self, text: str, always: bool = False) -> None:
        """A line above the bar; errors and skips (``always``) are shown under --quiet too."""
        if self.bars is not None:
            self.bars.console.print(text)
        elif always or not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def start_run(self, label: str, tasks: int) -> None:
        self.label = label
        self.per_task = 0.95 / max(1, tasks)
        self.run_done = 0.0
        self._show()

    def finish_run(self, seconds: float) -> None:
        self.done += 1 - self.run_done
        self.run_done = 0.0
        if self.bars is None and not self.quiet:
            self.message(
                f"sweep: {self.done:.0f}/{self.total} runs done ({self.label}, {seconds:.1f} s); "
                f"elapsed {time.perf_counter() - self.t0:.0f} s, ETA {self.eta()}"
            )
        self._show()

    # The Progress protocol, for the tasks of the run in flight.
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, note: str = "") -> None:
        self.run_done += self.per_task
        self.done += self.per_task
        self._show()

    def close(self) -> None:
        """Called by ``execute`` after each run: the sweep's bar stays."""

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None


def summaries(sweep: Sweep) -> list[dict[str, Any]]:
    """Every finished run, then a row with the reason for each point without one."""
    out = load_summaries([r for p in sweep.points for r in sweep.runs.get(p, [])])
    for p in sweep.points:
        if sweep.runs.get(p):
            continue
        reason, run = sweep.failed.get(p, (sweep.skipped.get(p), None))
        if run is not None and (run / "summary.json").exists():
            out += load_summaries([run])
        elif reason is not None:
            status = "skipped" if p in sweep.skipped else "failed"
            out.append(
                {
                    "implementation": implementation_label(p),
                    "status": status,
                    "error": reason,
                    **p._asdict(),
                }
            )
    return out


def prepare(args: argparse.Namespace) -> Sweep:
    """The sweep of the flags, in its directory, with earlier finished runs found."""
    points = grid(args)
    options = run_options(args, points)
    sweep = Sweep(points, args.repeat)
    sweep.configure(options, args.runs_dir)
    if args.out is not None:
        sweep.out = args.out
        sweep.out.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        sweep.out = make_run_dir(args.runs_dir, "sweep")
    sweep.scan()
    return sweep


def cmd_sweep(args: argparse.Namespace) -> int:
    sweep = prepare(args)
    out = sweep.out
    total = len(sweep.configs) * args.repeat
    reused = total - sweep.todo()
    progress = SweepBar(total, reused, args.quiet or args.json)
    progress.message(
        f"sweep: {len(sweep.points)} point(s) x {args.repeat} repeat(s) in {out}; "
        f"{reused} run(s) already finished, {total - reused} to go"
        + (f", {len(sweep.skipped)} point(s) skipped" if sweep.skipped else "")
    )
    for p, reason in sweep.skipped.items():
        progress.message(f"skipping {p.describe()}: {reason}", always=True)
    sweep.write_manifest()
    try:
        sweep.run(progress)
    except (Interrupted, KeyboardInterrupt):
        sweep.write_manifest()
        progress.stop()
        print(
            f"simferry: sweep interrupted; {sweep.done()} finished run(s) are kept in {out}. "
            f"Run the same command with --out {out} to resume.",
            file=sys.stderr,
        )
        raise
    finally:
        progress.stop()
    sweep.write_manifest()
    rows = summaries(sweep)
    text = write_report(rows, out)
    if args.json:
        print_json({"out": out, "runs": rows})
    elif not args.quiet:
        print(text, end="")
        print(f"sweep: {reused} finished run(s) reused, {sweep.done() - reused} run(s) done "
              f"now, in {out}")  # fmt: skip
        print_report_paths(out)
    return 1 if sweep.failed else 0
