"""Redis: arrays as raw bytes in a private ``redis-server`` per run, or in a server you name.

Layout under the run's namespace ``simferry:<run_id>:`` (nothing is pickled):

- ``k:<name>``: a small JSON header ``{"dtype", "shape", "chunks": n, "gen"}``;
- ``c:<name>:<gen>:<i>``: chunk ``i`` of the array's raw bytes, named after the generation
  ``gen`` of the write that made it, so chunks are never modified once written;
- ``index``: a stream of publications for ``--mode streaming`` (``transports/index.py``);
  trainers wait on it with blocking ``XREAD`` instead of polling.

Chunks are at most ``--redis-chunk-bytes`` (Redis refuses values over 512 MB; 4 MiB chunks
also moved large arrays faster here than 64-256 MiB ones, see bench/redis_vs_fs.py).

Writing one sample (input + target) is one MULTI/EXEC pipeline: every header and chunk
lands, or none does (an out-of-memory refusal or a writer killed half-way leaves the old
value). ``SET k:<name> GET`` returns the replaced header in that same transaction, and the
replaced generation's chunks are removed right after. Reading takes two round trips for a
whole sample: ``MGET`` of the headers, then a pipeline of the chunks they name (no MULTI:
Redis refuses every MULTI while it is over maxmemory, and a full store must stay readable).
If an overwrite removed a generation while it was being read, the read starts again with
the new header, so a reader never mixes two writes. Chunks are sent straight from the
array's memory. They are read back on a connection of the transport's own (``bulk.py``):
each reply is received straight into the array being rebuilt, the only copy on this side,
where redis-py + hiredis made three (bench/redis_vs_fs.py measures both); over TLS
(``rediss://``) redis-py still reads them.

The private server's security and lifetime are in ``server.py``. With ``--redis-url``
simferry never stops the server and deletes only its own namespace at the end. The
password is never written to ``config.toml``; give it in the URL or in ``REDISCLI_AUTH``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import psutil
from pydantic import ByteSize, Field, SecretStr, field_serializer, field_validator

from simferry.errors import UsageError
from simferry.plugins import register_transport
from simferry.transports.base import ClientSpec, Key, RunContext, TransportConfig
from simferry.transports.common import can_bind, gib, make_client
from simferry.transports.exceptions import KeyNotFoundError, TransportError, TransportFullError
from simferry.transports.index import Published, unpack
from simferry.units import MIB

try:
    import redis
    from redis.connection import parse_url

    from simferry.transports.redis.bulk import BulkReader, supports
    from simferry.transports.redis.server import MAX_SOCKET_PATH, RedisServer
except ImportError:  # reported by unavailable_reason(); the transport stays listed
    HAVE_REDIS = False
else:
    HAVE_REDIS = True

#: Redis's largest value (proto-max-bulk-len); chunks must stay at or below it.
MAX_CHUNK = 512 * MIB
DEFAULT_CHUNK = 4 * MIB
#: Default maxmemory of a private server: jemalloc rounds a 2**k-byte value up by as much
#: as 25 %; plus room for client buffers, the index, the weights and a retried write.
MEMORY_HEADROOM = 1.3
MEMORY_EXTRA = 64 * MIB
#: About this many bytes of chunks are requested ahead of the reader (bounds the buffers).
READ_BATCH = 64 * MIB
#: Reads of an array that is overwritten while being read, before giving up.
READ_ATTEMPTS = 10
#: Longest single blocking XREAD; below the clients' socket timeout.
MAX_BLOCK_S = 30.0
AUTH_ENV = "REDISCLI_AUTH"


def strip_password(url: str) -> str:
    """The URL without its password (for files, messages and worker specs)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user = netloc.rsplit("@", 1)[0].split(":", 1)[0]
        netloc = (user + "@" if user else "") + netloc.rsplit("@", 1)[1]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    # Composed by hand: urlunsplit would turn unix:///path into unix:/path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def is_local(url: str) -> bool:
    """True when only processes on this node can reach ``url`` (Unix socket, loopback)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return True
    host = parts.hostname or "localhost"
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _resolve(host: str) -> str:
    """An IP address for ``host`` (redis-server binds addresses, not names)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except OSError as exc:
        raise UsageError(
            f"Cannot resolve --redis-bind {host}: {exc.strerror or exc}; pass an IP address "
            "of this host."
        ) from None


