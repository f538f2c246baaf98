"""Redis put/get bandwidth beside the filesystem transport, in the same script run.

For each array size (default 20 MB and 200 MB of float64): put and get GB/s (median of
repeats) through a worker-style client of each transport, as a simulation writes and a
trainer reads. A get counts until the array is in this process's memory (the filesystem
transport's memory map is copied out). Redis is the private redis-server simferry starts
(Unix socket); ``--chunks`` adds rows for other ``--redis-chunk-bytes`` values.

    .venv/bin/python bench/redis_vs_fs.py [--sizes-mb 20,200] [--chunks 4MiB,256MiB]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from simferry.transports.base import RunContext, SampleKey, TransportConfig
from simferry.transports.filesystem import FilesystemConfig
from simferry.transports.redis import RedisConfig


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(cfg: TransportConfig, arr: np.ndarray, tmp: Path, repeat: int) -> tuple[float, float]:
    run = Path(tempfile.mkdtemp(dir=tmp))
    ctx = RunContext(run, f"bench{run.name}", 4 * arr.nbytes)  # room for overwrites
    owner = cfg.start(ctx)
    key = SampleKey(0, 0, "input")
    try:
        client = owner.config().connect()
        t_put = timed(lambda: client.put(key, arr), repeat)
        t_get = timed(lambda: np.array(client.get(key), copy=True), repeat)
        client.close()
        return arr.nbytes / t_put / 1e9, arr.nbytes / t_get / 1e9
    finally:
        owner.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", default="20,200", help="array sizes in MB (10^6 bytes)")
    p.add_argument("--chunks", default="", help="extra --redis-chunk-bytes values, e.g. 4MiB")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    reason = RedisConfig().unavailable_reason()
    if reason:
        raise SystemExit(reason)
    configs: list[tuple[str, TransportConfig]] = [
        ("filesystem", FilesystemConfig()),
        (f"redis (chunks {RedisConfig().redis_chunk_bytes.human_readable()})", RedisConfig()),
    ]
    for c in filter(None, a.chunks.split(",")):
        cfg = RedisConfig(redis_chunk_bytes=c)
        configs.append((f"redis (chunks {cfg.redis_chunk_bytes.human_readable()})", cfg))
    load = psutil.getloadavg()[0]
    print(f"cores: {psutil.cpu_count()}, load average at start: {load:.2f}\n")
    print("| size (MB) | transport | put GB/s | get GB/s |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmpd:
        for mb in [int(s) for s in a.sizes_mb.split(",")]:
            arr = np.random.default_rng(0).standard_normal(mb * 10**6 // 8)
            for label, cfg in configs:
                put, get = measure(cfg, arr, Path(tmpd), a.repeat)
                print(f"| {mb} | {label} | {put:.2f} | {get:.2f} |", flush=True)
    print(f"\nload average at end: {psutil.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
