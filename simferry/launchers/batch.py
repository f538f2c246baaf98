"""PBS and Slurm job scripts that run simferry inside one allocation.

Like the reference's multi-node submit script: the scheduler header, the environment
activated, a short warm-up run (imports, file-system caches and Parsl's first start are
paid there, not in the measured run), then the simferry command asked for -- with
``--launcher parsl --provider pbs|slurm`` unless the arguments say otherwise. Inside the
job the Parsl launcher reads the allocation (``PBS_NODEFILE``, ``SLURM_*``) and starts
its worker pools on those nodes, so nothing else is queued. The two schedulers differ only
in how directives are spelled (``Dialect``); the script is written by one code path.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

Scheduler = Literal["pbs", "slurm"]
WARMUP = ["--num-sims", "2", "--grid-size", "32", "--step-seconds", "0", "--quiet"]


@dataclass(frozen=True)
class Dialect:
    """How one scheduler spells the directives a job script holds, and how it is submitted."""

    prefix: str
    job_name: str
    nodes: str
    walltime: str
    queue: str
    account: str
    #: Directives that send the job's output to ``{out}``, a file in the job directory.
    output: tuple[str, ...]
    output_file: str
    submit: str
    script: str


DIALECTS: dict[str, Dialect] = {
    "pbs": Dialect(
        prefix="#PBS",
        job_name="-N {}",
        nodes="-l select={}",
        walltime="-l walltime={}",
        queue="-q {}",
        account="-A {}",
        output=("-j oe", "-o {out}"),
        output_file="job.out",
        submit="qsub",
        script="job.pbs",
    ),
    "slurm": Dialect(
        prefix="#SBATCH",
        job_name="--job-name={}",
        nodes="--nodes={}",
        walltime="--time={}",
        queue="--partition={}",
        account="--account={}",
        output=("--output={out}",),
        output_file="job-%j.out",
        submit="sbatch",
        script="job.sbatch",
    ),
}
SUBMIT_COMMAND = {name: d.submit for name, d in DIALECTS.items()}
SCRIPT_NAME = {name: d.script for name, d in DIALECTS.items()}


@dataclass
class JobRequest:
    """Everything a job script is made of; validated by ``simferry submit``."""

    scheduler: Scheduler
    nodes: int
    walltime: str
    #: The simferry arguments to run, starting with ``run``, ``compare`` or ``sweep``.
    command: list[str]
    job_dir: Path
    workdir: Path
    queue: str | None = None
    account: str | None = None
    job_name: str = "simferry"
    #: Extra scheduler directives, without the ``#PBS``/``#SBATCH`` prefix.
    directives: list[str] = field(default_factory=list)
    #: Shell lines run before the environment is activated (``module load ...``).
    setup: list[str] = field(default_factory=list)
    venv: Path | None = None
    #: A conda environment to activate instead of a venv (``CONDA_PREFIX``).
    conda: Path | None = None
    warmup: bool = True
    #: PBS: the resources of each chunk after its count (``ngpus=4:system=polaris``).
    select: str | None = None
    #: PBS: how chunks are placed on hosts (``scatter``).
    place: str | None = None
    #: PBS: the file systems the job uses (``home:eagle``); some sites require it.
    filesystems: str | None = None
    #: PBS ``-k``: output streams written straight to their final file as the job runs.
    keep: str | None = "doe"


def _pbs_only(req: JobRequest) -> tuple[list[str], list[str]]:
    """PBS's own resource lines: those after the walltime, and ``-k`` after the account."""
    if req.scheduler != "pbs":
        return [], []
    resources = [f"-l place={req.place}"] if req.place else []
    resources += [f"-l filesystems={req.filesystems}"] if req.filesystems else []
    return resources, [f"-k {req.keep}"] if req.keep else []


def header(req: JobRequest) -> list[str]:
    """The scheduler directives: name, nodes, walltime, queue, account, extras, output."""
    d = DIALECTS[req.scheduler]
    chunk = f"{req.nodes}:{req.select}" if req.select else str(req.nodes)
    resources, keep = _pbs_only(req)
    lines = [
        d.job_name.format(req.job_name),
        d.nodes.format(chunk),
        d.walltime.format(req.walltime),
    ]
    lines += resources
    lines += [d.queue.format(req.queue)] if req.queue else []
    lines += [d.account.format(req.account)] if req.account else []
    lines += [*keep, *req.directives]
    lines += [o.format(out=req.job_dir / d.output_file) for o in d.output]
    return [f"{d.prefix} {line}" for line in lines]


