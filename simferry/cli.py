"""The ``simferry`` command line: run, compare, sweep, report, submit, doctor.

Flags of launchers and transports are generated from their pydantic config classes, so a
new plug-in gets its flags (and its entry in ``doctor``) without this file changing.
Expected failures print one sentence and exit non-zero; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ByteSize

from simferry import __version__, plugins
from simferry.config import RunConfig, WorkloadConfig, build, load_config
from simferry.errors import Interrupted, SimferryError, UsageError

#: Underscore spellings of the reference scripts' own flags, so their command lines work
#: here unchanged; no other flag has one.
ALIASES = {"num_sims": ["--num_sims"], "grid_size": ["--grid_size"]}
DESCRIPTION = """\
Measure how data travels from an ensemble of simulations to the AI trainers that
learn from them: run one launcher + transport, compare them all, sweep sizes and
node counts, and get the homework table, plots and observations."""
EPILOG = """examples:
  simferry compare --num-sims 8 --grid-size 256     every transport usable here
  simferry run --transport shm --num-sims 8         one launcher + transport
  simferry sweep --num-sims 4,8 --repeat 3          a grid, with repeats
  simferry doctor                                   what is usable on this machine

'simferry COMMAND --help' lists a command's flags."""


class Parser(argparse.ArgumentParser):
    """argparse with one-sentence errors and no abbreviated flags.

    Abbreviations are off because ``--sim 2`` silently meant ``--sim-workers 2``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"simferry: error: {message}; see '{self.prog} --help'.\n")
        raise SystemExit(2)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def add_model_flags(
    parser: argparse._ActionsContainer, model: type[BaseModel], seen: set[str]
) -> None:
    """One flag per config field; values stay strings so pydantic validates them."""
    for name, info in model.model_fields.items():
        flag = _flag(name)
        if name == "name" or flag in seen:
            continue
        seen.add(flag)
        ann = _unwrap(info.annotation)
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": field_help(info.description or "", info.default),
        }
        if ann is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(ann) is Literal:
            kwargs["choices"] = [str(c) for c in typing.get_args(ann)]  # shown as {a,b}
        else:
            kwargs["metavar"] = name.upper()
        parser.add_argument(flag, *ALIASES.get(name, []), **kwargs)


def field_help(description: str, default: Any) -> str:
    """A flag's help with its default as a person writes it (4MiB, off, none)."""
    if "default" in description.lower():
        return description
    if default is None or default == "":
        text = "none"
    elif isinstance(default, bool):
        text = "on" if default else "off"
    elif isinstance(default, ByteSize):
        text = default.human_readable(separator="")
    else:
        text = str(default)
    return f"{description} (default: {text})" if description else f"default: {text}"


def add_run_flags(p: argparse.ArgumentParser, compare: bool = False) -> None:
    seen: set[str] = set()
    g = p.add_argument_group("workload")
    add_model_flags(g, WorkloadConfig, seen)
    g = p.add_argument_group("launcher")
    g.add_argument(
        "--launcher",
        default=argparse.SUPPRESS,
        choices=sorted(plugins.launchers()),
        help="who starts processes (default: local)",
    )
    for cls in plugins.launchers().values():
        add_model_flags(g, cls, seen)
    g = p.add_argument_group("transport")
    if compare:
        g.add_argument(
            "--transports",
            default=None,
            metavar="NAME,NAME",
            help="comma-separated transports to compare, of "
            + ", ".join(sorted(plugins.transports()))
            + " (default: every one usable here)",
        )
    else:
        g.add_argument(
            "--transport",
            default=argparse.SUPPRESS,
            choices=sorted(plugins.transports()),
            help="how data travels (default: filesystem)",
        )
    for tcls in plugins.transports().values():
        add_model_flags(g, tcls, seen)
    p.add_argument(
        "--runs-dir", default=argparse.SUPPRESS, help="where run directories go (default: runs)"
    )
    if compare:
        p.add_argument("--repeat", type=int, default=1, help="runs of each transport (default: 1)")
    add_output_flags(p)
    p.add_argument(
        "--config",
        type=Path,
        help="a config.toml to start from, e.g. a run's own; flags override it (default: none)",
    )


