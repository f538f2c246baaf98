"""Redis get bandwidth beside the filesystem transport and beside what the machine allows.

For each array size (default 20 MB and 200 MB of float64), in one script run with the
repeats of all rows interleaved (so load changes hit every row alike), median GB/s of:

- ``filesystem``: the transport's get, plus a copy out of its memory map (a get counts
  until the array is in this process's own memory);
- ``redis, redis-py pipeline``: the transport reading chunks through redis-py + hiredis
  (what ``rediss://`` uses; every chunk read 64 KiB at a time, made a ``bytes``, copied);
- ``redis, bulk reader``: the transport's own read path (``transports/redis/bulk.py``),
  chunks received straight into the array, over the private server's Unix socket;
- ``redis, bulk reader, TCP loopback``: the same with the server on 127.0.0.1
  (``--redis-bind``), to compare the two socket kinds;
- ``Redis ceiling``: the bare pipelined GETs of the same chunks into one preallocated,
  already touched buffer (no header round trip, no allocation): what Redis itself serves;
- ``kernel ceiling``: one process sending the array in ``--redis-chunk-bytes`` writes to
  another over a Unix socketpair or TCP loopback: what the socket alone moves, without
  Redis's event loop (Redis writes at most 64 KiB to a client per event-loop turn while
  it is under maxmemory, ``NET_MAX_WRITES_PER_EVENT`` in networking.c).

Put GB/s is shown for the transports (one put per repeat, before the gets). Ratios are to
the filesystem row of the same size. ``--chunks`` adds bulk-reader rows for other
``--redis-chunk-bytes`` values; ``--csv`` also writes the rows as CSV; ``--profile``
prints where the Redis gets spend their time (cProfile) instead.

    .venv/bin/python bench/redis_vs_fs.py [--sizes-mb 20,200] [--chunks 1MiB,16MiB]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import os
import pstats
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import psutil

from simferry.transports.base import RunContext, SampleKey, TransportConfig
from simferry.transports.filesystem import FilesystemConfig
from simferry.transports.redis import RedisConfig, RedisTransport
from simferry.transports.redis.bulk import BulkReader

KEY = SampleKey(0, 0, "input")
#: A row's measurement: called once per repeat, returns seconds for one get.
Timer = Callable[[], float]


def clock(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@contextmanager
def transport_rows(
    label: str, cfg: TransportConfig, arr: np.ndarray, tmp: Path, redis_py: bool = False
) -> Iterator[tuple[dict[str, Timer], Timer]]:
    """``{label: get timer}`` and a put timer for one transport holding ``arr``."""
    run = Path(tempfile.mkdtemp(dir=tmp))
    owner = cfg.start(RunContext(run, f"bench{run.name}", 4 * arr.nbytes))
    try:
        client = owner.config().connect()
        client.put(KEY, arr)
        if isinstance(client, RedisTransport):
            if redis_py:
                client.bulk = None  # the path TLS takes
            get: Timer = lambda: clock(lambda: client.get(KEY))  # noqa: E731
        else:  # a memory map: copy it into this process's memory
            get = lambda: clock(lambda: np.array(client.get(KEY), copy=True))  # noqa: E731
        rows = {label: get}
        bare = None
        if isinstance(client, RedisTransport) and not redis_py and client.spec.url[:4] == "unix":
            spec = client.spec
            bare = BulkReader(spec.url, spec.password_value(), chunk_bytes=spec.chunk_bytes)
            rows["Redis ceiling: bare GETs into a ready buffer (Unix socket)"] = ceiling(
                client, bare, arr.nbytes
            )
        yield rows, lambda: clock(lambda: client.put(KEY, arr))
        assert np.array_equal(client.get(KEY), arr), f"{label} read back other data"
        client.close()
        if bare is not None:
            bare.close()
    finally:
        owner.close()


def ceiling(client: RedisTransport, reader: BulkReader, nbytes: int) -> Timer:
    """Bare pipelined GETs of the stored chunks into a buffer allocated and touched once."""
    buf = np.ones(nbytes, np.uint8)
    view = buf.data
    offsets = [0]

    def land(i: int, size: int) -> memoryview:
        assert size >= 0, "a chunk vanished"
        offsets.append(offsets[-1] + size)
        return view[offsets[-2] : offsets[-1]]

    def once() -> float:
        raw = client.client.get(client._k(KEY.name()))  # the current generation, untimed
        assert raw is not None
        keys = client._chunk_keys(KEY.name(), client._header(raw))
        del offsets[1:]
        took = clock(lambda: reader.fetch(keys, land))
        assert offsets[-1] == nbytes
        return took

    return once


@contextmanager
def kernel_rows(nbytes: int, chunk: int) -> Iterator[dict[str, Timer]]:
    """A forked sender per socket kind; each timing asks it for ``nbytes`` once."""
    rows: dict[str, Timer] = {}
    pids: list[int] = []
    socks: list[socket.socket] = []
    listener = socket.create_server(("127.0.0.1", 0))
    payload = np.random.default_rng(1).integers(0, 255, nbytes, np.uint8)
    try:
        for label in ("kernel ceiling: Unix socketpair", "kernel ceiling: TCP loopback"):
            if "TCP" in label:
                mine = socket.create_connection(listener.getsockname())
                theirs = listener.accept()[0]
            else:
                mine, theirs = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the sender: one array per request byte, until EOF
                for s in [mine, listener, *socks]:
                    s.close()
                data = payload.data
                while theirs.recv(1):
                    for off in range(0, nbytes, chunk):
                        theirs.sendall(data[off : off + chunk])
                os._exit(0)
            theirs.close()
            pids.append(pid)
            socks.append(mine)
            rows[label] = receiver(mine, nbytes)
        yield rows
    finally:
        listener.close()
        for s in socks:
            s.close()
        for pid in pids:
            os.waitpid(pid, 0)


def receiver(sock: socket.socket, nbytes: int) -> Timer:
    buf = np.ones(nbytes, np.uint8)
    view = buf.data

    def once() -> None:
        sock.sendall(b"x")
        got = 0
        while got < nbytes:
            got += sock.recv_into(view[got:])

    return lambda: clock(once)


def profile(mb: int, tmp: Path, repeat: int) -> None:
    """cProfile of the transport's get over redis-py and over the bulk reader."""
    arr = np.random.default_rng(0).standard_normal(mb * 10**6 // 8)
    for label, redis_py in (("redis-py pipeline", True), ("bulk reader", False)):
        with transport_rows(label, RedisConfig(), arr, tmp, redis_py) as (rows, _):
            get = rows[label]
            get()  # connections made, server warm
            prof = cProfile.Profile()
            prof.enable()
            took = [get() for _ in range(repeat)]
            prof.disable()
        gbs = arr.nbytes / statistics.median(took) / 1e9
        print(f"### {label}, {mb} MB, {repeat} gets, median {gbs:.2f} GB/s\n\n```")
        pstats.Stats(prof).sort_stats("tottime").print_stats(8)
        print("```\n", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mb", default="20,200", help="array sizes in MB (10^6 bytes)")
    p.add_argument("--chunks", default="", help="extra --redis-chunk-bytes values, e.g. 1MiB")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--csv", type=Path, help="also write the rows here")
    p.add_argument("--profile", action="store_true", help="profile the Redis gets instead")
    a = p.parse_args()
    reason = RedisConfig().unavailable_reason()
    if reason:
        raise SystemExit(reason)
    if a.profile:
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmpd:
            for mb in [int(s) for s in a.sizes_mb.split(",")]:
                profile(mb, Path(tmpd), a.repeat)
        return
    chunk = int(RedisConfig().redis_chunk_bytes)
    human = RedisConfig().redis_chunk_bytes.human_readable()
    print(f"cores: {psutil.cpu_count()}, load average at start: {psutil.getloadavg()[0]:.2f}\n")
    print("| size (MB) | path | put GB/s | get GB/s | get / filesystem |\n|---|---|---|---|---|")
    table = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmpd:
        tmp = Path(tmpd)
        for mb in [int(s) for s in a.sizes_mb.split(",")]:
            arr = np.random.default_rng(0).standard_normal(mb * 10**6 // 8)
            setups: list[tuple[str, TransportConfig, bool]] = [
                ("filesystem", FilesystemConfig(), False),
                (f"redis, redis-py pipeline ({human} chunks)", RedisConfig(), True),
                (f"redis, bulk reader ({human} chunks)", RedisConfig(), False),
                (
                    f"redis, bulk reader, TCP loopback ({human} chunks)",
                    RedisConfig(redis_bind="127.0.0.1"),
                    False,
                ),
            ]
            for c in filter(None, a.chunks.split(",")):
                cfg = RedisConfig(redis_chunk_bytes=c)
                label = f"redis, bulk reader ({cfg.redis_chunk_bytes.human_readable()} chunks)"
                setups.append((label, cfg, False))
            gets: dict[str, list[float]] = {}
            puts: dict[str, list[float]] = {}
            with ExitStack() as stack:
                timers: dict[str, Timer] = {}
                put_timers: dict[str, Timer] = {}
                for label, setup, redis_py in setups:
                    rows, put = stack.enter_context(
                        transport_rows(label, setup, arr, tmp, redis_py)
                    )
                    timers.update(rows)
                    put_timers[label] = put
                timers.update(stack.enter_context(kernel_rows(arr.nbytes, chunk)))
                for _ in range(a.repeat):
                    for label, put in put_timers.items():
                        puts.setdefault(label, []).append(put())
                    for label, get in timers.items():
                        gets.setdefault(label, []).append(get())
            fs = arr.nbytes / statistics.median(gets["filesystem"]) / 1e9
            for label, times in gets.items():
                get_gbs = arr.nbytes / statistics.median(times) / 1e9
                put_gbs = (
                    arr.nbytes / statistics.median(puts[label]) / 1e9 if label in puts else None
                )
                put_txt = f"{put_gbs:.2f}" if put_gbs is not None else ""
                print(
                    f"| {mb} | {label} | {put_txt} | {get_gbs:.2f} | {get_gbs / fs:.2f} |",
                    flush=True,
                )
                table.append([mb, label, put_txt, f"{get_gbs:.3f}", f"{get_gbs / fs:.3f}"])
    print(f"\nload average at end: {psutil.getloadavg()[0]:.2f}")
    if a.csv:
        with a.csv.open("w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["size_mb", "path", "put_gbs", "get_gbs", "get_vs_filesystem"])
            out.writerows(table)


if __name__ == "__main__":
    main()
