"""The coupled workflow over any launcher and transport, and everything a run owns.

``execute`` is the one path every run takes: refuse bad input before anything exists,
create the run directory, start the transport then the launcher, run the phases, and on
every exit -- success, task failure, Ctrl-C, SIGTERM -- stop workers, free the
transport's data and servers, and write ``summary.json`` with the run's status.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from simferry.config import RunConfig
from simferry.errors import Interrupted, RunFailure, SimferryError, UsageError
from simferry.launchers.base import Launcher, Role
from simferry.memory import need_bytes
from simferry.progress import NullProgress, Progress
from simferry.records import (
    RunDir,
    TaskRecord,
    data_sizes,
    environment,
    make_run_dir,
    transport_summary,
    utc_stamp,
)
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

GIB = 2**30
#: Further signals during cleanup after which simferry stops cleaning up and exits.
ABANDON_AFTER = 2
#: Uncharged resubmissions of one task (it only queued with dying workers) before giving up.
MAX_SPARED = 10
#: Seconds between ``check_alive`` calls on the transport while tasks run.
ALIVE_S = 1.0


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


class SignalGuard:
    """Signal handler turning SIGINT/SIGTERM into ``Interrupted``; see ``deferred``."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending: int | None = None
        #: The signal raised last, in case a bare ``except:`` swallowed the exception.
        self.received: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.deferring and self.pending is None:
            self.pending = signum
            return
        self.received = signum
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Let a start-up finish first, so what it created is known and gets cleaned up.

        Interrupted half-way, a server or pool would be running with nobody holding it; a
        second signal still interrupts at once.
        """
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending is not None:
            raise Interrupted(self.pending)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[SignalGuard]:
    """Turn SIGTERM (and Ctrl-C) into ``Interrupted`` so cleanup takes the failure path."""
    global _guard
    guard = SignalGuard()
    previous = {s: signal.signal(s, guard) for s in (signal.SIGINT, signal.SIGTERM)}
    _guard = guard
    try:
        yield guard
    finally:
        _guard = None
        for s, h in previous.items():
            signal.signal(s, h)


_guard: SignalGuard | None = None


def raise_if_interrupted() -> None:
    """Raise the ``Interrupted`` a signal raised inside code that swallowed it, if any."""
    if _guard is not None and _guard.received is not None:
        raise Interrupted(_guard.received)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish even if the user presses Ctrl-C again -- but not forever.

    A cleanup stuck on a dead server would leave Ctrl-C useless: a further signal is
    answered with a note, and ``ABANDON_AFTER`` of them exit at once, leaving what was
    not cleaned up yet to ``simferry doctor --clean``.
    """
    count = 0

    def handler(signum: int, _frame: Any) -> None:
        nonlocal count
        count += 1
        if count >= ABANDON_AFTER:
            sys.stderr.write(
                "simferry: cleanup abandoned; data or processes may be left behind "
                "(simferry doctor --clean removes stale shared memory).\n"
            )
            sys.stderr.flush()
            os._exit(128 + signum)
        sys.stderr.write(
            "simferry: still stopping workers and removing data; press Ctrl-C again to "
            "abandon that.\n"
        )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
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
    detail = str(exc).rstrip(".") or type(exc).__name__
    return RunFailure(f"{what} failed: {detail}.")


def lost_errors(launcher: Launcher | None) -> tuple[type[BaseException], ...]:
    """Errors meaning "the worker process died", not "the task raised".

    Only these are retried: a task that raised would raise again. A launcher adds its
    runtime's own as a ``lost_errors`` attribute (e.g. Parsl's ``WorkerLost``).
    """
    return (BrokenExecutor, *getattr(launcher, "lost_errors", ()))


@dataclass
class Task:
    """A submitted task and how to submit it again if its worker dies."""

    what: str
    resubmit: Callable[[], Future[Any]] | None = None
    submitted: float = 0.0
    attempt: int = 1
    #: Resubmissions not charged: the task only queued with a worker that died of another.
    spared: int = 0

    def start(self) -> Future[Any]:
        assert self.resubmit is not None
        self.submitted = time.time()
        return self.resubmit()


