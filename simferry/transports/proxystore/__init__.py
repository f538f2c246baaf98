"""Pass-by-proxy through ProxyStore: the data goes into a ``Store``, proxies ride on task results.

This is what a Parsl user reaches for when pass-by-value is slow. A simulation's client
puts each array into the run's ProxyStore ``Store`` and keeps the returned ``Proxy``; the
task returns its proxies (a few hundred bytes each, ``drain``) through the launcher exactly
as ``futures.py`` returns whole arrays, the workflow hands them to every trainer, and the
trainer resolves them (``extract``), which fetches the bytes from the store. So the
launcher carries references and the connector carries the data.

Connectors (``--proxystore-connector``):

- ``file``: ProxyStore's ``FileConnector``, one file per object under the run directory
  (a shared file system for several nodes);
- ``redis``: ProxyStore's ``RedisConnector`` over simferry's own private redis-server
  (``redis/server.py``: Unix socket or loopback, random password) or ``--redis-url``;
  ProxyStore's connector has no password or Unix-socket support, so ``SecuredRedis``
  gives it simferry's client and prefixes its keys with the run's namespace, which the
  Redis transport's owner then frees like its own;
- ``zmq``: ProxyStore Extensions' ``ZeroMQConnector``, a distributed in-memory store: a
  server process holds the bytes and clients talk to it peer to peer over ZeroMQ on
  loopback. That server has no authentication (proxystore-ex 0.1 offers none: no CURVE
  keys, no password) and unpickles its requests, so any user of this node can reach it
  while the run lasts; it therefore binds 127.0.0.1 only and serves one node.

Serialization is ``np.save``/``np.load`` without pickles (ProxyStore's default numpy
serializer allows them on load). Resolved objects are not cached (``cache_size=0``): a
trainer reads each sample once. The owner closes the connector with ``clear`` (the
file directory goes, the Redis keys or server go, the ZeroMQ server is stopped) on every
exit path; the ZeroMQ server also dies with simferry (``PR_SET_PDEATHSIG``).

IO figures: a simulation's IO is serializing and putting each array into the store;
its proxies' trip back through the launcher is counted as hand-off, as for futures.
A trainer's IO is resolving each proxy (fetch + ``np.load``), plus the hand-off of the
proxies. Streaming mode takes the futures path (chains of one-step tasks whose results
are proxies), since the proxies themselves are the publication.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field

from simferry.errors import UsageError
from simferry.plugins import register_transport, transports
from simferry.transports.base import (
    ClientSpec,
    Key,
    RunContext,
    Transport,
    TransportConfig,
    get_many_each,
)
from simferry.transports.common import (
    DATA_DIR_HELP,
    HeldByName,
    check_data_dir,
    check_memory,
    die_with_parent,
    free_port,
    make_data_dir,
    stop_process,
)
from simferry.transports.exceptions import KeyNotFoundError, TransportError

try:
    from proxystore.proxy import Proxy, ProxyResolveError, extract
    from proxystore.store import Store, get_or_create_store, unregister_store
    from proxystore.store.config import StoreConfig

    from simferry.transports.proxystore.secured_redis import SecuredRedis
except ImportError:  # reported by unavailable_reason(); the transport stays listed
    HAVE_PROXYSTORE = False
else:
    HAVE_PROXYSTORE = True

Connector = Literal["file", "redis", "zmq"]
#: Seconds a client waits for the ZeroMQ server before ProxyStore would start its own
#: (in that worker, where it would die with it): long, so a busy server is waited for.
ZMQ_TIMEOUT_S = 60.0
#: Seconds the run waits for its ZeroMQ server to start.
ZMQ_START_S = 60.0


def serialize(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def deserialize(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def start_zmq_server(address: str, port: int) -> subprocess.Popen[bytes]:
    """ProxyStore's own ZeroMQ server, as a process this run owns and stops.

    Its own process group keeps a terminal's Ctrl-C away from it (simferry stops it), and
    ``PR_SET_PDEATHSIG`` ends it if simferry dies without stopping it.
    """
    code = f"from proxystore_ex.connectors.dim.zmq import start_server; start_server({address!r}, {port})"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=0,
        preexec_fn=die_with_parent,
    )


def wait_for_zmq(proc: subprocess.Popen[bytes], address: str, port: int) -> None:
    """Return once the server answers; on a loaded machine its start takes seconds."""
    # proxystore-ex and pyzmq: optional extras; imported where the ZeroMQ connector needs them.
    from proxystore_ex.connectors.dim.exceptions import ServerTimeoutError
    from proxystore_ex.connectors.dim.zmq import wait_for_server

    deadline = time.monotonic() + ZMQ_START_S
    while True:
        if proc.poll() is not None:
            raise TransportError(
                f"ProxyStore's ZeroMQ server exited during start-up (code {proc.returncode})."
            )
        try:
            wait_for_server(address, port, timeout=1.0)
            return
        except ServerTimeoutError:
            if time.monotonic() > deadline:
                raise TransportError(
                    f"ProxyStore's ZeroMQ server did not answer within {ZMQ_START_S:.0f} s; "
                    "the machine may be overloaded."
                ) from None


class ProxyStoreTransport(HeldByName):
    """Proxies by key name; ``drain``/``load`` move them between tasks like futures' arrays.

    ``delete`` forgets this task's proxy; the data stays for the other trainers until the
    owner closes the store at the end of the run.
    """

    def __init__(self, spec: ProxyStoreSpec, owner: Any = None) -> None:
        self.spec = spec
        #: What the owner must stop besides the store: a Redis transport or a server process.
        self._owned = owner
        self.root = spec.root
        self.held: dict[str, bytes] = {}
        self._store: Any = None

    def store(self) -> Any:
        if self._store is None:
            try:
                self._store = get_or_create_store(self.spec.store)
            except Exception as exc:
                raise TransportError(
                    f"Could not reach the ProxyStore {self.spec.connector} store: {exc}."
                ) from None
        return self._store

    def put(self, key: Key, array: np.ndarray) -> None:
        try:
            proxy = self.store().proxy(np.ascontiguousarray(array))
        except TransportError:
            raise
        except Exception as exc:
            raise TransportError(f"ProxyStore could not store {key.name()}: {exc}.") from None
        # Kept pickled: that is how a proxy crosses processes, and how ``get`` resolves it.
        self.held[key.name()] = pickle.dumps(proxy, protocol=pickle.HIGHEST_PROTOCOL)

    def put_many(self, items: Sequence[tuple[Key, np.ndarray]]) -> None:
        for key, array in items:
            self.put(key, array)

    def get(self, key: Key) -> np.ndarray:
        blob = self.held.get(key.name())
        if blob is None:
            raise KeyNotFoundError(f"{key.name()} was not among the proxies passed to this task.")
        proxy: Proxy[np.ndarray] = pickle.loads(blob)
        # Registered first, so the proxy resolves through this client's store, which
        # ``close`` closes: a store the proxy's factory made would be left open, and a
        # ZeroMQ one would then block the interpreter when garbage-collected.
        self.store()
        try:
            return np.asarray(extract(proxy))
        except ProxyResolveError as exc:
            raise KeyNotFoundError(
                f"{key.name()} is no longer in the ProxyStore store: {exc}"
            ) from None
        except Exception as exc:
            raise TransportError(f"Could not resolve the proxy of {key.name()}: {exc}.") from None

    def get_many(self, keys: Sequence[Key]) -> list[np.ndarray]:
        return get_many_each(self, keys)

    def drain(self) -> bytes:
        blob = pickle.dumps(self.held, protocol=pickle.HIGHEST_PROTOCOL)
        self.held = {}
        return blob

    def load(self, blob: bytes) -> None:
        self.held.update(pickle.loads(blob))

    def load_s(self) -> float:
        """Loading is timed by the caller: ``load`` unpickles a few proxies at once."""
        return 0.0

    def close(self) -> None:
        """Release this client; the owner also clears the store and stops its servers."""
        self.held = {}
        store, self._store = self._store, None
        owner = self._owned is not None
        if store is not None:
            with contextlib.suppress(Exception):
                unregister_store(store.name)
            with contextlib.suppress(Exception):
                if self.spec.connector == "zmq":
                    # A request left unanswered (its server stopped first) must not make
                    # closing wait forever: ZeroMQ's default linger is infinite.
                    store.connector.socket.linger = 0
                    store.connector.close(kill_server=False)
                else:
                    store.connector.close(clear=False)
        if not owner:
            return
        with contextlib.suppress(Exception):  # registered by a client in this process
            unregister_store(self.spec.store.name)
        owned, self._owned = self._owned, None
        if isinstance(owned, subprocess.Popen):
            stop_process(owned)
        elif owned is not True:
            owned.close()  # the Redis transport: frees the namespace or stops its server
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def config(self) -> ProxyStoreSpec:
        return self.spec


class ProxyStoreSpec(ClientSpec):
    connector: Connector
    store: Any  # a proxystore StoreConfig (pickleable; holds the Redis password if any)
    root: Path | None = None

    def connect(self) -> ProxyStoreTransport:
        return ProxyStoreTransport(self)


@register_transport
class ProxyStoreConfig(TransportConfig):
    """ProxyStore: pass-by-proxy, data in a Store (file, Redis or ZeroMQ connector)."""

    name: Literal["proxystore"] = "proxystore"
    display: ClassVar[str] = "ProxyStore"
    #: What serialize / transfer / deserialize mean here; reports quote it under the table.
    io_note: ClassVar[str] = (
        "pass-by-proxy: each array goes into a ProxyStore Store (np.save bytes), its "
        "proxy rides on the task result. *transfer*: putting arrays into the store "
        "(simulations), resolving proxies -- fetch and np.load -- "
        "(trainers), and the hand-offs of the proxies through the launcher, "
        "timed as for futures; *serialize*/*deserialize*: pickling the proxies, a few "
        "hundred bytes each."
    )
    by_value: ClassVar[bool] = True
    by_proxy: ClassVar[bool] = True
    compare_variants: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        {"proxystore_connector": c} for c in ("file", "redis", "zmq")
    )
    proxystore_connector: Connector = Field(
        "file",
        description="where ProxyStore keeps the data: file (a directory, --data-dir), "
        "redis (simferry's private redis-server, or --redis-url), zmq (ProxyStore's "
        "ZeroMQ in-memory store; it has no authentication, so it listens on 127.0.0.1 "
        "only and serves one node)",
    )
    data_dir: Path | None = Field(
        None,
        description=DATA_DIR_HELP,
    )
    redis_url: str | None = Field(
        None,
        description="use this existing Redis server (redis://[:password@]host:port/db, "
        "rediss://... or unix:///path); default: start a private redis-server for the run",
    )

    def describe(self) -> str:
        return f"{self.display} ({self.proxystore_connector})"

    def variant(self, choice: dict[str, Any]) -> Self:
        picked = super().variant(choice)
        connector = picked.proxystore_connector
        return picked.model_copy(
            update={
                "data_dir": picked.data_dir if connector == "file" else None,
                "redis_url": picked.redis_url if connector == "redis" else None,
            }
        )

    def unavailable_reason(self) -> str | None:
        if not HAVE_PROXYSTORE:
            return "ProxyStore is not installed; run pip install 'simferry[proxystore]'."
        if self.proxystore_connector == "redis":
            return self._redis().unavailable_reason()
        if self.proxystore_connector == "zmq":
            try:  # whether the optional extras are installed, without importing them for good
                import proxystore_ex.connectors.dim.zmq  # noqa: F401
                import zmq  # noqa: F401
            except ImportError:
                return (
                    "ProxyStore's ZeroMQ connector needs proxystore-ex and pyzmq; run pip "
                    "install 'simferry[proxystore]'."
                )
        return None

    def _redis(self) -> TransportConfig:
        """The Redis transport that owns the connector's server (or namespace) for the run.

        Taken from the registry, not imported: one backend builds on another as the engine
        would use it, so their modules stay independent.
        """
        return transports()["redis"].model_validate({"redis_url": self.redis_url})

    def root(self, ctx: RunContext) -> Path:
        if self.data_dir is None:
            return ctx.run_dir / "proxystore"
        return self.data_dir.expanduser().resolve() / f"simferry-{ctx.run_id}"

    def check(self, ctx: RunContext) -> None:
        if self.redis_url is not None and self.proxystore_connector != "redis":
            raise UsageError(
                "--redis-url applies to --proxystore-connector redis only; drop it or pass "
                "--proxystore-connector redis."
            )
        if self.data_dir is not None and self.proxystore_connector != "file":
            raise UsageError(
                "--data-dir applies to --proxystore-connector file only; drop it or pass "
                "--proxystore-connector file."
            )
        if self.proxystore_connector == "zmq" and ctx.nodes > 1:
            raise UsageError(
                "ProxyStore's ZeroMQ store listens on loopback only (it has no "
                "authentication), so it cannot serve several nodes; use "
                "--proxystore-connector file or redis."
            )
        if self.proxystore_connector == "zmq":
            check_memory(ctx.data_bytes, "ProxyStore's ZeroMQ server")
        if self.proxystore_connector == "file":
            check_data_dir(self.root(ctx), ctx.data_bytes * 1.02)
        elif self.proxystore_connector == "redis":
            self._redis().check(ctx)

    def start(self, ctx: RunContext) -> Transport:
        name = f"simferry-{ctx.run_id}"
        kw: dict[str, Any] = {
            "serializer": serialize,
            "deserializer": deserialize,
            "cache_size": 0,
        }
        root: Path | None = None
        owned: Any = True
        if self.proxystore_connector == "file":
            # ProxyStore: an optional extra; imported where a connector needs it.
            from proxystore.connectors.file import FileConnector

            root = make_data_dir(self.root(ctx))
            connector: Any = FileConnector(str(root), clear=True)
        elif self.proxystore_connector == "redis":
            redis_owner: Any = self._redis().start(ctx)  # a RedisTransport: its spec has the URL
            owned = redis_owner
            spec = redis_owner.spec
            try:
                connector = SecuredRedis(spec.url, spec.password_value(), spec.namespace)
            except BaseException:
                redis_owner.close()
                raise
        else:
            # proxystore-ex and pyzmq: optional extras; imported where the ZeroMQ connector needs them.
            from proxystore_ex.connectors.dim.zmq import ZeroMQConnector

            port = free_port("127.0.0.1")
            server = start_zmq_server("127.0.0.1", port)
            owned = server
            try:
                wait_for_zmq(server, "127.0.0.1", port)
                connector = ZeroMQConnector(port, address="127.0.0.1", timeout=ZMQ_TIMEOUT_S)
            except BaseException:
                stop_process(server)
                raise
            if connector.server is not None:  # ours was not up in time: ProxyStore made one
                connector.close(kill_server=True)
                stop_process(server)
                raise TransportError("ProxyStore's ZeroMQ server did not start in time.")
        store = Store(name, connector, **kw)
        store_config: StoreConfig = store.config()
        # The owner keeps no connection of its own: it resolves proxies like any client.
        if self.proxystore_connector == "zmq":
            connector.close(kill_server=False)
        else:
            connector.close()
        spec_ = ProxyStoreSpec(connector=self.proxystore_connector, store=store_config, root=root)
        return ProxyStoreTransport(spec_, owner=owned)
