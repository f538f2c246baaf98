"""The Dragon runtime as this machine has it: installed, running, and why not.

Both the dragon launcher and the DDict transport need the runtime and refuse to start
without it in the same words, so the checks live here, where both can import them without
importing each other. Nothing from Dragon is imported, so ``doctor`` works without it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from simferry.transports.exceptions import TransportUnavailableError

INSTALL = "install it with `pip install dragonhpc` (Linux, Python 3.10-3.12)"
#: Set by the Dragon runtime in every process it starts.
RUNTIME_ENV = "DRAGON_MY_PUID"


def in_runtime() -> bool:
    """Whether this process was started by the Dragon runtime (``dragon`` or a pool)."""
    return RUNTIME_ENV in os.environ


def dragon_puid() -> int:
    """This process's Dragon id: what the pools report for a worker that died."""
    return int(os.environ[RUNTIME_ENV])


def how_it_ended(code: int | None) -> str:
    """A dead process's exit status in words: "killed by signal 9", "exit code 1"."""
    return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"


def dragon_executable() -> Path | None:
    """The ``dragon`` launcher of this Python's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "dragon"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("dragon")
    return Path(found) if found else None


def dragon_installed() -> bool:
    return importlib.util.find_spec("dragon") is not None


def missing_reason() -> str | None:
    """Why Dragon cannot be used here, in one sentence; ``None`` when it can."""
    if not dragon_installed():
        return f"dragonhpc is not installed; {INSTALL}."
    if not in_runtime() and dragon_executable() is None:
        return (
            f"the `dragon` executable of dragonhpc is not on PATH; {INSTALL} in this environment."
        )
    return None


def require_runtime(what: str) -> None:
    """Refuse Dragon objects outside the runtime, where they would fail obscurely."""
    reason = missing_reason()
    if reason:
        raise TransportUnavailableError(f"{what} cannot run: {reason}")
    if not in_runtime():
        raise TransportUnavailableError(
            f"{what} needs the Dragon runtime; use `simferry run --launcher dragon`, which "
            "starts it, or run simferry under `dragon`."
        )
