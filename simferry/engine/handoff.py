"""Pass-by-value behind the transport boundary: the engine, not the task, carries the data.

A task body reads and writes through the ``Transport`` it is given, whatever that is.
``carry`` runs it in the worker: it connects the client, hands a by-value client what
arrived with the task's arguments, runs the body, and returns what the body put with
the result. The engine times what the task cannot see: the hand-off from submission to
the task starting with its data, and from the task's end to its result being usable
(``time_handoff``); for a shared store both are part of the launcher, not of IO.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from simferry.records import TaskRecord
from simferry.transports.base import ByValue, ClientSpec, Transport


class Carries(Protocol):
    """A task result the engine can attach a by-value payload to."""

    record: TaskRecord
    payload: bytes | None


R = TypeVar("R", bound=Carries)


def carry(
    spec: Any, body: Callable[..., R], client: ClientSpec, inbound: Sequence[bytes], /, *args: Any
) -> R:
    """Run ``body(transport, spec, *args)`` in a worker with its own client of the transport.

    ``spec`` comes first so a launcher can route by it (Dragon sends a trainer's tasks to
    its own process). ``inbound`` is what earlier tasks returned by value (empty for a
    shared store). A by-value client's puts come back in the result's ``payload``;
    unpickling what arrived counts as deserialization and pickling what leaves as
    serialization.
    """
    transport = client.connect()
    try:
        if not isinstance(transport, ByValue):
            return body(transport, spec, *args)
        t0 = time.perf_counter()
        for blob in inbound:
            transport.load(blob)
        loading = time.perf_counter() - t0
        result = body(transport, spec, *args)
        rec = result.record
        deferred = transport.load_s()  # unpickled inside the body's timed reads
        rec.transfer_s = max(0.0, rec.transfer_s - deferred)
        rec.deserialize_s += loading + deferred
        with rec.io("serialize"):
            result.payload = transport.drain()
        rec.finish()
        return result
    finally:
        transport.close()


def arrived(result: Carries, inbound: bool) -> bytes | None:
    """Time a by-value result's hand-offs (see ``time_handoff``); return its payload.

    ``None`` for a shared store, whose results carry no data.
    """
    if result.payload is not None:
        time_handoff(result.record, inbound)
    return result.payload


def keep(transport: Transport, payload: bytes | None) -> None:
    """Make what a task returned by value readable in this process (the trainers' weights)."""
    if payload is not None and isinstance(transport, ByValue):
        transport.load(payload)


def time_handoff(rec: TaskRecord, inbound: bool) -> None:
    """Add a by-value task's hand-offs to its transfer time, from main-process timestamps.

    ``inbound``: the task was given data with its arguments, so the wait from submission
    to its start carried them.
    """
    if inbound:
        rec.transfer_s += max(0.0, rec.start - rec.submitted)
    rec.transfer_s += max(0.0, rec.received - rec.end)
