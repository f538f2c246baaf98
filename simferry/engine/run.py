"""The one path every run takes, and the one summary it writes.

``execute`` refuses bad input before anything exists, creates the run directory, starts
the transport then the launcher, runs the phased or streaming mode, and on every exit --
success, task failure, Ctrl-C, SIGTERM -- stops workers, frees the transport's data and
servers, and writes ``summary.json`` with the run's status.
"""

from __future__ import annotations

import os
import secrets
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from simferry.config import RunConfig
from simferry.engine.memory import need_bytes
from simferry.engine.phased import PhasedRun
from simferry.engine.progress import NullProgress, Progress
from simferry.engine.results import ModeResult, mean_of
from simferry.engine.signals import SignalGuard, signals_as_exceptions, signals_ignored
from simferry.engine.streaming import StreamingRun
from simferry.errors import Interrupted, RunFailure, UsageError
from simferry.launchers.base import Launcher, RestartsWorkers
from simferry.records import (
    RunDir,
    TaskRecord,
    data_sizes,
    environment,
    make_run_dir,
    transport_summary,
    utc_stamp,
)
from simferry.transports.base import RunContext, Staging, Transport, WeightsKey
from simferry.transports.exceptions import TransportUnavailableError
from simferry.units import GIB


def implementation(cfg: RunConfig) -> str:
    """Table label in the reference's style, e.g. "Parsl + file system"."""
    return f"{cfg.launcher.display or cfg.launcher.name} + {cfg.transport.describe()}"


def preflight(cfg: RunConfig, ctx: RunContext, trainers_here: int) -> None:
    """Refuse, before anything is created, a run that cannot work here."""
    for part in (cfg.launcher, cfg.transport):
        reason = part.unavailable_reason()
        if reason:
            raise TransportUnavailableError(reason)
    try:
        check_runs_dir(ctx.run_dir.parent)
        for name in type(cfg.transport).model_fields:
            value = getattr(cfg.transport, name)
            if isinstance(value, Path):
                check_private_dir(value, "--" + name.replace("_", "-"))
        cfg.transport.check(ctx)
    except OSError as exc:
        where = str(exc.filename or "a path")
        where = where if len(where) <= 120 else where[:117] + "..."
        raise UsageError(
            f"Cannot use {where}: {exc.strerror or exc}; choose another path."
        ) from None
    need = need_bytes(cfg, ctx.data_bytes, trainers_here)
    avail = psutil.virtual_memory().available
    if need > 0.9 * avail:
        raise UsageError(
            f"This run needs about {need / GIB:.1f} GiB of memory on this node but "
            f"{avail / GIB:.1f} GiB is available; lower --num-sims, --grid-size or --trainers."
        )


def check_runs_dir(runs_dir: Path) -> None:
    """Refuse a runs directory that cannot be created or written, before creating it."""
    probe = existing_ancestor(runs_dir)
    if not probe.is_dir():
        raise UsageError(f"The runs directory {runs_dir} is not a directory; pass --runs-dir.")
    if not os.access(probe, os.W_OK | os.X_OK) or os.statvfs(probe).f_bavail == 0:
        raise UsageError(
            f"The runs directory {runs_dir} is not writable (or its file system is full); "
            "pass --runs-dir with a directory you can write."
        )


def existing_ancestor(path: Path) -> Path:
    probe = path.expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def check_private_dir(path: Path, flag: str) -> None:
    """Refuse a data directory other users could tamper with.

    simferry creates its own 0700 directory inside, but in a world-writable directory
    without the sticky bit, or one owned by someone else, another user could rename it
    away and put their own files in its place.
    """
    probe = existing_ancestor(path)
    st = probe.stat()
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise UsageError(
            f"{flag} {path}: {probe} is writable by every user and has no sticky bit, so "
            "others could replace simferry's files; choose a directory only you can write."
        )
    if st.st_uid not in (os.getuid(), 0):
        raise UsageError(
            f"{flag} {path}: {probe} belongs to another user (uid {st.st_uid}); choose a "
            "directory you own."
        )


