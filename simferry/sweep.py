"""``simferry sweep``: a grid of configurations, each repeated, ending with the report.

A sweep directory holds one run directory per (point, repeat). What is finished is read
back from those run directories -- a ``config.toml`` beside a ``summary.json`` whose
status is ``ok`` -- so re-running the same command on the same ``--out`` skips finished
points even after Ctrl-C or a killed process; ``sweep.json`` is only a readable index.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from simferry import plugins
from simferry.config import RunConfig, WorkloadConfig, build, load_config
from simferry.errors import Interrupted, SimferryError, UsageError
from simferry.records import make_run_dir, read_summary, utc_stamp, write_json

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


class Point(NamedTuple):
    launcher: str
    transport: str
    nodes: int
    num_sims: int
    grid_size: int
    #: Transport options of one of its ``compare_variants`` (a connector, an engine).
    variant: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        which = "".join(f" {v}" for _, v in self.variant)
        return (
            f"{self.launcher} {self.transport}{which}, {self.num_sims} sims x "
            f"{self.grid_size}², "
            f"{self.nodes} node" + ("s" if self.nodes != 1 else "")
        )


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    from simferry.cli import ALIASES, add_model_flags, add_output_flags

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
    add_output_flags(p)


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
    path = getattr(args, "config", None)
    return load_config(path) if path else None


def grid(args: argparse.Namespace) -> list[Point]:
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
        args.nodes, "--nodes", [getattr(base and base.launcher, "nodes", None) or 1], int
    )
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, not {args.repeat}.")
    return [
        Point(launcher, transport, n, s, g, variant)
        for launcher, n, s, g, transport in itertools.product(
            launchers, nodes, sims, sizes, transports
        )
        for variant in variants_of(transport, args)
    ]


def variants_of(transport: str, args: argparse.Namespace) -> list[tuple[tuple[str, str], ...]]:
    """Each of a transport's ``compare_variants`` unless a flag on the command line picks one."""
    found = getattr(plugins.transport_config_class(transport), "compare_variants", ())
    if not found or any(k in vars(args) for v in found for k in v):
        return [()]
    return [tuple(sorted(v.items())) for v in found]


def run_options(args: argparse.Namespace, points: Sequence[Point]) -> dict[str, Any]:
    """The flags that go into every run's configuration; refuse ones no run can use."""
    values = {k: v for k, v in vars(args).items() if k not in OWN_ARGS and k not in GRID_FLAGS}
    fields = set(WorkloadConfig.model_fields)
    for p in points:
        fields |= set(plugins.launcher_config_class(p.launcher).model_fields)
        fields |= set(plugins.transport_config_class(p.transport).model_fields)
    unused = [k for k in values if k not in fields]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
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


def implementation_label(point: Point) -> str:
    lcls = plugins.launcher_config_class(point.launcher)
    tcls = plugins.transport_config_class(point.transport)
    if point.variant:
        return f"{lcls.display or point.launcher} + {tcls(**dict(point.variant)).describe()}"
    return f"{lcls.display or point.launcher} + {tcls.display or point.transport}"


def point_config(point: Point, options: dict[str, Any], runs_dir: Path) -> RunConfig | str:
    """The point's configuration, or the reason it cannot run here (it is then skipped)."""
    lcls = plugins.launcher_config_class(point.launcher)
    tcls = plugins.transport_config_class(point.transport)
    if tcls.launchers is not None and point.launcher not in tcls.launchers:
        return f"needs --launchers {' or '.join(tcls.launchers)}"
    pick = {k: v for k, v in options.items() if k != "name"}
    workload = {k: v for k, v in pick.items() if k in WorkloadConfig.model_fields}
    workload.update(num_sims=point.num_sims, grid_size=point.grid_size)
    launcher = {k: v for k, v in pick.items() if k in lcls.model_fields}
    if "nodes" in lcls.model_fields:
        launcher["nodes"] = point.nodes
    transport = {k: v for k, v in pick.items() if k in tcls.model_fields}
    transport.update(point.variant)
    cfg = build(
        workload,
        {**launcher, "name": point.launcher},
        {**transport, "name": point.transport},
        runs_dir=runs_dir,
    )
    if cfg.launcher.node_count() != point.nodes:
        return (
            f"the {point.launcher} launcher runs on {cfg.launcher.node_count()} node(s), "
            f"not {point.nodes}"
        )
    return cfg.transport.unavailable_reason() or cfg.launcher.unavailable_reason() or cfg


def config_key(cfg: RunConfig) -> str:
    """What makes two runs repeats of one point: every parameter but where runs go."""
    data = cfg.dump()
    data.pop("runs_dir", None)
    return json.dumps(data, sort_keys=True, default=str)


def finished_runs(sweep_dir: Path) -> dict[str, list[Path]]:
    """Run directories under ``sweep_dir`` that completed, by configuration key."""
    found: dict[str, list[Path]] = {}
    for summary in sorted(sweep_dir.glob("*/summary.json")):
        run = summary.parent
        try:
            if read_summary(run).get("status") != "ok":
                continue
            key = config_key(load_config(run / "config.toml"))
        except (OSError, ValueError, SimferryError):
            continue  # not a run of ours, or of a plug-in missing here: not a finished point
        found.setdefault(key, []).append(run)
    return found


class SweepProgress:
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
        self.bars: Any = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bars

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


