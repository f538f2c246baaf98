"""Faults of a node during a two-node run: each ends in a retry or one sentence, nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import assert_verified, run_dirs, summary
from .emulated import PARTITION, Cluster

SLURM = ["--launcher", "parsl", "--provider", "slurm", "--nodes", "2", "--queue", PARTITION]
#: Long enough to act mid-run: 4 simulations of 10 one-second steps, two per node.
SLOW = ["--num-sims", "4", "--grid-size", "32", "--step-seconds", "1", "--transport", "filesystem"]


def start(cluster: Cluster, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    return cluster.popen(
        [sys.executable, "-m", "simferry", "run", *SLURM, *SLOW, *extra],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def sims_pool(cluster: Cluster, node: str, timeout: float = 90) -> list[int]:
    """The simulation executor's worker-pool manager on ``node`` (not its keeper), once up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [
            pid
            for pid, cmd in cluster.processes(node)
            if "-m parsl.executors.high_throughput.process_worker_pool" in cmd
            and "simferry.launchers.pool" not in cmd
            and "/sims " in cmd + " "
        ]
        if pids:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"no simulation pool on {node} after {timeout:.0f} s")


def mid_run(cwd: Path, timeout: float = 120) -> None:
    """Until the simulations have written their first samples (all run at once)."""
    deadline = time.monotonic() + timeout
    while not any(p.is_file() for p in cwd.glob("runs/*/data/**/*")):
        assert time.monotonic() < deadline, "the simulations never started"
        time.sleep(0.2)


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_a_killed_worker_pool_on_node2_is_retried_or_named(
    on_cluster: Cluster, tmp_path: Path
) -> None:
    proc = start(on_cluster, tmp_path, "--retries", "2")
    pools = sims_pool(on_cluster, "node2")
    mid_run(tmp_path)
    for pid in pools:
        os.kill(pid, signal.SIGKILL)
    code, _out, err = finish(proc)
    print(f"outcome: exit {code}; {err.strip()[-300:]}")
    if code == 0:
        [run] = run_dirs(tmp_path / "runs")
        assert_verified(run)
        assert summary(run)["retried_tasks"], summary(run)
    else:
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "node2" in err, err


def test_node2_slurmd_stopped_mid_run(on_cluster: Cluster, tmp_path: Path) -> None:
    proc = start(on_cluster, tmp_path, "--retries", "2")
    sims_pool(on_cluster, "node2")
    mid_run(tmp_path)
    slurmd = [pid for pid, cmd in on_cluster.processes("node2") if cmd.startswith("slurmd")]
    assert slurmd
    try:
        for pid in slurmd:
            os.kill(pid, signal.SIGTERM)
        code, _out, err = finish(proc)
        print(f"outcome: exit {code}; {err.strip()[-300:]}")
    finally:
        on_cluster.run(["slurmd", "-f", str(on_cluster.conf), "-N", "node2"], node="node2")
        on_cluster.run(["scontrol", "update", "nodename=node2", "state=resume"], check=False)
    if code == 0:
        [run] = run_dirs(tmp_path / "runs")
        assert_verified(run)
    else:
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "node2" in err, err


def test_ctrl_c_of_a_two_node_run(on_cluster: Cluster, tmp_path: Path) -> None:
    proc = start(on_cluster, tmp_path)
    sims_pool(on_cluster, "node2")
    mid_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    code, _out, err = finish(proc, timeout=120)
    assert code == 130, (code, err)
    assert "Traceback" not in err
