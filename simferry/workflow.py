"""The coupled workflow over any launcher and transport, and everything a run owns.

``execute`` is the one path every run takes: refuse bad input before anything exists,
create the run directory, start the transport then the launcher, run the phases, and on
every exit -- success, task failure, Ctrl-C, SIGTERM -- stop workers, free the
transport's data and servers, and write ``summary.json`` with the run's status.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from simferry.config import RunConfig
from simferry.errors import Interrupted, RunFailure, SimferryError, UsageError
from simferry.launchers.base import Launcher
from simferry.progress import NullProgress, Progress
from simferry.records import RunDir, TaskRecord, environment, make_run_dir
from simferry.tasks import (
    ManifestEntry,
    SimResult,
    SimSpec,
    TrainOutcome,
    TrainSpec,
    simulation_task,
    trainer_task,
)
from simferry.transports.base import RunContext, Transport, WeightsKey
from simferry.transports.exceptions import TransportUnavailableError
from simferry.workload.simulation import STEPS

GB = 1e9
GIB = 2**30


def implementation(cfg: RunConfig) -> str:
    """Table label in the reference's style, e.g. "Parsl + file system"."""
    return f"{cfg.launcher.display or cfg.launcher.name} + {cfg.transport.display}"


def data_sizes(num_sims: int, grid_size: int) -> dict[str, float]:
    inputs = num_sims * STEPS * grid_size * grid_size * 8
    return {
        "inputs_bytes": inputs,
        "inputs_gb": inputs / GB,
        "total_bytes": 2 * inputs,
        "total_gb": 2 * inputs / GB,
        "total_gib": 2 * inputs / GIB,
    }


