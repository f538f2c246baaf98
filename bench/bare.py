"""The bare work, no simferry and no transport: the floor end-to-end runs are held to.

A process pool runs the simulations and returns their arrays; the main process then
trains each CNN in-process on a preallocated float32 buffer. Run as a script so its
wall time includes interpreter and torch start-up, like a ``simferry run`` command.
torch is imported while the simulations run (as simferry's local launcher warms its
trainers), so the floor is what a careful hand-written script achieves.

It prints one line of ``key=value`` pairs; ``train_peak_rss`` is the trainer's own peak
resident memory (float32 data, torch and the training steps, after the float64 results
were dropped), the baseline a simferry trainer's peak is compared with.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def one_simulation(args: tuple[int, int, int, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    from simferry.workload.simulation import simulate

    sim, num_sims, grid, step_seconds = args
    return [(s.input, s.target) for s in simulate(sim, num_sims, grid, step_seconds)]


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS count (Linux ``clear_refs``); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """Peak resident bytes since start or the last ``reset_peak_rss`` (VmHWM)."""
    status = Path("/proc/self/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) * 1024 if found else 0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--trainers", type=int, default=1)
    a = p.parse_args()
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
    bufs = []
    for _ in range(a.trainers):
        buf = SampleBuffer(count, a.grid_size)
        row = 0
        for sim in results:
            for inp, target in sim:
                buf.fill(row, inp, target)
                row += 1
        bufs.append(buf)
    del results, sim, inp, target
    gc.collect()
    measured = reset_peak_rss()
    for trainer, buf in enumerate(bufs):
        train_epoch(trainer, buf)
    t_train = time.perf_counter() - t1
    print(
        f"bare sim_s={t_sim:.2f} train_s={t_train:.2f} total_s={time.perf_counter() - t0:.2f} "
        f"train_peak_rss={peak_rss() if measured else 0}"
    )


if __name__ == "__main__":
    main()
