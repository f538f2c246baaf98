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
    from simferry.launchers.dragon import in_runtime
    from simferry.transports.ddict import DDictConfig

    if not in_runtime():  # tests/transports/test_ddict.py runs this suite under `dragon`
        pytest.skip("the DDict lives only inside a Dragon runtime")
    return DDictConfig()


#: name -> factory; other transports append themselves here (see tests for redis, ddict).
FACTORIES: dict[str, Callable[[RunContext], TransportConfig]] = {
    "futures": _futures,
    "filesystem": _filesystem,
    "filesystem-data-dir": _filesystem_data_dir,
    "shm": _shm,
    "redis": _redis,
    "redis-tcp-chunked": _redis_tcp_chunked,
    "ddict": _ddict,
}


@pytest.fixture(params=sorted(FACTORIES))
def transport_config(request: pytest.FixtureRequest, run_ctx: RunContext) -> TransportConfig:
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
