"""DragonHPC + DDict: put/get bandwidth, and simferry beside a bare run of the same work.

Run under the Dragon runtime (it needs one):

    .venv/bin/dragon -s bench/dragon_ddict.py --num-sims 8 --grid-size 512

0. The IO patterns side by side on one DDict, rounds alternated (``--patterns`` runs only
   this): the reference's (each simulation puts two values, its ten inputs and its ten
   targets as Python lists; the trainer gets each value, timed apart from its float32
   conversion) against simferry's ``DDictTransport`` (a ``put_many`` of each sample's
   pair; a ``get_many`` per sample in manifest order, timed apart from ``fill`` and the
   checksum), with values pickled as DDict does (and simferry does), raw (simferry's
   ``RawArrays``), and in one ``RawArrays`` bundle per simulation (``--ddict-layout
   simulation``); and tiny-value put/get
   latency, the floor of every operation. Simulation IO is per simulation, as both report it.

1. DDict bandwidth from this process for ~2 MiB and ~20 MiB float64 arrays: one put per
   array, the same puts streamed in one batch (``start_batch_put``), and gets, pickled
   (DDict's default, which simferry keeps for single arrays) and raw (``RawArrays``); best of ``--repeats`` rounds; and
   simferry's ``put_many`` of one sample's pair, batched or not.
2. A bare run: the reference's DragonHPC script with unique keys -- a Dragon pool of
   simulations writing every step to the DDict, then a pool of one trainer reading all of
   it and training -- using simferry's own simulation and training code but none of its
   machinery (records, checksums, run directory, placement, futures).
3. The reference's own DDict workflow (``bench/reference.py ddict``) and ``simferry run
   --launcher dragon --transport ddict`` in both layouts on the same work, in process,
   alternated for ``--e2e-rounds`` rounds; medians and ratios to the reference.

Prints a small table; every figure is seconds unless it says GB/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MIB = 2**20


def patterns(num_sims: int, grid: int, rounds: int) -> list[dict[str, float]]:
    """Per round: sim IO and read IO (s) of the reference's pattern and simferry's."""
    import torch

    from simferry.records import dataset_bytes
    from simferry.transports.base import RunContext, SampleKey
    from simferry.transports.ddict import DDictConfig, RawArrays, bundle_key
    from simferry.workload import training
    from simferry.workload.simulation import simulate
    from simferry.workload.tasks import checksum

    training.set_threads(1)
    sims = [list(simulate(k, num_sims, grid, 0.0)) for k in range(num_sims)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(Path(tmp), "patterns", 3 * dataset_bytes(num_sims, grid))
        owner = DDictConfig().start(ctx)
        dd = owner._dd  # the reference's client: DDict's own hashing and pickling
        kept = []  # manager handles stay referenced: a freed DDict copy detaches channels
        try:
            for _ in range(rounds):
                row: dict[str, float] = {}
                # The reference: two values per simulation, gets timed apart from converting.
                io = []
                for k, samples in enumerate(sims):
                    inputs = [s.input for s in samples]
                    targets = [s.target for s in samples]
                    t0 = time.perf_counter()
                    dd[f"inputs_{k}"] = inputs
                    dd[f"outputs_{k}"] = targets
                    io.append(time.perf_counter() - t0)
                row["ref_sim_io"] = float(np.mean(io))
                read = convert = 0.0
                got = []
                for key in dd.keys():  # noqa: SIM118 -- as the reference iterates
                    if isinstance(key, str) and key.startswith(("inputs_", "outputs_")):
                        t0 = time.perf_counter()
                        arrays = dd[key]
                        t1 = time.perf_counter()
                        got.append(torch.from_numpy(np.array(arrays)).unsqueeze(1).float())
                        read += t1 - t0
                        convert += time.perf_counter() - t1
                assert len(got) == 2 * num_sims
                row["ref_read_io"], row["ref_convert"] = read, convert
                for k in range(num_sims):
                    del dd[f"inputs_{k}"], dd[f"outputs_{k}"]
                del got
                # simferry: put_many per sample, get_many per sample, pickled and raw.
                for name in ("pickled", "raw", "bundle"):
                    owner.by_sim = name == "bundle"
                    if name == "raw":  # the same client, its handles serializing raw
                        kept.append(owner._handles)
                        raw = dd.pickler(value_pickler=RawArrays)
                        owner._handles = {m: raw.manager(m) for m in range(owner.managers)}
                        kept += [raw, owner._handles]
                    io = []
                    manifest = []
                    for k, samples in enumerate(sims):
                        t0 = time.perf_counter()
                        for s in samples:
                            owner.put_many(
                                [
                                    (SampleKey(k, s.step, "input"), s.input),
                                    (SampleKey(k, s.step, "target"), s.target),
                                ]
                            )
                        io.append(time.perf_counter() - t0)
                        manifest += [(k, s.step, checksum(s.input, s.target)) for s in samples]
                    row[f"{name}_sim_io"] = float(np.mean(io))
                    buf = training.SampleBuffer(len(manifest), grid)
                    read = convert = 0.0
                    for i, (k, step, expected) in enumerate(manifest):
                        keys = [SampleKey(k, step, "input"), SampleKey(k, step, "target")]
                        t0 = time.perf_counter()
                        inp, target = owner.get_many(keys)
                        t1 = time.perf_counter()
                        buf.fill(i, inp, target)
                        read += t1 - t0
                        convert += time.perf_counter() - t1
                        assert checksum(inp, target) == expected
                    row[f"{name}_read_io"], row[f"{name}_convert"] = read, convert
                    for k, step, _ in manifest:
                        if owner.by_sim and step == 0:
                            owner._bundles(k).pop(bundle_key(k))
                        elif not owner.by_sim:
                            owner.delete(SampleKey(k, step, "input"))
                            owner.delete(SampleKey(k, step, "target"))
                    del buf
                    if name == "raw":
                        owner._handles = kept[-3]
                # Latency floor: a 16-byte value's put and get, median of 20.
                owner.by_sim = False
                small = np.zeros(2, dtype=np.int64)
                lat: dict[str, list[float]] = {"put": [], "get": []}
                for i in range(20):
                    t0 = time.perf_counter()
                    owner.put(SampleKey(0, i, "input"), small)
                    t1 = time.perf_counter()
                    owner.get(SampleKey(0, i, "input"))
                    lat["put"].append(t1 - t0)
                    lat["get"].append(time.perf_counter() - t1)
                    owner.delete(SampleKey(0, i, "input"))
                row["tiny_put_ms"] = 1e3 * float(np.median(lat["put"]))
                row["tiny_get_ms"] = 1e3 * float(np.median(lat["get"]))
                row["load"] = os.getloadavg()[0]
                rows.append(row)
                print(" ".join(f"{k}={v:.4f}" for k, v in row.items()), flush=True)
        finally:
            owner.close()
    return rows


def print_patterns(rows: list[dict[str, float]]) -> None:
    """Medians over rounds and each variant's ratio to the reference."""
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    print(f"\nIO patterns, medians of {len(rows)} alternated rounds (seconds)")
    print(
        "| pattern | sim IO / sim | x ref | read IO | x ref | convert |\n|---|---|---|---|---|---|"
    )
    for name, label in (
        ("ref", "reference: 2 values per sim"),
        ("pickled", "simferry, pickled values"),
        ("raw", "simferry, RawArrays"),
        ("bundle", "simferry, --ddict-layout simulation"),
    ):
        sim, read = med[f"{name}_sim_io"], med[f"{name}_read_io"]
        print(
            f"| {label} | {sim:.4f} | {sim / med['ref_sim_io']:.2f} | {read:.3f} | "
            f"{read / med['ref_read_io']:.2f} | {med[f'{name}_convert']:.3f} |"
        )
    print(f"16-byte put / get latency: {med['tiny_put_ms']:.2f} / {med['tiny_get_ms']:.2f} ms")


