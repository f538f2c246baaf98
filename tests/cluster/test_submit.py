"""``simferry submit`` really submitted with sbatch: the job runs, its results land, report reads them."""

from __future__ import annotations

import re
import time
from pathlib import Path

from .conftest import TINY, assert_verified, hosts, run_dirs, simferry
from .emulated import Cluster


def submit_and_wait(cluster: Cluster, cwd: Path, *command: str, timeout: float = 420) -> Path:
    """Submit ``command`` on 2 nodes; wait for the job to end; its directory."""
    args = ["submit", "--scheduler", "slurm", "--nodes", "2", "--runs-dir", str(cwd / "jobs")]
    proc = simferry(cluster, *args, "--", *command, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"submitted job (\d+); script and results in (\S+)", proc.stdout)
    assert found, proc.stdout
    job_id, job_dir = found.group(1), Path(found.group(2))
    deadline = time.monotonic() + timeout
    while cluster.run(["squeue", "-h", "-j", job_id], check=False).stdout.strip():
        assert time.monotonic() < deadline, f"job {job_id} still running after {timeout:.0f} s"
        time.sleep(2)
    out = (job_dir / f"job-{job_id}.out").read_text()
    state = cluster.run(["scontrol", "show", "job", job_id], check=False).stdout
    assert "JobState=COMPLETED" in state or "Invalid job id" in state or not state, state + out
    return job_dir


def measured(job_dir: Path) -> list[Path]:
    """The job's measured runs (not its warm-up)."""
    return [r for r in run_dirs(job_dir) if "warmup" not in r.parts]


def test_submit_run(on_cluster: Cluster, tmp_path: Path) -> None:
    job = submit_and_wait(on_cluster, tmp_path, "run", "--transport", "filesystem", *TINY)
    [run] = measured(job)
    assert_verified(run)
    assert hosts(run, "sim") == {"node1", "node2"}
    report = simferry(on_cluster, "report", str(run), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Parsl + file system" in report.stdout


def test_submit_compare(on_cluster: Cluster, tmp_path: Path) -> None:
    job = submit_and_wait(
        on_cluster, tmp_path, "compare", "--transports", "futures,filesystem,shm", *TINY
    )
    runs = measured(job)
    assert sorted(r.name.rsplit("-", 1)[-1] for r in runs) == ["filesystem", "futures"]
    for run in runs:
        assert_verified(run)
        assert hosts(run, "sim") == {"node1", "node2"}
    [table] = list(job.rglob("table.md"))
    # Shared memory cannot span two nodes: a skipped row with its reason, not a failure.
    text = table.read_text()
    assert "shared memory" in text.lower() and "skipped" in text.lower(), text


def test_submit_sweep(on_cluster: Cluster, tmp_path: Path) -> None:
    job = submit_and_wait(
        on_cluster, tmp_path, "sweep", "--nodes", "1,2", "--transports", "filesystem", *TINY
    )
    runs = measured(job)
    assert len(runs) == 2
    spread = sorted(len(hosts(r, "sim")) for r in runs)
    assert spread == [1, 2], spread
    for run in runs:
        assert_verified(run)
    report = simferry(
        on_cluster, "report", *map(str, runs), "--out", str(tmp_path / "rep"), cwd=tmp_path
    )
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "rep" / "table.md").exists()
