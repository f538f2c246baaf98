"""What every command shares: the parser class, flags generated from config classes, the
config built from them, and the output conventions (--quiet, --json).

Flags of launchers and transports come from their pydantic config classes, so a new
plug-in gets its flags without the command line changing; values stay strings so pydantic
validates them and its error is the one the user sees.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, ByteSize

from simferry import plugins
from simferry.config import RunConfig, WorkloadConfig, build, load_config
from simferry.engine.progress import Progress, make_progress
from simferry.errors import UsageError

#: Underscore spellings of the reference scripts' own flags, so their command lines work
#: here unchanged; no other flag has one.
ALIASES = {"num_sims": ["--num_sims"], "grid_size": ["--grid_size"]}
#: Arguments about the command's output, never part of a run's configuration.
OUTPUT_ARGS = {"command", "func", "quiet", "json"}


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


#: What a command module's ``register`` adds its parser to.
Subparsers = argparse._SubParsersAction


def flag(field: str) -> str:
    """The command-line spelling of a config field: ``num_sims`` is ``--num-sims``."""
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
        option = flag(name)
        if name == "name" or option in seen:
            continue
        seen.add(option)
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
        parser.add_argument(option, *ALIASES.get(name, []), **kwargs)


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
    """The flags of ``run`` and ``compare``: every config field, the plug-in choice, output."""
    seen: set[str] = set()
    add_model_flags(p.add_argument_group("workload"), WorkloadConfig, seen)
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


def _split(values: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    return {k: values.pop(k) for k in list(values) if k in model.model_fields and k != "name"}


def _start(args: argparse.Namespace) -> dict[str, Any]:
    """The sections a run's config starts from: --config's, else empty ones."""
    if not vars(args).get("config"):
        return {"workload": {}, "launcher": {}, "transport": {}}
    loaded = load_config(args.config).dump()
    base: dict[str, Any] = {k: dict(loaded[k]) for k in ("workload", "launcher", "transport")}
    base["runs_dir"] = loaded["runs_dir"]
    return base


def config_from_args(
    args: argparse.Namespace, transport: str | None = None, launcher: str | None = None
) -> RunConfig:
    """The run's config: --config's settings under the flags; a flag no part has is refused."""
    values = {
        k: v
        for k, v in vars(args).items()
        if k not in OUTPUT_ARGS | {"config", "transports", "repeat"}
    }
    base = _start(args)
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
        flags = ", ".join(flag(k) for k in values)
        raise UsageError(
            f"{flags} does not apply to the {launcher} launcher with the {tname} transport; "
            "remove it or choose the launcher/transport it belongs to."
        )
    return build(**base)


def progress(args: argparse.Namespace, label: str = "") -> Progress:
    """A run's progress display, or none under --quiet/--json."""
    return make_progress(label, quiet=silent(args))


def silent(args: argparse.Namespace) -> bool:
    """No progress and no tables: --quiet, or --json (whose stdout is the JSON alone)."""
    return bool(vars(args).get("quiet") or vars(args).get("json"))


def print_json(data: Any) -> None:
    """Machine-readable results: one JSON document on stdout."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_report_paths(out: Path) -> None:
    """Where a compare or sweep wrote its report, one file per line."""
    print(f"homework: {out / 'homework.md'}\ntable: {out / 'table.md'}")
    print(f"results: {out / 'results.csv'}")
    print(f"plots: {out / 'plots'}\nobservations: {out / 'observations.md'}")
