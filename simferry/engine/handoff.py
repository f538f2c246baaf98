"""Pass-by-value behind the transport boundary: the engine, not the task, carries the data.

A task body reads and writes through the ``Transport`` it is given, whatever that is.
``carry`` runs it in the worker: it connects the client, hands a by-value client what
arrived with the task's arguments, runs the body, and returns what the body put with
the result. The engine times what the task cannot see: the hand-off from submission to
the task starting with its data, and from the task's end to its result being usable
(``time_handoff``); for a shared store both are part of the launcher, not of IO.

The engine hands blobs over as an ``Inbound``. Parsl's worker and ``ProcessPoolExecutor``
keep a task's deserialized arguments referenced until the task returns, so a plain list
of blobs would stay in a trainer for its whole epoch beside the float32 buffer made from
it: one more copy of the dataset in the process that holds the most already.
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


class Inbound(list[bytes]):
    """Blobs handed to a task by value, which the task may give up once it has loaded them.

    Only a copy that arrived by pickling (``moved``) is emptied by ``take``: the one in the
    main process is what a retry submits again.
    """

    moved = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_moved, (list(self),))


def _moved(blobs: list[bytes]) -> Inbound:
    inbound = Inbound(blobs)
    inbound.moved = True
    return inbound


def take(inbound: Sequence[bytes]) -> list[bytes]:
    """The blobs of ``inbound``, emptying it when it is a moved ``Inbound`` (see above)."""
    blobs = list(inbound)
    if isinstance(inbound, Inbound) and inbound.moved:
        inbound.clear()
    return blobs


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
        blobs = take(inbound)
        blobs.reverse()
        while blobs:  # held only by the transport from here on
            transport.load(blobs.pop())
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
