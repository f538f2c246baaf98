"""``bench/redis_vs_fs.py`` stays runnable: every row at a tiny size, nothing left behind."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from simferry.transports.redis import RedisConfig

from .test_bench import BENCH, run
from .transports.test_redis import no_servers_left

pytestmark = pytest.mark.integration


@pytest.mark.skipif(bool(RedisConfig().unavailable_reason()), reason="needs redis-server")
def test_redis_vs_filesystem_rows_and_ceilings(tmp_path: Path) -> None:
    out = run(
        str(BENCH / "redis_vs_fs.py"),
        "--sizes-mb", "2", "--repeat", "2", "--chunks", "1MiB", "--csv", "rows.csv",
        cwd=tmp_path,
    )  # fmt: skip
    with (tmp_path / "rows.csv").open() as fh:
        rows = {row["path"]: row for row in csv.DictReader(fh)}
    assert list(rows) == [
        "filesystem",
        "redis, redis-py pipeline (4.0MiB chunks)",
        "redis, bulk reader (4.0MiB chunks)",
        "Redis ceiling: bare GETs into a ready buffer (Unix socket)",
        "redis, bulk reader, TCP loopback (4.0MiB chunks)",
        "redis, bulk reader (1.0MiB chunks)",
        "kernel ceiling: Unix socketpair",
        "kernel ceiling: TCP loopback",
    ]
    assert rows["filesystem"]["get_vs_filesystem"] == "1.000"
    assert all(float(row["get_gbs"]) > 0 for row in rows.values())
    assert "| 2 | redis, bulk reader (4.0MiB chunks) |" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv"], "files left behind"
    assert no_servers_left(tmp_path)
