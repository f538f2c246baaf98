"""Faults injected into real runs: killed workers, writers killed mid-write, full storage.

Workers are killed with SIGKILL through the test-only hook ``SIMFERRY_FAULT`` (see
``simferry.faults.fault_point``); storage fills up on a small tmpfs mounted for the test.
Every outcome must be "recovered" or "clean failure" (one sentence, nothing left behind),
never lost or partial data.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch  # noqa: F401  -- forked workers inherit it: ~1 s runs instead of ~3 s

from simferry import plugins
from simferry.config import build
from simferry.engine.run import execute
from simferry.errors import RunFailure
from simferry.records import read_records, read_summary
from simferry.transports.base import RunContext, SampleKey, TransportConfig
from simferry.transports.exceptions import KeyNotFoundError, TransportError

from .conformance.conftest import FACTORIES, skip_if_not_applicable
from .helpers import only_run_dir
from .leaks import (
    kill_session,
    local_transports,
    our_children,
    shm_entries,
    start_cli,
    wait_gone,
)

pytestmark = pytest.mark.integration

SMALL = {"num_sims": 4, "grid_size": 16, "step_seconds": 0}


def run(tmp_path: Path, transport: str, **workload: object) -> Path:
    cfg = build({**SMALL, **workload}, {"name": "local"}, {"name": transport})
    return execute(cfg, parent=tmp_path / "runs")


def children() -> set[int]:
    return {p.pid for p in our_children()}


@pytest.fixture
def fault(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Set ``SIMFERRY_FAULT``; returns the marker path of a fire-once fault."""

    def set_fault(point: str, once: bool = True) -> Path:
        marker = tmp_path / f"fired-{point.replace(':', '-')}"
        monkeypatch.setenv("SIMFERRY_FAULT", f"{point}@{marker}" if once else point)
        return marker

    return set_fault


@pytest.mark.parametrize("transport", local_transports())
@pytest.mark.parametrize("point", ["kill-sim:1:4", "kill-train:0:17"])
def test_killed_worker_is_retried_and_no_sample_is_lost(
    tmp_path: Path, transport: str, point: str, fault
) -> None:
    before_shm, before_children = shm_entries(), children()
    marker = fault(point)
    run_dir = run(tmp_path, transport)
    assert marker.exists(), "the fault never fired"
    s = read_summary(run_dir)
    assert s["status"] == "ok"
    assert s["verified_samples"] == {"0": 40}
    kind, index = point.split(":")[0].removeprefix("kill-"), int(point.split(":")[1])
    # Only the task whose worker died is charged; those queued beside it ran again free.
    assert s["retried_tasks"] == [f"{kind} {index}"]
    assert s["worker_restarts"] >= 1
    recs = read_records(run_dir)
    # Each task recorded once (its successful attempt), the retried one as attempt 2.
    assert sorted((r["kind"], r["index"]) for r in recs) == [("sim", i) for i in range(4)] + [
        ("train", 0)
    ]
    assert next(r for r in recs if (r["kind"], r["index"]) == (kind, index))["attempt"] == 2
    assert shm_entries() == before_shm
    assert children() <= before_children


@pytest.mark.parametrize(
    ("transport", "point"),
    [*[pytest.param(*p.values, "kill-sim:1:4", marks=p.marks, id=p.id) for p in local_transports()],
     ("filesystem", "kill-train:0:17")],
)  # fmt: skip
def test_streaming_run_recovers_a_killed_worker(
    tmp_path: Path, transport: str, point: str, fault
) -> None:
    marker = fault(point)
    run_dir = run(tmp_path, transport, mode="streaming")
    assert marker.exists(), "the fault never fired"
    s = read_summary(run_dir)
    assert s["status"] == "ok" and s["verified_samples"] == {"0": 40}
    kind, index = point.split(":")[0].removeprefix("kill-"), int(point.split(":")[1])
    recs = read_records(run_dir)
    assert any(r["attempt"] == 2 for r in recs if (r["kind"], r["index"]) == (kind, index))


