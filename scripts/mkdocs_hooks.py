"""mkdocs hook: the command-line reference is generated from simferry's own parser.

A page holding ``<!-- cli-reference -->`` gets the ``--help`` text of ``simferry`` and of
each of its commands in its place, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

MARKER = "<!-- cli-reference -->"


def cli_reference() -> str:
    from simferry.cli import make_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal; fix the width
    parser = make_parser()
    parts = ["## simferry", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts += [f"## simferry {name}", "", "```text", sub.format_help().rstrip()]
                parts += ["```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
