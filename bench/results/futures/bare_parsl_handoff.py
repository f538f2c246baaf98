"""How long Parsl alone takes to hand a task 0.34 GB of arguments, without simferry.

One HighThroughputExecutor on this machine (one worker), one app that returns when it
starts; its argument is 8 bytes objects of 42 MB (8 x 512 simulations' blobs). Prints
submit -> start (the hand-off simferry counts as a by-value trainer's transfer) and
submit -> result, each repeat, then medians. Usage:

    PATH=$VIRTUAL_ENV/bin:$PATH python bench/results/futures/bare_parsl_handoff.py \
        [--repeat 3] [--mb 335.5]

(Parsl starts its interchange and pools by script name, from PATH.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider


@parsl.python_app
def started(blobs: list[bytes]) -> float:
    import time

    return time.time()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--mb", type=float, default=335.5)
    a = p.parse_args()
    each = int(a.mb * 1e6 / 8)
    with tempfile.TemporaryDirectory() as run_dir:
        ex = HighThroughputExecutor(
            label="t", address="127.0.0.1", max_workers_per_node=1, prefetch_capacity=0,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        )  # fmt: skip
        dfk = parsl.load(Config(executors=[ex], run_dir=run_dir, usage_tracking=0))
        try:
            started([]).result()  # the pool is up and the worker warm
            starts, totals = [], []
            for i in range(a.repeat):
                blobs = [bytes([i]) * each for _ in range(8)]
                t0 = time.time()
                t_start = started(blobs).result()
                totals.append(time.time() - t0)
                starts.append(t_start - t0)
                del blobs
                print(
                    f"repeat {i}: submit->start {starts[-1]:.2f} s, submit->result {totals[-1]:.2f} s"
                )
            print(
                f"median submit->start {statistics.median(starts):.2f} s, "
                f"submit->result {statistics.median(totals):.2f} s for {8 * each / 1e6:.1f} MB"
            )
        finally:
            dfk.cleanup()
            parsl.clear()


if __name__ == "__main__":
    main()