def test_worker_killed_on_every_attempt_fails_naming_the_task(tmp_path: Path, fault) -> None:
    fault("kill-sim:2:5", once=False)
    with pytest.raises(RunFailure, match=r"Simulation 2 failed after 2 attempt\(s\)"):
        run(tmp_path, "shm", num_sims=3, retries=1)
    s = read_summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "failed" and "Simulation 2" in s["error"]


def test_retries_zero_fails_on_first_loss(tmp_path: Path, fault) -> None:
    fault("kill-train:0:3")
    with pytest.raises(RunFailure, match=r"Trainer 0 failed after 1 attempt\(s\)"):
        run(tmp_path, "filesystem", retries=0)
    run_dir = only_run_dir(tmp_path / "runs")
    assert not (run_dir / "data").exists(), "sample data must be freed on failure"


def test_cli_exit_code_and_message_when_retries_run_out(tmp_path: Path) -> None:
    proc = start_cli(
        "run",
        "--transport",
        "shm",
        "--num-sims",
        "3",
        "--grid-size",
        "16",
        "--step-seconds",
        "0",
        "--quiet",
        cwd=tmp_path,
        env={"SIMFERRY_FAULT": "kill-sim:2:0"},
    )
    try:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert err.strip().splitlines() == [
            "simferry: error: Simulation 2 failed after 2 attempt(s): a worker process died "
            "while it ran or waited (killed, or out of memory); check memory use, or raise "
            "--retries."
        ]
        assert wait_gone(proc.pid) == []
    finally:
        kill_session(proc.pid)
    assert read_summary(only_run_dir(tmp_path / "runs"))["status"] == "failed"


def sending(pid: int) -> bool:
    """Whether process ``pid`` is blocked writing into a full pipe."""
    try:
        return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def wchan_works() -> bool:
    """Whether this kernel names where a process sleeps (some hide it: always "0")."""
    with subprocess.Popen(["sleep", "5"]) as proc:
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{proc.pid}/wchan").read_text() not in ("", "0"):
                        return True
                time.sleep(0.01)
            return False
        finally:
            proc.kill()


def test_worker_killed_while_sending_its_result_is_retried(tmp_path: Path) -> None:
    if not wchan_works():
        pytest.skip("this kernel does not show /proc/<pid>/wchan, which finds a worker mid-send")
    # Pass-by-value results of 2 x 10 x 2 MiB go through the pool's pipe 64 KiB at a
    # time: a worker killed mid-send once left the pool reading the rest forever. A fast
    # machine may send before it is caught: such a run is discarded and tried again.
    for attempt in range(3):
        cwd = tmp_path / str(attempt)
        cwd.mkdir()
        proc = start_cli(
            "run", "--transport", "futures", "--num-sims", "2", "--grid-size", "512",
            "--step-seconds", "0", "--quiet", cwd=cwd,
        )  # fmt: skip
        killed, children = None, []
        try:
            deadline = time.monotonic() + 60
            while killed is None and proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(psutil.Error):  # it may just have finished
                    children = psutil.Process(proc.pid).children()
                for child in children:
                    if sending(child.pid):
                        os.kill(child.pid, signal.SIGKILL)
                        killed = child.pid
                        break
                time.sleep(0.001)
            _, err = proc.communicate(timeout=120)
            assert wait_gone(proc.pid) == []
        finally:
            kill_session(proc.pid)
        if killed is not None:
            break
    assert killed is not None, "no worker was caught sending its result in 3 runs"
    s = read_summary(only_run_dir(cwd / "runs"))
    assert proc.returncode == 0 and s["status"] == "ok", err
    assert s["verified_samples"] == {"0": 20}
    assert len(s["retried_tasks"]) == 1 and s["retried_tasks"][0] in ("sim 0", "sim 1")


# --- other launchers: slow (their runtimes notice a dead worker by heartbeat), so opt-in

SLOW = pytest.mark.skipif(
    not os.environ.get("SIMFERRY_SLOW_FAULTS"),
    reason="30-60 s per run (Parsl/Dragon start-up and worker-loss detection); "
    "set SIMFERRY_SLOW_FAULTS=1",
)