def gather(
    futures: dict[Future[Any], Task] | dict[Future[Any], tuple[str, float]],
    on_done: Any,
    retries: int = 0,
    launcher: Launcher | None = None,
    transport: Transport | None = None,
) -> None:
    """Wait for all futures, handing each result to ``on_done`` as soon as it is ready.

    ``futures`` maps each future to its ``Task`` (or to its name and submission time);
    ``on_done`` gets the result's record stamped with both main-process timestamps and its
    attempt. A task whose worker died (the launcher's ``lost_errors``) is resubmitted up to
    ``retries`` times. When one worker dies, the tasks queued with it may fail too: they
    are resubmitted without being charged when the launcher's ``died_running`` says
    another task was the one running in the dead worker (``None``: unknown, everyone is
    charged). A transport with ``check_alive`` is asked every ``ALIVE_S`` while tasks run:
    a dead server would otherwise show only as tasks hanging until their own timeouts.
    """
    lost = lost_errors(launcher)
    blame: Callable[[Future[Any]], bool | None] | None = getattr(launcher, "died_running", None)
    check_alive: Callable[[], None] | None = getattr(transport, "check_alive", None)

    def alive() -> None:
        assert check_alive is not None
        check_alive()
        raise_if_interrupted()  # runtime calls (Dragon's) may swallow a Ctrl-C landing there

    tasks = {f: t if isinstance(t, Task) else Task(t[0], None, t[1]) for f, t in futures.items()}
    pending = set(tasks)
    checked = time.monotonic()
    while pending:
        timeout = ALIVE_S if check_alive is not None else None
        done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        if check_alive is not None and time.monotonic() - checked >= ALIVE_S:
            alive()
            checked = time.monotonic()
        received = time.time()
        for fut in done:
            task = tasks.pop(fut)
            try:
                result = fut.result()
            except (Interrupted, KeyboardInterrupt):
                raise
            except BaseException as exc:
                if not isinstance(exc, lost) or task.resubmit is None:
                    if check_alive is not None:  # a dead server fails tasks too: say so
                        for i in range(3):  # its death may take a moment to be known
                            time.sleep(ALIVE_S if i else 0)
                            alive()
                    raise task_failure(task.what, exc) from exc
                if blame is not None and blame(fut) is False and task.spared < MAX_SPARED:
                    task.spared += 1  # it only queued with the worker that died: not charged
                elif task.attempt <= retries:
                    task.attempt += 1
                else:
                    raise RunFailure(
                        f"{task.what} failed after {task.attempt} attempt(s): a worker process "
                        "died while it ran or waited (killed, or out of memory); check memory "
                        "use, or raise --retries."
                    ) from exc
                try:
                    again = task.start()
                except BrokenExecutor as exc2:
                    raise RunFailure(
                        f"{task.what} could not be resubmitted: the launcher could not "
                        f"replace its dead worker ({exc2})."
                    ) from exc2
                tasks[again] = task
                pending.add(again)
                continue
            result.record.submitted = task.submitted
            result.record.received = received
            result.record.attempt = task.attempt
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
            task = Task(f"Simulation {k}", self.submitter("sim", simulation_task, spec, client))
            futures[task.start()] = task

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
        release = getattr(launcher, "release", None)  # idle simulation workers (Dragon)
        if release is not None:
            release("sim")
        self.trainer_ready_s = wait_for_trainers(launcher)
        t0 = time.time()
        futures = {}
        for i in range(launcher.trainers):
            spec = TrainSpec(i, per_node, w.grid_size, w.samples, launcher.gpus, w.seed)
            blobs = payloads if self.by_value else None
            # The submission time rides along: the trainer measures its hand-off from it.
            submit = self.submitter("train", trainer_task, spec, client, manifest, blobs)
            task = Task(f"Trainer {i}", functools.partial(stamped, submit))
            futures[task.start()] = task

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

        gather(futures, done, w.retries, launcher, self.transport)
        phase.run_s = max(r.received for r in phase.records) - t0
        return phase, sorted(outcomes, key=lambda o: o.record.index)

    def submitter(self, role: Role, fn: Callable[..., Any], *args: Any) -> Callable[..., Any]:
        """``submit`` for a task, callable again to retry it (a re-put is idempotent)."""
        return lambda *more: self.launcher.submit(role, fn, *args, *more)

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
            "trainer_ready_s": self.trainer_ready_s,
            "samples_expected": expected,
            "verified_samples": {str(o.record.index): o.verified for o in outcomes},
            "losses": {str(o.record.index): o.loss for o in outcomes},
            **retries_summary(sims.records + train.records, self.launcher),
        }