def add_output_flags(p: argparse.ArgumentParser) -> None:
    """--quiet and --json, the same on every command that runs work."""
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print nothing but errors and warnings (e.g. a transport skipped)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON on stdout instead of tables (progress is not shown)",
    )


#: Arguments about the command's output, never part of a run's configuration.
OUTPUT_ARGS = {"command", "func", "quiet", "json"}


def _split(values: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    return {k: values.pop(k) for k in list(values) if k in model.model_fields and k != "name"}


def config_from_args(
    args: argparse.Namespace, transport: str | None = None, launcher: str | None = None
) -> RunConfig:
    values = {
        k: v
        for k, v in vars(args).items()
        if k not in OUTPUT_ARGS | {"config", "transports", "repeat"}
    }
    base: dict[str, Any] = {"workload": {}, "launcher": {}, "transport": {}}
    if getattr(args, "config", None):
        loaded = load_config(args.config).dump()
        base = {k: dict(loaded[k]) for k in ("workload", "launcher", "transport")}
        base["runs_dir"] = loaded["runs_dir"]
    launcher = launcher or values.pop("launcher", base["launcher"].get("name", "local"))
    values.pop("launcher", None)
    tname = transport or values.pop("transport", base["transport"].get("name", "filesystem"))
    if launcher != base["launcher"].get("name", launcher):
        base["launcher"] = {}
    if tname != base["transport"].get("name", tname):
        base["transport"] = {}
    lcls = plugins.launcher_config_class(launcher)
    tcls = plugins.transport_config_class(tname)
    base["workload"].update(_split(values, WorkloadConfig))
    base["launcher"].update(_split(values, lcls), name=launcher)
    base["transport"].update(_split(values, tcls), name=tname)
    if "runs_dir" in values:
        base["runs_dir"] = values.pop("runs_dir")
    if values and transport is None:
        flags = ", ".join(_flag(k) for k in values)
        raise UsageError(
            f"{flags} does not apply to the {launcher} launcher with the {tname} transport; "
            "remove it or choose the launcher/transport it belongs to."
        )
    return build(**base)


def _progress(args: argparse.Namespace, label: str = "") -> Any:
    from simferry.engine.progress import make_progress

    return make_progress(label, quiet=silent(args))


def silent(args: argparse.Namespace) -> bool:
    """No progress and no tables: --quiet, or --json (whose stdout is the JSON alone)."""
    return bool(getattr(args, "quiet", False) or getattr(args, "json", False))


def print_json(data: Any) -> None:
    """Machine-readable results: one JSON document on stdout."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def cmd_run(args: argparse.Namespace) -> int:
    from simferry.engine.run import check_run, execute
    from simferry.launchers.dragon import (
        execute_under_dragon,
        needs_runtime,
        run_config_under_dragon,
    )
    from simferry.records import read_summary
    from simferry.report import homework

    cfg = config_from_args(args)
    if needs_runtime(cfg):  # typed in a plain shell: the same run under `dragon`
        check_run(cfg)
        if not args.json:
            return run_config_under_dragon(cfg, args.quiet)[0]
        run_dir = execute_under_dragon(cfg)
    else:
        run_dir = execute(cfg, _progress(args))
    summary = read_summary(run_dir)
    if args.json:
        print_json({"run_dir": run_dir, "summary": summary})
        return 0
    if args.quiet:
        return 0
    print(homework([summary]), end="")
    verified = summary.get("verified_samples", {})
    expected = summary["samples_expected"]
    if sorted(set(verified.values())) == [expected]:
        print(f"{expected} samples verified by each of {len(verified)} trainer(s)")
    print(f"run directory: {run_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console

    from simferry.engine.run import check_run, execute, implementation
    from simferry.launchers.dragon import execute_under_dragon, needs_runtime
    from simferry.records import make_run_dir, read_summary
    from simferry.report import write_report

    console = Console(stderr=True, quiet=silent(args))  # errors and skips go to `shout`
    shout = Console(stderr=True)
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, not {args.repeat}.")
    names = (
        [t.strip() for t in args.transports.split(",") if t.strip()]
        if args.transports
        else list(plugins.transports())
    )
    # Unknown names fail before anything runs; a transport that needs another launcher
    # (ddict) runs with the first one it allows, or is a skipped row where that is missing.
    launcher = getattr(args, "launcher", "local")
    elsewhere: dict[str, str] = {}
    mismatched: dict[str, str] = {}
    for n in list(names):
        tcls = plugins.transport_config_class(n)
        if tcls.launchers is not None and launcher not in tcls.launchers:
            alt = tcls.launchers[0]
            acls = plugins.launcher_config_class(alt)
            why = acls(name=alt).unavailable_reason() or tcls(name=n).unavailable_reason()
            if why is None:
                elsewhere[n] = alt
                continue
            mismatched[f"{acls.display or alt} + {tcls.display or n}"] = why
            names.remove(n)
    if not names:
        raise UsageError(
            "None of the transports compared can run here: "
            + "; ".join(f"{k}: {v.rstrip('.')}" for k, v in mismatched.items())
            + "."
            if mismatched
            else "--transports names no transport; pass e.g. --transports futures,shm."
        )
    configs = [config_from_args(args, transport=n, launcher=elsewhere.get(n)) for n in names]
    configs = [v for c in configs for v in variants(c, args)]
    leftovers = {
        k
        for k in vars(args)
        if k not in OUTPUT_ARGS | {"transports", "launcher", "runs_dir", "config", "repeat"}
        and not any(
            k in type(part).model_fields
            for c in configs
            for part in (c.workload, c.launcher, c.transport)
        )
    }
    if leftovers:
        raise UsageError(
            f"{', '.join(_flag(k) for k in leftovers)} does not apply to any transport compared."
        )
    # What a run would refuse is refused before the comparison directory exists: all of
    # it (exit 2) when no transport can run, else that transport's row is skipped.
    refused: dict[str, str] = {}
    runnable = [c for c in configs if not skip_reason(c)]
    for cfg in runnable:
        try:
            check_run(cfg)
        except UsageError as exc:
            refused[implementation(cfg)] = str(exc)
            if len(refused) == len(runnable):
                raise
    out = make_run_dir(configs[0].runs_dir, "compare")
    summaries: list[dict[str, Any]] = []
    for label, why in mismatched.items():
        shout.print(f"[yellow]skipping {label}: {why}[/]")
        summaries.append({"implementation": label, "status": "skipped", "error": why})
    failed = 0
    for cfg in configs:
        label = implementation(cfg)
        reason = skip_reason(cfg) or refused.get(label)
        if reason:
            shout.print(f"[yellow]skipping {label}: {reason}[/]")
            summaries.append({**_size(cfg), "implementation": label, "status": "skipped",
                              "error": reason})  # fmt: skip
            continue
        run = execute_under_dragon if needs_runtime(cfg) else execute
        for n in range(1, args.repeat + 1):
            console.print(
                f"[bold]{label}[/]" + (f", run {n}/{args.repeat}" if args.repeat > 1 else "")
            )
            try:
                run_dir = run(cfg, _progress(args, f"{cfg.transport.name} "), parent=out)
                summaries.append(read_summary(run_dir))
            except Interrupted:
                raise
            except SimferryError as exc:  # a transport that fails once is not run again
                failed += 1
                shout.print(f"[red]{label} failed: {exc}[/]")
                summaries.append({**_size(cfg), "implementation": label, "status": "failed",
                                  "error": str(exc)})  # fmt: skip
                break
    table = write_report(summaries, out)
    if args.json:
        print_json({"out": out, "runs": summaries})
    elif not args.quiet:
        print(table, end="")
        print(f"homework: {out / 'homework.md'}\ntable: {out / 'table.md'}")
        print(f"results: {out / 'results.csv'}")
        print(f"plots: {out / 'plots'}\nobservations: {out / 'observations.md'}")
    return 1 if failed else 0


def _size(cfg: RunConfig) -> dict[str, int]:
    """What a row that did not run still shows: its size (the table's size columns)."""
    return {"num_sims": cfg.workload.num_sims, "grid_size": cfg.workload.grid_size}


def variants(cfg: RunConfig, args: argparse.Namespace) -> list[RunConfig]:
    """One config per variant a transport compares (its connectors, engines), unless the
    command line chose one."""
    found = getattr(type(cfg.transport), "compare_variants", ())
    if not found or any(k in vars(args) for v in found for k in v):
        return [cfg]
    return [cfg.model_copy(update={"transport": cfg.transport.model_copy(update=v)}) for v in found]


def skip_reason(cfg: RunConfig) -> str | None:
    """Why ``compare`` leaves this transport out here (software missing, wrong launcher)."""
    allowed = cfg.transport.launchers
    if allowed is not None and cfg.launcher.name not in allowed:
        return f"needs --launcher {' or '.join(allowed)}"
    return cfg.transport.unavailable_reason() or cfg.launcher.unavailable_reason()


def cmd_report(args: argparse.Namespace) -> int:
    from simferry import baselines
    from simferry.records import make_run_dir
    from simferry.report import REPORT_FILES, load_summaries, write_report

    dirs = find_run_dirs(args.run_dirs)
    if not dirs:
        raise UsageError("No run directories (with a summary.json) found in the paths given.")
    baseline = baselines.load(args.baseline) if args.baseline else None
    if args.out is None:  # a new directory each time: an earlier report is never replaced
        out = make_run_dir(Path("reports"), "report")
    else:
        out = args.out
        taken = [name for name in REPORT_FILES if (out / name).exists()]
        if taken:
            raise UsageError(
                f"{out} already holds a report ({', '.join(taken)}); pass a new --out "
                "directory, or leave --out out to write to a new one under reports/."
            )
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    summaries = load_summaries(dirs)
    table = write_report(summaries, out, baseline=baseline)
    if args.json:
        print_json({"out": out, "runs": summaries})
    elif not args.quiet:
        print(table, end="")
        print(f"homework.md, table.md, results.csv, plots/ and observations.md written to {out}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from simferry.sweep import run_sweep

    return run_sweep(args)


def cmd_submit(args: argparse.Namespace) -> int:
    from simferry.submit import submit_command

    return submit_command(args)


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        if not p.exists():
            raise UsageError(f"{p} does not exist.")
        if (p / "summary.json").exists():
            found.append(p)
        else:
            found.extend(sorted(s.parent for s in p.rglob("summary.json")))
    return found


#: What the default demo (``make demo``: ``simferry compare``) cannot do without; the
#: other plug-ins are rows it skips with their reason when they are missing.
DEMO_NEEDS = {"launcher": ["local"], "transport": ["futures", "filesystem", "shm"]}


def cmd_doctor(args: argparse.Namespace) -> int:
    """What is usable here; exit 1 when the default demo could not run."""
    import shutil

    from simferry.launchers.dragon import login_node_note
    from simferry.launchers.local import cpu_count, gpu_count
    from simferry.transports.filesystem import gib

    found: dict[str, Any] = {"cores": cpu_count(), "gpus": gpu_count()}
    lines = [f"cores: {found['cores']}   GPUs: {found['gpus']}"]
    shm = Path("/dev/shm")
    if shm.is_dir():
        found["shm_free_bytes"] = shutil.disk_usage(shm).free
        lines.append(f"/dev/shm free: {gib(found['shm_free_bytes'])}")
    registries: list[tuple[str, dict[str, Any]]] = [
        ("launcher", plugins.launchers()),
        ("transport", plugins.transports()),
    ]
    missing: list[str] = []
    for kind, registry in registries:
        found[kind + "s"] = {}
        for name, cls in sorted(registry.items()):
            try:
                reason = cls(name=name).unavailable_reason()
            except Exception as exc:  # a config that needs arguments to be built
                reason = f"cannot check: {exc}"
            found[kind + "s"][name] = reason or "ok"
            lines.append(f"{kind:9} {name:11} {'ok' if not reason else 'unavailable: ' + reason}")
            if reason and name in DEMO_NEEDS[kind]:
                missing.append(f"the {name} {kind}")
            for variant in getattr(cls, "compare_variants", ()) if not reason else ():
                why = cls(name=name, **variant).unavailable_reason()
                label = "  " + " ".join(map(str, variant.values()))
                lines.append(f"{'':9} {label:11} {'ok' if not why else 'unavailable: ' + why}")
    note = login_node_note()
    if note:
        found["dragon_login_node"] = note
        lines.append(f"dragon    {note}")
    if args.clean:
        from simferry.engine.cleanup import clean_stale

        found["removed"] = [str(p) for p in clean_stale()]
        lines += [f"removed stale {p}" for p in found["removed"]]
    found["demo_ready"] = not missing
    if args.json:
        print_json(found)
    else:
        print("\n".join(lines))
    if missing:
        print(
            f"simferry: error: the default demo (simferry compare) needs {', '.join(missing)}, "
            "which cannot run here; see the reasons above.",
            file=sys.stderr,
        )
        return 1
    return 0


def make_parser() -> Parser:
    parser = Parser(
        prog="simferry",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"simferry {__version__}")
    add_completion_flag(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    p = sub.add_parser("run", help="run the workflow once with one launcher and transport")
    add_run_flags(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("compare", help="run every usable transport on one config; print the table")
    add_run_flags(p, compare=True)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("report", help="table, CSV, plots and observations from run directories")
    p.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directories, or directories holding them (a compare or sweep directory)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output directory, which must not hold a report yet "
        "(default: a new directory under reports/)",
    )
    p.add_argument(
        "--baseline",
        metavar="NAME",
        help="set published numbers beside yours, e.g. polaris (the reference's rows)",
    )
    add_output_flags(p)
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("sweep", help="a grid of sizes, transports and launchers, with repeats")
    from simferry.sweep import add_sweep_flags

    add_sweep_flags(p)
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("submit", help="write a PBS/Slurm job script for run/compare; submit it")
    from simferry.submit import add_submit_flags

    add_submit_flags(p)
    p.set_defaults(func=cmd_submit)
    p = sub.add_parser("ddict-demo", help="the DDict introduction: workers share a DDict")
    from simferry.ddict_demo import add_demo_flags, cmd_ddict_demo

    add_demo_flags(p)
    p.set_defaults(func=cmd_ddict_demo)
    p = sub.add_parser(
        "doctor", help="what is installed and usable here; exit 1 if the default demo cannot run"
    )
    p.add_argument("--clean", action="store_true", help="remove data left by killed runs")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_doctor)
    return parser


def add_completion_flag(parser: argparse.ArgumentParser) -> None:
    """``--print-completion bash|zsh``: a completion script generated from this parser."""
    try:
        import shtab
    except ImportError:  # shtab is a dependency; a broken install loses completion only
        return
    parser.add_argument(
        "--print-completion",
        choices=["bash", "zsh"],
        default=argparse.SUPPRESS,
        action=shtab.completion_action(),
        help="print a bash or zsh completion script and exit, e.g. "
        "'simferry --print-completion bash > ~/.local/share/bash-completion/completions/simferry'",
    )


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # everything simferry creates is private to the user
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `simferry`: what it does and how to start
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except Interrupted as exc:
        print(f"simferry: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("simferry: interrupted.", file=sys.stderr)
        return 130
    except SimferryError as exc:
        print(f"simferry: error: {exc}", file=sys.stderr)
        return exc.exit_code
