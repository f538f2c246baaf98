"""Process pools on this machine: the embedded default that needs nothing installed.

Two ``ProcessPoolExecutor``s: simulations on ``--sim-workers`` processes, trainers on
one process each. The trainer processes are started and import torch while simulations
still run, so that cost is not added to the training phase.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
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


PR_SET_PDEATHSIG = 1
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def worker_init(parent: int, tie_to_parent: bool) -> None:
    """Pool initializer: only the main process handles Ctrl-C and SIGTERM.

    A terminal sends SIGINT to the whole process group; workers ignore it and the main
    process stops them. SIGTERM gets its default action back (a forked worker inherits the
    main process's handler), so ``kill_pool``'s terminate ends a worker instead of raising
    inside its task. Workers also die with the main process even when it is SIGKILLed.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if tie_to_parent and sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
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


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool whose tasks may still run (``shutdown`` alone waits for them)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


class LocalLauncher:
    name = "local"
    nodes = 1

    def __init__(self, sim_workers: int, trainers: int, gpus: int) -> None:
        t0 = time.perf_counter()
        self.sim_workers = sim_workers
        self.trainers = trainers
        self.gpus = gpus
        #: Pools rebuilt after a worker died (reported in the run summary).
        self.restarts = 0
        # fork: workers start in milliseconds and the main process never imports torch,
        # so no CUDA or thread state is inherited.
        self._ctx = multiprocessing.get_context("fork")
        self._pools: dict[Role, ProcessPoolExecutor] = {}
        self._warm: list[Future[int]] = []
        for role in ("sim", "train"):
            self._start_pool(role)
        self.startup_s = time.perf_counter() - t0

    def _start_pool(self, role: Role) -> None:
        size = self.sim_workers if role == "sim" else self.trainers
        # Workers die with the main process only when it, not a short-lived thread, forks.
        main = threading.current_thread() is threading.main_thread()
        with signals_blocked():
            pool = ProcessPoolExecutor(
                size, mp_context=self._ctx, initializer=worker_init, initargs=(os.getpid(), main)
            )
            # Start every worker now (fork starts them all on the first submit), before
            # any progress display thread exists.
            if role == "sim":
                pool.submit(os.getpid).result()
            else:
                self._warm = [pool.submit(warm_trainer, size) for _ in range(size)]
        self._pools[role] = pool

    def _restart(self, role: Role) -> None:
        """Replace a pool broken by a dead worker (SIGKILL, out of memory).

        Every task queued on the broken pool failed with it; the workflow resubmits them
        (``--retries``). ``shutdown(wait=True)`` lets the pool finish failing its futures
        and reaping its processes before the new one starts.
        """
        self._pools[role].shutdown(wait=True)
        self.restarts += 1
        self._start_pool(role)

    def submit(self, role: Role, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        try:
            return self._ready(role).submit(fn, *args)
        except BrokenExecutor:
            self._restart(role)
        return self._ready(role).submit(fn, *args)

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
        for pool in self._pools.values():
            if cancel:
                kill_pool(pool)
            else:
                pool.shutdown(wait=True)


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
        return LocalLauncher(workers, trainers or max(1, gpus), gpus)
