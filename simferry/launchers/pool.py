"""Runs one Parsl worker pool on a batch node and returns only when all it started is gone.

On PBS and Slurm nodes a worker pool is a task of ``srun``/``mpiexec``. When the run ends
those tasks get SIGTERM and, once the task process exits, the step's remaining processes
are killed outright. Parsl's pool dies at once on SIGTERM; its workers and its
multiprocessing helpers are then orphans, and the resource tracker -- which removes the
pool's named semaphores from ``/dev/shm`` when its clients are gone -- is killed with the
step before it can, leaving ``sem.mp-*`` files on every node, run after run.

This process is the task instead: it adopts the pool's orphans (a child subreaper),
passes SIGTERM/SIGINT to every descendant, and exits only when they all have, so the
tracker (which ignores SIGTERM) finishes its clean-up first. Deliberately light: no
simferry import beyond this module.

Usage: ``python -m simferry.launchers.pool -m parsl.executors.high_throughput.process_worker_pool ARGS``
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

import psutil

PR_SET_CHILD_SUBREAPER = 36
#: How long the pool's leftovers may take to exit after the pool itself; then killed.
LINGER_S = 20.0


def adopt_orphans() -> None:
    """Become the parent of every orphaned descendant, so that we can wait for them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants() -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process().children(recursive=True)
    return []


def main(argv: list[str]) -> int:
    adopt_orphans()
    pool = subprocess.Popen([sys.executable, *argv])

    def forward(signum: int, _frame: FrameType | None) -> None:
        for proc in descendants():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    code = pool.wait()
    # The pool is gone (stopped, or killed outright): its workers would wait for their
    # next heartbeat to notice; the resource tracker ignores SIGTERM and exits once they have.
    forward(signal.SIGTERM, None)
    deadline = time.monotonic() + LINGER_S
    while descendants() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)
        time.sleep(0.05)
    for proc in descendants():  # still there: not ours to wait for any longer
        with contextlib.suppress(psutil.Error):
            proc.kill()
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
