"""The ``simferry`` command line: run, compare, sweep, report, submit, doctor.

One module per command, each with a ``register`` that adds its parser; ``common`` holds
what they share. Flags of launchers and transports are generated from their pydantic
config classes, so a new plug-in gets its flags (and its entry in ``doctor``) without
this package changing. Expected failures print one sentence and exit non-zero; only bugs
show a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from simferry import __version__
from simferry.cli.common import Parser
from simferry.cli.compare import register as register_compare
from simferry.cli.ddict_demo import add_demo_flags, cmd_ddict_demo
from simferry.cli.doctor import register as register_doctor
from simferry.cli.report import register as register_report
from simferry.cli.run import register as register_run
from simferry.cli.submit import register as register_submit
from simferry.cli.sweep import register as register_sweep
from simferry.errors import Interrupted, SimferryError

shtab: ModuleType | None
try:
    import shtab
except ImportError:  # shtab is a dependency; a broken install loses completion only
    shtab = None

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
    register_run(sub)
    register_compare(sub)
    register_report(sub)
    register_sweep(sub)
    register_submit(sub)
    p = sub.add_parser("ddict-demo", help="the DDict introduction: workers share a DDict")
    add_demo_flags(p)
    p.set_defaults(func=cmd_ddict_demo)
    register_doctor(sub)
    return parser


def add_completion_flag(parser: argparse.ArgumentParser) -> None:
    """``--print-completion bash|zsh``: a completion script generated from this parser."""
    if shtab is None:
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
