"""Errors that reach the user as one sentence and an exit code, never a traceback.

Every subpackage raises subclasses of these so the CLI needs one ``except`` to turn any
expected failure into a clear message; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SimferryError(Exception):
    """An expected failure: the message is a full sentence saying what to do."""

    exit_code = 1


class UsageError(SimferryError):
    """Bad input detected before anything was started (exit code 2, like argparse)."""

    exit_code = 2


class RunFailure(SimferryError):
    """The run started but could not complete (a task failed, data did not verify)."""

    exit_code = 1


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: raised so cleanup runs on the same path as any failure.

    Not an ``Exception``, like ``KeyboardInterrupt``: raised by a signal handler in the
    middle of whatever runs, it must not be swallowed by an ``except Exception`` there
    (Dragon's calls, ``contextlib.suppress(Exception)``).
    """

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(f"Interrupted by {name}; workers stopped and temporary data removed.")
        self.signum = signum
        self.exit_code = 128 + signum
