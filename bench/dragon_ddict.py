"""DragonHPC + DDict: put/get bandwidth, and simferry beside a bare run of the same work.

Run under the Dragon runtime (it needs one):

    .venv/bin/dragon bench/dragon_ddict.py --num-sims 8 --grid-size 512

1. DDict bandwidth from this process for ~2 MiB and ~20 MiB float64 arrays: one put per
   array, the same puts streamed in one batch (``start_batch_put``), and gets; best of
   ``--repeats`` rounds; and simferry's ``put_many`` of one sample's pair, batched or not.
2. A bare run: the reference's DragonHPC script with unique keys -- a Dragon pool of
   simulations writing every step to the DDict, then a pool of one trainer reading all of
   it and training -- using simferry's own simulation and training code but none of its
   machinery (records, checksums, run directory, placement, futures).
3. ``simferry run --launcher dragon --transport ddict`` on the same work, in process.

Prints a small table; every figure is seconds unless it says GB/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

MIB = 2**20


def bandwidth(repeats: int) -> list[tuple[str, float, float, float]]:
    """(size, put GB/s, batched put GB/s, get GB/s) for ~2 MiB and ~20 MiB arrays."""
    from dragon.data.ddict import DDict

    rows = []
    for grid, count in ((512, 64), (1620, 8)):  # 2.0 MiB and 20.0 MiB arrays
        array = np.random.default_rng(0).standard_normal((grid, grid))
        moved = array.nbytes * count
        dd = DDict(2, 1, int(4 * moved + 64 * MIB))
        try:
            best = {"put": 1e9, "batch": 1e9, "get": 1e9}
            for _ in range(repeats):
                t0 = time.perf_counter()
                for i in range(count):
                    dd[f"a{i}"] = array
                best["put"] = min(best["put"], time.perf_counter() - t0)
                t0 = time.perf_counter()
                dd.start_batch_put()
                for i in range(count):
                    dd[f"a{i}"] = array
                dd.end_batch_put()
                best["batch"] = min(best["batch"], time.perf_counter() - t0)
                t0 = time.perf_counter()
                for i in range(count):
                    got = dd[f"a{i}"]
                best["get"] = min(best["get"], time.perf_counter() - t0)
                assert np.array_equal(got, array)
        finally:
            dd.destroy()
        label = f"{array.nbytes / MIB:.1f} MiB x {count}"
        rows.append((label, *(moved / 1e9 / best[k] for k in ("put", "batch", "get"))))
    return rows


def pair_bandwidth(repeats: int) -> list[tuple[str, float, float]]:
    """simferry's own path: ``put_many`` of one sample's (input, target), batched or not."""
    from simferry.transports.base import RunContext, SampleKey
    from simferry.transports.ddict import DDictConfig

    rows = []
    for grid, pairs in ((512, 32), (1620, 4)):
        array = np.random.default_rng(0).standard_normal((grid, grid))
        moved = 2 * array.nbytes * pairs
        best = {True: 1e9, False: 1e9}
        with tempfile.TemporaryDirectory() as tmp:
            for batch in (False, True):
                owner = DDictConfig(ddict_batch=batch).start(RunContext(Path(tmp), "b", moved))
                try:
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        for k in range(pairs):
                            sim, step = divmod(k, 10)  # as simulations write: dealt evenly
                            owner.put_many(
                                [
                                    (SampleKey(sim, step, "input"), array),
                                    (SampleKey(sim, step, "target"), array),
                                ]
                            )
                        best[batch] = min(best[batch], time.perf_counter() - t0)
                finally:
                    owner.close()
        label = f"{array.nbytes / MIB:.1f} MiB pairs x {pairs}"
        rows.append((label, moved / 1e9 / best[False], moved / 1e9 / best[True]))
    return rows


def bare_simulation(descriptor: str, k: int, num_sims: int, grid: int, step_s: float) -> float:
    from dragon.data.ddict import DDict

    from simferry.workload.simulation import simulate

    dd = DDict.attach(descriptor)
    io = 0.0
    for s in simulate(k, num_sims, grid, step_s):
        t0 = time.perf_counter()
        dd[f"input/{k}/{s.step}"] = s.input
        dd[f"target/{k}/{s.step}"] = s.target
        io += time.perf_counter() - t0
    dd.detach()
    return io


def bare_trainer(descriptor: str, i: int, num_sims: int, grid: int) -> float:
    from dragon.data.ddict import DDict

    from simferry.workload import training
    from simferry.workload.model import flatten_weights

    dd = DDict.attach(descriptor)
    training.set_threads(1)
    buf = training.SampleBuffer(num_sims * 10, grid)
    t0 = time.perf_counter()
    for row in range(num_sims * 10):
        k, step = divmod(row, 10)
        buf.fill(row, dd[f"input/{k}/{step}"], dd[f"target/{k}/{step}"])
    io = time.perf_counter() - t0
    model = training.train_epoch(i, buf).model
    t0 = time.perf_counter()
    dd[f"model/{i}"] = flatten_weights(model)
    io += time.perf_counter() - t0
    dd.detach()
    return io


def bare_run(num_sims: int, grid: int, step_s: float) -> dict[str, float]:
    from dragon.native.machine import System, current
    from dragon.native.pool import Pool

    from simferry.records import dataset_bytes
    from simferry.transports.ddict import manager_bytes

    t_start = time.perf_counter()
    from dragon.data.ddict import DDict

    dd = DDict(2, 1, 2 * manager_bytes(dataset_bytes(num_sims, grid), 2))
    try:
        workers = min(num_sims, current().num_cpus * System().nnodes)
        t0 = time.perf_counter()
        pool = Pool(workers)
        args = [(dd.serialize(), k, num_sims, grid, step_s) for k in range(num_sims)]
        sim_io = [r.get() for r in [pool.apply_async(bare_simulation, a) for a in args]]
        sim_run = time.perf_counter() - t0
        pool.close()
        pool.join()
        t0 = time.perf_counter()
        pool = Pool(1)
        train_io = pool.apply_async(bare_trainer, (dd.serialize(), 0, num_sims, grid)).get()
        train_run = time.perf_counter() - t0
        wall = time.perf_counter() - t_start
        pool.close()
        pool.join()
    finally:
        dd.destroy()
    return {
        "sim_run_s": sim_run,
        "sim_io_s": float(np.mean(sim_io)),
        "train_run_s": train_run,
        "train_io_s": train_io,
        "wall_s": wall,
        "with_teardown_s": time.perf_counter() - t_start,
    }


def simferry_run(num_sims: int, grid: int, step_s: float) -> dict[str, float]:
    from simferry.config import build
    from simferry.engine.run import execute
    from simferry.records import read_summary

    with tempfile.TemporaryDirectory() as tmp:
        cfg = build(
            {"num_sims": num_sims, "grid_size": grid, "step_seconds": step_s},
            {"name": "dragon"},
            {"name": "ddict"},
            runs_dir=Path(tmp),
        )
        t0 = time.perf_counter()
        summary = read_summary(execute(cfg))
        summary["with_teardown_s"] = time.perf_counter() - t0
    keys = ("sim_run_s", "sim_io_s", "train_run_s", "train_io_s", "wall_s", "with_teardown_s")
    return {k: float(summary[k]) for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("\n| DDict array | put GB/s | batched put GB/s | get GB/s |\n|---|---|---|---|")
    for label, put, batch, get in bandwidth(args.repeats):
        print(f"| {label} | {put:.2f} | {batch:.2f} | {get:.2f} |")
    print("\n| simferry put_many | one put each GB/s | one batch GB/s |\n|---|---|---|")
    for label, plain, batched in pair_bandwidth(args.repeats):
        print(f"| {label} | {plain:.2f} | {batched:.2f} |")
    work = (args.num_sims, args.grid_size, args.step_seconds)
    bare = bare_run(*work)
    ours = simferry_run(*work)
    print(f"\nnum_sims {args.num_sims}, grid {args.grid_size}, step {args.step_seconds} s")
    print("| | sim run / IO | train run / IO | wall (to results) | with teardown |")
    print("|---|---|---|---|---|")
    for name, r in (("bare Dragon + DDict", bare), ("simferry Dragon + DDict", ours)):
        print(
            f"| {name} | {r['sim_run_s']:.2f} / {r['sim_io_s']:.3f} | "
            f"{r['train_run_s']:.2f} / {r['train_io_s']:.3f} | {r['wall_s']:.2f} | "
            f"{r['with_teardown_s']:.2f} |"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
