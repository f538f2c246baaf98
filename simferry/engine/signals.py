"""SIGINT and SIGTERM during a run: turned into ``Interrupted`` so cleanup takes the failure path."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from simferry.errors import Interrupted

#: Further signals during cleanup after which simferry stops cleaning up and exits.
ABANDON_AFTER = 2


class SignalGuard:
    """Signal handler turning SIGINT/SIGTERM into ``Interrupted``; see ``deferred``."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending: int | None = None
        #: The signal raised last, in case a bare ``except:`` swallowed the exception.
        self.received: int | None = None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.deferring and self.pending is None:
            self.pending = signum
            return
        self.received = signum
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Let a start-up finish first, so what it created is known and gets cleaned up.

        Interrupted half-way, a server or pool would be running with nobody holding it; a
        second signal still interrupts at once.
        """
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending is not None:
            raise Interrupted(self.pending)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[SignalGuard]:
    """Turn SIGTERM (and Ctrl-C) into ``Interrupted`` so cleanup takes the failure path."""
    global _guard
    guard = SignalGuard()
    previous = {s: signal.signal(s, guard) for s in (signal.SIGINT, signal.SIGTERM)}
    _guard = guard
    try:
        yield guard
    finally:
        _guard = None
        for s, h in previous.items():
            signal.signal(s, h)


_guard: SignalGuard | None = None


def raise_if_interrupted() -> None:
    """Raise the ``Interrupted`` a signal raised inside code that swallowed it, if any."""
    if _guard is not None and _guard.received is not None:
        raise Interrupted(_guard.received)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Let cleanup finish even if the user presses Ctrl-C again -- but not forever.

    A cleanup stuck on a dead server would leave Ctrl-C useless: a further signal is
    answered with a note, and ``ABANDON_AFTER`` of them exit at once, leaving what was
    not cleaned up yet to ``simferry doctor --clean``.
    """
    count = 0

    def handler(signum: int, _frame: Any) -> None:
        nonlocal count
        count += 1
        if count >= ABANDON_AFTER:
            sys.stderr.write(
                "simferry: cleanup abandoned; data or processes may be left behind "
                "(simferry doctor --clean removes stale shared memory).\n"
            )
            sys.stderr.flush()
            os._exit(128 + signum)
        sys.stderr.write(
            "simferry: still stopping workers and removing data; press Ctrl-C again to "
            "abandon that.\n"
        )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
