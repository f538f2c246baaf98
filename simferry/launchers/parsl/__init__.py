"""Parsl: one ``HighThroughputExecutor`` for simulations and one for trainers, one load.

Parsl keeps *where* resources come from (a provider), *how* worker pools start on them
(a launcher: mpiexec, srun) and *what* runs tasks (the executor) apart; this module only
picks and wires them from ``--provider``:

- ``local``: ``LocalProvider`` on this machine; ``--nodes N`` starts N worker pools
  (blocks) per executor so multi-node runs can be exercised on a laptop. The interchange
  binds 127.0.0.1 only.
- ``pbs``: inside a PBS job (``PBS_NODEFILE`` set) the worker pools start over the job's
  own nodes with ``LocalProvider`` + ``MpiExecLauncher``, one pool per node -- no second
  job is queued, which is what ``simferry submit`` relies on. Outside a job,
  ``PBSProProvider`` + ``MpiExecLauncher`` submits one job per executor.
- ``slurm``: the same with ``SrunLauncher``; inside an allocation (``SLURM_JOB_ID``) the
  node count comes from ``SLURM_JOB_NUM_NODES`` / ``SLURM_NODELIST``, outside it
  ``SlurmProvider`` submits one job per executor.

Both executors live in one ``DataFlowKernel`` so start-up is paid once, and it is timed
until every worker pool has connected and answered (``startup_s``). Parsl's ``runinfo``
goes inside the simferry run directory. On every exit the kernel is cleaned up and any
worker pool or interchange still alive afterwards is killed, so none outlives the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import psutil
from pydantic import Field, field_validator

from simferry.errors import RunFailure, UsageError
from simferry.launchers.base import LauncherConfig, Role
from simferry.launchers.common import cpu_count, gpu_count, sim_workers_field, warm_trainer
from simferry.plugins import register_launcher

if TYPE_CHECKING:
    from parsl.config import Config
    from parsl.dataflow.dflow import DataFlowKernel

LABELS: dict[Role, str] = {"sim": "sims", "train": "trainers"}
#: Blocks of a provider inside or for one batch job: exactly one, never scaled.
FIXED: dict[str, Any] = {"init_blocks": 1, "min_blocks": 1, "max_blocks": 1}
#: Process names of Parsl's own processes (also matched when started with ``-m``).
PARSL_PROCESSES = ("interchange", "process_worker_pool")
#: How long local worker pools may take to connect before the run is declared broken;
#: also how long the other pools of a batch job may lag behind its first one.
LOCAL_CONNECT_TIMEOUT_S = 120.0
#: Heartbeats of pools on batch nodes, and the silence after which a pool is lost.
HEARTBEAT_S = 5
LOST_AFTER_S = 30


def interchange_cmd() -> list[str]:
    """Start HTEX's interchange in its own process group, dying with this process.

    Its own group: a terminal's Ctrl-C reaches only simferry, which then shuts the
    executors down through a live interchange (with the interchange dead, Parsl's cleanup
    would wait for its answer forever). Parent-death signal: the interchange never exits
    by itself, so a SIGKILLed simferry must not leave it behind; the worker pools then
    stop on their own after missing its heartbeats.
    """
    code = (
        "import ctypes, os, runpy, signal, sys\n"
        "os.setpgrp()\n"
        "if sys.platform.startswith('linux'):\n"
        "    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
        f"if os.getppid() != {os.getpid()}:\n"
        "    sys.exit('simferry exited before the interchange started')\n"
        "runpy.run_module('parsl.executors.high_throughput.interchange', run_name='__main__')\n"
    )
    return [sys.executable, "-c", code]


#: Longest wait for Parsl's own cleanup before its processes are killed regardless.
CLEANUP_TIMEOUT_S = 60.0
WALLTIME = re.compile(r"^\d{1,4}:[0-5]\d:[0-5]\d$")
ONE_LINE = r"^[^\r\n]*$"


@dataclass(frozen=True)
class Allocation:
    """The batch job this process runs in: scheduler and node count."""

    scheduler: Literal["pbs", "slurm"]
    job_id: str
    nodes: int
    hosts: tuple[str, ...] = ()


def expand_hostlist(spec: str) -> list[str]:
    """Slurm's compressed node list (``nid[001-003,007],login1``) as host names."""
    hosts: list[str] = []
    for prefix, ranges, suffix in re.findall(r"([^,\[\]]*)(?:\[([^\]]*)\])?([^,\[\]]*),?", spec):
        if not (prefix or ranges or suffix):
            continue
        if not ranges:
            hosts.append(prefix + suffix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            width = len(lo)
            for n in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{n:0{width}d}{suffix}")
    return hosts


def pbs_allocation(env: Mapping[str, str]) -> Allocation | None:
    """The PBS job we run in, from ``PBS_NODEFILE`` (one line per rank; hosts repeat)."""
    nodefile = env.get("PBS_NODEFILE")
    if not nodefile:
        return None
    try:
        lines = Path(nodefile).read_text(encoding="utf-8").split()
    except OSError as exc:
        raise UsageError(
            f"PBS_NODEFILE is set to {nodefile} but it cannot be read ({exc.strerror or exc}); "
            "run inside the PBS job or unset PBS_NODEFILE."
        ) from None
    hosts = tuple(dict.fromkeys(lines))
    if not hosts:
        raise UsageError(f"PBS_NODEFILE {nodefile} lists no hosts; run inside the PBS job.")
    return Allocation("pbs", env.get("PBS_JOBID", ""), len(hosts), hosts)


def slurm_allocation(env: Mapping[str, str]) -> Allocation | None:
    """The Slurm allocation we run in (``sbatch`` or ``salloc``), else ``None``."""
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job:
        return None
    hosts = tuple(expand_hostlist(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")))
    count = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    nodes = int(count) if count and count.isdigit() else len(hosts)
    return Allocation("slurm", job, max(1, nodes), hosts)


def ping() -> tuple[str, int]:
    """A no-op task: proves a worker pool is connected and running tasks."""
    return socket.gethostname(), os.getpid()


@dataclass(frozen=True)
class Plan:
    """How many pools and workers of each kind, decided before anything starts."""

    nodes: int
    sim_workers_per_node: int
    trainers: int
    trainer_nodes: int
    trainers_per_node: int
    gpus_per_node: int
    allocation: Allocation | None

    @property
    def sim_workers(self) -> int:
        return self.sim_workers_per_node * self.nodes


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@register_launcher
class ParslConfig(LauncherConfig):
    """Parsl HighThroughputExecutors on this machine or on PBS / Slurm nodes."""

    name: Literal["parsl"] = "parsl"
    display: ClassVar[str] = "Parsl"
    #: Its interchange and worker pool pass results through their own memory (measured
    #: 2.4-3.1 x the data at the peak, besides this process's copy).
    result_copies: ClassVar[int] = 3

    provider: Literal["local", "pbs", "slurm"] = Field(
        "local", description="where Parsl's worker pools run (Parsl launcher only)"
    )
    nodes: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="nodes to use (local provider: worker pools on this machine; default: "
        "the whole PBS/Slurm allocation when inside one, else 1)",
    )
    sim_workers: int | None = sim_workers_field()
    cpus_per_node: int | None = Field(
        None, ge=1, description="cores per node (default: this node's cores)"
    )
    gpus_per_node: int | None = Field(
        None, ge=0, description="GPUs per node for trainers (default: this node's GPUs)"
    )
    account: str | None = Field(
        None, pattern=ONE_LINE, description="PBS/Slurm account (project) to charge"
    )
    queue: str | None = Field(None, pattern=ONE_LINE, description="PBS queue / Slurm partition")
    walltime: str = Field(
        "00:30:00", description="walltime of each PBS/Slurm job Parsl submits (HH:MM:SS)"
    )
    scheduler_options: str = Field(
        "", description="extra '#PBS'/'#SBATCH' lines for jobs Parsl submits"
    )
    select_options: str = Field(
        "", pattern=ONE_LINE, description="PBS select options, e.g. ngpus=4"
    )
    worker_init: str = Field(
        "", description="shell commands run before each worker pool starts (module load ...)"
    )
    launcher_overrides: str | None = Field(
        None,
        pattern=ONE_LINE,
        description="extra mpiexec/srun arguments (default: --ppn 1 for PBS, "
        "--overlap --ntasks-per-node=1 for Slurm)",
    )
    mpiexec_bind_cmd: str = Field(
        "--cpu-bind",
        pattern=r"^-[\w-]+$",
        description="mpiexec option that turns off CPU binding (--bind-to for MPICH Hydra "
        "/ Open MPI)",
    )
    address: str | None = Field(
        None,
        pattern=r"^[\w.:-]+$",
        description="address workers reach the interchange at (default: 127.0.0.1 for "
        "the local provider, every interface of this host otherwise)",
    )

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        if not WALLTIME.match(value):
            raise ValueError(f"walltime must look like HH:MM:SS, not {value!r}")
        return value

    # -- what the workflow asks before starting ------------------------------------

    def allocation(self, env: Mapping[str, str] | None = None) -> Allocation | None:
        """The batch job of ``--provider`` this process runs inside, if any."""
        env = os.environ if env is None else env
        if self.provider == "pbs":
            return pbs_allocation(env)
        if self.provider == "slurm":
            return slurm_allocation(env)
        return None

    def node_count(self, env: Mapping[str, str] | None = None) -> int:
        if self.nodes is not None:
            return self.nodes
        alloc = self.allocation(env)
        return alloc.nodes if alloc else 1

    def hosts_spanned(self, env: Mapping[str, str] | None = None) -> int:
        """From a login node, each executor is its own batch job, on nodes of its own.

        So neither pool runs on this host, and the two may not share a node even at
        ``--nodes 1`` (seen on Slurm: simulations on node1, the trainer on node2).
        """
        nodes = self.node_count(env)
        if self.provider == "local" or self.allocation(env) is not None:
            return nodes
        return 1 + 2 * nodes

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("parsl") is None:
            return "Parsl is not installed; pip install 'simferry[parsl]'."
        try:
            alloc = self.allocation()
        except UsageError as exc:
            return str(exc)
        if alloc and self.nodes and self.nodes > alloc.nodes:
            return (
                f"--nodes {self.nodes} asks for more than the {alloc.nodes} node(s) of "
                f"{alloc.scheduler} job {alloc.job_id}; lower --nodes or request more nodes."
            )
        tool = {
            ("pbs", True): "mpiexec",
            ("pbs", False): "qsub",
            ("slurm", True): "srun",
            ("slurm", False): "sbatch",
        }.get((self.provider, alloc is not None))
        if tool and shutil.which(tool) is None:
            where = "inside the job" if alloc else "on this machine"
            return f"{tool} is not on PATH {where}, so the {self.provider} provider cannot start workers."
        return None

    # -- planning and building Parsl's config (pure: nothing starts) -----------------

    def plan(
        self, num_sims: int, trainers: int | None, env: Mapping[str, str] | None = None
    ) -> Plan:
        alloc = self.allocation(env)
        nodes = self.node_count(env)
        gpus = self.gpus_per_node if self.gpus_per_node is not None else gpu_count()
        cores_here = self.cpus_per_node or cpu_count()
        # Local "nodes" share this machine's cores; real nodes each bring their own.
        cores = cores_here if self.provider == "local" else cores_here * nodes
        sims_total = self.sim_workers or max(1, min(num_sims, cores))
        n_trainers = trainers or max(1, gpus * nodes)
        trainer_nodes = min(nodes, n_trainers)
        return Plan(
            nodes=nodes,
            sim_workers_per_node=_ceil_div(sims_total, nodes),
            trainers=n_trainers,
            trainer_nodes=trainer_nodes,
            trainers_per_node=_ceil_div(n_trainers, trainer_nodes),
            gpus_per_node=gpus,
            allocation=alloc,
        )

    def _provider(self, nodes: int) -> Any:
        """Parsl's provider for ``--provider``: where the worker pools of ``nodes`` start."""
        if self.provider == "local":
            # Parsl: an optional extra that takes a second to import; imported where used.
            from parsl.launchers import SingleNodeLauncher
            from parsl.providers import LocalProvider

            # One block per simulated node, all on this machine.
            return LocalProvider(
                nodes_per_block=1,
                launcher=SingleNodeLauncher(debug=False),
                init_blocks=nodes,
                min_blocks=nodes,
                max_blocks=nodes,
                worker_init=self.worker_init,
            )
        if self.provider == "pbs":
            return self._pbs_provider(nodes)
        return self._slurm_provider(nodes)

    def _in_job(self, nodes: int, launcher: Any) -> Any:
        """Inside a batch job: its own nodes, one block, no second job queued."""
        from parsl.providers import LocalProvider  # Parsl: optional extra, slow to import

        return LocalProvider(
            nodes_per_block=nodes, launcher=launcher, worker_init=self.worker_init, **FIXED
        )

    def _pbs_provider(self, nodes: int) -> Any:
        from parsl.launchers import MpiExecLauncher  # Parsl: optional extra, slow to import
        from parsl.providers import PBSProProvider

        overrides = self.launcher_overrides if self.launcher_overrides is not None else "--ppn 1"
        mpi = MpiExecLauncher(debug=False, bind_cmd=self.mpiexec_bind_cmd, overrides=overrides)
        if self.allocation() is not None:
            return self._in_job(nodes, mpi)
        return PBSProProvider(
            account=self.account,
            queue=self.queue,
            scheduler_options=self.scheduler_options,
            select_options=self.select_options,
            worker_init=self.worker_init,
            nodes_per_block=nodes,
            cpus_per_node=self.cpus_per_node or cpu_count(),
            walltime=self.walltime,
            launcher=mpi,
            **FIXED,
        )

    def _slurm_provider(self, nodes: int) -> Any:
        from parsl.providers import SlurmProvider  # Parsl: optional extra, slow to import

        from simferry.launchers.parsl.srun import JobNamedSrunLauncher  # imports Parsl too

        # --overlap: the sims and trainers pools share the allocation's nodes -- the same
        # ones, named, when the run uses fewer than the job has (else srun may put the two
        # executors' steps on different nodes: seen with --nodes 1 in a 2-node job).
        srun_args = f"--overlap --nodes={nodes} --ntasks-per-node=1"
        alloc = self.allocation()
        if alloc is not None and len(alloc.hosts) > nodes:
            srun_args += f" --nodelist={','.join(alloc.hosts[:nodes])}"
        if self.launcher_overrides is not None:
            srun_args = self.launcher_overrides
        srun = JobNamedSrunLauncher(debug=False, overrides=srun_args)
        if alloc is not None:
            return self._in_job(nodes, srun)
        return SlurmProvider(
            partition=self.queue,
            account=self.account,
            nodes_per_block=nodes,
            cores_per_node=self.cpus_per_node,
            walltime=self.walltime,
            scheduler_options=self.scheduler_options,
            worker_init=self.worker_init,
            launcher=srun,
            **FIXED,
        )

    def parsl_config(self, plan: Plan, run_dir: Path) -> Config:
        """Parsl's ``Config``: a "sims" and a "trainers" HTEX, runinfo under ``run_dir``."""
        # Parsl: an optional extra that takes a second to import; imported where used.
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor

        address = self.address or ("127.0.0.1" if self.provider == "local" else None)
        # Run Parsl's processes with this interpreter, not whatever is first on PATH.
        worker_cmd = f"{sys.executable} -m parsl.executors.high_throughput.process_worker_pool"
        if self.provider != "local":
            # On batch nodes the pool runs under a keeper that outlives its helpers, so
            # nothing of it is left in the nodes' /dev/shm (see simferry.launchers.pool).
            worker_cmd = (
                f"{sys.executable} -m simferry.launchers.pool {worker_cmd.split(' ', 1)[1]}"
            )
        common: dict[str, Any] = {
            "address": address,
            "launch_cmd": worker_cmd + " " + _launch_args(),
            "interchange_launch_cmd": interchange_cmd(),
            # Worker counts are set exactly by max_workers_per_node; simulations mostly
            # wait (``step_seconds``), so they are not limited to one per core.
            "cores_per_worker": 0.001,
            "prefetch_capacity": 0,
        }
        if self.provider != "local":
            # A pool on another node that dies is noticed only by its missing heartbeats:
            # Parsl's default (30 s apart, lost after 120 s) leaves a run waiting minutes.
            common |= {"heartbeat_period": HEARTBEAT_S, "heartbeat_threshold": LOST_AFTER_S}
        sims = HighThroughputExecutor(
            label=LABELS["sim"],
            provider=self._provider(plan.nodes),
            max_workers_per_node=plan.sim_workers_per_node,
            **common,
        )
        accelerators: list[str] = []
        if plan.gpus_per_node:
            # One worker per GPU; more trainers than GPUs share them round-robin.
            accelerators = [str(i % plan.gpus_per_node) for i in range(plan.trainers_per_node)]
        trainers = HighThroughputExecutor(
            label=LABELS["train"],
            provider=self._provider(plan.trainer_nodes),
            max_workers_per_node=plan.trainers_per_node,
            available_accelerators=accelerators,
            **common,
        )
        return Config(
            executors=[sims, trainers],
            run_dir=str(run_dir / "parsl"),
            # Blocks stay up for the whole run: trainers idle through the simulation phase
            # must not be scaled in and restarted.
            strategy="none",
            # The poller also launches the initial blocks, on its first tick: not 5 s late.
            strategy_period=0.25,
            usage_tracking=0,
        )

    def start(self, num_sims: int, trainers: int | None, run_dir: Any) -> ParslLauncher:
        run_dir = Path(run_dir).resolve()
        plan = self.plan(num_sims, trainers)
        timeout = LOCAL_CONNECT_TIMEOUT_S if self.provider == "local" else None
        return ParslLauncher(self.parsl_config(plan, run_dir), plan, run_dir, timeout)


def _launch_args() -> str:
    """HTEX's default worker command line without the script name in front."""
    # Parsl: an optional extra that takes a second to import; imported where used.
    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

    return str(DEFAULT_LAUNCH_CMD).split(" ", 1)[1]


def parsl_processes(executors: Iterable[Any]) -> list[psutil.Process]:
    """The interchanges and local worker pools (with their workers) of these executors."""
    groups = set()
    procs: dict[int, psutil.Process] = {}
    for ex in executors:
        ic = getattr(ex, "interchange_proc", None)
        if ic is not None:
            with contextlib.suppress(psutil.Error):
                procs[ic.pid] = psutil.Process(ic.pid)
        for job in getattr(getattr(ex, "provider", None), "resources", {}).values():
            pid = job.get("remote_pid") if isinstance(job, dict) else None
            if pid:
                with contextlib.suppress(OSError):
                    groups.add(os.getpgid(pid))
    # LocalProvider starts each block in its own process group and the pools outlive the
    # shell that started them, so find them by group -- never our own.
    groups.discard(os.getpgrp())
    if groups:
        for p in psutil.process_iter():
            with contextlib.suppress(OSError, psutil.Error):
                if os.getpgid(p.pid) in groups:
                    procs[p.pid] = p
    return list(procs.values())


def reap(procs: list[psutil.Process], timeout: float) -> None:
    """Wait up to ``timeout`` for ``procs`` to exit, then kill the rest."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


class ParslLauncher:
    """A running DataFlowKernel with the "sims" and "trainers" executors."""

    name = "parsl"

    def __init__(
        self, config: Config, plan: Plan, run_dir: Path, connect_timeout: float | None
    ) -> None:
        # Parsl: an optional extra that takes a second to import; imported where used.
        from parsl.dataflow.dflow import DataFlowKernel

        t0 = time.perf_counter()
        self.nodes = plan.nodes
        self.gpus = plan.gpus_per_node * plan.trainer_nodes
        self.sim_workers = plan.sim_workers
        self.trainers = plan.trainers
        self.run_dir = run_dir
        #: The Slurm job whose nodes the pools run on as srun steps (None: not inside one).
        self.slurm_job = (
            plan.allocation.job_id
            if plan.allocation is not None and plan.allocation.scheduler == "slurm"
            else None
        )
        self._apps: dict[tuple[Role, Callable[..., Any]], Callable[..., Future[Any]]] = {}
        self._warm: list[Future[Any]] = []
        self._closed = False
        try:
            self._dfk: DataFlowKernel = DataFlowKernel(config)
        except BaseException:
            # Interrupted half-way: nothing can be shut down politely, so kill what started.
            reap(parsl_processes(config.executors), timeout=0)
            raise
        try:
            self._wait_for_pools({"sim": plan.nodes, "train": plan.trainer_nodes}, connect_timeout)
            self._started(self.submit("sim", ping))
            # Trainers import torch while simulations run, as with the local launcher.
            self._warm = [
                self.submit("train", warm_trainer, plan.trainers_per_node)
                for _ in range(plan.trainers)
            ]
        except BaseException:
            self.shutdown(cancel=True)
            raise
        self.startup_s = time.perf_counter() - t0

    @property
    def lost_errors(self) -> tuple[type[BaseException], ...]:
        """Errors meaning a worker (or its node's manager) died: the workflow retries those."""
        # Parsl: an optional extra that takes a second to import; imported where used.
        from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

        return (WorkerLost, ManagerLost)

    def _started(self, fut: Future[Any]) -> Any:
        """The result of a start-up task; a pool lost meanwhile is one sentence, not a trace."""
        try:
            return fut.result()
        except self.lost_errors as exc:
            raise RunFailure(
                f"A Parsl worker pool was lost while the run started ({exc}); check that node "
                "and run again."
            ) from exc

    def _executor(self, role: Role) -> Any:
        return self._dfk.executors[LABELS[role]]

    def _wait_for_pools(self, expected: dict[Role, int], timeout: float | None) -> None:
        """Block until every worker pool has registered (they start in the background)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        #: When each executor's first pool connected: a batch job's pools start together,
        #: so once one has, the others may lag by LOCAL_CONNECT_TIMEOUT_S at most.
        first: dict[Role, float] = {}
        while True:
            missing = []
            for role, count in expected.items():
                ex = self._executor(role)
                if ex.bad_state_is_set:
                    raise RunFailure(
                        f"Parsl's {LABELS[role]} worker pools failed to start: "
                        f"{ex.executor_exception}; see the logs under {self.run_dir / 'parsl'}."
                    )
                connected = len(ex.connected_managers())
                if connected:
                    first.setdefault(role, time.monotonic())
                if connected < count:
                    missing.append(LABELS[role])
                    if (
                        time.monotonic() - first.get(role, time.monotonic())
                        > LOCAL_CONNECT_TIMEOUT_S
                    ):
                        raise RunFailure(
                            f"Only {connected} of Parsl's {count} {LABELS[role]} worker pools "
                            f"connected within {LOCAL_CONNECT_TIMEOUT_S:.0f} s of the first; a "
                            f"node of the job may have failed. See {self.run_dir / 'parsl'}."
                        )
            if not missing:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise RunFailure(
                    f"Parsl's {' and '.join(missing)} worker pools did not connect within "
                    f"{timeout:.0f} s; see submit_scripts/*.err under {self.run_dir / 'parsl'}."
                )
            time.sleep(0.1)

    def submit(self, role: Role, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        # Parsl: an optional extra that takes a second to import; imported where used.
        from parsl import python_app

        if role == "train" and self._warm:
            # Otherwise the first trainers queue behind the warm-up and count it as hand-off.
            for fut in self._warm:
                self._started(fut)
            self._warm = []
        app = self._apps.get((role, fn))
        if app is None:
            app = python_app(fn, data_flow_kernel=self._dfk, executors=[LABELS[role]])
            self._apps[role, fn] = app
        return app(*args)

    def shutdown(self, cancel: bool = False) -> None:
        """Clean up the kernel (cancels blocks, stops interchanges), then reap stragglers.

        Running tasks are not waited for either way: on failure or Ctrl-C the pools are
        killed with them, which is what ``cancel`` asks for.
        """
        if self._closed:
            return
        self._closed = True
        # Parsl: an optional extra that takes a second to import; imported where used.
        from parsl.executors.status_handling import BlockProviderExecutor

        if self.slurm_job:
            # srun.py subclasses a Parsl class: importing it imports Parsl.
            from simferry.launchers.parsl.srun import stop_steps

            stop_steps(self.slurm_job, LABELS.values())
        procs = parsl_processes(self._dfk.executors.values())
        for ex in self._dfk.executors.values():
            ic = getattr(ex, "interchange_proc", None)
            if not isinstance(ex, BlockProviderExecutor) or ic is None:
                continue
            if ic.poll() is not None and not ex.bad_state_is_set:
                # Scaling in asks the interchange which blocks it has; with the interchange
                # gone that question is never answered, so skip it (the pools are reaped).
                ex.set_bad_state_and_fail_all(RunFailure("Parsl's interchange exited."))
        cleanup = threading.Thread(target=self._dfk.cleanup, name="parsl-cleanup", daemon=True)
        cleanup.start()
        cleanup.join(CLEANUP_TIMEOUT_S)
        # Again afterwards: a block may have been launched while the kernel was stopping.
        later = parsl_processes(self._dfk.executors.values())
        reap(list({p.pid: p for p in procs + later}.values()), timeout=10)