def retries_summary(records: list[TaskRecord], launcher: Launcher) -> dict[str, Any]:
    """Which tasks needed more than one attempt, and how many pools were rebuilt for it."""
    return {
        "retried_tasks": [f"{r.kind} {r.index}" for r in records if r.attempt > 1],
        "worker_restarts": getattr(launcher, "restarts", 0),
    }


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


def stamped(submit: Callable[[float], Future[Any]]) -> Future[Any]:
    return submit(time.time())


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
        **transport_summary(cfg.transport),
    }


def check_run(cfg: RunConfig, parent: Path | None = None) -> RunContext:
    """Refuse what ``execute`` would refuse, creating nothing (``compare`` checks all first)."""
    w = cfg.workload
    nodes = cfg.launcher.node_count()
    # Named like the run directory it stands for, as messages about it show that name.
    future = (parent or cfg.runs_dir) / f"{utc_stamp()}-{cfg.launcher.name}-{cfg.transport.name}"
    ctx = RunContext(
        future,
        secrets.token_hex(4),
        w.data_bytes,
        cfg.launcher.hosts_spanned(),
        launcher=cfg.launcher.name,
        mode=w.mode,
    )
    preflight(cfg, ctx, -(-(w.trainers or 1) // nodes))
    return ctx


def execute(cfg: RunConfig, progress: Progress | None = None, parent: Path | None = None) -> Path:
    """Run one configuration end to end; return its run directory (raises on failure)."""
    progress = progress or NullProgress()
    w = cfg.workload
    parent = parent or cfg.runs_dir
    label = f"{cfg.launcher.name}-{cfg.transport.name}"
    run_id = check_run(cfg, parent).run_id

    run_path = make_run_dir(parent, label)
    ctx = RunContext(
        run_path,
        run_id,
        w.data_bytes,
        cfg.launcher.hosts_spanned(),
        launcher=cfg.launcher.name,
        mode=w.mode,
    )
    rundir = RunDir(run_path)
    rundir.write_config(cfg.dump())
    summary = base_summary(cfg, run_path)
    launcher: Launcher | None = None
    transport: Transport | None = None
    t_start = time.perf_counter()
    try:
        with signals_as_exceptions() as guard:
            try:
                t0 = time.perf_counter()
                with guard.deferred():
                    transport = cfg.transport.start(ctx)
                summary["transport_startup_s"] = time.perf_counter() - t0
                with guard.deferred():
                    launcher = cfg.launcher.start(w.num_sims, w.trainers, run_path)
                summary["launcher_startup_s"] = launcher.startup_s
                expect = getattr(transport, "expect_readers", None)
                if expect is not None:  # a staging transport waits for every trainer
                    expect(launcher.trainers)
                summary["startup_s"] = time.perf_counter() - t0
                summary.update(
                    trainers=launcher.trainers,
                    sim_workers=launcher.sim_workers,
                    gpus=launcher.gpus,
                    nodes=launcher.nodes,
                )
                rundir.write_environment(environment(launcher.gpus, w.seed))
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
