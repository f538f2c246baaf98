"""Every ``simferry`` command shown in the README and the docs runs, so the docs cannot rot.

Commands are read from the ``bash`` code blocks; each is parsed (fast), then run for real
with small sizes (``--num-sims 2 --grid-size 16 --step-seconds 0``), ``submit`` with
``--dry-run``. The docs site itself is built with ``mkdocs build --strict`` in ``make test``.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from simferry.cli import make_parser
from simferry.launchers import dragon

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: Flags set to small values wherever a command has them (or needs them), per command.
SMALL = {"--num-sims": "2", "--grid-size": "16", "--step-seconds": "0"}
DEMO = {"--workers": "1", "--repeats": "1", "--array-mib": "0.1"}


def shown_commands() -> list[str]:
    """The ``simferry ...`` lines of every ``bash`` block, continuation lines joined."""
    found: list[str] = []
    for page in PAGES:
        in_block, pending = False, ""
        for raw in page.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if line.startswith("```"):
                in_block = line == "```bash"
                continue
            if not in_block:
                continue
            pending += line.removesuffix("\\").strip() + " " if line.endswith("\\") else line
            if line.endswith("\\"):
                continue
            if pending.startswith("simferry "):
                found.append(pending)
            pending = ""
    return list(dict.fromkeys(found))


def with_value(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag`` set to ``value``: replaced where given, else added."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[: i + 1], value, *argv[i + 2 :]]
    return [*argv, flag, value]


def small(command: str) -> list[str]:
    """The command's arguments (after ``simferry``), made quick to run."""
    argv = shlex.split(command)[1:]
    if argv[0] == "submit":
        cut = argv.index("--") if "--" in argv else len(argv)
        return [*argv[:cut], "--dry-run", *argv[cut:]] if "--dry-run" not in argv else argv
    values = {"run": SMALL, "compare": SMALL, "sweep": SMALL, "ddict-demo": DEMO}
    for flag, value in values.get(argv[0], {}).items():
        argv = with_value(argv, flag, value)
    if argv[0] == "sweep":
        argv = with_value(argv, "--repeat", "1")
    return argv


COMMANDS = shown_commands()


def test_the_docs_show_commands_and_each_parses() -> None:
    assert len(COMMANDS) >= 15, COMMANDS
    for where in ("run", "compare", "sweep", "report", "submit", "doctor", "ddict-demo"):
        assert any(c.split()[1] == where for c in COMMANDS), f"no {where} command shown"
    parser = make_parser()
    for command in COMMANDS:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            pytest.fail(f"{command!r} does not parse (exit {exc.code})")


def needs(argv: list[str]) -> str | None:
    """Why this command cannot run here (software missing), else ``None``."""
    text = " ".join(argv)
    if (argv[0] == "ddict-demo" or "--launcher dragon" in text) and dragon.missing_reason():
        return dragon.missing_reason()
    uses_parsl = "parsl" in text.split() or "--launchers parsl" in text
    if uses_parsl and importlib.util.find_spec("parsl") is None:
        return "parsl is not installed"
    return None


@pytest.mark.integration
@pytest.mark.parametrize("command", COMMANDS, ids=[c[:70] for c in COMMANDS])
def test_every_command_shown_runs(command: str, tmp_path: Path) -> None:
    argv = small(command)
    reason = needs(argv)
    if reason:
        pytest.skip(reason)
    if argv[0] == "report":  # it reads runs the reader made before; make one
        first = [sys.executable, "-m", "simferry", "run", "--transport", "futures"]
        first += [x for kv in SMALL.items() for x in kv] + ["--quiet"]
        subprocess.run(first, cwd=tmp_path, check=True, timeout=300)
    proc = subprocess.run(
        [sys.executable, "-m", "simferry", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, (
        f"{shlex.join(argv)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )
    assert "Traceback" not in proc.stderr