@SLOW
@pytest.mark.parametrize(("launcher", "transport"), [("parsl", "filesystem"), ("dragon", "ddict")])
def test_killed_worker_under_other_launchers(tmp_path: Path, launcher: str, transport: str) -> None:
    reason = plugins.launchers()[launcher](name=launcher).unavailable_reason()
    if reason:
        pytest.skip(reason)
    marker = tmp_path / "fired"
    args = ["--launcher", launcher, "--transport", transport, "--num-sims", "4"]
    proc = start_cli(
        "run", *args, "--grid-size", "16", "--step-seconds", "0", "--quiet",
        cwd=tmp_path, env={"SIMFERRY_FAULT": f"kill-sim:1:4@{marker}"},
    )  # fmt: skip
    try:
        _, err = proc.communicate(timeout=300)
        assert marker.exists(), "the fault never fired"
        assert wait_gone(proc.pid, timeout=30) == []
    finally:
        kill_session(proc.pid)
    s = read_summary(only_run_dir(tmp_path / "runs"))
    assert proc.returncode == 0 and s["status"] == "ok", err
    assert s["verified_samples"] == {"0": 40} and "sim 1" in s["retried_tasks"]


# --- a writer killed in the middle of a write: readers see the old array or the new one


def _writer(cfg_spec: object, size: int) -> None:
    client = cfg_spec.connect()  # type: ignore[attr-defined]
    value = 1
    while True:  # killed by the test
        client.put(SampleKey(0, 0, "input"), np.full(size, float(value)))
        value += 1


def _check_whole(arr: np.ndarray, size: int) -> None:
    arr = np.asarray(arr)
    assert arr.shape == (size,), f"partial array: shape {arr.shape}"
    assert arr.min() == arr.max() >= 1, "array mixes two writes"


@pytest.mark.parametrize("factory", [n for n in sorted(FACTORIES) if not n.startswith("futures")])
def test_writer_killed_mid_write_never_exposes_a_partial_array(
    factory: str, run_ctx: RunContext
) -> None:
    skip_if_not_applicable(factory, "test_writer_killed_mid_write_never_exposes_a_partial_array")
    cfg: TransportConfig = FACTORIES[factory](run_ctx)
    reason = cfg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    size = 2**21  # 16 MiB: a write takes long enough to be caught half-way
    owner = cfg.start(run_ctx)
    ctx = multiprocessing.get_context("fork")
    key = SampleKey(0, 0, "input")
    rng = np.random.default_rng(0)
    try:
        for _ in range(6):
            writer = ctx.Process(target=_writer, args=(owner.config(), size))
            writer.start()
            # Let it finish one write (slow on a loaded machine), then kill it at a random
            # moment of the following ones.
            first = time.monotonic() + 60
            while not owner.exists(key) and time.monotonic() < first:
                time.sleep(0.005)
            deadline = time.monotonic() + rng.uniform(0.05, 0.4)
            while time.monotonic() < deadline:
                # Not there yet, or (Redis) refused because it changed while being read:
                # both fine; a torn array is not.
                with contextlib.suppress(KeyNotFoundError, TransportError):
                    _check_whole(owner.get(key), size)
            os.kill(writer.pid, signal.SIGKILL)  # type: ignore[arg-type]
            writer.join()
            _check_whole(owner.get(key), size)
            assert owner.keys() == [key.name()], "a half-written array became visible"
    finally:
        owner.close()
    for path in (getattr(owner, "root", None),):
        assert path is None or not Path(path).exists(), "the owner must remove killed writes"


@pytest.mark.parametrize("factory", sorted(FACTORIES))
def test_rewriting_a_key_is_idempotent(factory: str, run_ctx: RunContext) -> None:
    """A retried simulation writes the same keys again: same data, still one entry."""
    skip_if_not_applicable(factory, "test_rewriting_a_key_is_idempotent")
    cfg = FACTORIES[factory](run_ctx)
    reason = cfg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    owner = cfg.start(run_ctx)
    try:
        arr = np.arange(256.0).reshape(16, 16)
        key = SampleKey(3, 4, "target")
        owner.put(key, arr)
        owner.put(key, arr.copy())
        assert owner.keys() == [key.name()]
        assert np.asarray(owner.get(key)).tobytes() == arr.tobytes()
    finally:
        owner.close()