class Sweep:
    """The points of one sweep, what is finished, and the manifest that lists them."""

    def __init__(self, points: Sequence[Point], repeat: int) -> None:
        self.out = Path()
        self.points = list(points)
        self.repeat = repeat
        self.configs: dict[Point, RunConfig] = {}
        #: Points that cannot run here, with the reason.
        self.skipped: dict[Point, str] = {}
        #: Points whose run failed in this sweep: the reason and the run directory, if any.
        self.failed: dict[Point, tuple[str, Path | None]] = {}
        self.runs: dict[Point, list[Path]] = {}

    def configure(self, options: dict[str, Any], runs_dir: Path) -> None:
        """Validate every point (bad values raise ``UsageError`` before anything exists)."""
        for p in self.points:
            result = point_config(p, options, runs_dir)
            if isinstance(result, str):
                self.skipped[p] = result
            else:
                self.configs[p] = result

    def scan(self) -> None:
        """Find the runs of each point that an earlier sweep in ``out`` finished."""
        finished = finished_runs(self.out)
        for p, cfg in self.configs.items():
            self.runs[p] = finished.get(config_key(cfg), [])

    def todo(self) -> int:
        return sum(max(0, self.repeat - len(self.runs[p])) for p in self.configs)

    def write_manifest(self) -> None:
        points = []
        for p in self.points:
            entry: dict[str, Any] = p._asdict()
            runs = self.runs.get(p, [])
            entry["runs"] = [r.name for r in runs]
            if p in self.skipped:
                entry.update(status="skipped", reason=self.skipped[p])
            elif p in self.failed:
                entry.update(status="failed", reason=self.failed[p][0])
            else:
                entry["status"] = "done" if len(runs) >= self.repeat else "pending"
            points.append(entry)
        write_json(
            self.out / "sweep.json",
            {"updated_utc": utc_stamp(), "repeat": self.repeat, "points": points},
        )

    def summaries(self) -> list[dict[str, Any]]:
        """Every finished run, then a row with the reason for each point without one."""
        from simferry.report import load_summaries

        out = load_summaries([r for p in self.points for r in self.runs.get(p, [])])
        for p in self.points:
            if self.runs.get(p):
                continue
            reason, run = self.failed.get(p, (self.skipped.get(p), None))
            if run is not None and (run / "summary.json").exists():
                out += load_summaries([run])
            elif reason is not None:
                status = "skipped" if p in self.skipped else "failed"
                out.append(
                    {
                        "implementation": implementation_label(p),
                        "status": status,
                        "error": reason,
                        **p._asdict(),
                    }
                )
        return out


def run_sweep(args: argparse.Namespace) -> int:
    from simferry.engine.run import execute
    from simferry.launchers.dragon import execute_under_dragon, needs_runtime
    from simferry.report import write_report

    points = grid(args)
    options = run_options(args, points)
    sweep = Sweep(points, args.repeat)
    sweep.configure(options, args.runs_dir)
    if args.out is not None:
        out = args.out
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        out = make_run_dir(args.runs_dir, "sweep")
    sweep.out = out
    sweep.scan()
    total = len(sweep.configs) * args.repeat
    todo = sweep.todo()
    progress = SweepProgress(total, total - todo, args.quiet or args.json)
    progress.message(
        f"sweep: {len(points)} point(s) x {args.repeat} repeat(s) in {out}; "
        f"{total - todo} run(s) already finished, {todo} to go"
        + (f", {len(sweep.skipped)} point(s) skipped" if sweep.skipped else "")
    )
    for p, reason in sweep.skipped.items():
        progress.message(f"skipping {p.describe()}: {reason}", always=True)
    sweep.write_manifest()
    try:
        for p, cfg in sweep.configs.items():
            tasks = p.num_sims + (cfg.workload.trainers or 1)
            while len(sweep.runs[p]) < args.repeat:
                n = len(sweep.runs[p]) + 1
                progress.start_run(f"{p.describe()}, repeat {n}/{args.repeat}", tasks)
                t0 = time.perf_counter()
                before = set(out.iterdir())
                try:
                    if needs_runtime(cfg):  # a plain shell: this run goes under `dragon`,
                        # quiet, as its progress display would fight the sweep's
                        run_dir = execute_under_dragon(cfg, None, parent=out)
                    else:
                        run_dir = execute(cfg, progress, parent=out)
                except Interrupted:
                    raise
                except SimferryError as exc:
                    # A configuration that fails once is not retried within this sweep.
                    new = sorted(set(out.iterdir()) - before)
                    sweep.failed[p] = (str(exc), new[0] if new else None)
                    progress.message(f"{p.describe()} failed: {exc}", always=True)
                    progress.finish_run(time.perf_counter() - t0)
                    break
                sweep.runs[p].append(run_dir)
                progress.finish_run(time.perf_counter() - t0)
                sweep.write_manifest()
    except (Interrupted, KeyboardInterrupt):
        sweep.write_manifest()
        progress.stop()
        done = sum(len(r) for r in sweep.runs.values())
        print(
            f"simferry: sweep interrupted; {done} finished run(s) are kept in {out}. Run the "
            f"same command with --out {out} to resume.",
            file=sys.stderr,
        )
        raise
    finally:
        progress.stop()
    sweep.write_manifest()
    summaries = sweep.summaries()
    text = write_report(summaries, out)
    if args.json:
        from simferry.cli import print_json

        print_json({"out": out, "runs": summaries})
        return 1 if sweep.failed else 0
    if args.quiet:
        return 1 if sweep.failed else 0
    print(text, end="")
    ran = sum(len(r) for r in sweep.runs.values()) - (total - todo)
    print(f"sweep: {total - todo} finished run(s) reused, {ran} run(s) done now, in {out}")
    print(
        f"homework: {out / 'homework.md'}\ntable: {out / 'table.md'}\n"
        f"results: {out / 'results.csv'}\n"
        f"plots: {out / 'plots'}\nobservations: {out / 'observations.md'}"
    )
    return 1 if sweep.failed else 0
