"""The Transport Protocol every data path implements, and what the workflow gives it.

Like ProxyStore's Connector: a small Protocol, no behaviour in a base class. The process
that starts a run calls ``TransportConfig.start`` and owns what that creates (directories,
servers, shared memory); workers receive ``transport.config()`` -- a small pickleable
spec -- and ``connect()`` their own client, so live sockets never cross processes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, Self, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict


class SampleKey(NamedTuple):
    """One array of one sample: identity is ``(sim, step)``, never a float-derived name."""

    sim: int
    step: int
    kind: Literal["input", "target"]

    def name(self) -> str:
        return f"s{self.sim:06d}/{self.step:04d}-{self.kind}"


class WeightsKey(NamedTuple):
    """The trained weights of one trainer, saved through the transport as training IO."""

    trainer: int

    def name(self) -> str:
        return f"weights/trainer-{self.trainer:03d}"


Key = SampleKey | WeightsKey


@dataclass(frozen=True)
class RunContext:
    """What a transport needs to know about the run it serves, decided before it starts."""

    run_dir: Path
    run_id: str
    data_bytes: int
    nodes: int = 1
    hosts: tuple[str, ...] = field(default_factory=lambda: (socket.gethostname(),))
    #: The launcher's name, for transports that depend on how it keeps workers.
    launcher: str = "local"
    mode: str = "phased"


@runtime_checkable
class Transport(Protocol):
    """Moves numpy arrays by key between processes (and nodes, where the backend can)."""

    def put(self, key: Key, array: np.ndarray) -> None: ...

    def get(self, key: Key) -> np.ndarray:
        """Return the array; raise ``KeyNotFoundError`` when it was never written."""
        ...

    def put_many(self, items: Sequence[tuple[Key, np.ndarray]]) -> None: ...

    def get_many(self, keys: Sequence[Key]) -> list[np.ndarray]: ...

    def exists(self, key: Key) -> bool: ...

    def keys(self, prefix: str = "") -> list[str]:
        """Names (``key.name()``) of stored arrays starting with ``prefix``."""
        ...

    def delete(self, key: Key) -> None: ...

    def close(self) -> None:
        """Release this client; the owner (from ``start``) also frees the data and servers."""
        ...

    def config(self) -> ClientSpec: ...


@runtime_checkable
class ByValue(Protocol):
    """Optional: a transport with no shared store, whose data rides on task results.

    What a task's client put leaves the worker with its result (``drain``), and what a
    task must read arrives with its arguments (``load``). The engine checks for this once
    and carries the blobs (``engine/handoff.py``), so task code reads and writes as with
    any other transport.
    """

    def drain(self) -> bytes:
        """Serialize and forget everything this client put."""
        ...

    def load(self, blob: bytes) -> None:
        """Accept what another task's ``drain`` returned (this run's own blobs only).

        A transport may defer unpickling to the first read of a key in the blob, so a
        task never holds every blob's arrays at once.
        """
        ...

    def load_s(self) -> float:
        """Seconds spent so far unpickling loaded blobs (inside reads, when deferred)."""
        ...


def hand_over(src: Transport, dst: Transport) -> None:
    """Make what ``src`` put readable through ``dst``, as a task result does between workers.

    Nothing moves for a shared store; a by-value transport's data goes by ``drain`` and
    ``load``.
    """
    if isinstance(src, ByValue) and isinstance(dst, ByValue):
        dst.load(src.drain())


@runtime_checkable
class Liveness(Protocol):
    """Optional: a transport served by processes that may die while tasks wait on them.

    The engine calls ``check_alive`` every second while tasks run, since a dead server
    would otherwise show only as tasks hanging until their own timeouts.
    """

    def check_alive(self) -> None:
        """Raise ``TransportError`` naming what died; return when all is well."""
        ...


@runtime_checkable
class Staging(Protocol):
    """Optional: a transport whose writer must know how many readers will attach."""

    def expect_readers(self, readers: int) -> None: ...


class ClientSpec(BaseModel):
    """Pickleable description from which a worker rebuilds its own client."""

    model_config = ConfigDict(frozen=True)

    def connect(self) -> Transport:
        raise NotImplementedError


class TransportConfig(BaseModel):
    """User-facing options of one transport; subclasses are registered by ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    #: Shown in tables: "Local + <display>".
    display: ClassVar[str] = ""
    #: True when data rides on the launcher's task results (pass-by-value).
    by_value: ClassVar[bool] = False
    #: By value through the launcher, but only small proxies: the data sits in a store.
    by_proxy: ClassVar[bool] = False
    #: What serialize / transfer / deserialize mean for this transport, quoted by reports
    #: (recorded in each run's summary); empty: the report's generic sentence.
    io_note: ClassVar[str] = ""
    #: Launchers this transport works with; ``None`` means all of them.
    launchers: ClassVar[tuple[str, ...] | None] = None
    #: Option sets that ``compare``, ``sweep`` and ``doctor`` treat as separate rows (a
    #: connector, an engine); empty when the transport is one row.
    compare_variants: ClassVar[tuple[dict[str, Any], ...]] = ()

    def describe(self) -> str:
        """The table label of this configuration (a variant may name its connector)."""
        return self.display

    def variant(self, choice: dict[str, Any]) -> Self:
        """This configuration as the ``compare_variants`` entry ``choice``.

        ``compare`` and ``sweep`` take one set of options for every variant; a variant
        that has no use for one of them (a data directory, a server URL) drops it here
        rather than refusing the run, so one ``--data-dir`` reaches the variants that
        store files and leaves the others as they are.
        """
        return self.model_copy(update=choice)

    def unavailable_reason(self) -> str | None:
        """Why this transport cannot run here (missing package or server), else ``None``."""
        return None

    def check(self, ctx: RunContext) -> None:
        """Refuse a run up front (``UsageError``) when it cannot fit or reach its storage."""

    def start(self, ctx: RunContext) -> Transport:
        """Create what the run needs and return the owning client."""
        raise NotImplementedError


def put_many_each(transport: Transport, items: Iterable[tuple[Key, np.ndarray]]) -> None:
    """``put_many`` for backends with nothing better than one call per array."""
    for key, array in items:
        transport.put(key, array)


def get_many_each(transport: Transport, keys: Iterable[Key]) -> list[np.ndarray]:
    return [transport.get(key) for key in keys]
