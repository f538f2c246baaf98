"""PBS and Slurm job scripts that run simferry inside one allocation (``simferry submit``).

Like the reference's multi-node submit script: the scheduler header, the environment
activated, a short warm-up run (imports, file-system caches and Parsl's first start are
paid there, not in the measured run), then the ``run`` or ``compare`` asked for -- with
``--launcher parsl --provider pbs|slurm`` unless the arguments say otherwise. Inside the
job the Parsl launcher reads the allocation (``PBS_NODEFILE``, ``SLURM_*``) and starts
its worker pools on those nodes, so nothing else is queued. The script and everything the
job writes go to a new directory under ``runs/``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from simferry.errors import RunFailure, UsageError
from simferry.launchers.parsl import WALLTIME

Scheduler = Literal["pbs", "slurm"]
SUBMIT_COMMAND = {"pbs": "qsub", "slurm": "sbatch"}
SCRIPT_NAME = {"pbs": "job.pbs", "slurm": "job.sbatch"}
#: Queue, account and job names go into directive lines: keep them one plain word.
NAME = re.compile(r"^[\w.@:+-]+$")
WARMUP = ["--num-sims", "2", "--grid-size", "32", "--step-seconds", "0", "--quiet"]
#: A PBS resource value (select chunks, place, filesystems): no spaces or shell syntax.
RESOURCE = re.compile(r"^[\w.:=+,@/-]+$")
#: What ``--site NAME`` fills in where the flag is not given. Polaris (ALCF): whole nodes
#: of the polaris system, one per chunk, spread over hosts; jobs must name the file
#: systems they use; Python comes from the conda module.
SITES: dict[str, dict[str, object]] = {
    "polaris": {
        "scheduler": "pbs",
        "select": "system=polaris",
        "place": "scatter",
        "filesystems": "home:eagle",
        "queue": "debug",
        "setup": ["module use /soft/modulefiles", "module load conda"],
    },
}


@dataclass
class JobRequest:
    """Everything a job script is made of; validated by ``request_from_args``."""

    scheduler: Scheduler
    nodes: int
    walltime: str
    #: The simferry arguments to run, starting with ``run`` or ``compare``.
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


def header(req: JobRequest) -> list[str]:
    if req.scheduler == "pbs":
        chunk = f"{req.nodes}:{req.select}" if req.select else str(req.nodes)
        lines = [
            f"#PBS -N {req.job_name}",
            f"#PBS -l select={chunk}",
            f"#PBS -l walltime={req.walltime}",
        ]
        lines += [f"#PBS -l place={req.place}"] if req.place else []
        lines += [f"#PBS -l filesystems={req.filesystems}"] if req.filesystems else []
        lines += [f"#PBS -q {req.queue}"] if req.queue else []
        lines += [f"#PBS -A {req.account}"] if req.account else []
        lines += [f"#PBS -k {req.keep}"] if req.keep else []
        lines += [f"#PBS {d}" for d in req.directives]
        return [*lines, "#PBS -j oe", f"#PBS -o {req.job_dir / 'job.out'}"]
    lines = [
        f"#SBATCH --job-name={req.job_name}",
        f"#SBATCH --nodes={req.nodes}",
        f"#SBATCH --time={req.walltime}",
    ]
    lines += [f"#SBATCH --partition={req.queue}"] if req.queue else []
    lines += [f"#SBATCH --account={req.account}"] if req.account else []
    lines += [f"#SBATCH {d}" for d in req.directives]
    return [*lines, f"#SBATCH --output={req.job_dir / 'job-%j.out'}"]


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


def environment(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """(venv, conda prefix) the job activates: as given, else the one simferry runs in."""
    venv, conda = args.venv, args.conda
    if venv is not None and conda is not None:
        raise UsageError("Give --venv or --conda, not both.")
    if venv is None and conda is None:
        if sys.prefix != sys.base_prefix:
            venv = Path(sys.prefix)
        elif os.environ.get("CONDA_PREFIX"):
            conda = Path(os.environ["CONDA_PREFIX"])
    if venv is not None:
        venv = venv.resolve()
        if not (venv / "bin" / "activate").is_file():
            raise UsageError(f"{venv} is not a virtual environment (no bin/activate).")
    if conda is not None:
        conda = conda.resolve()
        if not (conda / "conda-meta").is_dir():
            raise UsageError(f"{conda} is not a conda environment (no conda-meta directory).")
    return venv, conda


def apply_site(args: argparse.Namespace) -> None:
    """Fill what ``--site`` presets into the flags the user left unset."""
    if args.site is None:
        if args.scheduler is None:
            raise UsageError("Give --scheduler pbs or slurm, or a --site such as polaris.")
        return
    preset = SITES[args.site]
    if args.scheduler not in (None, preset["scheduler"]):
        raise UsageError(
            f"--site {args.site} uses --scheduler {preset['scheduler']}, not {args.scheduler}."
        )
    for key, value in preset.items():
        if getattr(args, key) in (None, []):
            setattr(args, key, value)


def pbs_resources(args: argparse.Namespace) -> None:
    """Check --select, --place, --filesystems and --keep (PBS only)."""
    given = {"--select": args.select, "--place": args.place, "--filesystems": args.filesystems}
    if args.scheduler != "pbs":
        named = [flag for flag, value in given.items() if value]
        if named:
            raise UsageError(f"{', '.join(named)} are PBS resources; drop them for Slurm.")
        return
    if not re.fullmatch(r"n|[doe]+", args.keep or "n"):
        raise UsageError(f"--keep takes letters of d, o and e (or n for none), not {args.keep!r}.")
    for flag, value in given.items():
        if value is not None and not RESOURCE.match(value):
            raise UsageError(
                f"{flag} takes a PBS resource value such as home:eagle, not {value!r}."
            )
    if args.select and re.match(r"^\d+(:|$)", args.select):
        count, _, rest = args.select.partition(":")
        if args.nodes not in (1, int(count)):
            raise UsageError(
                f"--nodes {args.nodes} and --select {args.select} ask for different node "
                "counts; give the count in one of them."
            )
        args.nodes, args.select = int(count), rest or None
    for line in args.directive:
        if re.search(r"(^|[\s,])select=", line):
            raise UsageError(
                f"--directive {line!r} would give the job a second select line; put the chunk "
                "in --select instead, e.g. --select 2:ngpus=4:system=polaris."
            )


def _check_command(command: list[str], scheduler: Scheduler, nodes: int) -> None:
    """Refuse now what the job would only refuse in the queue, hours later.

    What is checked is the command as the job will run it (``job_command``): with its
    launcher, provider and node count, so ``-- run --nodes 4`` is checked as a Parsl run.
    """
    from simferry.cli import config_from_args, make_parser
    from simferry.plugins import transport_config_class, transports
    from simferry.sweep import grid, point_config, run_options

    if not command or command[0] not in ("run", "compare", "sweep"):
        raise UsageError(
            "Give the simferry command to run after --, e.g. "
            "'simferry submit --scheduler pbs --nodes 2 -- run --num-sims 64'."
        )
    final = job_command(command, scheduler, nodes)
    ns = make_parser().parse_args(final)
    if command[0] == "sweep":
        points = grid(ns)
        options = run_options(ns, points)
        for point in points:
            point_config(point, options, Path("runs"))
        counts = {p.nodes for p in points}
    elif command[0] == "run":
        counts = {config_from_args(ns).launcher.node_count()}
    else:
        names = [n.strip() for n in (ns.transports or ",".join(transports())).split(",")]
        launcher = getattr(ns, "launcher", "local")
        counts = set()
        for name in filter(None, names):
            allowed = transport_config_class(name).launchers
            if allowed is None or launcher in allowed:  # others are skipped rows in the job
                counts.add(config_from_args(ns, transport=name).launcher.node_count())
    if max(counts, default=1) > nodes:
        raise UsageError(
            f"The command uses {max(counts)} nodes but the job asks for {nodes}; "
            f"pass --nodes {max(counts)} to submit (it then applies inside the job too)."
        )


def request_from_args(args: argparse.Namespace) -> JobRequest:
    apply_site(args)
    pbs_resources(args)
    if args.nodes < 1:
        raise UsageError(f"--nodes must be at least 1, not {args.nodes}.")
    if not WALLTIME.match(args.walltime):
        raise UsageError(f"--walltime must look like HH:MM:SS, not {args.walltime!r}.")
    for flag in ("queue", "account", "job_name"):
        value = getattr(args, flag)
        if value is not None and not NAME.match(value):
            raise UsageError(
                f"--{flag.replace('_', '-')} must be one word of letters, digits and ._@:+-, "
                f"not {value!r}."
            )
    for line in args.directive + args.setup:
        if "\n" in line or "\r" in line:
            raise UsageError(f"--directive and --setup take one line each, not {line!r}.")
    command = list(args.simferry_args)
    if command[:1] == ["--"]:
        command = command[1:]
    _check_command(command, args.scheduler, args.nodes)
    venv, conda = environment(args)
    return JobRequest(
        scheduler=args.scheduler,
        nodes=args.nodes,
        walltime=args.walltime,
        command=command,
        job_dir=Path("."),  # set once the directory exists
        workdir=Path.cwd(),
        queue=args.queue,
        account=args.account,
        job_name=args.job_name,
        directives=list(args.directive),
        setup=list(args.setup),
        venv=venv,
        conda=conda,
        warmup=not args.no_warmup,
        select=args.select,
        place=args.place,
        filesystems=args.filesystems,
        keep=args.keep if args.scheduler == "pbs" and args.keep != "n" else None,
    )


def submit_command(args: argparse.Namespace) -> int:
    """``simferry submit``: write the job script; print it (--dry-run) or submit it."""
    from simferry.records import make_run_dir

    req = request_from_args(args)
    named = req.filesystems or any("filesystems=" in d for d in req.directives)
    if req.scheduler == "pbs" and not named:
        print(
            "simferry: warning: no --filesystems given; sites such as ALCF Polaris reject "
            "a PBS job that does not name them (e.g. --filesystems home:eagle).",
            file=sys.stderr,
        )
    tool = SUBMIT_COMMAND[req.scheduler]
    exe = shutil.which(tool)
    if exe is None and not args.dry_run:
        raise UsageError(
            f"{tool} was not found on PATH; run this on a {req.scheduler.upper()} login node, "
            "or pass --dry-run to write and print the job script without submitting it."
        )
    req.job_dir = make_run_dir(args.runs_dir, f"submit-{req.scheduler}").resolve()
    script = req.job_dir / SCRIPT_NAME[req.scheduler]
    script.write_text(job_script(req), encoding="utf-8")
    script.chmod(0o700)
    if args.dry_run:
        print(script.read_text(encoding="utf-8"), end="")
        print(f"# job script: {script} (not submitted: --dry-run)", file=sys.stderr)
        return 0
    assert exe is not None
    try:
        proc = subprocess.run(
            [exe, str(script)], cwd=req.workdir, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RunFailure(f"{tool} could not be run ({exc}); the job script is {script}.") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RunFailure(
            f"{tool} refused the job ({detail[-1] if detail else f'exit {proc.returncode}'}); "
            f"the job script is {script}."
        )
    job_id = proc.stdout.strip().split()[-1] if proc.stdout.strip() else "?"
    (req.job_dir / "job_id").write_text(job_id + "\n", encoding="utf-8")
    print(f"submitted job {job_id}; script and results in {req.job_dir}")
    return 0


def add_submit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        choices=["pbs", "slurm"],
        help="the batch system: PBS Pro (qsub) or Slurm (sbatch); required unless --site sets it",
    )
    p.add_argument(
        "--site",
        choices=sorted(SITES),
        help="fill a site's defaults for the flags not given; polaris: --scheduler pbs "
        "--select system=polaris --place scatter --filesystems home:eagle --queue debug "
        "--setup 'module use /soft/modulefiles' --setup 'module load conda' (default: none)",
    )
    g = p.add_argument_group("PBS resources")
    g.add_argument(
        "--select",
        help="the chunk spec of '-l select=': a count and resources, e.g. "
        "2:ngpus=4:system=polaris, or resources only, after --nodes (default: --nodes alone)",
    )
    g.add_argument("--place", help="'-l place=', e.g. scatter (default: none)")
    g.add_argument(
        "--filesystems",
        help="'-l filesystems=', e.g. home:eagle; Polaris rejects a job without it "
        "(default: none, with a warning)",
    )
    g.add_argument(
        "--keep",
        default="doe",
        help="'-k': streams written straight to job.out while the job runs; n for none "
        "(default: doe)",
    )
    p.add_argument("--nodes", type=int, default=1, help="nodes to request (default: 1)")
    p.add_argument("--walltime", default="01:00:00", help="HH:MM:SS (default: 01:00:00)")
    p.add_argument("--queue", help="PBS queue / Slurm partition")
    p.add_argument("--account", help="project to charge (PBS -A / Slurm --account)")
    p.add_argument("--job-name", default="simferry", help="job name (default: simferry)")
    p.add_argument(
        "--directive",
        action="append",
        default=[],
        help="extra scheduler line without its #PBS/#SBATCH prefix, e.g. '-m abe' or "
        "'--gpus-per-node=4' (repeatable)",
    )
    p.add_argument(
        "--setup",
        action="append",
        default=[],
        help="shell line run before activating the environment, e.g. 'module load conda' "
        "(repeatable)",
    )
    p.add_argument(
        "--venv", type=Path, help="virtual environment to activate (default: the current one)"
    )
    p.add_argument(
        "--conda",
        type=Path,
        help="conda environment to activate, e.g. $CONDA_PREFIX (default: the current one "
        "when no virtual environment is active)",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip the short warm-up run")
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="where the job directory goes (default: runs)",
    )
    p.add_argument("--dry-run", action="store_true", help="write and print the script only")
    p.add_argument(
        "simferry_args",
        nargs=argparse.REMAINDER,
        metavar="-- run|compare|sweep ARGS",
        help="the simferry command the job runs",
    )
