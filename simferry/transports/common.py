"""Helpers that several transports share, so no backend has to import another one.

The checks here run before anything starts (a run refused up front leaves nothing
behind); the process helpers serve the transports that own a server or writer process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from simferry.errors import UsageError
from simferry.transports.base import Key
from simferry.units import GIB

if TYPE_CHECKING:
    import redis

#: The ``--data-dir`` help of every transport that keeps files there.
DATA_DIR_HELP = (
    "directory for the data files (use a shared file system for multi-node runs); default: "
    "inside the run directory"
)
#: What to do when the data directory is too small, said the same way by every transport.
DATA_DIR_HINT = "free space, pass another --data-dir, or make the run smaller."


def gib(nbytes: float) -> str:
    """A byte count for messages, in the binary GiB that memory and disk tools show."""
    return f"{nbytes / GIB:.2f} GiB"


def make_data_dir(root: Path) -> Path:
    """The run's own data directory: new (never another run's files) and private."""
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=False)
    except OSError as exc:
        raise UsageError(f"Could not create the data directory {root}: {exc.strerror}.") from None
    return root


def check_space(directory: Path, needed: int, what: str, hint: str) -> None:
    """Refuse up front when ``directory`` (or its nearest existing parent) is unusable."""
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what} {directory} is not a directory; pass a directory path.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {directory} is not writable by you; choose another directory.")
    free = shutil.disk_usage(probe).free
    if needed > free:
        # Name what exists: the run's own directory is not made before the check.
        where = (
            f"{directory} has"
            if probe == directory
            else f"would go in {probe.resolve()}, which has"
        )
        raise UsageError(
            f"{what} {where} {gib(free)} free but this run writes {gib(needed)}; {hint}"
        )


def check_data_dir(root: Path, needed: float) -> None:
    """``check_space`` for a run's ``--data-dir``: its parent must hold ``needed`` bytes."""
    check_space(root.parent, int(needed), "The data directory", DATA_DIR_HINT)


def check_memory(data_bytes: int, holder: str) -> None:
    """Refuse a run whose data ``holder`` would keep in memory when it cannot fit."""
    avail = psutil.virtual_memory().available
    if data_bytes > 0.9 * avail:
        raise UsageError(
            f"{holder} would hold this run's {gib(data_bytes)} in memory but {gib(avail)} is "
            "available; make the run smaller or use a file-based connector or engine."
        )


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the process that started it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s: a helper process never outlives its run."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (the server may still lose a race; we retry)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def can_bind(host: str) -> str | None:
    """Why a server could not listen on ``host`` here (an ``OSError`` text), else ``None``."""
    try:
        free_port(host)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            return "it is not an address of this host"
        return exc.strerror or str(exc)
    return None


def make_client(
    url: str, password: str | None, socket_timeout: float = 60.0, retries: int = 0
) -> redis.Redis:
    """A redis-py client with bounded waits: a dead server fails in seconds, not minutes.

    The socket timeout bounds one read, not a whole transfer, so large arrays are fine;
    retries (short backoff) ride out a momentary refusal, never a dead server for long.
    The Redis transport and ProxyStore's Redis connector both talk to Redis through it.
    """
    # redis-py is the optional extra simferry[redis]: imported here, by the two transports
    # that need it, so every other transport works without it.
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.connection import Encoder, PythonRespSerializer
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        password=password,
        # redis-py's hiredis packer copies every value twice; its Python packer sends
        # large values straight from the array's memory (measured: puts ~2x faster).
        command_packer=PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode),
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, 10.0),
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
    )


class HeldByName:
    """``exists``, ``keys`` and ``delete`` for a client that holds its items itself.

    ProxyStore's proxies and ADIOS2's read-ahead arrays live in the client, by key name,
    not in a store it could ask, so these answer from that dict (``held``) alone; deleting
    forgets the item here and leaves the data to the owner's ``close``.
    """

    held: dict[str, Any]

    def exists(self, key: Key) -> bool:
        return key.name() in self.held

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.held if k.startswith(prefix))

    def delete(self, key: Key) -> None:
        self.held.pop(key.name(), None)
