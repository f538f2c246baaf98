"""Does an idle Dragon runtime slow training down? (It was seen using about one core.)

``.venv/bin/python bench/dragon_idle.py`` times the same one-epoch training (simferry's
CNN, trainer 0, random data) in this process with no runtime and with a runtime up that
does nothing, bare or holding a DDict and an idle pool (``HEADS``), and measures the CPU
each runtime's processes use. On a shared machine other programs' load swamps that
comparison, so ``.venv/bin/dragon bench/dragon_idle.py --orchestrator`` isolates the one
busy process, the DDict's orchestrator: it shares a core with a one-thread trainer and is
paused, running, or running at nice 19, in shuffled order, round after round.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


#: The runtime's head process: nothing, or what a simferry run keeps up while training
#: (a DDict with two managers and an idle pool of two simulation workers).
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
}


def start_idle_runtime(code: str) -> subprocess.Popen[bytes]:
    from simferry.launchers.common import dragon_executable
    from simferry.launchers.dragon import launch_flags

    exe = dragon_executable()
    if exe is None:
        sys.exit("dragonhpc is not installed; pip install dragonhpc")
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [str(exe), *launch_flags([]), "--", sys.executable, "-c", code],
        env=env,
        stdout=subprocess.DEVNULL,
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


def orchestrator_effect(samples: int, grid: int, rounds: int) -> None:
    """Under ``dragon``: training beside a DDict whose orchestrator is paused, niced or not.

    Short trainings alternate between the three states, with the trainer and the
    orchestrator pinned to the same core, so load from other programs falls on all three
    alike; the paused orchestrator (SIGSTOP) is the baseline.
    """
    import tempfile

    from simferry.transports.ddict import create

    def siblings() -> dict[int, float]:
        return {p.pid: p.create_time() for p in psutil.Process(os.getppid()).children()}

    before = siblings()
    dd = create(2, 1, 64 * 2**20, Path(tempfile.gettempdir()))
    new = {pid: t for pid, t in siblings().items() if pid not in before}
    orc = psutil.Process(min(new, key=lambda pid: new[pid]))  # started first, then managers
    core = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {core})
    orc.cpu_affinity([core])
    states = {
        "orchestrator paused": lambda: orc.suspend(),
        "orchestrator running": lambda: (orc.resume(), orc.nice(0)),
        "orchestrator running at nice 19": lambda: (orc.resume(), orc.nice(19)),
    }
    times: dict[str, list[float]] = {name: [] for name in states}
    try:
        train_seconds(8, grid, 1)
        order = list(states)
        for _ in range(rounds):
            random.shuffle(order)  # no state always follows another
            for name in order:
                states[name]()
                time.sleep(0.5)
                times[name].append(train_seconds(samples, grid, 1))
    finally:
        orc.resume()
        dd.destroy()
    print(f"one trainer thread and the orchestrator on core {core}, {rounds} rounds:")
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name}: median {statistics.median(values):.2f} s ({shown})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=80)
    p.add_argument("--grid-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--orchestrator", action="store_true", help="run under dragon: orchestrator_effect"
    )
    args = p.parse_args()
    if args.orchestrator:
        print(f"load average at start: {os.getloadavg()[0]:.1f}")
        orchestrator_effect(args.samples // 4, args.grid_size, max(5, args.repeats))
        print(f"load average at end: {os.getloadavg()[0]:.1f}")
        return
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
