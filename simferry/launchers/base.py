"""The Launcher Protocol: an Executor-like adapter over a process runtime.

Where the resources come from (a provider), how processes start on them and what runs
tasks stay inside each launcher module, as in Parsl; the workflow only submits
functions to one of two roles and waits on ``concurrent.futures.Future``-like objects.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

Role = Literal["sim", "train"]


class WorkerLost(RuntimeError):
    """The worker process running a task died (killed, out of memory): the task may be retried.

    For runtimes that restart a dead worker but never complete its task (Dragon's pools);
    the workflow retries only the launcher's ``lost_errors``, never a task that raised.
    """


class Launcher(Protocol):
    name: str
    #: Nodes the launcher spans (1 on a laptop).
    nodes: int
    #: GPUs visible to trainers (0 on CPU-only machines).
    gpus: int
    sim_workers: int
    trainers: int
    #: Seconds spent starting the runtime before the first task could run.
    startup_s: float

    def submit(self, role: Role, fn: Callable[..., Any], /, *args: Any) -> Future[Any]: ...

    def shutdown(self, cancel: bool = False) -> None:
        """Stop every process started; with ``cancel`` also kill running tasks (Ctrl-C)."""
        ...


@runtime_checkable
class LosesWorkers(Protocol):
    """Optional: a runtime whose own errors say "the worker died" (Parsl's ``WorkerLost``).

    The engine retries these besides ``BrokenExecutor``, never a task that raised.
    """

    @property
    def lost_errors(self) -> tuple[type[BaseException], ...]: ...


@runtime_checkable
class KnowsCulprit(Protocol):
    """Optional: a launcher that knows which task was running in a worker that died.

    Tasks that only queued with that worker fail too; they are retried without being
    charged an attempt.
    """

    def died_running(self, fut: Future[Any]) -> bool | None:
        """True if ``fut``'s task ran in the dead worker, False if not, None if unknown."""
        ...


@runtime_checkable
class RestartsWorkers(Protocol):
    """Optional: a launcher that rebuilds its pool after a worker died, and counts it."""

    @property
    def restarts(self) -> int: ...


@runtime_checkable
class ReleasesWorkers(Protocol):
    """Optional: a launcher whose idle workers of one role hold resources trainers need."""

    def release(self, role: Role) -> None:
        """Stop the workers of ``role``; no task of that role is submitted afterwards."""
        ...


@runtime_checkable
class SimWorkersOption(Protocol):
    """Optional: a launcher config where the user sets the size of the simulation pool."""

    sim_workers: int | None


class LauncherConfig(BaseModel):
    """User-facing options of one launcher; subclasses are registered by ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    display: ClassVar[str] = ""
    #: Copies of pass-by-value results the runtime holds in flight besides this process's
    #: (``memory.need_bytes``).
    result_copies: ClassVar[int] = 0

    def unavailable_reason(self) -> str | None:
        """Why this launcher cannot run here (missing package), else ``None``."""
        return None

    def node_count(self) -> int:
        return 1

    def hosts_spanned(self) -> int:
        """Hosts the run's data crosses: this one and every node its workers may run on.

        What node-local transports (shm, a Redis Unix socket) must know; it can exceed
        ``node_count`` when the workers never run on this host.
        """
        return self.node_count()

    def start(self, num_sims: int, trainers: int | None, run_dir: Any) -> Launcher:
        raise NotImplementedError