def bandwidth(repeats: int) -> list[tuple[str, ...]]:
    """GB/s of put, batched put and get for ~2 MiB and ~20 MiB arrays, pickled and raw.

    Pickled is DDict's default (cloudpickle); raw is simferry's ``RawArrays``.
    Each figure is the best of ``repeats`` rounds; the variants alternate within a round.
    """
    from dragon.data.ddict import DDict

    from simferry.transports.ddict import RawArrays

    rows = []
    for grid, count in ((512, 64), (1620, 8)):  # 2.0 MiB and 20.0 MiB arrays
        array = np.random.default_rng(0).standard_normal((grid, grid))
        moved = array.nbytes * count
        dd = DDict(2, 1, int(4 * moved + 64 * MIB))
        raw = dd.pickler(value_pickler=RawArrays)
        try:
            for name, client in (("pickled", dd), ("raw", raw)):
                best = {"put": 1e9, "batch": 1e9, "get": 1e9}
                for _ in range(repeats):
                    # Batch first: DDict's batch put pickles whatever the client's pickler.
                    t0 = time.perf_counter()
                    client.start_batch_put()
                    for i in range(count):
                        client[f"a{i}"] = array
                    client.end_batch_put()
                    best["batch"] = min(best["batch"], time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for i in range(count):
                        client[f"a{i}"] = array
                    best["put"] = min(best["put"], time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for i in range(count):
                        got = client[f"a{i}"]
                    best["get"] = min(best["get"], time.perf_counter() - t0)
                    assert np.array_equal(got, array)
                label = f"{array.nbytes / MIB:.1f} MiB x {count}, {name}"
                rows.append(
                    (label, *(f"{moved / 1e9 / best[k]:.2f}" for k in ("put", "batch", "get")))
                )
        finally:
            dd.destroy()
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


def simferry_run(
    num_sims: int, grid: int, step_s: float, layout: str = "sample"
) -> dict[str, float]:
    from simferry.config import build
    from simferry.engine.run import execute
    from simferry.records import read_summary

    with tempfile.TemporaryDirectory() as tmp:
        cfg = build(
            {"num_sims": num_sims, "grid_size": grid, "step_seconds": step_s},
            {"name": "dragon"},
            {"name": "ddict", "ddict_layout": layout},
            runs_dir=Path(tmp),
        )
        t0 = time.perf_counter()
        summary = read_summary(execute(cfg))
        summary["with_teardown_s"] = time.perf_counter() - t0
    keys = (*KEYS, "with_teardown_s")
    return {k: float(summary[k]) for k in keys}


KEYS = ("sim_run_s", "sim_io_s", "train_run_s", "train_io_s", "train_convert_s", "wall_s")


def before_workflows(args: argparse.Namespace) -> None:
    """Parts 0-2: the IO patterns, then (unless ``--patterns``) the bandwidth tables."""
    print_patterns(patterns(args.num_sims, args.grid_size, args.rounds))
    if args.patterns:
        return
    print("\n| DDict array | put GB/s | batched put GB/s | get GB/s |\n|---|---|---|---|")
    for label, put, batch, get in bandwidth(args.repeats):
        print(f"| {label} | {put} | {batch} | {get} |")
    print("\n| simferry put_many | one put each GB/s | one batch GB/s |\n|---|---|---|")
    for label, plain, batched in pair_bandwidth(args.repeats):
        print(f"| {label} | {plain:.2f} | {batched:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="rounds of the IO patterns")
    p.add_argument("--patterns", action="store_true", help="only the IO patterns (part 0)")
    p.add_argument("--e2e-rounds", type=int, default=2, help="rounds of whole workflows")
    p.add_argument("--workflows", action="store_true", help="only the whole workflows (part 3)")
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    work = (args.num_sims, args.grid_size, args.step_seconds)
    runs: dict[str, list[dict[str, float]]] = {}
    if not args.workflows:
        before_workflows(args)
        if args.patterns:
            return
        runs["bare Dragon + DDict (a value per array)"] = [bare_run(*work)]
    # The reference's workflow beside simferry's, alternated round by round.
    sys.path.insert(0, str(Path(__file__).parent))
    import cloudpickle
    import reference

    cloudpickle.register_pickle_by_value(reference)  # Dragon's pool workers lack bench/
    for _ in range(args.e2e_rounds):
        for name, run in (
            ("reference Dragon + DDict", lambda: reference.run_ddict(*work, 1)),
            ("simferry, --ddict-layout sample", lambda: simferry_run(*work)),
            ("simferry, --ddict-layout simulation", lambda: simferry_run(*work, "simulation")),
        ):
            r = run()
            print(name, " ".join(f"{k}={v:.4f}" for k, v in r.items()), flush=True)
            runs.setdefault(name, []).append(r)
    ref = {k: float(np.median([r[k] for r in runs["reference Dragon + DDict"]])) for k in KEYS}
    print(
        f"\nnum_sims {args.num_sims}, grid {args.grid_size}, step {args.step_seconds} s, "
        f"medians of {args.e2e_rounds} alternated rounds (the bare run: once)"
    )
    print(
        "| | sim run / IO | sim IO x ref | train run / IO | train IO x ref | float32 "
        "conversion | wall |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        m = {k: float(np.median([r.get(k, np.nan) for r in rs])) for k in KEYS}
        print(
            f"| {name} | {m['sim_run_s']:.2f} / {m['sim_io_s']:.3f} | "
            f"{m['sim_io_s'] / ref['sim_io_s']:.2f} | {m['train_run_s']:.2f} / "
            f"{m['train_io_s']:.3f} | {m['train_io_s'] / ref['train_io_s']:.2f} | "
            f"{m['train_convert_s']:.3f} | {m['wall_s']:.2f} |"
        )
    print(
        "(train IO: gets and the weights' save; the float32 conversion is timed apart on "
        "both sides; the bare run's train IO is its gets only and it times no conversion)"
    )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
