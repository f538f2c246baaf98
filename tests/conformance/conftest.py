"""Transport configs the conformance suite runs over.

Each entry builds a ``TransportConfig`` for a context; transports whose software is not
installed are skipped with the reason they give (never silently passed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from simferry.transports.base import RunContext, TransportConfig


def _filesystem(ctx: RunContext) -> TransportConfig:
    from simferry.transports.filesystem import FilesystemConfig

    return FilesystemConfig()


def _filesystem_data_dir(ctx: RunContext) -> TransportConfig:
    from simferry.transports.filesystem import FilesystemConfig

    return FilesystemConfig(data_dir=ctx.run_dir.parent / "shared")


def _shm(ctx: RunContext) -> TransportConfig:
    from simferry.transports.shm import ShmConfig

    return ShmConfig()


def _futures(ctx: RunContext) -> TransportConfig:
    from simferry.transports.futures import FuturesConfig

    return FuturesConfig()


def _redis(ctx: RunContext) -> TransportConfig:
    from simferry.transports.redis import RedisConfig

    return RedisConfig()  # a private redis-server on a Unix socket in the run directory


def _redis_tcp_chunked(ctx: RunContext) -> TransportConfig:
    from simferry.transports.redis import RedisConfig

    # TCP as in multi-node runs, and chunks small enough that most arrays are split.
    return RedisConfig(redis_bind="127.0.0.1", redis_chunk_bytes=100_000)


def _ddict(ctx: RunContext) -> TransportConfig:
    from simferry.launchers.common import in_runtime
    from simferry.transports.ddict import DDictConfig

    if not in_runtime():  # tests/transports/test_ddict.py runs this suite under `dragon`
        pytest.skip("the DDict lives only inside a Dragon runtime")
    return DDictConfig()


def _proxystore(connector: str) -> Callable[[RunContext], TransportConfig]:
    def make(ctx: RunContext) -> TransportConfig:
        from simferry.transports.proxystore import ProxyStoreConfig

        return ProxyStoreConfig(proxystore_connector=connector)  # type: ignore[arg-type]

    return make


def _adios2(engine: str) -> Callable[[RunContext], TransportConfig]:
    def make(ctx: RunContext) -> TransportConfig:
        from simferry.transports.adios2 import Adios2Config

        return Adios2Config(adios2_engine=engine)  # type: ignore[arg-type]

    return make


#: name -> factory; other transports append themselves here (see tests for redis, ddict).
FACTORIES: dict[str, Callable[[RunContext], TransportConfig]] = {
    "futures": _futures,
    "filesystem": _filesystem,
    "filesystem-data-dir": _filesystem_data_dir,
    "shm": _shm,
    "redis": _redis,
    "redis-tcp-chunked": _redis_tcp_chunked,
    "ddict": _ddict,
    "proxystore-file": _proxystore("file"),
    "proxystore-redis": _proxystore("redis"),
    "proxystore-zmq": _proxystore("zmq"),
    "adios2-bp5": _adios2("bp5"),
    "adios2-sst": _adios2("sst"),
}

_STREAM = (
    "an ADIOS2 stream is append-only and read in step order, each step handed out once: "
    "it cannot be listed, overwritten or deleted"
)
_STAGED = (
    "a phased SST writer serves its stream only once its client closed (it stages the "
    "steps until then), and these tests read from a writer that is still open; "
    "tests/transports/test_adios2.py covers SST with closed writers and streaming"
)
#: (factory, test) -> why that test does not apply to that transport's model.
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    **{
        (f"adios2-{e}", t): _STREAM
        for e in ("bp5", "sst")
        for t in (
            "test_many_keys_are_distinct",
            "test_exists_and_delete",
            "test_overwrite_replaces_value",
            "test_rewriting_a_key_is_idempotent",
            "test_writer_killed_mid_write_never_exposes_a_partial_array",
        )
    },
    **{
        (f"proxystore-{c}", "test_writer_killed_mid_write_never_exposes_a_partial_array"): (
            "pass-by-proxy: a writer's arrays are reachable only through the proxies its "
            "task returns, and a killed task returns none (as for futures)"
        )
        for c in ("file", "redis", "zmq")
    },
    **{
        ("adios2-sst", t): _STAGED
        for t in (
            "test_round_trip_is_bit_exact",
            "test_large_array",
            "test_missing_key_raises_key_not_found",
            "test_close_releases_resources",
        )
    },
}


def skip_if_not_applicable(factory: str, test: str) -> None:
    why = NOT_APPLICABLE.get((factory, test))
    if why:
        pytest.skip(why)


@pytest.fixture(params=sorted(FACTORIES))
def transport_config(request: pytest.FixtureRequest, run_ctx: RunContext) -> TransportConfig:
    skip_if_not_applicable(request.param, request.node.originalname)
    cfg = FACTORIES[request.param](run_ctx)
    reason = cfg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    return cfg


@pytest.fixture
def owner(transport_config: TransportConfig, run_ctx: RunContext):
    transport = transport_config.start(run_ctx)
    yield transport
    transport.close()


def data_paths(transport: object) -> list[Path]:
    root = getattr(transport, "root", None)
    return [root] if isinstance(root, Path) else []