def base_summary(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """What the summary says before the run starts, so a failed run is still described."""
    w = cfg.workload
    return {
        "status": "running",
        "run_dir": str(run_dir),
        "implementation": implementation(cfg),
        "launcher": cfg.launcher.name,
        "transport": cfg.transport.name,
        "mode": w.mode,
        "nodes": cfg.launcher.node_count(),
        "num_sims": w.num_sims,
        "grid_size": w.grid_size,
        "step_seconds": w.step_seconds,
        **data_sizes(w.num_sims, w.grid_size),
        **transport_summary(cfg.transport),
    }


def mode_summary(cfg: RunConfig, launcher: Launcher, result: ModeResult) -> dict[str, Any]:
    """What both modes measure, after every trainer is checked to have used every sample."""
    expected = cfg.workload.samples
    outcomes = result.outcomes
    for o in outcomes:
        if result.check is not None:
            result.check(o)
        if o.verified != expected:
            raise RunFailure(
                f"Trainer {o.record.index} verified {o.verified} of {expected} samples."
            )
    sims, train = result.sims, result.train
    return {
        "sim_run_s": sims.run_s,
        "sim_io_s": mean_of(sims.records, "io_s"),
        "train_run_s": train.run_s,
        "train_io_s": mean_of(train.records, "io_s"),
        "train_convert_s": mean_of(train.records, "convert_s"),
        "samples_expected": expected,
        "verified_samples": {str(o.record.index): o.verified for o in outcomes},
        "losses": {str(o.record.index): o.loss for o in outcomes},
        **result.extra,
        **retries_summary(sims.records + train.records, launcher),
    }


def retries_summary(records: list[TaskRecord], launcher: Launcher) -> dict[str, Any]:
    """Which tasks needed more than one attempt, and how many pools were rebuilt for it."""
    return {
        "retried_tasks": [f"{r.kind} {r.index}" for r in records if r.attempt > 1],
        "worker_restarts": launcher.restarts if isinstance(launcher, RestartsWorkers) else 0,
    }


def save_weights(transport: Transport, run_dir: Path, trainers: int) -> None:
    """Keep every trainer's weights in the run directory: the data is freed, results are not."""
    out = run_dir / "weights"
    out.mkdir(mode=0o700, exist_ok=True)
    for i in range(trainers):
        np.save(out / f"trainer-{i:03d}.npy", np.asarray(transport.get(WeightsKey(i))))


def run_context(cfg: RunConfig, run_dir: Path, run_id: str) -> RunContext:
    w = cfg.workload
    return RunContext(
        run_dir,
        run_id,
        w.data_bytes,
        cfg.launcher.hosts_spanned(),
        launcher=cfg.launcher.name,
        mode=w.mode,
    )


def check_run(cfg: RunConfig, parent: Path | None = None) -> RunContext:
    """Refuse what ``execute`` would refuse, creating nothing (``compare`` checks all first)."""
    nodes = cfg.launcher.node_count()
    # Named like the run directory it stands for, as messages about it show that name.
    future = (parent or cfg.runs_dir) / f"{utc_stamp()}-{cfg.launcher.name}-{cfg.transport.name}"
    ctx = run_context(cfg, future, secrets.token_hex(4))
    preflight(cfg, ctx, -(-(cfg.workload.trainers or 1) // nodes))
    return ctx


@dataclass
class Held:
    """What a run started and must stop, whatever happens."""

    transport: Transport | None = None
    launcher: Launcher | None = None


def start(cfg: RunConfig, ctx: RunContext, guard: SignalGuard, held: Held) -> dict[str, Any]:
    """Start the transport, then the launcher; return their start-up measures."""
    w = cfg.workload
    t0 = time.perf_counter()
    with guard.deferred():
        held.transport = transport = cfg.transport.start(ctx)
    measures: dict[str, Any] = {"transport_startup_s": time.perf_counter() - t0}
    with guard.deferred():
        held.launcher = launcher = cfg.launcher.start(w.num_sims, w.trainers, ctx.run_dir)
    measures["launcher_startup_s"] = launcher.startup_s
    if isinstance(transport, Staging):  # its writer waits for every trainer
        transport.expect_readers(launcher.trainers)
    measures["startup_s"] = time.perf_counter() - t0
    measures.update(
        trainers=launcher.trainers,
        sim_workers=launcher.sim_workers,
        gpus=launcher.gpus,
        nodes=launcher.nodes,
    )
    return measures


def run_mode(
    cfg: RunConfig, launcher: Launcher, transport: Transport, rundir: RunDir, progress: Progress
) -> dict[str, Any]:
    """Run the configured mode, keep the trainers' weights and return the mode's measures."""
    if cfg.workload.mode == "streaming":
        mode: PhasedRun | StreamingRun = StreamingRun(cfg, launcher, transport, rundir, progress)
    else:
        mode = PhasedRun(cfg, launcher, transport, rundir, progress)
    result = mode.run()
    summary = mode_summary(cfg, launcher, result)
    save_weights(transport, rundir.path, len(result.outcomes))
    return summary


def stop(held: Held, summary: dict[str, Any], progress: Progress, rundir: RunDir) -> None:
    """Stop workers, free the transport and write the summary, whatever the run's status."""
    with signals_ignored():
        progress.close()
        t0 = time.perf_counter()
        if held.launcher is not None:
            held.launcher.shutdown(cancel=summary["status"] != "ok")
        if held.transport is not None:
            held.transport.close()
        summary["teardown_s"] = time.perf_counter() - t0
        rundir.write_summary(summary)
        rundir.close()


def execute(cfg: RunConfig, progress: Progress | None = None, parent: Path | None = None) -> Path:
    """Run one configuration end to end; return its run directory (raises on failure)."""
    progress = progress or NullProgress()
    parent = parent or cfg.runs_dir
    run_id = check_run(cfg, parent).run_id
    run_path = make_run_dir(parent, f"{cfg.launcher.name}-{cfg.transport.name}")
    ctx = run_context(cfg, run_path, run_id)
    rundir = RunDir(run_path)
    rundir.write_config(cfg.dump())
    summary = base_summary(cfg, run_path)
    held = Held()
    t_start = time.perf_counter()
    try:
        with signals_as_exceptions() as guard:
            try:
                summary.update(start(cfg, ctx, guard, held))
                assert held.launcher is not None and held.transport is not None
                rundir.write_environment(environment(held.launcher.gpus, cfg.workload.seed))
                summary.update(run_mode(cfg, held.launcher, held.transport, rundir, progress))
                summary["wall_s"] = time.perf_counter() - t_start
                summary["status"] = "ok"
            except KeyboardInterrupt:
                raise Interrupted(signal.SIGINT) from None
    except Interrupted as exc:
        summary.update(status="interrupted", error=str(exc))
        raise
    except BaseException as exc:
        summary.update(status="failed", error=str(exc) or type(exc).__name__)
        raise
    finally:
        stop(held, summary, progress, rundir)
    return run_path
