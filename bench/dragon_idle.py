"""Does an idle Dragon runtime slow training down? (It was seen using about one core.)

Run with the plain interpreter: ``.venv/bin/python bench/dragon_idle.py``. It times the
same one-epoch training (simferry's CNN, trainer 0, random data) in this process with no
runtime and with a runtime up that does nothing, in three forms (see ``HEADS``), and
measures the CPU each runtime's processes use meanwhile. Runs without a runtime are
interleaved with the others; on a machine others use too, compare the medians and say
what the load was.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

import psutil


def train_seconds(samples: int, grid: int, threads: int) -> float:
    import torch

    from simferry.workload import training

    torch.set_num_threads(threads)
    buf = training.SampleBuffer(samples, grid)
    buf.inputs.normal_()
    buf.targets.normal_()
    t0 = time.perf_counter()
    training.train_epoch(0, buf, seed=0)
    return time.perf_counter() - t0


#: The runtime's head process: nothing; what a simferry run keeps up while training (a
#: DDict with two managers and an idle pool of two simulation workers); and that again
#: with simferry's mitigation (its DDict orchestrator, which polls, at the lowest priority).
HEADS = {
    "idle runtime up": "import time; time.sleep(3600)",
    "runtime + DDict + idle pool up": (
        "from dragon.data.ddict import DDict\n"
        "from dragon.native.pool import Pool\n"
        "import os, time\n"
        "d = DDict(2, 1, 64 * 2**20)\n"
        "p = Pool(2)\n"
        "p.apply_async(os.getpid).get()\n"
        "try:\n"
        "    time.sleep(3600)\n"
        "finally:\n"
        "    p.terminate(); p.join(); d.destroy()\n"
    ),
    "the same, orchestrator at nice 19 (simferry)": (
        "from simferry.transports.ddict import create\n"
        "from dragon.native.pool import Pool\n"
        "import os, time, tempfile\n"
        "from pathlib import Path\n"
        "d = create(2, 1, 64 * 2**20, Path(tempfile.gettempdir()))\n"
        "p = Pool(2)\n"
        "p.apply_async(os.getpid).get()\n"
        "try:\n"
        "    time.sleep(3600)\n"
        "finally:\n"
        "    p.terminate(); p.join(); d.destroy()\n"
    ),
}


def start_idle_runtime(code: str) -> subprocess.Popen[bytes]:
    from simferry.launchers.dragon import dragon_executable

    exe = dragon_executable()
    if exe is None:
        sys.exit("dragonhpc is not installed; pip install dragonhpc")
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [str(exe), "--", sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not [c for c in tree(proc.pid) if "time.sleep(3600)" in " ".join(c.cmdline())]:
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit("the Dragon runtime did not start")
        time.sleep(0.2)
    time.sleep(8)  # let start-up settle (the pool and the DDict come up after the head)
    return proc


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def idle_cores(pid: int, seconds: float) -> float:
    procs = tree(pid)
    before = cpu_seconds(procs)
    time.sleep(seconds)
    return (cpu_seconds(procs) - before) / seconds


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End the sleeping script; the runtime then shuts itself down."""
    for child in tree(proc.pid)[1:]:
        if "time.sleep(3600)" in " ".join(child.cmdline()):
            child.send_signal(signal.SIGINT)
    proc.wait(timeout=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=80)
    p.add_argument("--grid-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    threads = len(os.sched_getaffinity(0))
    work = (args.samples, args.grid_size, threads)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {threads} cores")
    train_seconds(8, args.grid_size, threads)  # imports and first-use costs
    times: dict[str, list[float]] = {"no runtime": []}
    cores: dict[str, float] = {}
    for name, code in HEADS.items():
        times["no runtime"] += [train_seconds(*work) for _ in range(args.repeats)]
        proc = start_idle_runtime(code)
        try:
            cores[name] = idle_cores(proc.pid, 10)
            times[name] = [train_seconds(*work) for _ in range(args.repeats)]
        finally:
            stop(proc)
    times["no runtime"] += [train_seconds(*work) for _ in range(args.repeats)]
    for name, used in cores.items():
        print(f"{name}: its processes use {used:.2f} cores while idle (over 10 s)")
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"train {args.samples} x {args.grid_size}^2, {name}: median "
            f"{statistics.median(values):.2f} s ({shown})"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
