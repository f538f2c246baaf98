"""The bare work, no simferry and no transport: the floor end-to-end runs are held to.

A process pool runs the simulations and returns their arrays; the main process then
trains each CNN in-process on a preallocated float32 buffer. Run as a script so its
wall time includes interpreter and torch start-up, like a ``simferry run`` command.
torch is imported while the simulations run (as simferry's local launcher warms its
trainers), so the floor is what a careful hand-written script achieves.

``--trainer-only`` measures the floor of a trainer's memory instead: a fresh process that
imports torch, computes the samples straight into the float32 buffer and trains; its
peak RSS (``train_peak_rss``) is what any trainer needs before a data path adds anything.
It prints one line of ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np


def one_simulation(args: tuple[int, int, int, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    from simferry.workload.simulation import simulate

    sim, num_sims, grid, step_seconds = args
    return [(s.input, s.target) for s in simulate(sim, num_sims, grid, step_seconds)]


def trainer_only(num_sims: int, grid_size: int) -> None:
    from simferry.workload.simulation import STEPS, simulate
    from simferry.workload.training import SampleBuffer, set_threads, train_epoch

    set_threads(1)
    buf = SampleBuffer(num_sims * STEPS, grid_size)
    row = 0
    for sim in range(num_sims):
        for s in simulate(sim, num_sims, grid_size, 0):
            buf.fill(row, s.input, s.target)
            row += 1
    t0 = time.perf_counter()
    train_epoch(0, buf)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"bare-trainer train_s={time.perf_counter() - t0:.2f} train_peak_rss={peak}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--trainers", type=int, default=1)
    p.add_argument("--trainer-only", action="store_true", help="measure one trainer's memory")
    a = p.parse_args()
    if a.trainer_only:
        trainer_only(a.num_sims, a.grid_size)
        return
    t0 = time.perf_counter()
    workers = min(a.num_sims, len(os.sched_getaffinity(0)))
    jobs = [(k, a.num_sims, a.grid_size, a.step_seconds) for k in range(a.num_sims)]
    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(one_simulation, job) for job in jobs]  # forks the workers
        from simferry.workload.training import SampleBuffer, set_threads, train_epoch

        set_threads(1)
        results = [f.result() for f in futures]
    t_sim = time.perf_counter() - t0

    t1 = time.perf_counter()
    count = sum(len(r) for r in results)
    for trainer in range(a.trainers):
        buf = SampleBuffer(count, a.grid_size)
        row = 0
        for sim in results:
            for inp, target in sim:
                buf.fill(row, inp, target)
                row += 1
        train_epoch(trainer, buf)
    t_train = time.perf_counter() - t1
    print(f"bare sim_s={t_sim:.2f} train_s={t_train:.2f} total_s={time.perf_counter() - t0:.2f}")


if __name__ == "__main__":
    main()
