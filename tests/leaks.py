"""What a run may leave behind, measured the same way by the fault, security and soak tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from simferry import plugins

SHM = Path("/dev/shm")


def shm_entries(owner: int | None = None) -> set[str]:
    """/dev/shm entries of runs owned by process ``owner`` (default: this one).

    Entries are named ``simferry-<run>-<owner pid>``; other processes' runs (and other
    tools' semaphores) are not ours to count.
    """
    return {p.name for p in SHM.glob(f"simferry-*-{owner or os.getpid()}")}


def is_multiprocessing_helper(proc: psutil.Process) -> bool:
    """Python's one-per-process multiprocessing servers: the resource tracker, the forkserver.

    The first run in a process that ran torch starts them (its trainers come from the
    forkserver) and they live as long as that process: not a run's leftover.
    """
    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "multiprocessing.resource_tracker" in line or "multiprocessing.forkserver" in line


def our_children() -> list[psutil.Process]:
    """This process's descendants that a run may leave behind (not multiprocessing's own)."""
    return [
        c for c in psutil.Process().children(recursive=True) if not is_multiprocessing_helper(c)
    ]


def session_processes(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (a CLI started with ``start_new_session``)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def wait_gone(sid: int, timeout: float = 10.0) -> list[psutil.Process]:
    """Processes of ``sid`` still alive after ``timeout`` (an empty list is the goal)."""
    deadline = time.monotonic() + timeout
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def kill_session(sid: int) -> None:
    """Test teardown: never let a failed assertion leave a run's processes behind."""
    for proc in session_processes(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The real ``simferry`` command in its own session, as a terminal would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "simferry", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def local_transports() -> list[object]:
    """Every registered transport that runs with the local launcher, as pytest params.

    Transports added later (redis, ...) join the fault and soak tests automatically; those
    whose software is missing here are skipped with their own reason.
    """
    params: list[object] = []
    for name, cls in sorted(plugins.transports().items()):
        if cls.launchers is not None and "local" not in cls.launchers:
            continue
        reason = cls(name=name).unavailable_reason()
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def shared_store_transports() -> list[object]:
    """Like ``local_transports`` but only those with a store (not pass-by-value)."""
    return [
        p
        for p in local_transports()
        if not plugins.transports()[p.values[0]].by_value  # type: ignore[attr-defined]
    ]
