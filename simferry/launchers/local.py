"""Process pools on this machine: the embedded default that needs nothing installed.

Two ``ProcessPoolExecutor``s: simulations on ``--sim-workers`` processes, trainers on
one process each. The trainer processes are started and import torch while simulations
still run, so that cost is not added to the training phase. A worker that dies (SIGKILL,
out of memory) breaks its pool: the pool is replaced and the workflow resubmits the lost
tasks (``--retries``), charging only the task that was running in the dead worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from simferry.launchers.base import LauncherConfig, Role
from simferry.plugins import register_launcher

#: Seconds between the watchdog's looks for a pool stuck on a dead worker (``LocalLauncher``).
WATCH_S = 0.5
#: A pool notices a dead worker within milliseconds; one that has not after this is stuck.
STUCK_S = 2.0


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def gpu_count() -> int:
    """GPUs this node exposes, found without importing torch in the main process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def warm_trainer(trainers_here: int) -> int:
    """Import torch and size its thread pool ahead of the training phase."""
    from simferry.workload.training import set_threads

    set_threads(trainers_here)
    return os.getpid()


def trainer_forkserver() -> Any:
    """A forkserver context whose server imports torch once, for hosts that ran torch."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["simferry.workload.training"])
    return ctx


PR_SET_PDEATHSIG = 1
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def worker_init(
    parent: int | None, tie_to_parent: bool, environ: dict[str, str] | None = None
) -> None:
    """Pool initializer: only the main process handles Ctrl-C and SIGTERM.

    A terminal sends SIGINT to the whole process group; workers ignore it and the main
    process stops them. SIGTERM gets its default action back (a forked worker inherits the
    main process's handler), so ``kill_pool``'s terminate ends a worker instead of raising
    inside its task. Workers also die with the main process even when it is SIGKILLed
    (``parent``: its pid; ``None`` for a forkserver's children, which die with the
    forkserver, which exits with the main process). A forkserver's children start with
    the environment the server started with: ``environ`` is the main process's now
    (``CUDA_VISIBLE_DEVICES`` and the like, read when a trainer first uses them).
    """
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if tie_to_parent and sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent is not None and os.getppid() != parent:  # it died before prctl took effect
            os._exit(1)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while forking, so no child runs the parent's handler.

    A forked child keeps the blocked mask until ``worker_init`` has set its own handlers;
    in the parent the signals are delivered when the block ends.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def tracked(
    notes: Path, token: int, worker: Callable[[], object], fn: Callable[..., Any], /, *args: Any
) -> Any:
    """Run ``fn`` in a worker after noting which task it is, in a file named ``worker()``.

    If the worker dies, those notes tell the launcher whose task killed it, so only that
    task is charged a retry and named when it fails. ``worker`` names the process the way
    the launcher's runtime reports dead ones: ``os.getpid`` here, Dragon's process id there.
    ``SIMFERRY_FAULT=kill-take:<token>:0`` kills the worker before its note (tests only).
    """
    from simferry.workload.tasks import fault_point

    fault_point("take", token, 0)
    (notes / str(worker())).write_text(str(token))
    return fn(*args)


class TaskNotes:
    """``<run>/.workers``: which task each worker took last (written by ``tracked``)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".workers"
        self.path.mkdir(mode=0o700, exist_ok=True)

    def task_of(self, worker: object) -> int | None:
        """The token of the task ``worker`` noted last, if it noted one."""
        try:
            return int((self.path / str(worker)).read_text())
        except (OSError, ValueError):
            return None

    def tasks(self) -> set[int]:
        """The tokens every worker noted last."""
        with contextlib.suppress(OSError):
            names = [p.name for p in self.path.iterdir()]
            return {t for t in map(self.task_of, names) if t is not None}
        return set()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def workers(pool: ProcessPoolExecutor) -> list[Any]:
    """The pool's worker processes (``multiprocessing.Process``), as it holds them now."""
    return list((getattr(pool, "_processes", None) or {}).values())


def has_dead_worker(pool: ProcessPoolExecutor) -> bool:
    """Whether a worker of ``pool`` ended; read from its sentinel, so nothing is reaped."""
    with contextlib.suppress(ValueError, OSError):  # a process object closed meanwhile
        sentinels = [p.sentinel for p in workers(pool)]
        return bool(sentinels) and bool(multiprocessing.connection.wait(sentinels, 0))
    return False


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool whose tasks may still run (``shutdown`` alone waits for them)."""
    processes = workers(pool)
    results = getattr(pool, "_result_queue", None)  # ``shutdown`` drops the reference
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    close_result_writer(results)


def close_result_writer(results: Any) -> None:
    """Close this process's write end of a pool's result pipe (``pool._result_queue``).

    A worker killed while sending its result (a pass-by-value payload) leaves half a
    message in that pipe: the pool's manager thread then waits for the rest forever, and
    so does interpreter exit, which joins that thread. With our end closed the wait ends
    in EOF once no worker holds the pipe any more.
    """
    with contextlib.suppress(Exception):
        results._writer.close()


class LocalLauncher:
    """A pool per role on this machine; a watchdog unsticks a pool a dead worker jammed.

    A worker killed while it sends its result (a pass-by-value payload of many pipe
    buffers) leaves half a message in the pool's result pipe, and the pool's manager
    thread then reads the rest forever instead of noticing the death: every task of the
    run would wait forever (reproduced 3 in 3 with 168 MB results). The other workers
    hold that pipe's write end, and so do those of the pool forked after it, so only
    stopping every worker and closing this process's end turns the read into EOF; the
    pools then break as for any dead worker and the workflow retries their tasks, charging
    only the task the killed worker ran.
    """

    name = "local"
    nodes = 1

    def __init__(
        self, sim_workers: int, trainers: int, gpus: int, run_dir: Path | None = None
    ) -> None:
        t0 = time.perf_counter()
        self.sim_workers = sim_workers
        self.trainers = trainers
        self.gpus = gpus
        #: Pools rebuilt after a worker died (reported in the run summary).
        self.restarts = 0
        # Which task each worker runs (see ``tracked``), and what a broken pool was running.
        self._notes = TaskNotes(run_dir) if run_dir is not None else None
        self._tokens = itertools.count()
        self._futures: dict[int, Future[Any]] = {}
        self._culprits: dict[ProcessPoolExecutor, set[Future[Any]]] = {}
        #: Pools the watchdog stopped: a task of theirs was running only if it is a culprit.
        self._unstuck: set[int] = set()
        # fork: workers start in milliseconds and the simferry command never imports
        # torch, so no CUDA or OpenMP state is inherited. A host process that already ran
        # torch (a test session, a notebook) would hand forked trainers a dead OpenMP
        # thread pool, and they hang in their first convolution: those are forked from a
        # forkserver instead, which imported torch but never ran it (a spawned interpreter
        # per trainer took ~2 s more per run, measured in the soak test).
        self._ctx = multiprocessing.get_context("fork")
        self._train_ctx = self._ctx if "torch" not in sys.modules else trainer_forkserver()
        self._pools: dict[Role, ProcessPoolExecutor] = {}
        self._warm: list[Future[int]] = []
        for role in ("sim", "train"):
            self._start_pool(role)
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, name="local-watch", daemon=True)
        self._watch.start()
        self.startup_s = time.perf_counter() - t0

    def _watchdog(self) -> None:
        """Unstick the pools when one has had a dead worker for ``STUCK_S`` without breaking."""
        dead_since: dict[int, float] = {}
        while not self._stop.wait(WATCH_S):
            pools = list(self._pools.values())
            now = time.monotonic()
            stuck = False
            for pool in pools:
                if getattr(pool, "_broken", False) or not has_dead_worker(pool):
                    dead_since.pop(id(pool), None)
                    continue
                stuck |= now - dead_since.setdefault(id(pool), now) >= STUCK_S
            if stuck:
                self._unstick(pools)
                dead_since.clear()

    def _unstick(self, pools: list[ProcessPoolExecutor]) -> None:
        """Stop every worker and close this process's result-pipe ends (see the class)."""
        for pool in pools:
            self._unstuck.add(id(pool))
            for proc in workers(pool):
                with contextlib.suppress(Exception):
                    proc.terminate()
        for pool in pools:
            close_result_writer(getattr(pool, "_result_queue", None))

    def _start_pool(self, role: Role) -> None:
        size = self.sim_workers if role == "sim" else self.trainers
        # Workers die with the main process only when it, not a short-lived thread, forks.
        main = threading.current_thread() is threading.main_thread()
        with signals_blocked():
            ctx = self._ctx if role == "sim" else self._train_ctx
            served = ctx.get_start_method() == "forkserver"
            init = (None, True, dict(os.environ)) if served else (os.getpid(), main, None)
            pool = ProcessPoolExecutor(size, mp_context=ctx, initializer=worker_init, initargs=init)
            # Held before any worker exists, so an interrupted start-up still stops them.
            self._pools[role] = pool
            # Start every worker now (fork starts them all on the first submit), before
            # any progress display thread exists.
            if role == "sim":
                pool.submit(os.getpid).result()
            else:
                self._warm = [pool.submit(warm_trainer, size) for _ in range(size)]

    def _restart(self, role: Role) -> None:
        """Replace a pool broken by a dead worker (SIGKILL, out of memory).

        Every task queued on the broken pool failed with it; the workflow resubmits them
        (``--retries``). ``shutdown(wait=True)`` lets the pool finish failing its futures
        and reaping its processes before the new one starts.
        """
        pool = self._pools[role]
        processes = workers(pool)
        pool.shutdown(wait=True)
        # The pool terminates its other workers (SIGTERM); any other death is a culprit.
        dead = [p.pid for p in processes if p.exitcode not in (None, 0, -signal.SIGTERM)]
        running = (self._running(pid) for pid in dead)
        self._culprits[pool] = {f for f in running if f is not None}
        self.restarts += 1
        self._start_pool(role)

    def _running(self, pid: int | None) -> Future[Any] | None:
        token = self._notes.task_of(pid) if self._notes is not None and pid else None
        return self._futures.get(token) if token is not None else None

    def died_running(self, fut: Future[Any]) -> bool | None:
        """Whether ``fut`` failed because its own worker died, not only queued with it.

        ``None`` when unknown (the dead worker was idle, or left no note): the workflow
        then charges every task of the broken pool.
        """
        pool = getattr(fut, "simferry_pool", None)
        if pool is None:
            return None
        if pool not in self._culprits and getattr(pool, "_broken", False):
            self._restart(next(r for r, p in self._pools.items() if p is pool))
        culprits = self._culprits.get(pool) or set()
        return (fut in culprits) if culprits or id(pool) in self._unstuck else None

    def submit(self, role: Role, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        try:
            return self._submit(role, fn, *args)
        except BrokenExecutor:
            self._restart(role)
        return self._submit(role, fn, *args)

    def _submit(self, role: Role, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        pool = self._ready(role)
        if self._notes is None:
            return pool.submit(fn, *args)
        token = next(self._tokens)
        fut = pool.submit(tracked, self._notes.path, token, os.getpid, fn, *args)
        fut.simferry_pool = pool  # type: ignore[attr-defined]
        self._futures[token] = fut
        fut.add_done_callback(functools.partial(self._forget, token))
        return fut

    def _forget(self, token: int, fut: Future[Any]) -> None:
        # A finished task can no longer be a culprit, except one that failed: keep those
        # until the pool's culprits are known.
        if not fut.cancelled() and fut.exception() is None:
            self._futures.pop(token, None)

    def _ready(self, role: Role) -> ProcessPoolExecutor:
        if role == "train" and self._warm:
            # Trainers queue behind the warm-up otherwise, and the wait would be counted
            # as their hand-off; usually it finished long ago, during the simulations.
            warm, self._warm = self._warm, []
            for fut in warm:
                with contextlib.suppress(BrokenExecutor):  # the pool is restarted by submit
                    fut.result()
        return self._pools[role]

    def shutdown(self, cancel: bool = False) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            self._watch.join()
        for pool in self._pools.values():
            if cancel:
                kill_pool(pool)
            else:
                pool.shutdown(wait=True)
        if self._notes is not None:
            self._notes.remove()


@register_launcher
class LocalConfig(LauncherConfig):
    """Process pools on this machine."""

    name: Literal["local"] = "local"
    display: ClassVar[str] = "Local"
    sim_workers: int | None = Field(
        None, ge=1, le=1024, description="simulation processes (default: min(num_sims, cores))"
    )

    def start(self, num_sims: int, trainers: int | None, run_dir: Any) -> LocalLauncher:
        gpus = gpu_count()
        # More workers than simulations would only be idle processes.
        workers = min(self.sim_workers or cpu_count(), num_sims)
        run_path = Path(run_dir) if run_dir is not None else None
        return LocalLauncher(workers, trainers or max(1, gpus), gpus, run_path)
