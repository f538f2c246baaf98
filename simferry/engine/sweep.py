"""A sweep: a grid of configurations, each run a number of times into one directory.

What is finished is read back from the run directories -- a ``config.toml`` beside a
``summary.json`` whose status is ``ok`` -- so running the same sweep on the same directory
skips finished points even after Ctrl-C or a killed process; ``sweep.json`` is only a
readable index.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from simferry import plugins
from simferry.config import RunConfig, WorkloadConfig, build, load_config
from simferry.engine.progress import Progress
from simferry.engine.run import execute
from simferry.errors import Interrupted, SimferryError
from simferry.launchers.dragon import execute_under_dragon, needs_runtime
from simferry.records import read_summary, utc_stamp, write_json


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


class SweepProgress(Progress, Protocol):
    """A run's task progress, plus what a sweep says around each run."""

    def message(self, text: str, always: bool = False) -> None: ...

    def start_run(self, label: str, tasks: int) -> None: ...

    def finish_run(self, seconds: float) -> None: ...


def make_grid(
    launchers: Sequence[str],
    transports: Sequence[str],
    nodes: Sequence[int],
    sims: Sequence[int],
    sizes: Sequence[int],
    chosen: Collection[str] = (),
) -> list[Point]:
    """Every combination, each transport once per variant unless ``chosen`` options pick one."""
    return [
        Point(launcher, transport, n, s, g, variant)
        for launcher, n, s, g, transport in itertools.product(
            launchers, nodes, sims, sizes, transports
        )
        for variant in variants_of(transport, chosen)
    ]


def variants_of(transport: str, chosen: Collection[str]) -> list[tuple[tuple[str, str], ...]]:
    """Each of a transport's ``compare_variants`` unless an option in ``chosen`` picks one."""
    found = plugins.transport_config_class(transport).compare_variants
    if not found or any(k in chosen for v in found for k in v):
        return [()]
    return [tuple(sorted(v.items())) for v in found]


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
    cfg = build(
        workload,
        {**launcher, "name": point.launcher},
        {**transport, "name": point.transport},
        runs_dir=runs_dir,
    )
    cfg = cfg.model_copy(update={"transport": cfg.transport.variant(dict(point.variant))})
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

    def done(self) -> int:
        return sum(len(r) for r in self.runs.values())

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

    def run(self, progress: SweepProgress) -> None:
        """Run every point until it has its repeats; a point that fails once is left."""
        for p, cfg in self.configs.items():
            tasks = p.num_sims + (cfg.workload.trainers or 1)
            while len(self.runs[p]) < self.repeat:
                n = len(self.runs[p]) + 1
                progress.start_run(f"{p.describe()}, repeat {n}/{self.repeat}", tasks)
                t0 = time.perf_counter()
                before = set(self.out.iterdir())
                try:
                    if needs_runtime(cfg):  # a plain shell: this run goes under `dragon`,
                        # quiet, as its progress display would fight the sweep's
                        run_dir = execute_under_dragon(cfg, parent=self.out)
                    else:
                        run_dir = execute(cfg, progress, parent=self.out)
                except Interrupted:
                    raise
                except SimferryError as exc:
                    new = sorted(set(self.out.iterdir()) - before)
                    self.failed[p] = (str(exc), new[0] if new else None)
                    progress.message(f"{p.describe()} failed: {exc}", always=True)
                    progress.finish_run(time.perf_counter() - t0)
                    break
                self.runs[p].append(run_dir)
                progress.finish_run(time.perf_counter() - t0)
                self.write_manifest()
