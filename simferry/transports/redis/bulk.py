"""Chunk reads on a raw RESP connection: each payload lands in the array's final buffer.

redis-py reads a reply 64 KiB at a time into hiredis's buffer, hiredis builds a ``bytes``
object per chunk, and the transport then copies that into the array: three copies of every
byte and tens of thousands of calls for a 200 MB array (``bench/results/redis/``). Here
the ``$<len>`` header of each reply is parsed by hand and the payload is read with
``recv_into`` straight into its slice of the destination, so the kernel's copy is the
only one. ``GET``\\ s are pipelined in a sliding window of about ``window_bytes``: the server
always has the next chunk queued, and neither side buffers more than the window.

Only the replies a chunk read can get are handled (bulk strings, ``$-1`` for a missing
key, errors); anything else means the connection is out of step and it is dropped. Errors
are raised as redis-py's exceptions, so the transport turns them into the same sentences
as for its other calls. TLS (``rediss://``) stays with redis-py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence

import redis
from redis.connection import parse_url

#: Bytes asked for when only a reply header is wanted: little of a payload passes through
#: the small buffer (it is copied twice), and one ``recv`` still holds many headers.
HEADER_READ = 4096
#: Skipped payloads (a chunk that does not fit its array) are drained this much at a time.
DRAIN_READ = 1 << 20

#: Where reply ``i`` of ``n`` bytes goes (``n == -1``: the key is missing); ``None``
#: discards the payload. The view returned must be exactly ``n`` bytes long.
Land = Callable[[int, int], memoryview | None]


def command(*args: bytes) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def supports(url: str) -> bool:
    """True for the URLs this reader can reach (``redis://`` and ``unix://``; not TLS)."""
    return url.startswith(("redis://", "unix://"))


class BulkReader:
    """One connection that only reads chunks; it (re)connects on first use after a failure.

    Calls from several threads take turns (one connection carries one pipeline at a
    time), and a forked child opens its own connection rather than share its parent's.
    """

    def __init__(
        self,
        url: str,
        password: str | None,
        timeout: float = 60.0,
        window_bytes: int = 64 * 2**20,
        chunk_bytes: int = 4 * 2**20,
    ) -> None:
        opts = parse_url(url)
        self.path: str | None = opts.get("path")
        self.address = (opts.get("host", "localhost"), int(opts.get("port", 6379)))
        self.username: str | None = opts.get("username")
        self._password = opts.get("password") or password
        self.db = int(opts.get("db", 0))
        self.timeout = timeout
        self.window = max(2, window_bytes // max(1, chunk_bytes))
        self.sock: socket.socket | None = None
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.pending = bytearray()
        self.pos = 0
        #: Replies read by the current fetch (a retry is safe only before the first).
        self.replies = 0

    @property
    def where(self) -> str:
        return self.path or f"{self.address[0]}:{self.address[1]}"

    def __repr__(self) -> str:  # never shows the password
        return f"BulkReader({self.where}, db={self.db})"

    # -- connection --------------------------------------------------------------------
    def _connect(self) -> None:
        """Connect, log in and select the database; redis-py's exceptions on failure."""
        try:
            if self.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock = sock
                sock.settimeout(min(self.timeout, 10.0))
                sock.connect(self.path)
            else:
                sock = socket.create_connection(self.address, timeout=min(self.timeout, 10.0))
                self.sock = sock
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            self.close()
            raise redis.exceptions.ConnectionError(
                f"Error connecting to {self.where}: {exc.strerror or exc}"
            ) from None
        sock.settimeout(self.timeout)
        self.pending, self.pos = bytearray(), 0
        hello = b""
        if self._password:
            user = (self.username.encode(),) if self.username else ()
            hello += command(b"AUTH", *user, self._password.encode())
        if self.db:
            hello += command(b"SELECT", str(self.db).encode())
        if not hello:
            return
        with self._dropped_on_error():
            sock.sendall(hello)
            if self._password:
                self._status(redis.exceptions.AuthenticationError)
            if self.db:
                self._status(redis.exceptions.ResponseError)

    @contextlib.contextmanager
    def _dropped_on_error(self) -> Iterator[None]:
        """Close the connection on any failure (it may be out of step), as redis-py errors."""
        try:
            yield
        except TimeoutError:
            self.close()
            raise redis.exceptions.TimeoutError("Timeout reading from socket") from None
        except (OSError, ValueError) as exc:
            self.close()
            raise redis.exceptions.ConnectionError(str(exc) or type(exc).__name__) from None
        except BaseException:
            self.close()
            raise

    def _status(self, error: type[redis.exceptions.RedisError]) -> None:
        line = self._line()
        if line[:1] == b"-":
            raise error(line[1:].decode(errors="replace"))
        if line[:1] != b"+":
            raise redis.exceptions.ConnectionError(f"unexpected reply {line[:40]!r}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    # -- reading -----------------------------------------------------------------------
    def _recv(self, size: int) -> bytes:
        assert self.sock is not None
        data = self.sock.recv(size)
        if not data:
            raise redis.exceptions.ConnectionError("Connection closed by server.")
        return data

    def _refill(self) -> None:
        """Drop what was consumed from the small buffer and append the next ``recv``."""
        del self.pending[: self.pos]
        self.pos = 0
        self.pending += self._recv(HEADER_READ)

    def _line(self) -> bytes:
        while True:
            end = self.pending.find(b"\r\n", self.pos)
            if end >= 0:
                line = bytes(self.pending[self.pos : end])
                self.pos = end + 2
                return line
            self._refill()

    def _into(self, view: memoryview) -> None:
        """Fill ``view`` exactly: first from what is buffered, then straight from the socket."""
        assert self.sock is not None
        take = min(len(view), len(self.pending) - self.pos)
        view[:take] = self.pending[self.pos : self.pos + take]
        self.pos += take
        got = take
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise redis.exceptions.ConnectionError("Connection closed by server.")
            got += n

    def _skip(self, nbytes: int) -> None:
        scratch = memoryview(bytearray(min(nbytes, DRAIN_READ)))
        while nbytes > 0:
            step = min(nbytes, len(scratch))
            self._into(scratch[:step])
            nbytes -= step

    def _crlf(self) -> None:
        while len(self.pending) - self.pos < 2:
            self._refill()
        if self.pending[self.pos : self.pos + 2] != b"\r\n":
            raise redis.exceptions.ConnectionError("reply out of step (no CRLF after a value)")
        self.pos += 2

    def fetch(self, keys: Sequence[str], land: Land) -> None:
        """``GET`` every key, pipelined; ``land`` says where each reply's bytes go.

        An error reply raises ``ResponseError`` once every reply has been read, so the
        connection stays in step; a broken connection is closed and raises
        ``ConnectionError`` (``TimeoutError`` for a server that stopped answering). A
        connection that was idle (the server may have dropped it) is replaced once if it
        fails before the first reply.
        """
        if not keys:
            return
        with self.lock:
            if self.pid != os.getpid():  # the parent's socket: leave it to the parent
                self.sock, self.pid = None, os.getpid()
            self._fetch_retrying(keys, land)

    def _fetch_retrying(self, keys: Sequence[str], land: Land) -> None:
        if self.sock is not None:
            try:
                self._fetch(keys, land)
                return
            except redis.exceptions.ConnectionError:
                if self.replies:
                    raise
        self._connect()
        self._fetch(keys, land)

    def _fetch(self, keys: Sequence[str], land: Land) -> None:
        sock = self.sock
        assert sock is not None
        self.replies = 0
        error: str | None = None
        with self._dropped_on_error():
            sent = min(len(keys), self.window)
            sock.sendall(b"".join(command(b"GET", k.encode()) for k in keys[:sent]))
            for i in range(len(keys)):
                line = self._line()
                self.replies += 1
                if sent < len(keys):  # keep the server busy while this payload arrives
                    sock.sendall(command(b"GET", keys[sent].encode()))
                    sent += 1
                kind = line[:1]
                if kind == b"$":
                    size = int(line[1:])
                    if size < 0:
                        land(i, -1)
                        continue
                    view = land(i, size)
                    if view is None:
                        self._skip(size)
                    else:
                        self._into(view)
                    self._crlf()
                elif kind == b"-":
                    error = error or line[1:].decode(errors="replace")
                else:
                    raise redis.exceptions.ConnectionError(f"unexpected reply {line[:40]!r} to GET")
        if error is not None:
            auth = error.startswith(("NOAUTH", "WRONGPASS"))
            raise (
                redis.exceptions.AuthenticationError if auth else redis.exceptions.ResponseError
            )(error)