def preflight(cfg: RunConfig, ctx: RunContext, trainers_here: int) -> None:
    """Refuse, before anything is created, a run that cannot work here."""
    for part in (cfg.launcher, cfg.transport):
        reason = part.unavailable_reason()
        if reason:
            raise TransportUnavailableError(reason)
    cfg.transport.check(ctx)
    # Each trainer on this node holds the whole dataset as float32 (half the float64
    # bytes); pass-by-value also keeps every simulation's pickled results in this process.
    need = trainers_here * ctx.data_bytes // 2
    if cfg.transport.by_value:
        need += ctx.data_bytes
    avail = psutil.virtual_memory().available
    if need > 0.9 * avail:
        raise UsageError(
            f"This run needs about {need / GIB:.1f} GiB of memory on this node but "
            f"{avail / GIB:.1f} GiB is available; lower --num-sims, --grid-size or --trainers."
        )


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Turn SIGTERM (and Ctrl-C) into ``Interrupted`` so cleanup takes the failure path."""

    def handler(signum: int, _frame: Any) -> None:
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish even if the user presses Ctrl-C again."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class PhaseResult:
    records: list[TaskRecord] = field(default_factory=list)
    run_s: float = 0.0


def mean_io(records: list[TaskRecord]) -> float:
    return float(np.mean([r.io_s for r in records])) if records else 0.0


def task_failure(what: str, exc: BaseException) -> SimferryError:
    if isinstance(exc, SimferryError):
        return exc
    detail = str(exc) or type(exc).__name__
    return RunFailure(f"{what} failed: {detail}.")


def gather(futures: dict[Future[Any], tuple[str, float]], on_done: Any) -> None:
    """Wait for all futures, handing each result to ``on_done`` as soon as it is ready.

    ``futures`` maps each future to its task's name and submission time; ``on_done`` gets
    the result's record stamped with both main-process timestamps.
    """
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        received = time.time()
        for fut in done:
            what, submitted = futures[fut]
            try:
                result = fut.result()
            except BaseException as exc:
                raise task_failure(what, exc) from exc
            result.record.submitted = submitted
            result.record.received = received
            on_done(result, received)


class PhasedRun:
    """The reference's workflow: all simulations, then all trainers."""

    def __init__(
        self,
        cfg: RunConfig,
        launcher: Launcher,
        transport: Transport,
        rundir: RunDir,
        progress: Progress,
    ) -> None:
        self.cfg = cfg
        self.launcher = launcher
        self.transport = transport
        self.rundir = rundir
        self.progress = progress
        self.by_value = cfg.transport.by_value

    def simulations(self) -> tuple[PhaseResult, list[ManifestEntry], list[bytes]]:
        w = self.cfg.workload
        client = self.transport.config()
        phase = PhaseResult()
        manifest: list[ManifestEntry] = []
        payloads: dict[int, bytes] = {}
        self.progress.phase("simulations", w.num_sims)
        t0 = time.time()
        futures = {}
        for k in range(w.num_sims):
            spec = SimSpec(k, w.num_sims, w.grid_size, w.step_seconds)
            fut = self.launcher.submit("sim", simulation_task, spec, client)
            futures[fut] = (f"Simulation {k}", time.time())

        def done(result: SimResult, received: float) -> None:
            rec = result.record
            if self.by_value:
                rec.transfer_s += max(0.0, received - rec.end)
                assert result.payload is not None
                payloads[rec.index] = result.payload
            manifest.extend(result.manifest)
            phase.records.append(rec)
            self.rundir.record(rec)
            self.progress.advance("simulations", f"sim {rec.index}")

        gather(futures, done)
        phase.run_s = max(r.received for r in phase.records) - t0
        manifest.sort()
        return phase, manifest, [payloads[k] for k in sorted(payloads)]

    def training(
        self, manifest: list[ManifestEntry], payloads: list[bytes]
    ) -> tuple[PhaseResult, list[TrainOutcome]]:
        w = self.cfg.workload
        launcher = self.launcher
        client = self.transport.config()
        phase = PhaseResult()
        outcomes: list[TrainOutcome] = []
        self.progress.phase("training", launcher.trainers)
        per_node = -(-launcher.trainers // max(1, launcher.nodes))
        t0 = time.time()
        futures = {}
        for i in range(launcher.trainers):
            spec = TrainSpec(i, per_node, w.grid_size, w.samples, launcher.gpus, w.seed)
            blobs = payloads if self.by_value else None
            submitted = time.time()
            fut = launcher.submit("train", trainer_task, spec, client, manifest, blobs, submitted)
            futures[fut] = (f"Trainer {i}", submitted)

        def done(outcome: TrainOutcome, received: float) -> None:
            rec = outcome.record
            if self.by_value:
                rec.transfer_s += max(0.0, received - rec.end)
                assert outcome.payload is not None
                self.transport.load(outcome.payload)  # type: ignore[attr-defined]
            outcomes.append(outcome)
            phase.records.append(rec)
            self.rundir.record(rec)
            self.progress.advance("training", f"trainer {rec.index}, loss {outcome.loss:.3g}")

        gather(futures, done)
        phase.run_s = max(r.received for r in phase.records) - t0
        return phase, sorted(outcomes, key=lambda o: o.record.index)

    def run(self) -> dict[str, Any]:
        sims, manifest, payloads = self.simulations()
        expected = self.cfg.workload.samples
        if len(manifest) != expected:
            raise RunFailure(f"Simulations produced {len(manifest)} samples, expected {expected}.")
        train, outcomes = self.training(manifest, payloads)
        for outcome in outcomes:
            if outcome.verified != expected:
                raise RunFailure(
                    f"Trainer {outcome.record.index} verified {outcome.verified} of "
                    f"{expected} samples."
                )
        save_weights(self.transport, self.rundir.path, len(outcomes))
        return {
            "sim_run_s": sims.run_s,
            "sim_io_s": mean_io(sims.records),
            "train_run_s": train.run_s,
            "train_io_s": mean_io(train.records),
            "samples_expected": expected,
            "verified_samples": {str(o.record.index): o.verified for o in outcomes},
            "losses": {str(o.record.index): o.loss for o in outcomes},
        }


def save_weights(transport: Transport, run_dir: Path, trainers: int) -> None:
    """Keep every trainer's weights in the run directory: the data is freed, results are not."""
    out = run_dir / "weights"
    out.mkdir(mode=0o700, exist_ok=True)
    for i in range(trainers):
        np.save(out / f"trainer-{i:03d}.npy", np.asarray(transport.get(WeightsKey(i))))


def base_summary(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
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
    }


def execute(cfg: RunConfig, progress: Progress | None = None, parent: Path | None = None) -> Path:
    """Run one configuration end to end; return its run directory (raises on failure)."""
    progress = progress or NullProgress()
    w = cfg.workload
    parent = parent or cfg.runs_dir
    label = f"{cfg.launcher.name}-{cfg.transport.name}"
    nodes = cfg.launcher.node_count()
    run_id = secrets.token_hex(4)
    trainers_here = -(-(w.trainers or 1) // nodes)
    preflight(cfg, RunContext(parent / "pending", run_id, w.data_bytes, nodes), trainers_here)

    run_path = make_run_dir(parent, label)
    ctx = RunContext(run_path, run_id, w.data_bytes, nodes)
    rundir = RunDir(run_path)
    rundir.write_config(cfg.dump())
    summary = base_summary(cfg, run_path)
    launcher: Launcher | None = None
    transport: Transport | None = None
    t_start = time.perf_counter()
    try:
        with signals_as_exceptions():
            try:
                t0 = time.perf_counter()
                transport = cfg.transport.start(ctx)
                summary["transport_startup_s"] = time.perf_counter() - t0
                launcher = cfg.launcher.start(w.num_sims, w.trainers, run_path)
                summary["launcher_startup_s"] = launcher.startup_s
                summary["startup_s"] = time.perf_counter() - t0
                summary.update(
                    trainers=launcher.trainers,
                    sim_workers=launcher.sim_workers,
                    gpus=launcher.gpus,
                    nodes=launcher.nodes,
                )
                rundir.write_environment(environment(launcher.gpus))
                if w.mode == "streaming":
                    from simferry.streaming import StreamingRun

                    runner: Any = StreamingRun(cfg, launcher, transport, rundir, progress)
                else:
                    runner = PhasedRun(cfg, launcher, transport, rundir, progress)
                summary.update(runner.run())
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
        with signals_ignored():
            progress.close()
            t0 = time.perf_counter()
            if launcher is not None:
                launcher.shutdown(cancel=summary["status"] != "ok")
            if transport is not None:
                transport.close()
            summary["teardown_s"] = time.perf_counter() - t0
            rundir.write_summary(summary)
            rundir.close()
    return run_path