def given(args: list[str], flag: str) -> list[str]:
    """``flag`` and its value as written in ``args`` (``--flag V`` or ``--flag=V``)."""
    for i, arg in enumerate(args):
        if arg == flag:
            return args[i : i + 2]
        if arg.startswith(flag + "="):
            return [arg]
    return []


def value(args: list[str], flag: str) -> str | None:
    """The value ``flag`` has in ``args``, or None when it is not given."""
    found = given(args, flag)
    if not found:
        return None
    return found[0].split("=", 1)[1] if "=" in found[0] else (found[1:] or [""])[0]


def job_command(command: list[str], scheduler: Scheduler, nodes: int) -> list[str]:
    """The simferry command as the job runs it: launcher, provider and node count filled in.

    Inside a job the Parsl launcher needs the scheduler's provider to start its pools on
    the allocation's nodes (with the local one every task would run on the first node),
    and ``--nodes`` given once to ``submit`` is the node count of the run inside it.
    ``sweep`` takes ``--launchers`` (a list) where the others take ``--launcher``.
    """
    sub, rest = command[0], command[1:]
    flag = "--launchers" if sub == "sweep" else "--launcher"
    extra: list[str] = []
    chosen = value(rest, flag)
    if chosen is None:
        chosen = "parsl"
        extra += [flag, chosen]
    if "parsl" in chosen.split(","):
        if value(rest, "--provider") is None:
            extra += ["--provider", scheduler]
        if value(rest, "--nodes") is None:
            extra += ["--nodes", str(nodes)]
    return [sub, *rest, *extra]


def warmup_command(main: list[str], job_dir: Path) -> list[str]:
    """A tiny filesystem run with the first launcher of ``main``: its start-up is paid here."""
    rest = main[1:]
    launcher = (value(rest, "--launchers") or value(rest, "--launcher") or "parsl").split(",")[0]
    warm = ["run", "--launcher", launcher]
    if launcher == "parsl":
        warm += ["--provider", value(rest, "--provider") or "local"]
        nodes = value(rest, "--nodes")
        if nodes:
            warm += ["--nodes", nodes.split(",")[-1]]
    return [*warm, "--transport", "filesystem", *WARMUP, "--runs-dir", str(job_dir / "warmup")]


def job_script(req: JobRequest) -> str:
    """The job script's text: header, environment, warm-up, then the requested run."""
    env = req.venv or req.conda
    python = str(env / "bin" / "python") if env else sys.executable
    simferry = f"{shlex.quote(python)} -m simferry"
    main = job_command(req.command, req.scheduler, req.nodes)
    if not given(main[1:], "--runs-dir") and not given(main[1:], "--out"):
        main += ["--runs-dir", str(req.job_dir)]
    lines = [
        "#!/bin/bash -l",
        *header(req),
        "",
        f"# Written by `simferry submit` at {datetime.now(UTC):%Y-%m-%d %H:%M UTC}.",
        "set -eo pipefail",
        f"cd {shlex.quote(str(req.workdir))}",
        *req.setup,
    ]
    if req.venv:
        lines.append(f"source {shlex.quote(str(req.venv / 'bin' / 'activate'))}")
    elif req.conda:
        lines += conda_activation(req.conda)
    if req.warmup:
        lines += [
            "",
            "# Warm-up: imports, file caches and the launcher's first start, not measured.",
            f"{simferry} {shlex.join(warmup_command(main, req.job_dir))} "
            "|| echo 'simferry: warm-up run failed' >&2",
        ]
    lines += ["", f"{simferry} {shlex.join(main)}", ""]
    return "\n".join(lines)


def conda_activation(prefix: Path) -> list[str]:
    """Shell lines that activate a conda environment in a batch job's plain shell."""
    return [
        "command -v conda >/dev/null 2>&1 || { echo 'simferry: conda is not on PATH in "
        'the job; add the line that provides it, e.g. --setup "module load conda"\' >&2; '
        "exit 1; }",
        'eval "$(conda shell.bash hook)"',
        f"conda activate {shlex.quote(str(prefix))}",
    ]
