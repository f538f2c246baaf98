"""Parsl's Slurm provider from the login node: Parsl submits the worker pools with sbatch."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import TINY, assert_no_data_left, assert_verified, hosts, run_dirs, simferry
from .emulated import PARTITION, Cluster

SLURM = ["--launcher", "parsl", "--provider", "slurm", "--nodes", "2", "--queue", PARTITION]


@pytest.mark.parametrize("transport", ["futures", "filesystem", "redis"])
def test_two_nodes_from_the_login_node(on_cluster: Cluster, tmp_path: Path, transport: str) -> None:
    extra = ["--data-dir", str(tmp_path / "shared")] if transport == "filesystem" else []
    proc = simferry(
        on_cluster, "run", *SLURM, "--transport", transport, *TINY, *extra, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run] = run_dirs(tmp_path / "runs")
    assert_verified(run)
    # Simulations were spread over both compute nodes; nothing ran on the login node.
    assert hosts(run, "sim") == {"node1", "node2"}
    assert hosts(run) <= {"node1", "node2"}
    assert_no_data_left(tmp_path / "shared")


@pytest.mark.parametrize("nodes", ["1", "2"])
def test_shared_memory_is_refused_up_front_from_the_login_node(
    on_cluster: Cluster, tmp_path: Path, nodes: str
) -> None:
    """Even at one node: each executor is its own job, and the two may get different nodes."""
    args = [*SLURM[:-3], nodes, *SLURM[-2:]]
    proc = simferry(on_cluster, "run", *args, "--transport", "shm", *TINY, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "node-local" in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists() or not run_dirs(tmp_path / "runs")
