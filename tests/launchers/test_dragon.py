"""The DragonHPC launcher for real: runs typed in a plain shell, failures, Ctrl-C, leftovers.

Each simferry starts in its own session, as a terminal would start it. Dragon's processes
leave that process group (its local services call ``setpgid``) but not the session, which
is how these tests find them to prove that none outlives its run. Dragon names its shared
memory ``D...`` in /dev/shm; none may remain either.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from simferry.cli import main
from simferry.launchers import common as dragon_runtime
from simferry.launchers import dragon

from ..helpers import only_run_dir, records, summary
from ..leaks import SHM, kill_session, session_processes, start_cli, wait_gone

needs_dragon = pytest.mark.skipif(
    dragon_runtime.missing_reason() is not None or dragon_runtime.in_runtime(),
    reason=dragon_runtime.missing_reason() or "starts its own Dragon runtime",
)
SMALL = ["--num-sims", "4", "--grid-size", "32", "--step-seconds", "0", "--quiet"]
#: The same, with the tables printed (``--quiet`` prints nothing but errors).
SHOWN = SMALL[:-1]


class ShmWatch:
    """Dragon's /dev/shm entries mapped by one session's processes, sampled while it runs.

    Other Dragon runs on the machine (another ``compare``) have entries too; only those
    this run's processes mapped are this run's to free.
    """

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.3):
            for proc in session_processes(self.sid):
                with contextlib.suppress(OSError):
                    maps = Path(f"/proc/{proc.pid}/maps").read_text()
                    self.seen |= set(re.findall(r"/dev/shm/(D[^\s/]+)", maps))

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join()
        return self.seen


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[str, str, set[str]]:
    watch = ShmWatch(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid)
        seen = watch.stop()
    return out, err, seen


def assert_nothing_left(sid: int, seen: set[str], cwd: Path) -> None:
    assert seen, "the run's Dragon shared memory was never seen: the check would prove nothing"
    assert wait_gone(sid, timeout=15) == [], "a Dragon process outlived the run"
    deadline = time.monotonic() + 10
    while (left := {n for n in seen if (SHM / n).exists()}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == set(), "Dragon shared memory left in /dev/shm"
    assert list(cwd.rglob("ddict_orc_*")) == [], "the DDict orchestrator left its file"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = start_cli(*args, cwd=cwd, env=env)
    out, err, seen = finish(proc)
    assert_nothing_left(proc.pid, seen, cwd)
    return proc.returncode, out, err


@pytest.mark.integration
@needs_dragon
def test_filesystem_run_typed_in_a_plain_shell(tmp_path: Path) -> None:
    args = ["run", "--launcher", "dragon", "--transport", "filesystem", *SHOWN]
    code, out, err = run_cli(*args, cwd=tmp_path)
    assert code == 0, err
    assert "DragonHPC + file system" in out
    assert "40 samples verified by each of 1 trainer(s)" in out
    assert "+++ head proc" not in out, "the dragon launcher's own notes are filtered"
    run = only_run_dir(tmp_path / "runs")
    assert summary(run)["status"] == "ok"
    assert not (run / "data").exists(), "sample data is freed at the end of the run"


@pytest.mark.integration
@needs_dragon
def test_compare_with_the_local_launcher_includes_the_dragon_ddict_row(tmp_path: Path) -> None:
    args = ["compare", "--transports", "futures,ddict", "--trainers", "2", *SHOWN]
    code, out, err = run_cli(*args, cwd=tmp_path)
    assert code == 0, err
    assert "Local + futures" in out and "DragonHPC + DDict" in out
    (cmp_dir,) = (tmp_path / "runs").iterdir()
    runs = sorted(p for p in cmp_dir.iterdir() if (p / "summary.json").exists())
    assert sorted(r.name.split("Z-")[-1] for r in runs) == ["dragon-ddict", "local-futures"]
    assert all(summary(r)["status"] == "ok" for r in runs)
    ddict = next(r for r in runs if r.name.endswith("-dragon-ddict"))
    s = summary(ddict)
    assert (s["launcher"], s["transport"], s["trainers"]) == ("dragon", "ddict", 2)
    assert s["verified_samples"] == {"0": 40, "1": 40}
    # Start-up includes booting the runtime, measured from the parent simferry.
    assert s["launcher_startup_s"] > 0.5
    sims = [r for r in records(ddict) if r["kind"] == "sim"]
    assert sorted(r["index"] for r in sims) == [0, 1, 2, 3]
    assert all(r["bytes"] == 10 * 2 * 32 * 32 * 8 and r["io_s"] > 0 for r in sims)
    assert sorted(p.name for p in (ddict / "weights").iterdir()) == [
        "trainer-000.npy",
        "trainer-001.npy",
    ]


@pytest.mark.integration
@needs_dragon
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("raise-sim:1:2", "Simulation 1 failed: injected failure raise-sim:1:2"),
        # Killed on every attempt: retried once (the default), then named.
        ("kill-sim:1:2", "Simulation 1 failed after 2 attempt(s): a worker process died"),
    ],
)
def test_a_failing_simulation_stops_everything(tmp_path: Path, fault: str, message: str) -> None:
    args = ["run", "--launcher", "dragon", "--transport", "ddict", *SMALL]
    code, _, err = run_cli(*args, cwd=tmp_path, env={"SIMFERRY_FAULT": fault})
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"simferry: error: {message}"), err
    s = summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "failed" and message in s["error"]


@pytest.mark.integration
@needs_dragon
@pytest.mark.parametrize("mode", ["phased", "streaming"])
def test_killed_workers_are_retried_and_nothing_is_lost(tmp_path: Path, mode: str) -> None:
    # SIGKILL once a simulation worker (after step 2 of simulation 1) and once the trainer
    # (after its 17th sample), as the OOM killer would; Dragon restarts both processes.
    # Streaming: the retried simulation publishes again, the retried trainer starts over,
    # and the run checks that each sample was still trained on exactly once.
    once = tmp_path / "fired"
    once.mkdir()
    fault = f"kill-sim:1:2@{once / 'sim'},kill-train:0:17@{once / 'train'}"
    args = ["run", "--launcher", "dragon", "--transport", "ddict", "--mode", mode, *SHOWN]
    code, out, err = run_cli(*args, cwd=tmp_path, env={"SIMFERRY_FAULT": fault})
    assert code == 0, err
    assert sorted(p.name for p in once.iterdir()) == ["sim", "train"], "a fault never fired"
    assert "40 samples verified by each of 1 trainer(s)" in out
    run = only_run_dir(tmp_path / "runs")
    s = summary(run)
    assert s["status"] == "ok" and s["verified_samples"] == {"0": 40}
    assert sorted(s["retried_tasks"]) == ["sim 1", "train 0"]
    assert not (run / ".workers").exists(), "the task notes are removed with the run"


@pytest.mark.integration
@needs_dragon
def test_a_worker_killed_before_it_noted_its_task_is_retried(tmp_path: Path) -> None:
    # The worker taking task token 1 (simulation 1) dies before writing its note, so no
    # note names the task; Dragon restarts the worker and would never fail the task.
    marker = tmp_path / "fired"
    args = ["run", "--launcher", "dragon", "--transport", "ddict", *SMALL]
    fault = {"SIMFERRY_FAULT": f"kill-take:1:0@{marker}"}
    code, _, err = run_cli(*args, cwd=tmp_path, env=fault)
    assert code == 0, err
    assert marker.exists(), "the fault never fired"
    s = summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "ok" and s["verified_samples"] == {"0": 40}
    assert s["retried_tasks"] == ["sim 1"]


@pytest.mark.integration
@needs_dragon
def test_sweep_over_the_dragon_launcher_typed_in_a_plain_shell(tmp_path: Path) -> None:
    args = ["sweep", "--launchers", "dragon", "--transports", "ddict", "--repeat", "2"]
    code, out, err = run_cli(*args, *SHOWN, "--out", "sw", cwd=tmp_path)
    assert code == 0, err
    assert "| DragonHPC + DDict | 1 |" in out, out
    # Both repeats are one row (the wide table counts its runs).
    table = (tmp_path / "sw" / "table.md").read_text().splitlines()
    row = next(r for r in table if r.startswith("| DragonHPC + DDict |"))  # the main table
    assert row.endswith("| 2 |"), row
    runs = [p for p in (tmp_path / "sw").iterdir() if (p / "summary.json").exists()]
    assert len(runs) == 2 and all(summary(r)["status"] == "ok" for r in runs)
    assert all(summary(r)["launcher_startup_s"] > 0.5 for r in runs), "runtime boot is start-up"


def wait_until_started(proc: subprocess.Popen[str], runs: Path) -> None:
    """Return once the run's pools are up and simulations start (environment.json)."""
    deadline = time.monotonic() + 180
    while not list(runs.glob("*/environment.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the Dragon run never started"
        time.sleep(0.2)


def ddict_managers(sid: int, clients: int) -> list[int]:
    """Pids of the DDict managers in session ``sid``: each maps its own pool, and only it.

    Clients attach to a manager's pool on first use, so a client that has touched one
    manager so far looks like a manager. The pools are told apart once ``clients``
    processes map every pool and each pool has exactly one process mapping it alone.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pools: dict[int, set[str]] = {}
        for proc in session_processes(sid):
            with contextlib.suppress(OSError):
                maps = Path(f"/proc/{proc.pid}/maps").read_text()
                pools[proc.pid] = set(re.findall(r"/dev/shm/(DDD\S+)D$", maps, re.M))
        every = set().union(*pools.values()) if pools else set()
        alone = {pid: p for pid, p in pools.items() if len(p) == 1}
        settled = sorted(name for p in alone.values() for name in p) == sorted(every)
        if len(every) > 1 and settled and sum(p == every for p in pools.values()) >= clients:
            return list(alone)
        time.sleep(0.2)
    raise AssertionError("the DDict managers were never told apart from their clients")


@pytest.mark.integration
@needs_dragon
def test_a_killed_ddict_manager_fails_the_run_cleanly(tmp_path: Path) -> None:
    args = ["run", "--launcher", "dragon", "--transport", "ddict", "--num-sims", "2"]
    proc = start_cli(*args, "--grid-size", "16", "--step-seconds", "1", "--quiet", cwd=tmp_path)
    watch = ShmWatch(proc.pid)
    try:
        wait_until_started(proc, tmp_path / "runs")
        managers = ddict_managers(proc.pid, clients=3)  # the host and both simulation workers
        assert len(managers) == 2, "expected the default two managers on one node"
        os.kill(managers[0], signal.SIGKILL)  # as the out-of-memory killer would
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        # Found by the workflow's check, not by a put's 60 s DDict timeout.
        assert time.monotonic() - killed < 45, "the dead manager was not noticed"
    finally:
        kill_session(proc.pid)
        seen = watch.stop()
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simferry: error: A DDict process died ("), err
    assert "killed by signal 9" in lines[0] and "samples it held are lost" in lines[0]
    s = summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "failed" and "A DDict process died" in s["error"]
    assert_nothing_left(proc.pid, seen, tmp_path)


@pytest.mark.integration
@needs_dragon
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_the_run_and_the_runtime(tmp_path: Path, signum: int) -> None:
    args = ["run", "--launcher", "dragon", "--transport", "ddict", "--num-sims", "2"]
    proc = start_cli(*args, "--grid-size", "16", "--step-seconds", "3", "--quiet", cwd=tmp_path)
    watch = ShmWatch(proc.pid)
    try:
        wait_until_started(proc, tmp_path / "runs")
        time.sleep(2)
        os.killpg(proc.pid, signum)  # what a terminal sends on Ctrl-C, or a batch system
        _, err = proc.communicate(timeout=120)
    finally:
        kill_session(proc.pid)
        seen = watch.stop()
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1] == (
        f"simferry: Interrupted by {signal.Signals(signum).name}; workers stopped and "
        "temporary data removed."
    )
    assert summary(only_run_dir(tmp_path / "runs"))["status"] == "interrupted"
    assert_nothing_left(proc.pid, seen, tmp_path)


@pytest.mark.integration
@needs_dragon
def test_a_runtime_that_cannot_start_is_one_sentence_and_leaves_nothing(tmp_path: Path) -> None:
    # A default pool larger than any /dev/shm: Dragon's local services fail and its
    # launcher then waits forever; simferry stops it after SIMFERRY_DRAGON_START_S.
    env = {"DRAGON_DEFAULT_SEG_SZ": str(2**50), "SIMFERRY_DRAGON_START_S": "10"}
    args = ["run", "--launcher", "dragon", "--transport", "ddict", *SMALL]
    code, _, err = run_cli(*args, cwd=tmp_path, env=env)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("simferry: error: The Dragon runtime did not start within 10 s")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.integration
@needs_dragon
def test_ddict_demo_typed_in_a_plain_shell(tmp_path: Path) -> None:
    code, out, err = run_cli("ddict-demo", "--workers", "2", "--repeats", "3", cwd=tmp_path)
    assert code == 0, err
    for w in (0, 1):
        assert f"Hello from the toy function in worker {w} " in out
    assert "keys: array/0, array/1, input, output/0, output/1" in out
    assert "get 2 MiB array" in out and "GB/s" in out
    assert "DDict destroyed" in out
    assert list(tmp_path.iterdir()) == [], "the demo writes nothing to the current directory"


def test_dragon_output_keeps_the_run_and_drops_the_launchers_notes() -> None:
    lines = [
        "| table |\n",
        "+++ head proc exited, code 0\n",
        "warning: 3 leftover files in /dev/shm: \n",
        "sem.mp-abc\n",
        "simferry-1234-99\n",
        "DD0123def0D\n",
        "run directory: runs/x\n",
    ]
    assert list(dragon.dragon_output(lines)) == ["| table |\n", "run directory: runs/x\n"]


def test_without_dragonhpc_run_and_demo_say_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dragon_runtime, "dragon_installed", lambda: False)
    assert "pip install dragonhpc" in (dragon.DragonConfig().unavailable_reason() or "")
    for argv in (["run", "--launcher", "dragon", *SMALL], ["ddict-demo"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "dragonhpc is not installed" in err[0], err
        assert "pip install dragonhpc" in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_compare_without_dragonhpc_skips_the_row_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dragon_runtime, "dragon_installed", lambda: False)
    assert main(["compare", "--transports", "futures,ddict", *SHOWN]) == 0
    captured = capsys.readouterr()
    assert "skipping DragonHPC + DDict: dragonhpc is not installed" in captured.err
    assert "Local + futures" in captured.out


def test_dragon_objects_outside_the_runtime_are_refused(tmp_path: Path) -> None:
    from simferry.transports.base import RunContext
    from simferry.transports.ddict import DDictConfig
    from simferry.transports.exceptions import TransportUnavailableError

    if dragon_runtime.in_runtime():
        pytest.skip("inside a Dragon runtime")
    with pytest.raises(TransportUnavailableError, match="needs the Dragon runtime"):
        DDictConfig().start(RunContext(tmp_path, "t", 2**20))
    with pytest.raises(TransportUnavailableError, match="needs the Dragon runtime"):
        dragon.DragonConfig().start(1, None, tmp_path)


# --- a login node: a workload manager's client, no allocation ---------------------------

in_a_job = pytest.mark.skipif(
    any(job in os.environ for _, _, job in dragon.WORKLOAD_MANAGERS),
    reason="runs inside a batch job, where Dragon uses the allocation",
)


def fake_client(bin_dir: Path, name: str = "srun") -> Path:
    """A workload manager's client that is never meant to run: Dragon only looks for it."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\necho 'fake client: not for use' >&2\nexit 1\n")
    path.chmod(0o755)
    return path


@in_a_job
def test_a_client_without_an_allocation_is_a_login_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(dragon.SINGLE_NODE_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    (tmp_path / "bin").mkdir()
    assert dragon.login_node() is None
    assert dragon.launch_flags(["-t", "tcp"]) == ["-t", "tcp"]
    fake_client(tmp_path / "bin", "qstat")
    assert dragon.login_node() == "PBS (qstat)"
    fake_client(tmp_path / "bin", "srun")
    assert dragon.login_node() == "Slurm (srun)"
    assert dragon.launch_flags([]) == ["--single-node-override"]
    assert dragon.launch_flags(["-t", "tcp"]) == ["--single-node-override", "-t", "tcp"]
    for chosen in (["--wlm", "slurm"], ["--wlm=slurm"], ["-m"], ["-s"]):
        assert dragon.launch_flags(chosen) == chosen, "the user's own launch mode is kept"
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert dragon.login_node() is None, "inside a job Dragon runs on its nodes"


def test_dragons_own_reason_is_quoted() -> None:
    import io

    traceback = (
        "Traceback (most recent call last):\n"
        '  File "dragon", line 8, in <module>\n'
        "RuntimeError: Dragon detected one or more workload managers, however, no active "
        "job allocations were found.\n"
    )
    held = dragon.HeldStderr(io.StringIO(traceback))
    held.join(5)
    assert held.reason() == (
        "Dragon detected one or more workload managers, however, no active job "
        "allocations were found."
    )
    held = dragon.HeldStderr(io.StringIO("usage: dragon [-h]\ndragon: error: bad flag -q\n"))
    held.join(5)
    assert held.reason() == "bad flag -q"


def test_dragon_args_that_do_not_split_are_refused() -> None:
    from simferry.config import build
    from simferry.errors import UsageError

    with pytest.raises(UsageError, match="cannot be split like a shell line"):
        build({}, {"name": "dragon", "dragon_args": "-t 'tcp"}, {"name": "filesystem"})


@pytest.mark.integration
@needs_dragon
@in_a_job
def test_on_a_login_node_dragon_starts_on_this_node(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_client(bin_dir)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    os.environ.pop(dragon.SINGLE_NODE_ENV, None)
    args = ["run", "--launcher", "dragon", "--transport", "filesystem", *SMALL]
    code, _, err = run_cli(*args, "--dragon-args", "-t tcp", cwd=tmp_path, env=env)
    assert code == 0, err
    assert summary(only_run_dir(tmp_path / "runs"))["status"] == "ok"
    doctor = subprocess.run(
        [sys.executable, "-m", "simferry", "doctor"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert "Slurm (srun) client without an allocation" in doctor.stdout
    assert doctor.returncode == 0, doctor.stderr


@pytest.mark.integration
@needs_dragon
@in_a_job
def test_when_dragon_refuses_its_reason_is_shown_in_one_sentence(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    fake_client(bin_dir)
    # The user turned the override off: Dragon refuses, and says why.
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", dragon.SINGLE_NODE_ENV: "false"}
    args = ["run", "--launcher", "dragon", "--transport", "filesystem", *SMALL]
    proc = start_cli(*args, cwd=tmp_path, env=env)
    _, err = proc.communicate(timeout=120)
    kill_session(proc.pid)
    assert proc.returncode == 2, err
    assert "no active job allocations were found" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
