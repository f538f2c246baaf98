"""Transport errors; messages are full sentences that say what to do."""

from __future__ import annotations

from simferry.errors import RunFailure, SimferryError, UsageError


class TransportError(SimferryError):
    """A transport could not store or fetch data."""


class KeyNotFoundError(TransportError, KeyError):
    """The key was never written, or was already deleted."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "key not found"


class TransportUnavailableError(UsageError):
    """A transport's software or service is missing on this machine."""


class TransportFullError(RunFailure):
    """The storage behind a transport ran out of space."""


class DataIntegrityError(RunFailure):
    """A trainer read data that does not match what the producer wrote."""
