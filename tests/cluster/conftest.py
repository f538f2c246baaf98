"""The emulated Slurm cluster, brought up once for these tests, and what every cluster test checks.

Every test here is marked ``cluster``. Without root or the Slurm/munge packages they skip
with that reason. After each test, every node must be back to what the cluster itself
runs -- no job, no stray process, an empty private ``/dev/shm`` -- and the test's files
may hold only what the run directory keeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .emulated import LOGIN, Cluster, unavailable_reason

#: Processes the cluster itself keeps on each kind of node (matched on the command line).
DAEMONS = {
    "login": {"sleep", "munged", "slurmctld", "slurmscriptd"},
    "node": {"sleep", "slurmd"},
}
#: Tiny runs: the point is where tasks run and what is left, not how fast.
TINY = ["--num-sims", "4", "--grid-size", "32", "--step-seconds", "0"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """The cluster, up while this package's tests run and down before any other test.

    Its namespace holders (one per node, login included) are this process's children:
    a session-wide cluster would still hold them when later tests count the children a
    run left behind (the soak test found these three).
    """
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    size = int(os.environ.get("SIMFERRY_CLUSTER_NODES", "2"))
    top = Path(tempfile.mkdtemp(prefix="simferry-cluster-"))
    top.chmod(0o755)  # munged runs as the munge user and must reach its directory
    root = top / "state"
    c = Cluster(root=root, size=size)
    try:
        c.up()
        yield c
    finally:
        c.down()
        top.rmdir()


def program(cmd: str) -> str:
    """The program's name in a command line (slurmctld's helper shows as ': slurmscriptd')."""
    first = cmd.lstrip(": ").split(" ")[0]
    return Path(first).name


def strays(cluster: Cluster) -> dict[str, list[tuple[int, str]]]:
    """Processes on each node that the cluster itself does not run."""
    found = {}
    for node in cluster.all_nodes():
        keep = DAEMONS["login" if node.name == LOGIN else "node"]
        extra = [
            (pid, cmd) for pid, cmd in cluster.processes(node.name) if program(cmd) not in keep
        ]
        if extra:
            found[node.name] = extra
    return found


def leftovers(cluster: Cluster) -> dict[str, Any]:
    """What a test left on the cluster: jobs, stray processes, /dev/shm entries."""
    left: dict[str, Any] = {}
    jobs = cluster.run(["squeue", "-h", "-o", "%i %j %T"], check=False).stdout.strip()
    if jobs:
        left["jobs"] = jobs.splitlines()
    if procs := strays(cluster):
        left["processes"] = procs
    for node in cluster.all_nodes():
        if shm := cluster.shm(node.name):
            left[f"{node.name} /dev/shm"] = shm
    return left


@pytest.fixture
def on_cluster(cluster: Cluster, tmp_path: Path) -> Iterator[Cluster]:
    """The cluster, checked before and after the test: nothing left on any node."""
    cluster.wait_idle(timeout=60)
    yield cluster
    deadline = time.monotonic() + 45  # scancel'd jobs and their steps take a few seconds
    while (left := leftovers(cluster)) and time.monotonic() < deadline:
        time.sleep(1)
    if left:
        clean(cluster)
    assert not left, f"the test left this on the cluster: {left}"


def clean(cluster: Cluster) -> None:
    """After a failed check, so that the next test starts from a clean cluster."""
    cluster.run(["scancel", "--user", "root"], check=False)
    for procs in strays(cluster).values():
        for pid, _ in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for node in cluster.all_nodes():
        cluster.run(["sh", "-c", "rm -rf /dev/shm/* /dev/shm/.[!.]*"], node=node.name, check=False)


def simferry(
    cluster: Cluster, *args: str, cwd: Path, timeout: float = 300, node: str = LOGIN
) -> Any:
    """``simferry ARGS`` run on ``node`` (the login node by default), as a user there would."""
    return cluster.run(
        [sys.executable, "-m", "simferry", *args], node=node, cwd=cwd, timeout=timeout, check=False
    )


def run_dirs(where: Path) -> list[Path]:
    return sorted(p.parent for p in where.rglob("summary.json"))


def summary(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "summary.json").read_text()))


def hosts(run_dir: Path, kind: str | None = None) -> set[str]:
    recs = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines()]
    return {r["host"] for r in recs if kind is None or r["kind"] == kind}


def assert_verified(run_dir: Path) -> None:
    """The run succeeded and every trainer verified every sample."""
    s = summary(run_dir)
    assert s["status"] == "ok", s
    verified = s["verified_samples"]
    assert verified and set(verified.values()) == {s["samples_expected"]}, s


def assert_no_data_left(data_dir: Path) -> None:
    """The samples a run wrote are gone from the shared file system."""
    left = sorted(data_dir.glob("simferry-*")) if data_dir.exists() else []
    assert not left, f"data left in {data_dir}: {left}"
