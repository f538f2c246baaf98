"""ProxyStore and ADIOS2 in real runs: every connector and engine, both modes, and faults.

Runs use the real ``simferry`` command; what a run may leave behind (processes, which
hold any port or server, files, /dev/shm) is measured as in the fault tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simferry import plugins

from .helpers import only_run_dir, simferry, summary
from .leaks import kill_session, shm_entries, start_cli, wait_gone

pytestmark = pytest.mark.integration

VARIANTS = [
    ("proxystore", "--proxystore-connector", "file"),
    ("proxystore", "--proxystore-connector", "redis"),
    ("proxystore", "--proxystore-connector", "zmq"),
    ("adios2", "--adios2-engine", "bp5"),
    ("adios2", "--adios2-engine", "sst"),
]
#: What every ADIOS2 SST run prints on stderr (its sockets cannot be limited to loopback).
SST_WARNING = "ADIOS2 SST's sockets listen on every interface"
SMALL = ["--num-sims", "3", "--grid-size", "32", "--step-seconds", "0", "--trainers", "2"]


def usable(transport: str, flag: str, value: str) -> None:
    cls = plugins.transports()[transport]
    reason = cls(name=transport, **{flag[2:].replace("-", "_"): value}).unavailable_reason()
    if reason:
        pytest.skip(reason)


def leftovers(run_dir: Path) -> list[str]:
    """Data the transport keeps under the run directory (it must remove all of it)."""
    return [p.name for p in run_dir.iterdir() if p.name in ("proxystore", "adios2", "data")]


@pytest.mark.parametrize("mode", ["phased", "streaming"])
@pytest.mark.parametrize(("transport", "flag", "value"), VARIANTS, ids=[v[2] for v in VARIANTS])
def test_run_verifies_every_sample_for_each_trainer(
    tmp_path: Path, transport: str, flag: str, value: str, mode: str
) -> None:
    usable(transport, flag, value)
    proc = start_cli(
        "run", "--transport", transport, flag, value, "--mode", mode, *SMALL, cwd=tmp_path
    )
    try:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert wait_gone(proc.pid) == [], "a server or writer outlived the run"
    finally:
        kill_session(proc.pid)
    run_dir = only_run_dir(tmp_path / "runs")
    s = summary(run_dir)
    assert s["status"] == "ok"
    assert s["verified_samples"] == {"0": 30, "1": 30}
    assert leftovers(run_dir) == []
    assert shm_entries(proc.pid) == set()
    # SST cannot be narrowed to loopback, so every SST run says so; nothing else does.
    assert (SST_WARNING in err) == (value == "sst"), err


BLOCK = "import sys; sys.modules.update(dict.fromkeys({mods!r})); from simferry.cli import main; "


def cli_without(mods: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``simferry ARGS`` where importing ``mods`` fails, as where they are not installed."""
    code = BLOCK.format(mods=mods) + f"sys.exit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("mods", "transport", "needle"),
    [
        (["adios2", "adios2.bindings"], "adios2", "ADIOS2 is not installed"),
        (["proxystore"], "proxystore", "ProxyStore is not installed"),
    ],
)
def test_missing_library_is_one_sentence_exit_2_and_a_skipped_compare_row(
    tmp_path: Path, mods: list[str], transport: str, needle: str
) -> None:
    proc = cli_without(mods, "run", "--transport", transport, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "pip install" in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()
    proc = cli_without(
        mods,
        "compare",
        "--transports",
        f"futures,{transport}",
        "--num-sims",
        "1",
        "--grid-size",
        "16",
        "--step-seconds",
        "0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert needle in proc.stderr and "skipping" in proc.stderr
    assert "Local + futures" in proc.stdout
    doctor = cli_without(mods, "doctor", cwd=tmp_path)
    assert needle in doctor.stdout


def test_doctor_reports_each_connector_and_engine(tmp_path: Path) -> None:
    out = simferry("doctor", cwd=tmp_path, check=True).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(" ")}
    for name in ("file", "redis", "zmq", "bp5", "sst"):
        assert name in lines, out


@pytest.mark.parametrize(("transport", "flag", "value"), VARIANTS, ids=[v[2] for v in VARIANTS])
def test_writer_killed_mid_step_fails_cleanly_leaving_nothing(
    tmp_path: Path, transport: str, flag: str, value: str
) -> None:
    """A simulation SIGKILLed right after writing step 4, with no retry: the run fails
    with one sentence, and no process (server, SST writer, port) nor file is left."""
    usable(transport, flag, value)
    proc = start_cli(
        "run", "--transport", transport, flag, value, "--retries", "0", *SMALL, "--quiet",
        cwd=tmp_path, env={"SIMFERRY_FAULT": "kill-sim:1:4"},
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        # One sentence of error; an SST run also says, once, that its sockets are open.
        errors = [line for line in err.strip().splitlines() if SST_WARNING not in line]
        assert "Traceback" not in err and len(errors) == 1, err
        assert wait_gone(proc.pid) == [], "a server or writer outlived the failed run"
    finally:
        kill_session(proc.pid)
    run_dir = only_run_dir(tmp_path / "runs")
    assert summary(run_dir)["status"] == "failed"
    assert leftovers(run_dir) == []
    assert shm_entries(proc.pid) == set()


@pytest.mark.parametrize("phase", ["simulations", "training"])
@pytest.mark.parametrize(("transport", "flag", "value"), VARIANTS, ids=[v[2] for v in VARIANTS])
def test_ctrl_c_stops_everything_and_removes_the_data(
    tmp_path: Path, transport: str, flag: str, value: str, phase: str
) -> None:
    usable(transport, flag, value)
    args = ["--num-sims", "6", "--grid-size", "96", "--step-seconds", "0.05", "--trainers", "2"]
    proc = start_cli("run", "--transport", transport, flag, value, *args, cwd=tmp_path)
    try:
        wait_for(proc, tmp_path / "runs", phase)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole group
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGINT, err
        assert "Traceback" not in err, err
        assert wait_gone(proc.pid) == [], "a server or writer outlived the interrupted run"
    finally:
        kill_session(proc.pid)
    run_dir = only_run_dir(tmp_path / "runs")
    assert summary(run_dir)["status"] == "interrupted"
    assert leftovers(run_dir) == []
    assert shm_entries(proc.pid) == set()


def wait_for(proc: subprocess.Popen[str], runs: Path, phase: str) -> None:
    """Until one simulation ended (simulations) or all six did (training)."""
    want = 1 if phase == "simulations" else 6
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        found = list(runs.glob("*/records.jsonl")) if runs.exists() else []
        lines = found[0].read_text().splitlines(keepends=True) if found else []
        sims = sum(1 for x in lines if x.endswith("\n") and json.loads(x)["kind"] == "sim")
        if sims >= want:
            if phase == "training":
                time.sleep(0.3)  # trainers are reading
            return
        time.sleep(0.01)
    raise AssertionError(f"the run never reached {phase}")


def test_compare_runs_each_connector_and_engine(tmp_path: Path) -> None:
    for transport, flag, value in VARIANTS:
        usable(transport, flag, value)
    tiny = ["--num-sims", "1", "--grid-size", "16", "--step-seconds", "0"]
    out = simferry("compare", "--transports", "proxystore,adios2", *tiny, cwd=tmp_path).stdout
    for label in ("ProxyStore (file)", "ProxyStore (redis)", "ProxyStore (zmq)"):
        assert f"| Local + {label} | 1 |" in out, out
    assert "| Local + ADIOS2 BP5 | 1 |" in out and "| Local + ADIOS2 SST | 1 |" in out, out
    # A flag that picks a variant runs that one only.
    one = simferry(
        "compare", "--transports", "adios2", "--adios2-engine", "sst", *tiny, cwd=tmp_path
    ).stdout
    assert "ADIOS2 SST" in one and "ADIOS2 BP5" not in one, one


def test_sweep_runs_each_engine(tmp_path: Path) -> None:
    usable("adios2", "--adios2-engine", "sst")
    out = tmp_path / "sweep"
    tiny = ["--num-sims", "1", "--grid-size", "16", "--step-seconds", "0"]
    simferry("sweep", "--transports", "adios2", *tiny, "--out", str(out), cwd=tmp_path, check=True)
    found = sorted(json.loads(p.read_text())["implementation"] for p in out.glob("*/summary.json"))
    assert found == ["Local + ADIOS2 BP5", "Local + ADIOS2 SST"]


def test_zmq_server_is_loopback_only_and_refused_across_nodes(tmp_path: Path) -> None:
    """ProxyStore's ZeroMQ server has no authentication: it must never be reachable
    from another host, so it binds 127.0.0.1 and a run on several nodes is refused."""
    usable("proxystore", "--proxystore-connector", "zmq")
    import psutil

    from simferry.errors import UsageError
    from simferry.transports.base import RunContext
    from simferry.transports.proxystore import ProxyStoreConfig

    cfg = ProxyStoreConfig(name="proxystore", proxystore_connector="zmq")
    with pytest.raises(UsageError, match="loopback only"):
        cfg.check(RunContext(tmp_path, "zmq2", 2**20, nodes=2, hosts=("a", "b")))
    owner = cfg.start(RunContext(tmp_path, "zmq1", 2**20))
    server = owner._owned  # type: ignore[attr-defined]
    try:
        conns = psutil.Process(server.pid).net_connections("inet")
        listening = [c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN]
        assert listening and all(ip == "127.0.0.1" for ip in listening), listening
    finally:
        owner.close()
    assert server.poll() is not None, "the ZeroMQ server must stop with the run"
