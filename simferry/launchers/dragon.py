"""DragonHPC process pools, and starting the Dragon runtime when simferry is not inside one.

Simulations run on one ``dragon.native.pool.Pool`` of ``--sim-workers`` processes spread
over the runtime's nodes. Each trainer gets a pool of one process placed by a Dragon
policy: pinned to one GPU (``System.gpu_policies``) when the nodes have GPUs, else to a
node in turn, so a CPU-only machine gets ``--trainers`` processes instead of the
reference's pool of zero. Pool results complete real ``concurrent.futures.Future``s, which
is all the workflow waits on.

Dragon objects only work inside its runtime, which the ``dragon`` executable starts. Typed
in a plain shell, ``simferry run --launcher dragon`` therefore re-runs itself under
``dragon`` (``run_under_dragon``); under ``dragon`` already (a batch script) it runs in
place. This module imports nothing from Dragon at import time, so ``doctor`` and
``compare`` work where dragonhpc is not installed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, Literal

import psutil
import tomli_w
from pydantic import Field, field_validator

from simferry.errors import Interrupted, RunFailure, UsageError
from simferry.launchers.base import LauncherConfig, Role, WorkerLost
from simferry.launchers.common import (
    TaskNotes,
    dragon_executable,
    dragon_installed,
    dragon_puid,
    how_it_ended,
    in_runtime,
    missing_reason,
    require_runtime,
    sim_workers_field,
    tracked,
    warm_trainer,
)
from simferry.plugins import register_launcher
from simferry.records import drop_none, read_summary
from simferry.transports.exceptions import TransportUnavailableError

if TYPE_CHECKING:
    from simferry.config import RunConfig

#: When the parent simferry started ``dragon`` (time.time()), to report the boot time.
BOOT_ENV = "SIMFERRY_DRAGON_T0"
#: Seconds between checks that no pool worker died (a dead worker's task never returns).
WATCH_S = 1.0
#: Checks in a row that a task must be neither queued nor noted by a worker, in a pool that
#: lost a worker with no note, before it is taken as lost with that worker. A worker notes
#: its task microseconds after taking it; a finished task is settled within milliseconds.
UNNOTED_CHECKS = 5
#: Seconds the runtime may take to start simferry inside it (it takes 2-10 s; a loaded
#: machine is slower); past that it is taken to be stuck.
START_TIMEOUT_S = 180.0
#: Seconds a Ctrl-C that came while the runtime booted waits for simferry to start in it.
ABORT_GRACE_S = 10.0


#: Workload managers Dragon detects by their client on PATH, with the variable that a job
#: of theirs sets. A client without that variable is a login node: Dragon then refuses to
#: start unless told it runs on this one node.
WORKLOAD_MANAGERS = (("Slurm", "srun", "SLURM_JOB_ID"), ("PBS", "qstat", "PBS_JOBID"))
#: ``dragon`` flags that choose the launch mode themselves; given, simferry adds none.
MODE_FLAGS = ("-s", "--single-node-override", "-m", "--multi-node-override", "-w", "--wlm")
SINGLE_NODE_ENV = "DRAGON_SINGLE_NODE_OVERRIDE"


def login_node() -> str | None:
    """The workload manager whose client is here without an allocation, e.g. "Slurm (srun)".

    ``None`` inside a job of any of them (Dragon then runs on the job's nodes) and where
    none is installed.
    """
    if any(job in os.environ for _, _, job in WORKLOAD_MANAGERS):  # as Dragon checks
        return None
    for name, client, _ in WORKLOAD_MANAGERS:
        if shutil.which(client):
            return f"{name} ({client})"
    return None


def launch_flags(user: list[str]) -> list[str]:
    """Flags for ``dragon``: the user's, plus ``--single-node-override`` on a login node."""
    chose = SINGLE_NODE_ENV in os.environ or any(
        arg == flag or arg.startswith(flag + "=") for arg in user for flag in MODE_FLAGS
    )
    if chose or login_node() is None:
        return list(user)
    return ["--single-node-override", *user]


def login_node_note() -> str | None:
    """What ``doctor`` says about starting Dragon here, when it is a login node."""
    where = login_node()
    if where is None or not dragon_installed():
        return None
    return (
        f"a {where} client without an allocation (a login node): simferry starts Dragon "
        "with --single-node-override, on this node only"
    )


def split_dragon_args(text: str | None) -> list[str]:
    """``--dragon-args`` as a list, split like a shell line."""
    if not text:
        return []
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(
            f"--dragon-args {text!r} cannot be split like a shell line: {exc}."
        ) from None


class DragonLauncher:
    """A simulation pool and one single-process pool per trainer, inside the runtime.

    Dragon restarts a pool worker that died but never completes the task it ran, and
    cannot say which task that was: each task notes its worker's Dragon id in
    ``<run>/.workers`` (``tracked``), so the watchdog fails exactly that task with
    ``WorkerLost`` and the workflow retries it (``--retries``) or names it in the error.
    """

    name = "dragon"
    lost_errors = (WorkerLost,)

    def __init__(
        self,
        sim_workers: int | None,
        num_sims: int,
        trainers: int | None,
        run_dir: Path | None = None,
    ) -> None:
        # Dragon: an optional extra that works only inside its runtime; imported where used.
        from dragon.native.machine import Node, System
        from dragon.native.pool import Pool

        t0 = time.perf_counter()
        system = System()
        nodes = [Node(h) for h in system.nodes]
        self.nodes = len(nodes)
        self.gpus = sum(n.num_gpus for n in nodes)
        cores = sum(n.num_cpus for n in nodes)
        self.sim_workers = sim_workers or max(1, min(num_sims, cores))
        self.trainers = trainers or max(1, self.gpus)
        # GPU nodes: trainer i on GPU i (mod GPUs); CPU nodes: trainers dealt over nodes.
        places = system.gpu_policies() if self.gpus else system.hostname_policies()
        per_node = -(-self.trainers // max(1, self.nodes))
        self._make: dict[Role, Callable[[], list[Any]]] = {
            "sim": lambda: [Pool(self.sim_workers)],
            "train": lambda: [
                Pool(
                    policy=places[i % len(places)],
                    processes_per_policy=1,
                    initializer=warm_trainer,
                    initargs=(per_node,),
                )
                for i in range(self.trainers)
            ],
        }
        self._pools: dict[Role, list[Any]] = {"sim": [], "train": []}
        #: Tasks not settled yet, by token (see ``tracked``): the future and the pool.
        self._tasks: dict[int, tuple[Future[Any], Any]] = {}
        self._tokens = itertools.count()
        #: Pools that lost a task with a dead worker: ``close`` would wait for it forever.
        self._wounded: set[int] = set()
        self._notes = TaskNotes(run_dir) if run_dir is not None else None
        self._lock = threading.Lock()
        self._next = itertools.count()
        try:
            self._pools["sim"] = self._make["sim"]()
            self._pools["train"] = self._make["train"]()
            # Wait until the simulation workers run, so start-up is not charged to them.
            self._pools["sim"][0].apply_async(os.getpid).get(timeout=300)
        except BaseException:
            self.shutdown(cancel=True)
            raise
        self._seen = set(self._exits())
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watchdog, name="dragon-watch", daemon=True)
        self._watch.start()
        self.startup_s = time.perf_counter() - t0 + boot_seconds()

    def submit(self, role: Role, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        if not self._pools[role]:  # released earlier (see ``release``): start it again
            self._pools[role] = self._make[role]()
            self._seen.update(self._exits())
        pools = self._pools[role]
        # A trainer's tasks go to its own (GPU-pinned) process; anything else in turn.
        index = getattr(args[0], "trainer", None) if args and role == "train" else None
        pool = pools[(next(self._next) if index is None else index) % len(pools)]
        fut: Future[Any] = Future()
        fut.set_running_or_notify_cancel()
        token = next(self._tokens)
        with self._lock:
            self._tasks[token] = (fut, pool)
        if self._notes is not None:
            fn, args = tracked, (self._notes.path, token, dragon_puid, fn, *args)
        pool.apply_async(
            fn,
            args,
            callback=lambda value: self._settle(token, value, None),
            error_callback=lambda exc: self._settle(token, None, exc),
        )
        return fut

    def _settle(self, token: int, value: Any, exc: BaseException | None) -> bool:
        """Complete task ``token`` from a pool's result thread or the watchdog, once.

        Returns whether this call completed it (``False``: settled before, or unknown).
        """
        with self._lock:
            fut, _ = self._tasks.pop(token, (None, None))
        if fut is None:
            return False
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)
        return True

    def _exits(self) -> dict[int, tuple[int, Any]]:
        """Exit code and pool of each pool worker that ended, by Dragon process id."""
        found: dict[int, tuple[int, Any]] = {}
        for pool in itertools.chain(*self._pools.values()):
            with contextlib.suppress(Exception):
                found.update({p: (code, pool) for p, code in pool._pg.inactive_puids})
        return found

    def _watchdog(self) -> None:
        """Fail the task of each worker that died, so the workflow can retry it.

        A worker killed before it wrote its note (microseconds after it took the task)
        leaves a task no note names, which the pool's restart would hide: once its pool
        lost such a worker, a task that stays neither queued nor noted is taken as lost.
        """
        suspects: dict[int, Any] = {}  # pools that lost a worker with no task noted
        unnoted: dict[int, int] = {}  # token -> checks in a row it was neither
        while not self._stop.wait(WATCH_S):
            dead = {p: v for p, v in self._exits().items() if p not in self._seen}
            for puid, (code, pool) in dead.items():
                self._seen.add(puid)
                self._wounded.add(id(pool))
                token = self._notes.task_of(puid) if self._notes is not None else None
                lost = WorkerLost(f"Dragon worker {puid} died ({how_it_ended(code)})")
                if token is None or not self._settle(token, None, lost):
                    suspects[id(pool)] = pool  # it ran nothing, or died before its note
            if suspects:
                for token in self._lost(list(suspects.values()), unnoted):
                    why = "a Dragon worker of its pool died before it noted the task"
                    self._settle(token, None, WorkerLost(why))

    def _lost(self, pools: list[Any], unnoted: dict[int, int]) -> list[int]:
        """Tasks of ``pools`` neither queued nor noted for ``UNNOTED_CHECKS`` checks."""
        noted = self._notes.tasks() if self._notes is not None else set()
        with self._lock:
            mine = {t for t, (_, pool) in self._tasks.items() if pool in pools and t not in noted}
        queued = False
        for pool in pools:
            with contextlib.suppress(Exception):
                queued = queued or not pool._inqueue.empty()
        for token in list(unnoted):
            if token not in mine or queued:
                del unnoted[token]
        if queued:
            return []
        for token in mine:
            unnoted[token] = unnoted.get(token, 0) + 1
        return [t for t, n in unnoted.items() if n >= UNNOTED_CHECKS]

    def release(self, role: Role) -> None:
        """Stop a role's workers while it has nothing to do (phased runs, after simulating).

        Idle Dragon pools are not free: each worker and each pool's result thread poll, at
        ~0.1 core apiece (measured), which trainers on a small node would otherwise have.
        """
        pools, self._pools[role] = self._pools[role], []
        self._stop_pools(pools, cancel=False)

    def shutdown(self, cancel: bool = False) -> None:
        """Join every pool; with ``cancel``, stop running tasks first (SIGINT, then harder)."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        pools = list(itertools.chain(*self._pools.values()))
        self._pools = {"sim": [], "train": []}
        self._stop_pools(pools, cancel)
        if self._notes is not None:
            self._notes.remove()

    def _stop_pools(self, pools: list[Any], cancel: bool) -> None:
        for pool in pools:  # all stop together, then all are joined
            with contextlib.suppress(Exception):
                # A pool that lost a task waits for it in ``join`` after ``close``, forever.
                if cancel or id(pool) in self._wounded:
                    pool.terminate(patience=5)
                else:
                    pool.close()
        for pool in pools:
            with contextlib.suppress(Exception):
                pool.join(patience=30)


def boot_seconds() -> float:
    """Seconds from the parent simferry starting ``dragon`` to this process starting."""
    started = os.environ.get(BOOT_ENV)
    if not started:
        return 0.0
    try:
        return max(0.0, psutil.Process().create_time() - float(started))
    except (ValueError, OSError):
        return 0.0


@register_launcher
class DragonConfig(LauncherConfig):
    """DragonHPC process pools (simferry starts the runtime when needed)."""

    name: Literal["dragon"] = "dragon"
    display: ClassVar[str] = "DragonHPC"
    sim_workers: int | None = sim_workers_field(100_000)
    dragon_args: str | None = Field(
        None,
        max_length=1000,
        description="flags for the `dragon` executable when simferry starts the runtime, "
        "e.g. '-t tcp' (default: none; --single-node-override is added on a login node)",
    )

    def unavailable_reason(self) -> str | None:
        return missing_reason()

    @field_validator("dragon_args")
    @classmethod
    def _splits(cls, text: str | None) -> str | None:
        split_dragon_args(text)  # refused now, not when the runtime starts
        return text

    def node_count(self) -> int:
        if not in_runtime():
            return 1
        # Dragon: an optional extra that works only inside its runtime; imported where used.
        from dragon.native.machine import System

        return max(1, System().nnodes)

    def start(self, num_sims: int, trainers: int | None, run_dir: Any) -> DragonLauncher:
        require_runtime("The dragon launcher")
        return DragonLauncher(
            self.sim_workers, num_sims, trainers, Path(run_dir) if run_dir else None
        )


# --- Running simferry itself under the `dragon` executable --------------------------------


def needs_runtime(cfg: RunConfig) -> bool:
    """Whether ``cfg`` must be run under ``dragon`` because this process is not."""
    return cfg.launcher.name == "dragon" and not in_runtime()


def execute_under_dragon(cfg: RunConfig, quiet: bool = True, parent: Path | None = None) -> Path:
    """``engine.run.execute`` for a plain shell: the run happens under a new Dragon runtime.

    Raises as ``execute`` would (``RunFailure`` with the run's error, ``Interrupted``), so
    ``compare`` treats a Dragon row like any other.
    """
    if parent is not None:
        cfg = cfg.model_copy(update={"runs_dir": parent})
    code, run_dir = run_config_under_dragon(cfg, quiet, echo=False)
    if code > 128 and code - 128 in (signal.SIGINT, signal.SIGTERM):
        raise Interrupted(code - 128)
    summary = read_summary(run_dir) if run_dir and (run_dir / "summary.json").exists() else {}
    if code != 0 or summary.get("status") != "ok":
        why = summary.get("error") or f"simferry under dragon exited with code {code}"
        raise RunFailure(str(why).rstrip(".") + ".")
    assert run_dir is not None
    return run_dir


def run_config_under_dragon(
    cfg: RunConfig, quiet: bool, echo: bool = True
) -> tuple[int, Path | None]:
    """Run ``cfg`` with ``simferry run`` under a fresh Dragon runtime.

    The child gets the validated configuration as a ``config.toml``, so it runs exactly
    what this process checked. Returns the exit code and the run directory it made.
    """
    runs = Path(cfg.runs_dir)
    before = set(runs.iterdir()) if runs.is_dir() else set()
    with tempfile.TemporaryDirectory(prefix="simferry-dragon-") as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(tomli_w.dumps(drop_none(cfg.dump())), encoding="utf-8")
        args = ["run", "--config", str(path)] + (["--quiet"] if quiet else [])
        flags = split_dragon_args(
            cfg.launcher.dragon_args if isinstance(cfg.launcher, DragonConfig) else None
        )
        code = run_under_dragon(args, None if echo else (lambda line: None), flags)
    # The child made exactly one new run directory (a failed run prints no path).
    made = sorted(set(runs.iterdir()) - before) if runs.is_dir() else []
    return code, (made[-1] if made else None)


def run_under_dragon(
    args: list[str],
    collect: Callable[[str], None] | None = None,
    dragon_args: list[str] | None = None,
) -> int:
    """``dragon [FLAGS] -- python -m simferry ARGS`` from a plain shell; its exit code.

    ``dragon_args`` go to the ``dragon`` executable (``launch_flags`` adds
    ``--single-node-override`` on a login node). What Dragon prints on stderr before
    simferry starts inside it is held back: on success it is shown then, and when Dragon
    refuses to start its last line (its reason) is quoted in the error.

    Not a new session: Dragon's local services call ``setpgid(0, 0)``, which a session
    leader may not, and the runtime then hangs at start-up. That call also takes Dragon
    out of the terminal's process group, so Ctrl-C reaches only this process, which hands
    it to the simferry inside (its normal cleanup: pools stopped, DDict destroyed); the
    runtime then shuts down by itself once that process exits.
    """
    reason = missing_reason()
    if reason:
        raise TransportUnavailableError(reason)
    exe = dragon_executable()
    assert exe is not None
    env = dict(os.environ)
    # Dragon runs its helper executables (dragon-config, ...) from PATH.
    env["PATH"] = f"{exe.parent}{os.pathsep}{env.get('PATH', '')}"
    env[BOOT_ENV] = repr(time.time())
    cmd = [str(exe), *launch_flags(dragon_args or []), "--", sys.executable, "-m", "simferry"]
    cmd += args
    signals: list[int] = []

    def note(signum: int, _frame: Any) -> None:
        signals.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        assert proc.stdout is not None and proc.stderr is not None
        pump = threading.Thread(target=_pump, args=(proc.stdout, collect), daemon=True)
        pump.start()
        relay = HeldStderr(proc.stderr)
        outcome = _supervise(proc, signals, relay.release)
        pump.join(timeout=5)
        relay.join(timeout=5)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if outcome != "ran":
        raise _not_started(outcome, signals, relay.reason(), proc.returncode)
    # Interrupted, the child already said so and exited 128 + signal.
    return proc.returncode


def _not_started(outcome: str, signals: list[int], reason: str | None, code: int) -> BaseException:
    """The error for a runtime that never started simferry: interrupted, stuck or refused."""
    if signals:
        return Interrupted(signals[0])
    if outcome == "stuck":
        return TransportUnavailableError(
            f"The Dragon runtime did not start within {start_timeout():.0f} s and was "
            "stopped; check the free space in /dev/shm (Dragon reserves several GB there) "
            "and run `dragon-cleanup` if an earlier runtime is stuck."
        )
    return TransportUnavailableError(
        f"The Dragon runtime did not start (dragon exited with code {code}): "
        + (
            reason.rstrip(".") + "."
            if reason
            else "check the free space in /dev/shm (Dragon reserves several GB there) "
            "and run `dragon-cleanup` if an earlier runtime is stuck."
        )
    )


class HeldStderr:
    """Dragon's stderr, held until simferry starts inside the runtime, then passed on.

    Before that, anything Dragon prints is about its own start-up -- when it refuses, a
    traceback whose last line is its reason -- which ``reason`` quotes instead.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.held: deque[str] = deque(maxlen=200)
        self.released = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self.lock:
                if not self.released:
                    self.held.append(line)
                    continue
            sys.stderr.write(line)
            sys.stderr.flush()

    def release(self) -> None:
        """simferry runs inside: show what was held and pass the rest straight on."""
        with self.lock:
            self.released = True
            sys.stderr.write("".join(self.held))
            sys.stderr.flush()
            self.held.clear()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def reason(self) -> str | None:
        """Dragon's own words for refusing: its exception's message, else its last line."""
        with self.lock:
            lines = [line.strip() for line in self.held if line.strip()]
        for line in reversed(lines):
            found = re.match(r"^(?:[\w.]+(?:Error|Exception)|\S*dragon: error): (.+)$", line)
            if found:
                return found.group(1)
        return lines[-1] if lines else None


def _supervise(
    proc: subprocess.Popen[str],
    signals: list[int],
    started: Callable[[], None] = lambda: None,
) -> str:
    """Wait for ``dragon``, passing signals on: "ran", "exited" (early) or "stuck".

    ``started`` is called once simferry runs inside the runtime.

    Dragon hangs instead of exiting when its local services fail to start, and so may a
    launcher interrupted while it boots; either way it is stopped here, with what it made.
    """
    t0 = time.monotonic()
    head = None
    forwarded = 0
    first_signal = 0.0
    while proc.poll() is None:
        if head is None:
            head = _head(proc.pid)
            if head is not None:
                started()
        if signals and not first_signal:
            first_signal = time.monotonic()
        if head is not None and len(signals) > forwarded:
            for signum in signals[forwarded:]:  # as received: SIGTERM must exit 143
                with contextlib.suppress(Exception):
                    head.send_signal(signum)
            forwarded = len(signals)
        elif head is None and (
            time.monotonic() - t0 > start_timeout()
            or (first_signal and time.monotonic() - first_signal > ABORT_GRACE_S)
        ):
            _abort(proc)
            return "stuck"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.2)
    return "ran" if head is not None else "exited"


def start_timeout() -> float:
    """Seconds Dragon may take to start simferry inside it (``SIMFERRY_DRAGON_START_S``)."""
    try:
        return float(os.environ.get("SIMFERRY_DRAGON_START_S", START_TIMEOUT_S))
    except ValueError:
        return START_TIMEOUT_S


def _head(launcher_pid: int) -> Any:
    """The simferry process Dragon runs (a ``psutil.Process``), once it has started."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(launcher_pid).children():
            with contextlib.suppress(psutil.Error):
                if child.cmdline()[1:3] == ["-m", "simferry"]:
                    return child
    return None


def _abort(proc: subprocess.Popen[str]) -> None:
    """Kill a stuck ``dragon`` and all it started; remove the /dev/shm files they mapped."""
    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = []
    names: set[str] = set()
    for p in procs:
        with contextlib.suppress(OSError):
            maps = Path(f"/proc/{p.pid}/maps").read_text()
            names |= set(re.findall(r"/dev/shm/(D[^\s/]*)", maps))
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    for name in names:
        with contextlib.suppress(OSError):
            (Path("/dev/shm") / name).unlink()


def _pump(stream: IO[str], collect: Callable[[str], None] | None) -> None:
    for line in dragon_output(stream):
        if collect is not None:
            collect(line)
        else:
            sys.stdout.write(line)
            sys.stdout.flush()


def dragon_output(lines: Iterable[str]) -> Iterator[str]:
    """The child's output without the launcher's own notes.

    ``dragon`` adds "+++ head proc exited" and lists every file of this user that appeared
    in /dev/shm while it ran -- including other programs' and other Dragon runtimes' (whose
    names look like its own), so the list cannot say what this run left; the tests check
    that instead, from what this run's processes mapped.
    """
    it = iter(lines)
    for line in it:
        if line.startswith("+++ head proc exited"):
            continue
        if line.startswith("warning: ") and "leftover files in /dev/shm" in line:
            try:
                count = int(line.split()[1])
            except (IndexError, ValueError):
                count = 0
            for _ in itertools.islice(it, count):
                pass
            continue
        yield line
