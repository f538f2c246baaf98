"""Published measurements shipped with simferry, to set a user's numbers beside them.

Each ``<name>.toml`` holds one machine's description, the configuration it ran and its
rows in the reference's homework units; ``simferry report --baseline <name>`` uses them.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from simferry.errors import UsageError


@dataclass(frozen=True)
class Baseline:
    name: str
    machine: dict[str, Any]
    rows: list[dict[str, Any]]


def names() -> list[str]:
    """The baselines shipped (file stems of this package's ``*.toml``)."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load(name: str) -> Baseline:
    """One shipped baseline; an unknown name is a usage error listing the known ones."""
    if name not in names():
        raise UsageError(
            f"Unknown baseline {name!r}; the baselines shipped are: {', '.join(names())}."
        )
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return Baseline(name, dict(data["machine"]), [dict(r) for r in data["rows"]])
