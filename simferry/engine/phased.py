"""Phased mode, the reference's workflow: all simulations, then all trainers."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from simferry.engine.handoff import Inbound, arrived, carry, keep
from simferry.engine.results import Mode, ModeResult, PhaseResult
from simferry.engine.retry import Task, gather
from simferry.errors import Interrupted, RunFailure
from simferry.launchers.base import Launcher, ReleasesWorkers, Role
from simferry.workload.tasks import (
    ManifestEntry,
    SimResult,
    SimSpec,
    TrainOutcome,
    TrainSpec,
    simulation_task,
    trainer_task,
)


class PhasedRun(Mode):
    """The reference's workflow: all simulations, then all trainers."""

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
            submit = self.submitter("sim", spec, simulation_task, client, ())
            task = Task(f"Simulation {k}", submit)
            futures[task.start()] = task

        def done(result: SimResult, received: float) -> None:
            rec = result.record
            payload = arrived(result, inbound=False)
            if payload is not None:
                payloads[rec.index] = payload
            manifest.extend(result.manifest)
            phase.records.append(rec)
            self.rundir.record(rec)
            self.progress.advance("simulations", f"sim {rec.index}")

        gather(futures, done, w.retries, self.launcher, self.transport)
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
        if isinstance(launcher, ReleasesWorkers):
            launcher.release("sim")
        self.trainer_ready_s = wait_for_trainers(launcher)
        t0 = time.time()
        futures = {}
        for i in range(launcher.trainers):
            spec = TrainSpec(i, per_node, w.grid_size, w.samples, launcher.gpus, w.seed)
            submit = self.submitter(
                "train", spec, trainer_task, client, Inbound(payloads), manifest
            )
            task = Task(f"Trainer {i}", submit)
            futures[task.start()] = task

        def done(outcome: TrainOutcome, received: float) -> None:
            rec = outcome.record
            keep(self.transport, arrived(outcome, inbound=True))
            outcomes.append(outcome)
            phase.records.append(rec)
            self.rundir.record(rec)
            self.progress.advance("training", f"trainer {rec.index}, loss {outcome.loss:.3g}")

        gather(futures, done, w.retries, launcher, self.transport)
        phase.run_s = max(r.received for r in phase.records) - t0
        return phase, sorted(outcomes, key=lambda o: o.record.index)

    def submitter(
        self, role: Role, spec: Any, body: Callable[..., Any], *args: Any
    ) -> Callable[[], Future[Any]]:
        """``submit`` for a task, callable again to retry it (a re-put is idempotent)."""
        return functools.partial(self.launcher.submit, role, carry, spec, body, *args)

    def run(self) -> ModeResult:
        sims, manifest, payloads = self.simulations()
        expected = self.cfg.workload.samples
        if len(manifest) != expected:
            raise RunFailure(f"Simulations produced {len(manifest)} samples, expected {expected}.")
        train, outcomes = self.training(manifest, payloads)
        return ModeResult(sims, train, outcomes, {"trainer_ready_s": self.trainer_ready_s})


def wait_for_trainers(launcher: Launcher) -> float:
    """Wait until the launcher can run a trainer; return how long that took.

    A launcher may still be starting trainer workers (the local one imports torch while
    simulations run). Without this barrier that wait would count as the trainers'
    hand-off -- pass-by-value IO -- and as training time; reports add it to start-up.
    """
    t0 = time.perf_counter()
    try:
        launcher.submit("train", os.getpid).result()
    except Interrupted:
        raise
    except Exception:
        pass  # a broken launcher fails the real trainer tasks, with their own message
    return time.perf_counter() - t0
