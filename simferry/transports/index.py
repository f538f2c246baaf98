"""The publication index of streaming mode: which samples are stored, announced as they are.

A simulation stores a sample's arrays, then *publishes* ``(sim, step, checksum)``; after
its last step it publishes ``(sim, END, steps)``. Each trainer *subscribes* and polls for
publications it has not seen. Publishing only after the data is stored means a trainer
never reads a sample that is not complete. Every transport implements the index with its
own strength (the mechanism is documented in its module): an append-only file per
simulation for filesystem and shm, a stream with blocking reads for Redis, a key per
record for DDict; pass-by-value has no store and uses the launcher's futures instead
(``engine/streaming.py``). A transport without ``publish``/``subscribe`` refuses
``--mode streaming`` with a clear message.

Publication is at-least-once (a retried simulation publishes again); the trainer keeps
exactly-once by ignoring an id it has already seen.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

#: ``step`` of the end-of-simulation marker.
END = -1

#: On-disk record of the file index: sim, step (int32), checksum (uint64), little-endian.
RECORD = struct.Struct("<iiQ")


class Published(NamedTuple):
    """One announcement: sample ``(sim, step)`` is stored and has this checksum.

    For the end marker (``step == END``) ``checksum`` is the number of samples the
    simulation published.
    """

    sim: int
    step: int
    checksum: int

    def pack(self) -> bytes:
        return RECORD.pack(self.sim, self.step, self.checksum)


def unpack(data: bytes) -> tuple[list[Published], int]:
    """Whole records in ``data`` and the number of bytes they used (a torn tail waits)."""
    usable = len(data) - len(data) % RECORD.size
    return [Published(*r) for r in RECORD.iter_unpack(data[:usable])], usable


class Backoff:
    """Polling for indexes without a blocking wait: 2 ms, doubling to 50 ms while nothing is new."""

    MIN_WAIT = 0.002
    MAX_WAIT = 0.05

    def __init__(self) -> None:
        self.wait = self.MIN_WAIT

    def poll(
        self, scan: Callable[[], list[Published]], timeout: float, finished: Callable[[], bool]
    ) -> list[Published]:
        """``scan()`` until it finds something, ``finished()`` or ``timeout`` s have passed."""
        deadline = time.monotonic() + timeout
        while True:
            found = scan()
            if found or finished():
                self.wait = self.MIN_WAIT
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            time.sleep(min(self.wait, left))
            self.wait = min(2 * self.wait, self.MAX_WAIT)


class IndexReader(Protocol):
    def poll(self, timeout: float) -> list[Published]:
        """Publications not returned before, waiting up to ``timeout`` s for at least one."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Indexed(Protocol):
    """A transport that supports streaming mode (publish after store, subscribe to read)."""

    def publish(self, entry: Published) -> None: ...

    def subscribe(self, num_sims: int) -> IndexReader: ...
