"""Helpers that several launchers share, so no launcher has to import another one.

Sizing (``cpu_count``, ``gpu_count``) is read without importing torch in the main
process; ``warm_trainer`` and ``tracked`` run inside pool workers of every launcher.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from simferry.tasks import fault_point


def sim_workers_field(most: int | None = None) -> Any:
    """``--sim-workers``, described once for every launcher that sizes a simulation pool."""
    return Field(
        None, ge=1, le=most, description="simulation processes (default: min(num_sims, cores))"
    )


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, which a batch job narrows)."""
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
    # Imported in the worker, never in the main process: it imports torch (seconds).
    from simferry.workload.training import set_threads

    set_threads(trainers_here)
    return os.getpid()


def tracked(
    notes: Path, token: int, worker: Callable[[], object], fn: Callable[..., Any], /, *args: Any
) -> Any:
    """Run ``fn`` in a worker after noting which task it is, in a file named ``worker()``.

    If the worker dies, those notes tell the launcher whose task killed it, so only that
    task is charged a retry and named when it fails. ``worker`` names the process the way
    the launcher's runtime reports dead ones: ``os.getpid`` for process pools, Dragon's
    process id under Dragon.
    ``SIMFERRY_FAULT=kill-take:<token>:0`` kills the worker before its note (tests only).
    """
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
