"""``simferry ddict-demo``: the reference's introduction to Dragon's distributed dictionary.

Start a DDict, have a few worker processes read a greeting from it and write their own
"Hello from the toy function" back, then show the keys, where they live, how much memory
they take and what each operation costs, and destroy the dictionary. From a plain shell
the command re-runs itself under ``dragon``, like ``simferry run --launcher dragon``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from simferry.errors import UsageError
from simferry.launchers.common import in_runtime, missing_reason
from simferry.launchers.dragon import run_under_dragon, split_dragon_args
from simferry.transports.exceptions import TransportUnavailableError
from simferry.units import GB, MIB

GREETING = "Hello "


def add_demo_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=4, help="worker processes (default: 4)")
    p.add_argument(
        "--managers-per-node", type=int, default=2, help="DDict managers per node (default: 2)"
    )
    p.add_argument(
        "--array-mib",
        type=float,
        default=2.0,
        help="MiB of the array each worker stores (default: 2)",
    )
    p.add_argument(
        "--repeats", type=int, default=20, help="repeats per timed operation (default: 20)"
    )
    p.add_argument(
        "--dragon-args",
        help="flags for the `dragon` executable, e.g. '-t tcp' (default: none; "
        "--single-node-override is added on a login node)",
    )


def cmd_ddict_demo(args: argparse.Namespace) -> int:
    if not 1 <= args.workers <= 256 or not 1 <= args.managers_per_node <= 64:
        raise UsageError("--workers must be 1-256 and --managers-per-node 1-64.")
    if not 0 < args.array_mib <= 1024 or not 1 <= args.repeats <= 10_000:
        raise UsageError("--array-mib must be in (0, 1024] and --repeats 1-10000.")
    dragon_args = split_dragon_args(args.dragon_args)
    reason = missing_reason()
    if reason:
        raise TransportUnavailableError(f"ddict-demo cannot run: {reason}")
    if not in_runtime():
        flags = ["--workers", str(args.workers), "--managers-per-node"]
        flags += [str(args.managers_per_node), "--array-mib", str(args.array_mib)]
        flags += ["--repeats", str(args.repeats)]
        return run_under_dragon(["ddict-demo", *flags], dragon_args=dragon_args)
    demo(args.workers, args.managers_per_node, int(args.array_mib * MIB), args.repeats)
    return 0


def toy_function(descriptor: str, worker: int, nbytes: int) -> dict[str, Any]:
    """What each worker does: attach, read the greeting, write its own, store an array."""
    # Dragon is optional and importable only inside its runtime, where this runs.
    from dragon.data.ddict import DDict

    t0 = time.perf_counter()
    dd = DDict.attach(descriptor)
    attach_s = time.perf_counter() - t0
    try:
        greeting = dd["input"]
        dd[f"output/{worker}"] = (
            f"{greeting}from the toy function in worker {worker} "
            f"(pid {os.getpid()} on {socket.gethostname()})"
        )
        array = np.full(nbytes // 8, float(worker))
        t0 = time.perf_counter()
        dd[f"array/{worker}"] = array
        put_s = time.perf_counter() - t0
        return {"attach_s": attach_s, "put_s": put_s, "bytes": array.nbytes}
    finally:
        dd.detach()


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def demo(workers: int, managers_per_node: int, nbytes: int, repeats: int) -> None:
    # Dragon is optional and importable only inside its runtime, where this runs.
    from dragon.data.ddict import DDict
    from dragon.native.machine import Node, System
    from dragon.native.pool import Pool

    system = System()
    nodes = [Node(h) for h in system.nodes]
    print(f"Dragon runtime on {len(nodes)} node(s): {', '.join(n.hostname for n in nodes)}")
    print(f"cores: {sum(n.num_cpus for n in nodes)}   GPUs: {sum(n.num_gpus for n in nodes)}")

    managers = managers_per_node * len(nodes)
    total = managers * max(3 * MIB, int(4 * (workers + 4) * nbytes / managers) + 16 * MIB)
    t0 = time.perf_counter()
    dd = DDict(managers_per_node, len(nodes), total)
    created_s = time.perf_counter() - t0
    print(f"DDict: {managers} managers, {total / MIB:.0f} MiB in all, up in {created_s:.2f} s\n")
    try:
        dd["input"] = GREETING
        pool = Pool(workers)
        try:
            t0 = time.perf_counter()
            pending = [
                pool.apply_async(toy_function, (dd.serialize(), w, nbytes)) for w in range(workers)
            ]
            results = [r.get(timeout=300) for r in pending]
            workers_s = time.perf_counter() - t0
        finally:
            pool.close()
            pool.join()
        for w in range(workers):
            print(dd[f"output/{w}"])
        print(f"({workers} workers ran the toy function in {workers_s:.2f} s)\n")
        show_keys(dd)
        show_timings(dd, results, nbytes, repeats)
    finally:
        t0 = time.perf_counter()
        dd.destroy()
        print(f"\nDDict destroyed in {time.perf_counter() - t0:.2f} s")


def show_keys(dd: Any) -> None:
    keys = sorted(dd.keys())
    print(f"{len(keys)} keys: {', '.join(keys)}")
    print("manager  host            keys  used / pool")
    for s in sorted(dd.stats, key=lambda s: s.manager_id):
        print(
            f"{s.manager_id:7d}  {s.hostname[:14]:14}  {s.num_keys:4d}  "
            f"{s.total_used_bytes / MIB:8.2f} / {s.total_bytes / MIB:.0f} MiB"
        )
    print()


def show_timings(dd: Any, results: list[dict[str, Any]], nbytes: int, repeats: int) -> None:
    array = np.random.default_rng(0).standard_normal(nbytes // 8)
    small = "x" * 100

    def put_small() -> None:
        dd["timing/small"] = small

    def put_array() -> None:
        dd["timing/array"] = array

    def batch_put() -> None:
        dd.start_batch_put()
        for i in range(4):
            dd[f"timing/batch{i}"] = array
        dd.end_batch_put()

    def four_puts() -> None:
        for i in range(4):
            dd[f"timing/batch{i}"] = array

    rows = [
        ("put 100 B string", timed(put_small, repeats), 0),
        ("get 100 B string", timed(lambda: dd["timing/small"], repeats), 0),
        ("contains", timed(lambda: "timing/small" in dd, repeats), 0),
        (f"put {nbytes / MIB:g} MiB array", timed(put_array, repeats), nbytes),
        (f"get {nbytes / MIB:g} MiB array", timed(lambda: dd["timing/array"], repeats), nbytes),
        ("4 puts, one at a time", timed(four_puts, repeats), 4 * nbytes),
        ("4 puts in one batch", timed(batch_put, repeats), 4 * nbytes),
        ("len (all managers)", timed(lambda: len(dd), repeats), 0),
    ]
    attach = statistics.median(r["attach_s"] for r in results)
    worker_put = statistics.median(r["put_s"] for r in results)
    rows += [("attach (in a worker)", attach, 0), ("put array (in a worker)", worker_put, nbytes)]
    print(f"operation                     median of {repeats}     rate")
    for name, seconds, moved in rows:
        rate = f"{moved / seconds / GB:6.2f} GB/s" if moved else ""
        print(f"{name:28}  {seconds * 1e3:9.3f} ms  {rate}")