# --- storage full: a small tmpfs, filled behind the run's back once it has started


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s file system."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
    return filler


@pytest.mark.parametrize(
    ("transport", "flag"), [("filesystem", "--data-dir"), ("shm", "--shm-dir")]
)
def test_storage_filling_up_mid_run_is_a_clean_failure(
    tmp_path: Path, small_tmpfs: Path, transport: str, flag: str
) -> None:
    # 4 x 10 x 32^2 x 8 B x 2 = 0.66 MB: passes the up-front check on a 2 MiB tmpfs.
    args = ["--num-sims", "4", "--grid-size", "32", "--step-seconds", "0.1", "--quiet"]
    proc = start_cli("run", "--transport", transport, flag, str(small_tmpfs), *args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not list(small_tmpfs.glob("simferry-*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        filler = fill(small_tmpfs)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "is full" in lines[0] and "Traceback" not in err, err
        assert wait_gone(proc.pid) == []
    finally:
        kill_session(proc.pid)
    assert sorted(small_tmpfs.iterdir()) == [filler], "the run's data must be removed"
    s = read_summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "failed" and "is full" in s["error"]


def test_redis_out_of_memory_mid_run_is_a_clean_failure(tmp_path: Path) -> None:
    cls = plugins.transports().get("redis")
    if cls is None or cls(name="redis").unavailable_reason():
        pytest.skip("the redis transport is not usable here")
    # 2.6 MB of samples (plus allocator overhead) against a 4 MiB cap chosen by the user.
    args = ["--redis-maxmemory", "4MiB", "--num-sims", "4", "--grid-size", "64"]
    proc = start_cli(
        "run", "--transport", "redis", *args, "--step-seconds", "0", "--quiet", cwd=tmp_path
    )
    try:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "out of memory" in lines[0] and "Traceback" not in err
        assert wait_gone(proc.pid) == []
    finally:
        kill_session(proc.pid)
    run_dir = only_run_dir(tmp_path / "runs")
    assert read_summary(run_dir)["status"] == "failed"
    assert not list(run_dir.rglob("*.sock")), "the server must be stopped"


def test_storage_too_small_is_refused_before_anything_starts(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    proc = start_cli(
        "run",
        "--transport",
        "filesystem",
        "--data-dir",
        str(small_tmpfs),
        "--num-sims",
        "8",
        "--grid-size",
        "64",
        cwd=tmp_path,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "The data directory" in err and len(err.strip().splitlines()) == 1
    assert list(small_tmpfs.iterdir()) == [] and not (tmp_path / "runs").exists()


# --- a transport's server dying mid-run


def test_redis_server_dying_mid_run_is_a_clean_failure(tmp_path: Path) -> None:
    cls = plugins.transports().get("redis")
    if cls is None or cls(name="redis").unavailable_reason():
        pytest.skip("the redis transport is not usable here")
    args = ["--num-sims", "4", "--grid-size", "32", "--step-seconds", "0.2", "--quiet"]
    proc = start_cli("run", "--transport", "redis", *args, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        server = None
        while server is None and time.monotonic() < deadline:
            kids = psutil.Process(proc.pid).children(recursive=True)
            server = next((c for c in kids if "redis-server" in c.name()), None)
            time.sleep(0.02)
        assert server is not None, "the run never started its redis-server"
        time.sleep(0.5)  # simulations are writing
        server.kill()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Redis server" in lines[0] and "Traceback" not in err, err
        assert wait_gone(proc.pid) == []
    finally:
        kill_session(proc.pid)
    s = read_summary(only_run_dir(tmp_path / "runs"))
    assert s["status"] == "failed" and "Redis server" in s["error"]


# --- Ctrl-C and SIGTERM at each phase


def kinds_so_far(run_dir: Path) -> list[str]:
    """Kinds of the records written so far (the last line may be half-written)."""
    path = run_dir / "records.jsonl"
    text = path.read_text() if path.exists() else ""
    return [
        json.loads(line)["kind"] for line in text.splitlines(keepends=True) if line.endswith("\n")
    ]


def _wait_for(proc: subprocess.Popen[str], phase: str, runs: Path) -> None:
    """Block until the run is in ``phase``: startup, simulations or training."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        dirs = list(runs.glob("*/config.toml")) if runs.exists() else []
        if dirs:
            if phase == "startup":
                return
            done = kinds_so_far(dirs[0].parent)
            if phase == "simulations" and 1 <= done.count("sim") < 8:
                return
            if phase == "training" and done.count("sim") == 8:
                return
        time.sleep(0.005)
    raise AssertionError(f"the run never reached {phase}")


@pytest.mark.parametrize(
    ("phase", "sig", "group", "transport"),
    [
        ("startup", signal.SIGINT, True, "shm"),
        ("startup", signal.SIGTERM, False, "redis"),
        ("simulations", signal.SIGINT, True, "redis"),
        ("simulations", signal.SIGTERM, True, "filesystem"),
        ("simulations", signal.SIGINT, True, "futures"),
        ("training", signal.SIGINT, True, "shm"),
        ("training", signal.SIGTERM, False, "filesystem"),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else str(v),
)
def test_interrupt_at_any_phase_stops_everything(
    tmp_path: Path, phase: str, sig: signal.Signals, group: bool, transport: str
) -> None:
    cls = plugins.transports().get(transport)
    if cls is None or cls(name=transport).unavailable_reason():
        pytest.skip(f"the {transport} transport is not usable here")
    # 8 sims x 10 steps x 0.05 s on 2 workers: ~2 s of simulations; 80 samples of 96^2
    # keep the trainer busy for a while.
    args = ["--num-sims", "8", "--grid-size", "96", "--step-seconds", "0.05"]
    proc = start_cli("run", "--transport", transport, *args, cwd=tmp_path)
    try:
        _wait_for(proc, phase, tmp_path / "runs")
        if group:
            os.killpg(proc.pid, sig)  # Ctrl-C in a terminal, or a batch system's SIGTERM
        else:
            os.kill(proc.pid, sig)  # `kill PID`
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, (proc.returncode, err)
        assert "Traceback" not in err, err
        assert err.strip().splitlines()[-1].startswith(f"simferry: Interrupted by {sig.name}")
        assert wait_gone(proc.pid) == [], "workers outlived the interrupted run"
    finally:
        kill_session(proc.pid)
    run_dir = only_run_dir(tmp_path / "runs")
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "interrupted"
    assert not (run_dir / "data").exists()
    assert shm_entries(proc.pid) == set()
    kinds = [r["kind"] for r in read_records(run_dir)]
    assert "train" not in kinds, "the signal came too late to test an interrupted run"
    if phase == "startup":
        assert kinds == []


def test_a_stuck_cleanup_can_still_be_abandoned_with_ctrl_c(tmp_path: Path) -> None:
    """One more Ctrl-C during cleanup is answered with a note, the next one exits."""
    stuck = "from simferry.engine.signals import signals_ignored\nimport time\n" + (
        "with signals_ignored():\n    print('cleaning', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", stuck],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "cleaning\n"
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None, "one signal must not abandon the cleanup"
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130
        assert "press Ctrl-C again" in err and "cleanup abandoned" in err
    finally:
        kill_session(proc.pid)


def test_killed_main_process_takes_its_workers_with_it(tmp_path: Path) -> None:
    """SIGKILL cannot be cleaned up after, but workers must not linger as orphans."""
    proc = start_cli(
        "run", "--transport", "filesystem", "--num-sims", "4", "--step-seconds", "0.2",
        cwd=tmp_path,
    )  # fmt: skip
    try:
        _wait_for(proc, "startup", tmp_path / "runs")
        time.sleep(0.5)  # workers started
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert wait_gone(proc.pid) == []
    finally:
        kill_session(proc.pid)


def test_transport_errors_are_full_sentences() -> None:
    """Messages reaching users from a failed put say where and what to do."""
    from simferry.transports.filestore import FilesystemTransport

    t = FilesystemTransport(Path("/proc/nonexistent-simferry"))
    with pytest.raises(TransportError, match=r"^Could not write .*\.$"):
        t.put(SampleKey(0, 0, "input"), np.zeros(2))
