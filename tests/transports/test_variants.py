"""One set of options for every compared variant: each variant keeps what it uses.

``compare`` and ``sweep`` give every variant of a transport (ProxyStore's connectors,
ADIOS2's engines) the same command-line options; a ``--data-dir`` meant for the
variants that store files must not make the others refuse to run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simferry.cli import make_parser
from simferry.cli.compare import plan
from simferry.config import RunConfig
from simferry.engine.run import check_run
from simferry.engine.sweep import make_grid, point_config
from simferry.errors import UsageError

pytest.importorskip("proxystore")


def compared(tmp_path: Path, *extra: str) -> dict[str, dict[str, Any]]:
    """Each compared variant's transport options, by its table label."""
    args = make_parser().parse_args(
        ["compare", "--transports", "proxystore,adios2", "--runs-dir", str(tmp_path), *extra]
    )
    configs, _ = plan(args)
    return {c.transport.describe(): c.transport.model_dump() for c in configs}


def test_compare_gives_data_dir_only_to_the_variants_that_store_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    found = compared(tmp_path, "--data-dir", str(data))
    assert found["ProxyStore (file)"]["data_dir"] == data
    assert found["ProxyStore (redis)"]["data_dir"] is None
    assert found["ProxyStore (zmq)"]["data_dir"] is None
    assert found["ADIOS2 BP5"]["data_dir"] == data


def test_compare_gives_redis_url_only_to_the_redis_connector(tmp_path: Path) -> None:
    found = compared(tmp_path, "--transports", "proxystore", "--redis-url", "redis://h:1/0")
    assert found["ProxyStore (redis)"]["redis_url"] == "redis://h:1/0"
    assert found["ProxyStore (file)"]["redis_url"] is None


def test_sweep_point_of_a_variant_drops_options_it_does_not_use(tmp_path: Path) -> None:
    points = make_grid(["local"], ["proxystore"], [1], [1], [16])
    configs = [point_config(p, {"data_dir": tmp_path}, tmp_path) for p in points]
    assert all(isinstance(c, RunConfig) for c in configs), configs
    runs = {
        c.transport.model_dump()["proxystore_connector"]: c
        for c in configs
        if isinstance(c, RunConfig)
    }
    assert runs["file"].transport.model_dump()["data_dir"] == tmp_path
    assert runs["redis"].transport.model_dump()["data_dir"] is None
    check_run(runs["redis"])


def test_a_run_that_names_the_connector_still_refuses_the_data_dir(tmp_path: Path) -> None:
    args = make_parser().parse_args(
        [
            "compare",
            "--transports",
            "proxystore",
            "--proxystore-connector",
            "redis",
            "--data-dir",
            str(tmp_path),
            "--runs-dir",
            str(tmp_path),
        ]
    )
    with pytest.raises(UsageError, match="--data-dir applies to --proxystore-connector file"):
        for cfg in plan(args)[0]:
            check_run(cfg)
