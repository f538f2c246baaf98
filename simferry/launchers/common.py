"""Helpers that several launchers share, so no launcher has to import another one.

Sizing (``cpu_count``, ``gpu_count``) is read without importing torch in the main
process; ``warm_trainer`` and ``tracked`` run inside pool workers of every launcher. The
Dragon runtime checks are here too: the dragon launcher and the DDict transport refuse to
start without it in the same words, and neither may import the other. Nothing from Dragon
is imported, so ``doctor`` works without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from simferry.faults import fault_point
from simferry.threads import set_threads
from simferry.transports.exceptions import TransportUnavailableError


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


# --- The Dragon runtime as this machine has it: installed, running, and why not ---

INSTALL = "install it with `pip install dragonhpc` (Linux, Python 3.10-3.12)"
#: Set by the Dragon runtime in every process it starts.
RUNTIME_ENV = "DRAGON_MY_PUID"


def in_runtime() -> bool:
    """Whether this process was started by the Dragon runtime (``dragon`` or a pool)."""
    return RUNTIME_ENV in os.environ


def dragon_puid() -> int:
    """This process's Dragon id: what the pools report for a worker that died."""
    return int(os.environ[RUNTIME_ENV])


def how_it_ended(code: int | None) -> str:
    """A dead process's exit status in words: "killed by signal 9", "exit code 1"."""
    return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"


def dragon_executable() -> Path | None:
    """The ``dragon`` launcher of this Python's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "dragon"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("dragon")
    return Path(found) if found else None


def dragon_installed() -> bool:
    return importlib.util.find_spec("dragon") is not None


def missing_reason() -> str | None:
    """Why Dragon cannot be used here, in one sentence; ``None`` when it can."""
    if not dragon_installed():
        return f"dragonhpc is not installed; {INSTALL}."
    if not in_runtime() and dragon_executable() is None:
        return (
            f"the `dragon` executable of dragonhpc is not on PATH; {INSTALL} in this environment."
        )
    return None


def require_runtime(what: str) -> None:
    """Refuse Dragon objects outside the runtime, where they would fail obscurely."""
    reason = missing_reason()
    if reason:
        raise TransportUnavailableError(f"{what} cannot run: {reason}")
    if not in_runtime():
        raise TransportUnavailableError(
            f"{what} needs the Dragon runtime; use `simferry run --launcher dragon`, which "
            "starts it, or run simferry under `dragon`."
        )
