"""Process pools on this machine: the embedded default that needs nothing installed.

Two ``ProcessPoolExecutor``s: simulations on ``--sim-workers`` processes, trainers on
one process each. The trainer processes are started and import torch while simulations
still run, so that cost is not added to the training phase.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
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


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool whose tasks may still run (``shutdown`` alone waits for them)."""
    processes = list(getattr(pool, "_processes", {}).values())
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
        # fork: workers start in milliseconds and the main process never imports torch,
        # so no CUDA or thread state is inherited.
        ctx = multiprocessing.get_context("fork")
        self._pools: dict[Role, ProcessPoolExecutor] = {
            "sim": ProcessPoolExecutor(sim_workers, mp_context=ctx),
            "train": ProcessPoolExecutor(trainers, mp_context=ctx),
        }
        # Start every worker now (fork starts them all on the first submit), before any
        # progress display thread exists.
        self._pools["sim"].submit(os.getpid).result()
        self._warm = [self._pools["train"].submit(warm_trainer, trainers) for _ in range(trainers)]
        self.startup_s = time.perf_counter() - t0

    def submit(self, role: Role, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        if role == "train" and self._warm:
            # Trainers queue behind the warm-up otherwise, and the wait would be counted
            # as their hand-off; usually it finished long ago, during the simulations.
            for fut in self._warm:
                fut.result()
            self._warm = []
        return self._pools[role].submit(fn, *args)

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
        None, ge=1, description="simulation processes (default: min(num_sims, cores))"
    )

    def start(self, num_sims: int, trainers: int | None, run_dir: Any) -> LocalLauncher:
        gpus = gpu_count()
        workers = self.sim_workers or min(num_sims, cpu_count())
        return LocalLauncher(workers, trainers or max(1, gpus), gpus)
