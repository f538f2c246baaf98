"""The Parsl launcher with a real local HighThroughputExecutor: runs, nodes, shutdown.

Every simferry started here carries a marker in its environment; Parsl's interchanges
and worker pools inherit it, which is how the tests find them (and only them, while
other work on the machine may run Parsl too) to prove none outlives its run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from simferry.launchers.parsl import PARSL_PROCESSES

from ..helpers import only_run_dir, records, summary

pytestmark = pytest.mark.integration

SMALL = ["--num-sims", "4", "--grid-size", "32", "--step-seconds", "0", "--quiet"]
#: The same, with the tables printed (``--quiet`` prints nothing but errors).
SHOWN = SMALL[:-1]
MARK = "SIMFERRY_TEST_MARK"


def marked(mark: str) -> list[psutil.Process]:
    """Live processes (not zombies) whose environment carries ``mark``."""
    found = []
    for p in psutil.process_iter():
        try:
            mine = p.pid != os.getpid() and p.environ().get(MARK) == mark
            if mine and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # exited meanwhile
        return ""


def parsl_survivors(mark: str, wait: float = 5.0) -> list[str]:
    """Parsl processes of this test still alive after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        left = []
        for p in marked(mark):
            cmd = cmdline(p)
            if any(name in cmd for name in PARSL_PROCESSES):
                left.append(cmd[:120])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def start(args: list[str], cwd: Path, mark: str) -> subprocess.Popen[str]:
    env = {**os.environ, MARK: mark}
    return subprocess.Popen(
        [sys.executable, "-m", "simferry", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so the test can Ctrl-C it like a terminal would
    )


def run(args: list[str], cwd: Path, mark: str, timeout: float = 240) -> tuple[str, str]:
    proc = start(args, cwd, mark)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"simferry {' '.join(args)} failed:\n{out}\n{err}"
    return out, err


def test_compare_prints_parsl_rows_and_leaves_no_process(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    out, _ = run(
        ["compare", "--launcher", "parsl", "--transports", "futures,filesystem,shm", *SHOWN],
        tmp_path,
        mark,
    )
    for label in ("Parsl + futures", "Parsl + file system", "Parsl + shared memory"):
        assert label in out
    (cmp_dir,) = (tmp_path / "runs").iterdir()
    runs = sorted(p for p in cmp_dir.iterdir() if (p / "summary.json").exists())
    assert sorted(r.name.split("-parsl-")[-1] for r in runs) == ["filesystem", "futures", "shm"]
    for r in runs:
        s = summary(r)
        assert s["status"] == "ok", s
        assert s["verified_samples"] == {"0": 40}
        assert s["launcher_startup_s"] > 0
        # Parsl's runinfo lives in the run directory, never in the current one.
        assert (r / "parsl" / "000" / "parsl.log").exists()
        workers = {rec["pid"] for rec in records(r)}
        assert os.getpid() not in workers
    assert not (tmp_path / "runinfo").exists()
    assert parsl_survivors(mark) == []


def test_two_local_nodes_run_one_pool_each(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    run(
        [
            *["run", "--launcher", "parsl", "--nodes", "2", "--sim-workers", "2"],
            *["--trainers", "2", "--transport", "filesystem", *SMALL],
        ],
        tmp_path,
        mark,
    )
    r = only_run_dir(tmp_path / "runs")
    s = summary(r)
    assert (s["status"], s["nodes"], s["sim_workers"], s["trainers"]) == ("ok", 2, 2, 2)
    assert s["verified_samples"] == {"0": 40, "1": 40}
    scripts = sorted(p.name for p in (r / "parsl" / "000" / "submit_scripts").glob("*.sh"))
    assert len([n for n in scripts if n.startswith("parsl.sims.block-")]) == 2
    assert len([n for n in scripts if n.startswith("parsl.trainers.block-")]) == 2
    # One worker per block: the simulations ran in two different pools.
    assert len({rec["pid"] for rec in records(r) if rec["kind"] == "sim"}) == 2
    assert parsl_survivors(mark) == []


def test_ctrl_c_stops_every_parsl_process(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    args = ["run", "--launcher", "parsl", "--transport", "filesystem"]
    args += ["--num-sims", "2", "--grid-size", "16", "--step-seconds", "5", "--quiet"]
    proc = start(args, tmp_path, mark)
    try:
        # Wait until the simulations are running inside Parsl's worker pools.
        deadline = time.monotonic() + 120
        while not any("process_worker_pool" in cmdline(p) for p in marked(mark)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "Parsl's worker pools never started"
            time.sleep(0.2)
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to its foreground group
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "simferry: Interrupted by SIGINT; workers stopped and temporary data removed."
    ]
    s = summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "interrupted"
    assert parsl_survivors(mark) == []


def boom(message: str) -> None:
    from simferry.errors import RunFailure

    raise RunFailure(message)


def test_task_errors_arrive_as_themselves_and_shutdown_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simferry.errors import RunFailure
    from simferry.launchers.parsl import ParslConfig

    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK, mark)
    launcher = ParslConfig().start(num_sims=2, trainers=1, run_dir=tmp_path)
    try:
        assert launcher.startup_s > 0
        assert launcher.submit("sim", sum, [1, 2, 3]).result(timeout=60) == 6
        fut = launcher.submit("train", boom, "trainer 0 exploded.")
        with pytest.raises(RunFailure, match="trainer 0 exploded"):
            fut.result(timeout=60)
        assert parsl_survivors(mark, wait=0)  # the pools are really there...
    finally:
        launcher.shutdown(cancel=True)
    assert parsl_survivors(mark) == []  # ...and gone after shutdown
    launcher.shutdown()  # a second shutdown is harmless
