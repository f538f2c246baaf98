"""Registries of transports and launchers, keyed by the ``name`` literal of their config.

Adding a plug-in means writing one module with a pydantic config class and decorating it;
the CLI builds its flags from the registered classes, so it never needs editing (TaPS style).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from simferry.errors import UsageError

if TYPE_CHECKING:
    from simferry.launchers.base import LauncherConfig
    from simferry.transports.base import TransportConfig

TransportT = TypeVar("TransportT", bound="type[TransportConfig]")
LauncherT = TypeVar("LauncherT", bound="type[LauncherConfig]")

_TRANSPORTS: dict[str, type[TransportConfig]] = {}
_LAUNCHERS: dict[str, type[LauncherConfig]] = {}

# Modules imported on first lookup so registration happens without import cycles.
TRANSPORT_MODULES = [
    "simferry.transports.futures",
    "simferry.transports.filesystem",
    "simferry.transports.shm",
    "simferry.transports.redis",
    "simferry.transports.ddict",
    "simferry.transports.proxystore",
    "simferry.transports.adios2",
]
LAUNCHER_MODULES = [
    "simferry.launchers.local",
    "simferry.launchers.parsl",
    "simferry.launchers.dragon",
]
_loaded = False


def _plugin_name(cls: type[TransportConfig] | type[LauncherConfig]) -> str:
    return str(cls.model_fields["name"].default)


def register_transport(cls: TransportT) -> TransportT:
    """Class decorator: make a TransportConfig subclass selectable by its ``name``."""
    _TRANSPORTS[_plugin_name(cls)] = cls
    return cls


def register_launcher(cls: LauncherT) -> LauncherT:
    """Class decorator: make a LauncherConfig subclass selectable by its ``name``."""
    _LAUNCHERS[_plugin_name(cls)] = cls
    return cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in TRANSPORT_MODULES + LAUNCHER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A plug-in module not written yet, or one whose own module is missing, must
            # not break the others; a missing *optional dependency* is handled inside each
            # plug-in (it registers and reports itself unavailable).
            if exc.name != module:
                raise


def transports() -> dict[str, type[TransportConfig]]:
    _load()
    return dict(_TRANSPORTS)


def launchers() -> dict[str, type[LauncherConfig]]:
    _load()
    return dict(_LAUNCHERS)


def transport_config_class(name: str) -> type[TransportConfig]:
    known = transports()
    if name not in known:
        raise UsageError(f"Unknown transport {name!r}; choose one of: {', '.join(sorted(known))}.")
    return known[name]


def launcher_config_class(name: str) -> type[LauncherConfig]:
    known = launchers()
    if name not in known:
        raise UsageError(f"Unknown launcher {name!r}; choose one of: {', '.join(sorted(known))}.")
    return known[name]
