"""The reference's data paths, emulated, to measure simferry's beside them on one machine.

The reference scripts (ALCF ai-science-training-series, 03-Coupling-Sim-AI) move data in
two ways, reproduced here as they are written there:

- ``futures``: each simulation task returns two Python lists of ten float64 arrays; the
  main process extends two big lists and passes both, by value, to every trainer task,
  which stacks them (``np.array``) and converts (``torch.from_numpy(...).float()``).
- ``filesystem``: each simulation ``np.save``s its stacked inputs and its stacked targets
  as one file each after its last step; each trainer ``np.load``s every file, copies it
  (``np.array``), converts it to a float32 tensor, and ``torch.cat``s the lists.
- ``ddict`` (run it under Dragon: ``dragon -s bench/reference.py ddict``): a DDict with 2
  managers (sized from the data, not half the node's memory); a Dragon pool of simulations
  (``min(cores, sims)`` workers, the DDict handed over by the pool initializer) each puts
  its ten inputs and its ten targets as two Python lists after its last step (16 puts for
  8 simulations); one trainer (a pool of one: no GPUs here) iterates the DDict's keys and
  gets each list (16 gets), its IO timed around the get only, as there; the float32
  conversion is timed apart (``train_convert_s``); the weights are put back into the DDict.

Only the data path is the reference's: workers, torch warm-up, the simulation and the
training loop are simferry's own (process pools forked like ``--launcher local``, torch
imported while simulations run, ``train_epoch``), so a difference in whole wall time is
a difference in moving the data. Two reference bugs are not reproduced: files are named
by simulation index, not ``int(period)`` (which collides at 64 simulations), and inputs
are paired with their own targets. The weights are saved like the reference (torch.save
into the data directory), which is counted as training IO as there.

Prints one line of ``key=value`` pairs (the same measures ``simferry run`` records).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from typing import Any

import numpy as np


def sim_futures(sim: int, num_sims: int, grid: int, step_s: float) -> tuple[Any, ...]:
    from simferry.workload.simulation import simulate

    inputs, outputs = [], []
    for s in simulate(sim, num_sims, grid, step_s):
        inputs.append(s.input)
        outputs.append(s.target)
    return inputs, outputs, 0.0, time.time()


def sim_filesystem(sim: int, num_sims: int, grid: int, step_s: float, data: str) -> tuple:
    from simferry.workload.simulation import simulate

    inputs, outputs = [], []
    for s in simulate(sim, num_sims, grid, step_s):
        inputs.append(s.input)
        outputs.append(s.target)
    t0 = time.perf_counter()
    np.save(f"{data}/inputs_{sim:06d}.npy", inputs)
    np.save(f"{data}/outputs_{sim:06d}.npy", outputs)
    return None, None, time.perf_counter() - t0, time.time()


class Tensors:
    """What ``train_epoch`` reads: ``inputs`` and ``targets`` as float32 (N, 1, H, W)."""

    def __init__(self, inputs: Any, targets: Any) -> None:
        self.inputs = inputs
        self.targets = targets


def warm() -> int:
    from simferry.workload.training import set_threads

    set_threads(1)
    return os.getpid()


def trainer(
    trainer: int, data: str, input_list: list | None, output_list: list | None, submitted: float
) -> tuple[float, float, float, int, float]:
    """One reference trainer: returns (start, io_s, end, peak RSS bytes, convert_s).

    ``io_s`` is what simferry's trainers count as IO (reading the data, the hand-off for
    pass-by-value, and saving the weights); ``convert_s`` is the reference's ``np.array``
    + ``.float()`` (+ ``torch.cat``), timed apart as simferry times its float32 conversion.
    """
    import torch

    from simferry.workload.training import train_epoch

    start = time.time()
    io_s = max(0.0, start - submitted) if input_list is not None else 0.0
    if input_list is not None:
        t0 = time.perf_counter()
        inputs = torch.from_numpy(np.array(input_list)).unsqueeze(1).float()
        targets = torch.from_numpy(np.array(output_list)).unsqueeze(1).float()
        convert_s = time.perf_counter() - t0
    else:
        files = sorted(os.listdir(data))
        reads = ((n, partial(np.load, f"{data}/{n}", allow_pickle=False)) for n in files)
        inputs, targets, read_s, convert_s = read_lists(reads)
        io_s += read_s
    result = train_epoch(trainer, Tensors(inputs, targets))
    t0 = time.perf_counter()
    torch.save(result.model.state_dict(), f"{data}/model_{trainer}.pt")
    io_s += time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return start, io_s, time.time(), peak, convert_s


def read_lists(reads: Iterable[tuple[str, Callable[[], Any]]]) -> tuple[Any, Any, float, float]:
    """The reference trainers' loop over stored lists: (inputs, targets, read s, convert s).

    Each named list (``inputs_*`` or ``outputs_*``) is read, timed as IO, then stacked into
    a float32 tensor, timed as conversion, as is the final concatenation; the file
    system and DDict trainers differ only in how a list is read.
    """
    import torch

    ins, outs = [], []
    read_s = convert_s = 0.0
    for name, read in reads:
        t0 = time.perf_counter()
        arrays = read()
        t1 = time.perf_counter()
        tensor = torch.from_numpy(np.array(arrays)).unsqueeze(1).float()
        (ins if name.startswith("inputs") else outs).append(tensor)
        read_s += t1 - t0
        convert_s += time.perf_counter() - t1
    t0 = time.perf_counter()
    inputs, targets = torch.cat(ins, dim=0), torch.cat(outs, dim=0)
    convert_s += time.perf_counter() - t0
    return inputs, targets, read_s, convert_s


def ddict_setup(dd: Any) -> None:
    import multiprocessing as mp

    me = mp.current_process()
    me.stash = {"ddict": dd}  # type: ignore[attr-defined]


def ddict_simulation(sim: int, num_sims: int, grid: int, step_s: float) -> float:
    import multiprocessing as mp

    from simferry.workload.simulation import simulate

    dd = mp.current_process().stash["ddict"]  # type: ignore[attr-defined]
    inputs, outputs = [], []
    for s in simulate(sim, num_sims, grid, step_s):
        inputs.append(s.input)
        outputs.append(s.target)
    t0 = time.perf_counter()
    dd[f"inputs_{sim}"] = inputs
    dd[f"outputs_{sim}"] = outputs
    return time.perf_counter() - t0


def ddict_trainer(trainer: int) -> tuple[float, float, int]:
    """One reference trainer on the DDict: (get seconds, conversion seconds, peak RSS)."""
    import multiprocessing as mp

    from simferry.workload.training import set_threads, train_epoch

    set_threads(1)
    dd = mp.current_process().stash["ddict"]  # type: ignore[attr-defined]
    reads = (
        (key, partial(dd.__getitem__, key))
        for key in dd.keys()  # noqa: SIM118 -- as the reference iterates
        if isinstance(key, str) and key.startswith(("inputs", "outputs"))
    )
    inputs, targets, io_s, convert_s = read_lists(reads)
    result = train_epoch(trainer, Tensors(inputs, targets))
    t0 = time.perf_counter()
    dd[f"model_{trainer}"] = result.model.state_dict()
    io_s += time.perf_counter() - t0
    return io_s, convert_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_ddict(num_sims: int, grid: int, step_s: float, trainers: int) -> dict[str, float]:
    """The reference's Dragon + DDict workflow; must run inside the Dragon runtime."""
    from dragon.data.ddict import DDict
    from dragon.native.machine import System, current
    from dragon.native.pool import Pool

    from simferry.records import dataset_bytes
    from simferry.transports.ddict import manager_bytes

    t_start = time.perf_counter()
    dd = DDict(2, 1, 2 * manager_bytes(dataset_bytes(num_sims, grid), 2))
    try:
        workers = min(current().num_cpus * System().nnodes, num_sims)
        t0 = time.perf_counter()
        pool = Pool(workers, initializer=ddict_setup, initargs=(dd,))
        args = [(k, num_sims, grid, step_s) for k in range(num_sims)]
        sim_io = [r.get() for r in [pool.apply_async(ddict_simulation, a) for a in args]]
        pool.close()
        pool.join()
        sim_run = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool = Pool(trainers, initializer=ddict_setup, initargs=(dd,))
        outs = [r.get() for r in [pool.apply_async(ddict_trainer, (i,)) for i in range(trainers)]]
        pool.close()
        pool.join()
        train_run = time.perf_counter() - t0
    finally:
        dd.destroy()
    return {
        "sim_run_s": sim_run,
        "sim_io_s": float(np.mean(sim_io)),
        "train_run_s": train_run,
        "train_io_s": float(np.mean([o[0] for o in outs])),
        "train_convert_s": float(np.mean([o[1] for o in outs])),
        "trainer_rss": max(o[2] for o in outs),
        "wall_s": time.perf_counter() - t_start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("transport", choices=["futures", "filesystem", "ddict"])
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--trainers", type=int, default=1)
    a = p.parse_args()
    if a.transport == "ddict":
        r = run_ddict(a.num_sims, a.grid_size, a.step_seconds, a.trainers)
        print("reference " + " ".join(f"{k}={v:.4f}" for k, v in r.items()))
        return
    t_start = time.perf_counter()
    by_value = a.transport == "futures"
    data = tempfile.mkdtemp(prefix="reference-", dir=os.environ.get("TMPDIR"))
    ctx = get_context("fork")
    workers = min(a.num_sims, len(os.sched_getaffinity(0)))
    try:
        with (
            ProcessPoolExecutor(workers, mp_context=ctx) as sims,
            ProcessPoolExecutor(a.trainers, mp_context=ctx) as trainers,
        ):
            startup = time.perf_counter() - t_start
            warming = [trainers.submit(warm) for _ in range(a.trainers)]
            t0 = time.time()
            futures = []
            for k in range(a.num_sims):
                args = (k, a.num_sims, a.grid_size, a.step_seconds)
                fn = sim_futures if by_value else sim_filesystem
                futures.append(sims.submit(fn, *args, *(() if by_value else (data,))))
            input_list: list = []
            output_list: list = []
            sim_io = []
            for fut in futures:
                inputs, outputs, io_s, end = fut.result()
                # Pass-by-value IO is the hand-off: task end -> result here (as simferry).
                sim_io.append(io_s + (max(0.0, time.time() - end) if by_value else 0.0))
                if by_value:
                    input_list.extend(inputs)
                    output_list.extend(outputs)
            sim_run = time.time() - t0
            for w in warming:
                w.result()
            t1 = time.time()
            lists = (input_list, output_list) if by_value else (None, None)
            done = [
                trainers.submit(trainer, i, data, *lists, time.time()) for i in range(a.trainers)
            ]
            outs = [f.result() for f in done]
            train_run = time.time() - t1
    finally:
        shutil.rmtree(data, ignore_errors=True)
    print(
        f"reference sim_run_s={sim_run:.3f} sim_io_s={np.mean(sim_io):.4f} "
        f"train_run_s={train_run:.3f} train_io_s={np.mean([o[1] for o in outs]):.4f} "
        f"train_convert_s={np.mean([o[4] for o in outs]):.4f} "
        f"startup_s={startup:.3f} trainer_rss={max(o[3] for o in outs)} "
        f"wall_s={time.perf_counter() - t_start:.3f}"
    )


if __name__ == "__main__":
    main()
