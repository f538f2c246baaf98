"""Waiting on submitted tasks, and the one policy for retrying those whose worker died.

A task that raised would raise again, so only the launcher's lost-worker errors are
retried, and each task gets ``--retries`` charged attempts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait
from dataclasses import dataclass
from typing import Any

from simferry.engine.signals import raise_if_interrupted
from simferry.errors import Interrupted, RunFailure, SimferryError
from simferry.launchers.base import KnowsCulprit, Launcher, LosesWorkers
from simferry.transports.base import Liveness, Transport

#: Uncharged resubmissions of one task (it only queued with dying workers) before giving up.
MAX_SPARED = 10
#: Seconds between ``check_alive`` calls on the transport while tasks run.
ALIVE_S = 1.0


def task_failure(what: str, exc: BaseException) -> SimferryError:
    if isinstance(exc, SimferryError):
        return exc
    detail = str(exc).rstrip(".") or type(exc).__name__
    return RunFailure(f"{what} failed: {detail}.")


def lost_errors(launcher: Launcher | None) -> tuple[type[BaseException], ...]:
    """Errors meaning "the worker process died", not "the task raised".

    Only these are retried: a task that raised would raise again. A launcher adds its
    runtime's own by declaring ``LosesWorkers`` (e.g. Parsl's ``WorkerLost``).
    """
    extra = launcher.lost_errors if isinstance(launcher, LosesWorkers) else ()
    return (BrokenExecutor, *extra)


#: The launcher's ``died_running``: whether a lost future's task ran in the dead worker.
Blame = Callable[[Future[Any]], "bool | None"] | None


@dataclass
class Task:
    """A submitted task and how to submit it again if its worker dies."""

    what: str
    resubmit: Callable[[], Future[Any]] | None = None
    submitted: float = 0.0
    attempt: int = 1
    #: Resubmissions not charged: the task only queued with a worker that died of another.
    spared: int = 0

    def charge(self, fut: Future[Any], exc: BaseException, retries: int, blame: Blame) -> None:
        """Count one more attempt of a task whose worker died, or raise when none is left.

        Not charged when the launcher says the task only queued with the worker that died
        (``blame`` gives False); charged when it ran there or nobody knows (None).
        """
        if blame is not None and blame(fut) is False and self.spared < MAX_SPARED:
            self.spared += 1
        elif self.attempt <= retries:
            self.attempt += 1
        else:
            raise RunFailure(
                f"{self.what} failed after {self.attempt} attempt(s): a worker process died "
                "while it ran or waited (killed, or out of memory); check memory use, or raise "
                "--retries."
            ) from exc

    def start(self) -> Future[Any]:
        assert self.resubmit is not None
        self.submitted = time.time()
        return self.resubmit()


def resubmit(task: Task) -> Future[Any]:
    """Start ``task`` again, or say in one sentence why its launcher cannot."""
    try:
        return task.start()
    except BrokenExecutor as exc:
        raise RunFailure(
            f"{task.what} could not be resubmitted: the launcher could not replace its dead "
            f"worker ({exc})."
        ) from exc


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
    attempt. A task whose worker died is retried as ``Task.charge`` allows. A transport
    with ``check_alive`` is asked every ``ALIVE_S``: a dead server would otherwise show
    only as tasks hanging until their own timeouts.
    """
    lost = lost_errors(launcher)
    blame = launcher.died_running if isinstance(launcher, KnowsCulprit) else None
    check_alive = transport.check_alive if isinstance(transport, Liveness) else None

    def alive() -> None:
        assert check_alive is not None
        check_alive()
        raise_if_interrupted()  # runtime calls (Dragon's) may swallow a Ctrl-C landing there

    tasks = {f: t if isinstance(t, Task) else Task(t[0], None, t[1]) for f, t in futures.items()}
    pending, checked = set(tasks), time.monotonic()
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
                task.charge(fut, exc, retries, blame)
                again = resubmit(task)
                tasks[again] = task
                pending.add(again)
                continue
            result.record.submitted = task.submitted
            result.record.received = received
            result.record.attempt = task.attempt
            on_done(result, received)
