"""``simferry submit``: a PBS or Slurm job script for run, compare or sweep; submit it.

The script itself is ``launchers.batch``'s; this module checks the flags and the command
the job will run -- what the job would only refuse in the queue, hours later, is refused
now -- writes the script to a new directory under ``runs/`` and hands it to the scheduler.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from simferry import plugins
from simferry.cli.common import Parser, Subparsers, config_from_args
from simferry.cli.compare import register as register_compare
from simferry.cli.run import register as register_run
from simferry.cli.sweep import grid, run_options
from simferry.cli.sweep import register as register_sweep
from simferry.engine.sweep import point_config
from simferry.errors import RunFailure, UsageError
from simferry.launchers.batch import (
    SCRIPT_NAME,
    SUBMIT_COMMAND,
    JobRequest,
    Scheduler,
    job_command,
    job_script,
)
from simferry.launchers.parsl import WALLTIME
from simferry.records import make_run_dir

#: Queue, account and job names go into directive lines: keep them one plain word.
NAME = re.compile(r"^[\w.@:+-]+$")
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


def job_parser() -> Parser:
    """The parser of the commands a job may run, to check them as ``simferry`` would."""
    parser = Parser(prog="simferry")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for register in (register_run, register_compare, register_sweep):
        register(sub)
    return parser


def _check_command(command: list[str], scheduler: Scheduler, nodes: int) -> None:
    """Refuse now what the job would only refuse in the queue, hours later.

    What is checked is the command as the job will run it (``job_command``): with its
    launcher, provider and node count, so ``-- run --nodes 4`` is checked as a Parsl run.
    """
    if not command or command[0] not in ("run", "compare", "sweep"):
        raise UsageError(
            "Give the simferry command to run after --, e.g. "
            "'simferry submit --scheduler pbs --nodes 2 -- run --num-sims 64'."
        )
    ns = job_parser().parse_args(job_command(command, scheduler, nodes))
    if command[0] == "sweep":
        points = grid(ns)
        options = run_options(ns, points)
        for point in points:
            point_config(point, options, Path("runs"))
        counts = {p.nodes for p in points}
    elif command[0] == "run":
        counts = {config_from_args(ns).launcher.node_count()}
    else:
        names = [n.strip() for n in (ns.transports or ",".join(plugins.transports())).split(",")]
        launcher = vars(ns).get("launcher", "local")
        counts = set()
        for name in filter(None, names):
            allowed = plugins.transport_config_class(name).launchers
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


def register(sub: Subparsers) -> None:
    p = sub.add_parser("submit", help="write a PBS/Slurm job script for run/compare; submit it")
    add_submit_flags(p)
    p.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    """Write the job script; print it (--dry-run) or submit it."""
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
    add_job_flags(p)


def add_job_flags(p: argparse.ArgumentParser) -> None:
    """What every job asks of its scheduler, and where its script and results go."""
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
