"""The definition of "a launcher works": one suite, run over every launcher.

Each test starts a real runtime (process pools, a Parsl DataFlowKernel, Dragon pools)
through the launcher's public interface -- ``LauncherConfig.start``, ``submit``,
``shutdown`` -- with tiny tasks. Dragon's part runs inside a Dragon runtime
(``test_inside_dragon.py``); outside one it skips. Every process the launcher starts
inherits a marker in its environment, which is how the suite finds them (and only them,
while other runs on the machine use the same runtimes) to prove that none outlives
``shutdown`` and that the shared memory they mapped is freed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor, Future
from pathlib import Path
from typing import Any

import psutil
import pytest

from simferry import plugins
from simferry.launchers import dragon
from simferry.launchers.base import Launcher

from ..leaks import SHM, is_multiprocessing_helper

pytestmark = pytest.mark.integration

MARK = "SIMFERRY_LAUNCHER_SUITE"
NAMES = ["local", "parsl", "dragon"]
WAIT_S = 120.0


# -- tasks (module-level: every runtime ships them by reference) ----------------------


def square(x: int) -> int:
    return x * x


def worker_pid() -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def hang_once(flag: str) -> str:
    """Hang on the first attempt (writing the worker's pid), return on the next."""
    path = Path(flag)
    if path.exists():
        return "retried"
    path.write_text(str(os.getpid()))
    time.sleep(WAIT_S)
    return "not killed"


def sleep(seconds: float) -> None:
    time.sleep(seconds)


# -- what the suite watches ---------------------------------------------------------------


def marked(mark: str) -> list[psutil.Process]:
    """Live processes other than this one whose environment carries ``mark``."""
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if p.pid != os.getpid() and p.environ().get(MARK) == mark and live(p):
                found.append(p)
    return found


def live(p: psutil.Process) -> bool:
    """Running and not one of Python's per-process multiprocessing helpers."""
    with contextlib.suppress(psutil.Error):
        return p.status() != psutil.STATUS_ZOMBIE and not is_multiprocessing_helper(p)
    return False


def forked() -> set[psutil.Process]:
    """This process's descendants: forked workers keep the environment they were exec'd
    with in /proc, so only their ancestry shows they are the launcher's."""
    return {p for p in psutil.Process().children(recursive=True) if live(p)}


class Watch:
    """The launcher's processes and the /dev/shm entries they map, sampled while it runs."""

    def __init__(self, mark: str) -> None:
        self.mark = mark
        self.shm_before = {p.name for p in SHM.iterdir()}
        self.before = forked()
        self.procs: set[psutil.Process] = set()
        self.shm: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            for proc in {*marked(self.mark), *(forked() - self.before)}:
                self.procs.add(proc)
                with contextlib.suppress(OSError):
                    maps = Path(f"/proc/{proc.pid}/maps").read_text()
                    self.shm |= set(re.findall(r"/dev/shm/([^\s/]+)", maps))
            if self._stop.wait(0.5):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def left_behind(self, timeout: float = 20.0) -> tuple[list[str], set[str]]:
        """Processes of the launcher still alive, and its new /dev/shm entries still there."""
        deadline = time.monotonic() + timeout
        while True:
            alive = {p for p in self.procs if live(p)} | set(marked(self.mark))
            procs = [" ".join(p.cmdline())[:120] for p in alive]
            new = self.shm - self.shm_before
            shm = {n for n in new if (SHM / n).exists()}
            if (not procs and not shm) or time.monotonic() > deadline:
                return procs, shm
            time.sleep(0.3)


# -- fixtures -------------------------------------------------------------------------


def config(name: str) -> Any:
    """The launcher's default config, or a skip saying why it cannot run here."""
    if name == "dragon" and not dragon.in_runtime():
        pytest.skip("Dragon pools exist only inside a Dragon runtime (test_inside_dragon.py)")
    cfg = plugins.launcher_config_class(name)()
    reason = cfg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    return cfg


@pytest.fixture(scope="module", params=NAMES)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Launcher]]:
    """One launcher per backend for the tests that leave it as they found it (a runtime
    takes seconds to start, much more on a busy machine)."""
    cfg = config(request.param)
    launcher = cfg.start(2, 1, tmp_path_factory.mktemp("run"))
    try:
        yield request.param, launcher
    finally:
        launcher.shutdown(cancel=True)


