"""Where pass-by-value's bytes are held: per-process memory of a run's tree over time.

Runs ``simferry run`` (arguments after ``--``), samples every process of the tree and
Parsl's detached pools (found by the run directory in their command line) every 0.1 s,
and prints, at the moment the tree's summed PSS peaks, each process's role, RSS, USS and
PSS -- and each role's own peak. Usage:

    python bench/results/futures/profile_tree.py -- --launcher parsl --transport futures \
        --num-sims 8 --grid-size 512
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time

import psutil

MB = 1e6


def role(p: psutil.Process, cmd: list[str]) -> str:
    line = " ".join(cmd)
    if "interchange" in line:
        return "interchange"
    parent = p.parent()
    pcmd = " ".join(parent.cmdline()) if parent else ""
    if "process_worker_pool" in line:
        return "pool-worker" if "process_worker_pool" in pcmd else "pool-manager"
    if "simferry" in line and " run" in line:
        return "main"
    if "process_worker_pool" in pcmd and "multiprocessing-fork" in line:
        # The pool's workers and its multiprocessing.Manager server, told apart by the
        # pipe handle spawn gives them (the Manager starts first).
        return "pool-child:" + line.rsplit("pipe_handle=", 1)[-1].split(")")[0]
    if "process_worker_pool" in pcmd:
        return "pool-helper"
    if "simferry" in pcmd and " run" in pcmd:
        return "main-child:" + " ".join(cmd)[-40:]
    return "other:" + " ".join(cmd)[-40:]


def main() -> None:
    args = sys.argv[sys.argv.index("--") + 1 :]
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "simferry", "run", "--quiet", *args, "--runs-dir", runs]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd)
        top = psutil.Process(proc.pid)
        best: tuple[float, float, list] = (0.0, 0.0, [])
        role_peak: dict[str, float] = {}
        done = threading.Event()

        def sample() -> None:
            nonlocal best
            while not done.is_set():
                procs = {top.pid: top}
                with contextlib.suppress(psutil.NoSuchProcess):
                    procs.update({c.pid: c for c in top.children(recursive=True)})
                for p in psutil.process_iter(["cmdline"]):
                    if any(runs in a for a in p.info["cmdline"] or ()):
                        procs.setdefault(p.pid, p)
                        with contextlib.suppress(psutil.NoSuchProcess):
                            procs.update({c.pid: c for c in p.children(recursive=True)})
                rows = []
                for p in procs.values():
                    try:
                        info = p.memory_full_info()
                        r = role(p, p.cmdline())
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                    rows.append((r, p.pid, info.rss / MB, info.uss / MB, info.pss / MB))
                total = sum(x[4] for x in rows)
                byrole: dict[str, float] = {}
                for r, *_, pss in rows:
                    byrole[r] = byrole.get(r, 0) + pss
                for r, v in byrole.items():
                    role_peak[r] = max(role_peak.get(r, 0), v)
                if total > best[0]:
                    best = (total, time.perf_counter() - t0, rows)
                done.wait(0.1)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = proc.wait()
        done.set()
        th.join()
        total, at, rows = best
        print(
            f"rc={rc} wall={time.perf_counter() - t0:.1f}s peak tree PSS {total:.0f} MB at {at:.1f}s"
        )
        print(f"{'role':16} {'pid':>8} {'RSS':>8} {'USS':>8} {'PSS':>8}  (MB)")
        for r, pid, rss, uss, pss in sorted(rows, key=lambda x: -x[4]):
            print(f"{r:16} {pid:8d} {rss:8.0f} {uss:8.0f} {pss:8.0f}")
        print("each role's own peak PSS (summed over its processes):")
        for r, v in sorted(role_peak.items(), key=lambda x: -x[1]):
            print(f"  {r:16} {v:8.0f}")


if __name__ == "__main__":
    main()
