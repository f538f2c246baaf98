"""Run a command and measure its wall time and the peak memory of its process tree."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measured:
    wall_s: float
    peak_pss: int
    peak_rss: int
    returncode: int
    stdout: str
    stderr: str


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def measure(cmd: list[str], period: float = 0.1) -> Measured:
    """Wall time of ``cmd`` and the peak summed PSS / RSS of its process tree."""
    peaks = {"pss": 0, "rss": 0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pss = rss = 0
            for p in _tree(ps):
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                pss += info.pss
                rss += info.rss
            peaks["pss"] = max(peaks["pss"], pss)
            peaks["rss"] = max(peaks["rss"], rss)
            done.wait(period)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    return Measured(wall, peaks["pss"], peaks["rss"], proc.returncode, out, err)