#: Servers already warned about in this process (``compare`` checks each run).
_WARNED_OPEN: set[str] = set()


def warn_open_server(where: str) -> None:
    """Say once that a server taking no password exposes the run's samples."""
    if where not in _WARNED_OPEN:
        _WARNED_OPEN.add(where)
        print(
            f"simferry: warning: the Redis server at {where} requires no password, so anyone "
            "who can reach it can read this run's samples.",
            file=sys.stderr,
        )


def connection_problem(exc: Exception, where: str) -> str:
    """One sentence for a failure to reach or log in to a Redis server."""
    if HAVE_REDIS and isinstance(exc, redis.exceptions.AuthenticationError):
        return (
            f"The Redis server at {where} rejected the password (wrong or missing); put it in "
            f"--redis-url as redis://:PASSWORD@host:port or in the {AUTH_ENV} variable."
        )
    detail = str(exc).rstrip(".") or type(exc).__name__
    return (
        f"Cannot reach the Redis server at {where} ({detail}); check --redis-url and that "
        "the server is running."
    )


class RedisTransport:
    """A client of the run's namespace; the owner also frees it (and stops its server)."""

    def __init__(
        self, spec: RedisSpec, owner: bool = False, server: RedisServer | None = None
    ) -> None:
        self.spec = spec
        self.owner = owner
        self.server = server
        self.ns = spec.namespace
        self.client = make_client(spec.url, spec.password_value(), retries=3)
        #: Chunk reads go around redis-py (see ``bulk.py``); TLS stays with redis-py.
        self.bulk = (
            BulkReader(
                spec.url,
                spec.password_value(),
                window_bytes=READ_BATCH,
                chunk_bytes=spec.chunk_bytes,
            )
            if supports(spec.url)
            else None
        )
        self.closed = False
        #: The owner freed the namespace: nothing of this run is stored any more.
        self.freed = False

    # -- keys -------------------------------------------------------------------------
    def _k(self, name: str) -> str:
        return f"{self.ns}k:{name}"

    def _chunk_keys(self, name: str, header: dict[str, Any]) -> list[str]:
        return [f"{self.ns}c:{name}:{header['gen']}:{i}" for i in range(int(header["chunks"]))]

    # -- errors -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn redis-py's exceptions into one sentence that says what to do."""
        if self.closed:
            raise TransportError(f"The Redis client was closed before {action}.")
        where = self.spec.where
        try:
            yield
        except redis.exceptions.OutOfMemoryError:
            raise TransportFullError(
                f"The Redis server ({where}) is out of memory (its maxmemory is reached) while "
                f"{action}; pass a larger --redis-maxmemory, give the server more memory, or "
                "make the run smaller."
            ) from None
        except redis.exceptions.AuthenticationError as exc:
            raise TransportError(connection_problem(exc, where)) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            detail = str(exc).rstrip(".") or type(exc).__name__
            raise TransportError(
                f"Lost the connection to the Redis server ({where}) while {action} ({detail}); "
                "the server stopped, crashed or became unreachable."
            ) from None
        except redis.exceptions.RedisError as exc:
            raise TransportError(
                f"The Redis server ({where}) refused {action}: {str(exc).rstrip('.')}."
            ) from None

    # -- arrays -----------------------------------------------------------------------
    def _encode(self, array: np.ndarray) -> tuple[dict[str, Any], list[memoryview]]:
        # reshape: ascontiguousarray would turn a 0-d array into a 1-d one.
        arr = np.ascontiguousarray(array).reshape(np.shape(array))
        if arr.dtype.hasobject or arr.dtype.fields is not None:
            raise TransportError(
                f"The Redis transport stores plain numeric arrays, not dtype {arr.dtype}."
            )
        raw = arr.reshape(-1).view(np.uint8).data
        step = self.spec.chunk_bytes
        chunks = [raw[i : i + step] for i in range(0, len(raw), step)]
        header = {
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "chunks": len(chunks),
            "gen": secrets.token_hex(6),
        }
        return header, chunks

    @staticmethod
    def _header(raw: bytes | str) -> dict[str, Any]:
        return dict(json.loads(raw))

    def put(self, key: Key, array: np.ndarray) -> None:
        self.put_many([(key, array)])

    def put_many(self, items: Sequence[tuple[Key, np.ndarray]]) -> None:
        prepared = [(key.name(), *self._encode(array)) for key, array in items]
        if not prepared:
            return
        with self._errors(f"writing {_what(prepared[0][0], len(prepared))}"):
            pipe = self.client.pipeline(transaction=True)
            for name, header, chunks in prepared:
                pipe.set(self._k(name), json.dumps(header).encode(), get=True)
                for key, chunk in zip(self._chunk_keys(name, header), chunks, strict=True):
                    pipe.set(key, chunk)
            results = pipe.execute()
            stale: list[str] = []
            pos = 0
            for name, _, chunks in prepared:
                if results[pos]:  # the replaced write's generation is garbage now
                    stale += self._chunk_keys(name, self._header(results[pos]))
                pos += 1 + len(chunks)
            if stale:
                self.client.unlink(*stale)

    def get(self, key: Key) -> np.ndarray:
        return self.get_many([key])[0]

    def get_many(self, keys: Sequence[Key]) -> list[np.ndarray]:
        names = [key.name() for key in keys]
        if not names:
            return []
        with self._errors(f"reading {_what(names[0], len(names))}"):
            raws = self.client.mget([self._k(name) for name in names])
            headers = []
            for name, raw in zip(names, raws, strict=True):
                if raw is None:
                    raise KeyNotFoundError(f"{name} is not stored in Redis ({self.spec.where}).")
                headers.append(self._header(raw))
            found = self._fetch(list(zip(names, headers, strict=True)))
            out = []
            for name, raw, array in zip(names, raws, found, strict=True):
                for _ in range(READ_ATTEMPTS):
                    if array is not None:
                        break
                    # A chunk vanished: overwritten meanwhile (read the new value), or removed.
                    again = self.client.get(self._k(name))
                    if again is None:
                        raise KeyNotFoundError(f"{name} was deleted from Redis while being read.")
                    if again == raw:
                        raise TransportError(
                            f"{name} in Redis ({self.spec.where}) is incomplete: some of its "
                            "data was removed behind simferry's back."
                        )
                    raw = again
                    array = self._fetch([(name, self._header(raw))])[0]
                if array is None:
                    raise TransportError(
                        f"{name} in Redis ({self.spec.where}) kept changing while being read "
                        f"({READ_ATTEMPTS} attempts); stop the other writers of this key."
                    )
                out.append(array)
        return out

    def _fetch(self, items: list[tuple[str, dict[str, Any]]]) -> list[np.ndarray | None]:
        """Arrays from their headers; ``None`` for one whose generation vanished meanwhile.

        Each array is allocated once and its chunks land in it in order (``bulk.py``
        reads them off the socket straight into it; over TLS redis-py's replies are copied
        in). A chunk that is missing or overruns its array marks the array lost.
        """
        arrays = [np.empty(tuple(h["shape"]), np.dtype(h["dtype"])) for _, h in items]
        views = [a.reshape(-1).view(np.uint8).data for a in arrays]
        filled = [0] * len(items)
        plan = [j for j, (name, h) in enumerate(items) for _ in range(int(h["chunks"]))]
        keys = [key for name, h in items for key in self._chunk_keys(name, h)]
        lost: set[int] = set()

        def land(i: int, size: int) -> memoryview | None:
            j = plan[i]
            if size < 0 or j in lost or filled[j] + size > len(views[j]):
                lost.add(j)
                return None
            filled[j] += size
            return views[j][filled[j] - size : filled[j]]

        if self.bulk is not None:
            self.bulk.fetch(keys, land)
        else:
            per_trip = max(1, READ_BATCH // self.spec.chunk_bytes)
            for start in range(0, len(keys), per_trip):
                pipe = self.client.pipeline(transaction=False)
                for key in keys[start : start + per_trip]:
                    pipe.get(key)
                for i, chunk in enumerate(pipe.execute(), start):
                    view = land(i, -1 if chunk is None else len(chunk))
                    if view is not None:
                        view[:] = chunk
        return [
            None if j in lost or filled[j] != len(views[j]) else array
            for j, array in enumerate(arrays)
        ]

    def exists(self, key: Key) -> bool:
        if self.freed:
            return False
        with self._errors(f"looking up {key.name()}"):
            return bool(self.client.exists(self._k(key.name())))

    def keys(self, prefix: str = "") -> list[str]:
        if self.freed:
            return []
        start = len(self._k(""))
        with self._errors("listing keys"):
            found = self.client.scan_iter(match=glob_escape(self._k(prefix)) + "*", count=1000)
            return sorted(k.decode()[start:] for k in found)

    def delete(self, key: Key) -> None:
        name = key.name()
        with self._errors(f"deleting {name}"):
            old = self.client.getdel(self._k(name))
            chunks = self._chunk_keys(name, self._header(old)) if old else []
            if chunks:
                self.client.unlink(*chunks)

    # -- streaming index --------------------------------------------------------------
    def publish(self, entry: Published) -> None:
        with self._errors(f"publishing sample (sim {entry.sim}, step {entry.step})"):
            self.client.xadd(self.ns + "index", {"p": entry.pack()})

    def subscribe(self, num_sims: int) -> RedisIndexReader:
        return RedisIndexReader(self)

    # -- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        """Release the client; the owner also deletes the namespace or stops its server.

        Never raises: it runs in the workflow's cleanup, after the error that matters.
        """
        if self.closed:
            return
        self.closed = True
        try:
            if self.owner and self.server is None:
                self._delete_namespace()
        except redis.exceptions.RedisError as exc:
            print(
                f"simferry: warning: could not delete this run's keys {self.ns}* from the "
                f"Redis server ({self.spec.where}): {exc}",
                file=sys.stderr,
            )
        finally:
            self.client.close()
            if self.bulk is not None:
                self.bulk.close()
            if self.server is not None:
                self.server.stop()
            self.freed = self.owner

    def _delete_namespace(self) -> None:
        batch: list[bytes] = []
        for key in self.client.scan_iter(match=glob_escape(self.ns) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)

    def config(self) -> RedisSpec:
        return self.spec


def _what(first: str, count: int) -> str:
    return first if count == 1 else f"{first} and {count - 1} more array(s)"


class RedisIndexReader:
    """A trainer's cursor over the run's publication stream (streaming mode)."""

    def __init__(self, transport: RedisTransport) -> None:
        self.transport = transport
        self.stream = transport.ns + "index"
        self.last_id: bytes | str = "0-0"

    def poll(self, timeout: float) -> list[Published]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            left = deadline - time.monotonic()
            block = int(min(left, MAX_BLOCK_S) * 1000)
            with self.transport._errors("waiting for published samples"):
                # block=None never waits; XREAD BLOCK 0 would wait forever.
                resp = self.transport.client.xread(
                    {self.stream: self.last_id}, count=10_000, block=block if block > 0 else None
                )
            entries = _stream_entries(resp)
            if entries or block <= 0 or time.monotonic() >= deadline:
                found: list[Published] = []
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    found += unpack(fields[b"p"])[0]
                return found

    def close(self) -> None:
        """Nothing to release: the reader borrows its transport's connection."""


def _stream_entries(resp: Any) -> list[tuple[Any, dict[bytes, bytes]]]:
    """XREAD's entries of the one stream read, whatever the RESP version's shape."""
    if not resp:
        return []
    streams = list(resp.values()) if isinstance(resp, dict) else [s[1] for s in resp]
    entries = streams[0]
    if entries and isinstance(entries[0], list) and len(entries) == 1 and not entries[0]:
        return []
    return [(e[0], e[1]) for e in entries]


class RedisSpec(ClientSpec):
    """What a worker needs to reach the run's namespace (the password stays secret)."""

    url: str
    password: SecretStr | None = None
    namespace: str
    chunk_bytes: int
    #: Where the server is, for messages (never includes the password).
    where: str

    def password_value(self) -> str | None:
        return self.password.get_secret_value() if self.password else None

    def connect(self) -> RedisTransport:
        return RedisTransport(self)


@register_transport
class RedisConfig(TransportConfig):
    """A Redis server: a private, password-protected one per run, or one you name."""

    name: Literal["redis"] = "redis"
    display: ClassVar[str] = "Redis"
    #: What serialize / transfer / deserialize mean here; reports quote it under the table.
    io_note: ClassVar[str] = (
        "raw array bytes in chunks plus a small JSON header, nothing pickled, so all of "
        "it is *transfer*: one MULTI/EXEC pipeline per sample written (simulations), "
        "two round trips per sample read (trainers), "
        "weights save."
    )
    redis_url: str | None = Field(
        None,
        description="use this existing Redis server (redis://[:password@]host:port/db, "
        "rediss://... or unix:///path); simferry never stops it and deletes only its own "
        f"keys; the password may instead be in {AUTH_ENV}. Default: start a private "
        "redis-server for the run",
    )
    redis_bind: str | None = Field(
        None,
        description="address the redis-server simferry starts listens on (TCP, password-"
        "protected), e.g. this node's address on the network other nodes share or 0.0.0.0; "
        "default: a Unix socket in the run directory on one node, this host's address on "
        "several",
    )
    redis_chunk_bytes: ByteSize = Field(
        ByteSize(DEFAULT_CHUNK),
        ge=1,
        le=MAX_CHUNK,
        description="largest value stored in one Redis key; bigger arrays are split "
        "(Redis refuses values over 512 MB); accepts units, e.g. 64MiB",
    )
    redis_maxmemory: ByteSize | None = Field(
        None,
        ge=1,
        description="memory cap of the redis-server simferry starts, e.g. 8GiB; default: "
        f"{MEMORY_HEADROOM} x the run's data + 64 MiB",
    )

    @field_validator("redis_url")
    @classmethod
    def _valid_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "expected redis://[:password@]host:port/db, rediss://... or unix:///path"
            )
        if HAVE_REDIS:
            parse_url(url)  # its ValueError says what is wrong (a bad port, db, ...)
        return url

    @field_serializer("redis_url")
    def _url_without_password(self, url: str | None) -> str | None:
        return None if url is None else strip_password(url)

    def unavailable_reason(self) -> str | None:
        if not HAVE_REDIS:
            return "redis-py is not installed; run pip install 'simferry[redis]'."
        if self.redis_url is None and shutil.which("redis-server") is None:
            return (
                "redis-server is not installed; install the Debian package redis-server "
                "or pass --redis-url."
            )
        return None

    # -- an existing server -----------------------------------------------------------
    def _external_spec(self, namespace: str) -> RedisSpec:
        assert self.redis_url is not None
        password = parse_url(self.redis_url).get("password") or os.environ.get(AUTH_ENV)
        url = strip_password(self.redis_url)
        return RedisSpec(
            url=url,
            password=SecretStr(password) if password else None,
            namespace=namespace,
            chunk_bytes=int(self.redis_chunk_bytes),
            where=url,
        )

    def _check_external(self, ctx: RunContext) -> None:
        if self.redis_bind is not None or self.redis_maxmemory is not None:
            raise UsageError(
                "--redis-bind and --redis-maxmemory apply only to a redis-server simferry "
                "starts; drop them, or drop --redis-url."
            )
        assert self.redis_url is not None
        if ctx.nodes > 1 and is_local(self.redis_url):
            raise UsageError(
                f"Workers on other nodes cannot reach {strip_password(self.redis_url)}; pass "
                "a --redis-url with an address they can reach."
            )
        spec = self._external_spec("")
        client = make_client(spec.url, spec.password_value(), socket_timeout=5.0)
        try:
            client.ping()
            if spec.password_value() is None:
                warn_open_server(spec.where)
            try:
                mem = client.info("memory")
            except redis.exceptions.ResponseError:
                return  # INFO not permitted for this user: the ping is all we can check
            limit, used = int(mem.get("maxmemory", 0)), int(mem.get("used_memory", 0))
            if limit and limit - used < ctx.data_bytes:
                raise UsageError(
                    f"The Redis server at {spec.where} has {gib(max(0, limit - used))} free "
                    f"below its maxmemory but this run stores {gib(ctx.data_bytes)}; raise its "
                    "maxmemory, free keys there, or make the run smaller."
                )
        except redis.exceptions.RedisError as exc:
            raise UsageError(connection_problem(exc, spec.where)) from None
        finally:
            client.close()

    # -- a private server -------------------------------------------------------------
    def maxmemory(self, ctx: RunContext) -> int:
        if self.redis_maxmemory is not None:
            return int(self.redis_maxmemory)
        return int(ctx.data_bytes * MEMORY_HEADROOM) + MEMORY_EXTRA

    def listen(self, ctx: RunContext) -> tuple[str | None, str | None]:
        """(address to bind, address workers connect to); ``None`` for a Unix socket."""
        if self.redis_bind is None:
            if ctx.nodes <= 1:
                return None, None
            host = socket.gethostname()
            addr = _resolve(host)
            if ipaddress.ip_address(addr).is_loopback:
                raise UsageError(
                    f"This host's name {host} resolves to the loopback address {addr}, which "
                    "workers on other nodes cannot reach; pass --redis-bind with this node's "
                    "address on the network they share."
                )
            return addr, addr
        addr = _resolve(self.redis_bind)
        reason = can_bind(addr)
        if reason:
            raise UsageError(
                f"Cannot listen on --redis-bind {self.redis_bind}: {reason}; pass an address "
                "of this host."
            )
        ip = ipaddress.ip_address(addr)
        if ctx.nodes > 1 and ip.is_loopback:
            raise UsageError(
                f"--redis-bind {self.redis_bind} is a loopback address that workers on other "
                "nodes cannot reach; pass this node's address on the network they share."
            )
        # A wildcard address listens everywhere; workers reach it by this host's name.
        return addr, (socket.gethostname() if ip.is_unspecified else addr)

    def _check_private(self, ctx: RunContext) -> None:
        if self.redis_maxmemory is not None and int(self.redis_maxmemory) < ctx.data_bytes:
            raise UsageError(
                f"--redis-maxmemory {self.redis_maxmemory.human_readable()} is smaller than "
                f"this run's data ({ByteSize(ctx.data_bytes).human_readable()}); raise it or "
                "make the run smaller."
            )
        need = min(self.maxmemory(ctx), int(ctx.data_bytes * MEMORY_HEADROOM))
        avail = psutil.virtual_memory().available
        if need > 0.9 * avail:
            raise UsageError(
                f"The redis-server for this run would hold about {gib(need)} in memory but "
                f"{gib(avail)} is available; make the run smaller, use --transport filesystem, "
                "or pass --redis-url with a larger server."
            )
        self.listen(ctx)

    # -- TransportConfig --------------------------------------------------------------
    def check(self, ctx: RunContext) -> None:
        if self.redis_url is not None:
            self._check_external(ctx)
        else:
            self._check_private(ctx)

    def start(self, ctx: RunContext) -> RedisTransport:
        namespace = f"simferry:{ctx.run_id}:"
        if self.redis_url is not None:
            return RedisTransport(self._external_spec(namespace), owner=True)
        bind, host = self.listen(ctx)
        directory = (ctx.run_dir / "redis").resolve()
        if bind is None and len(str(directory / "redis.sock")) > MAX_SOCKET_PATH:
            bind = host = "127.0.0.1"  # the kernel limits socket paths; loopback is private too
        server = RedisServer(
            directory,
            secrets.token_urlsafe(32),
            self.maxmemory(ctx),
            bind=bind,
            host=host,
            executable=shutil.which("redis-server") or "redis-server",
        )
        server.start()
        where = f"the run's redis-server at {server.url}, log {server.log_path}"
        spec = RedisSpec(
            url=server.url,
            password=SecretStr(server.password),
            namespace=namespace,
            chunk_bytes=int(self.redis_chunk_bytes),
            where=where,
        )
        try:
            return RedisTransport(spec, owner=True, server=server)
        except BaseException:
            server.stop()
            raise
