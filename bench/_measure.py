"""Run a command and measure its wall time, CPU time and the peak memory of its process tree.

CPU time (user + system of the command and every descendant it waited for) hardly
changes when other work shares the machine, unlike wall time, so it shows what a run
itself costs even on a busy machine.
"""

from __future__ import annotations

import resource
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
    cpu_s: float = 0.0


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _marked(marker: str, seen: set[int]) -> list[psutil.Process]:
    """Processes outside the tree whose command line names ``marker``, with their children
    (Parsl's worker pools are started detached, so they are not children of the run; their
    workers are spawned by multiprocessing, whose command lines do not name it)."""
    out: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid not in seen and any(marker in a for a in p.info["cmdline"] or ()):
            out[p.pid] = p
            out.update((c.pid, c) for c in _tree(p)[1:] if c.pid not in seen)
    return list(out.values())


def measure(
    cmd: list[str],
    period: float = 0.1,
    marker: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Measured:
    """Wall time of ``cmd`` and the peak summed PSS / RSS of its process tree.

    With ``marker``, processes whose command line contains it count too.
    """
    peaks = {"pss": 0, "rss": 0}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    ps = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            pss = rss = 0
            procs = _tree(ps)
            if marker:
                procs += _marked(marker, {p.pid for p in procs})
            for p in procs:
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Measured(wall, peaks["pss"], peaks["rss"], proc.returncode, out, err, cpu)