@pytest.fixture(params=NAMES)
def started(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Launcher, Watch]]:
    """A launcher of its own for a test that kills or stops it, and what watches it."""
    cfg = config(request.param)
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK, mark)
    watch = Watch(mark)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    launcher = cfg.start(2, 1, run_dir)
    try:
        yield request.param, launcher, watch
    finally:
        launcher.shutdown(cancel=True)  # a no-op once a test shut it down itself
        watch.stop()


def assert_nothing_left(watch: Watch) -> None:
    assert watch.procs, "no process of the launcher was seen: the check would prove nothing"
    procs, shm = watch.left_behind()
    assert procs == [], f"processes outlived shutdown: {procs}"
    assert shm == set(), f"shared memory outlived shutdown: {sorted(shm)}"


# -- the basic interface --------------------------------------------------------------


def test_submit_runs_in_worker_processes_of_both_roles(shared: Any) -> None:
    _, launcher = shared
    assert isinstance(launcher.sim_workers, int) and launcher.sim_workers >= 1
    assert launcher.trainers == 1 and launcher.nodes == 1 and launcher.startup_s >= 0
    sim = launcher.submit("sim", worker_pid)
    train = launcher.submit("train", square, 7)
    assert isinstance(sim, Future) and isinstance(train, Future)
    assert sim.result(WAIT_S) != os.getpid()
    assert train.result(WAIT_S) == 49


def test_map_returns_every_result_to_its_own_future(shared: Any) -> None:
    _, launcher = shared
    futures = [launcher.submit("sim", square, i) for i in range(24)]
    assert [f.result(WAIT_S) for f in futures] == [i * i for i in range(24)]


def test_a_task_that_raises_fails_only_its_own_future(shared: Any) -> None:
    _, launcher = shared
    bad = launcher.submit("sim", fail, "the task's own error")
    good = launcher.submit("sim", square, 3)
    with pytest.raises(ValueError, match="the task's own error"):
        bad.result(WAIT_S)
    assert good.result(WAIT_S) == 9


def test_a_killed_worker_fails_its_task_as_lost_and_a_retry_runs(
    started: Any, tmp_path: Path
) -> None:
    """Kill the worker running a task for real: its future fails with one of the errors
    the engine retries, and the same task submitted again completes on a live worker."""
    name, launcher, _ = started
    flag = tmp_path / "attempt"
    fut = launcher.submit("sim", hang_once, str(flag))
    deadline = time.monotonic() + WAIT_S
    while not flag.exists() or not flag.read_text():
        assert time.monotonic() < deadline and not fut.done(), "the task never started"
        time.sleep(0.05)
    os.kill(int(flag.read_text()), signal.SIGKILL)
    with pytest.raises(BaseException) as info:
        fut.result(WAIT_S)
    assert isinstance(info.value, lost_errors(name, launcher)), repr(info.value)
    assert launcher.submit("sim", hang_once, str(flag)).result(WAIT_S) == "retried"


def test_shutdown_stops_every_process_and_frees_shared_memory(started: Any) -> None:
    _, launcher, watch = started
    assert launcher.submit("sim", square, 2).result(WAIT_S) == 4
    assert launcher.submit("train", square, 3).result(WAIT_S) == 9
    launcher.shutdown()
    assert_nothing_left(watch)


def test_shutdown_with_cancel_stops_running_tasks(started: Any) -> None:
    """Ctrl-C: tasks still running are killed with their workers, promptly."""
    _, launcher, watch = started
    running = [launcher.submit("sim", sleep, WAIT_S) for _ in range(2)]
    time.sleep(1.0)  # let them start
    t0 = time.monotonic()
    launcher.shutdown(cancel=True)
    assert time.monotonic() - t0 < 60, "shutdown waited for the running tasks"
    assert_nothing_left(watch)
    assert not any(f.done() and not f.cancelled() and f.exception() is None for f in running)


# -- optional abilities -------------------------------------------------------------------


def lost_errors(name: str, launcher: Any) -> tuple[type[BaseException], ...]:
    """The errors that say "the worker died": a broken pool, and what the runtime adds."""
    own: tuple[type[BaseException], ...] = () if name == "local" else launcher.lost_errors
    return (BrokenExecutor, *own)
