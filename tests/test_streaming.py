"""Streaming mode: the publication index, exactly-once accounting, and real runs."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from simferry.engine.streaming import check_exactly_once, merge, stream_measures
from simferry.errors import RunFailure
from simferry.records import TaskRecord
from simferry.transports.base import RunContext
from simferry.transports.filestore import index_path
from simferry.transports.filesystem import FilesystemConfig
from simferry.transports.index import END, RECORD, Indexed, Published
from simferry.transports.shm import ShmConfig
from simferry.workload.online import BATCH_SIZE, Cursor, OnlineTrainer, StreamSpec

from .helpers import only_run_dir, records, simferry, summary

ALL = [[s, t] for s in range(2) for t in range(10)]


def test_exactly_once_accepts_a_permutation() -> None:
    check_exactly_once(0, list(reversed(ALL)), num_sims=2)


def test_exactly_once_names_missed_and_repeated_ids() -> None:
    consumed = [c for c in ALL if c != [1, 4]] + [[0, 7]]
    with pytest.raises(RunFailure) as info:
        check_exactly_once(3, consumed, num_sims=2)
    msg = str(info.value)
    assert "Trainer 3" in msg
    assert "missed (sim 1, step 4)" in msg
    assert "used more than once (sim 0, step 7)" in msg


def test_exactly_once_rejects_ids_no_simulation_produces() -> None:
    with pytest.raises(RunFailure, match=r"no simulation produces \(sim 2, step 0\)"):
        check_exactly_once(0, [*ALL, [2, 0]], num_sims=2)


def test_batch_size_matches_training() -> None:
    from simferry.workload.training import BATCH_SIZE as TRAINING_BATCH

    assert BATCH_SIZE == TRAINING_BATCH


@pytest.mark.parametrize("make", [FilesystemConfig, ShmConfig], ids=["filesystem", "shm"])
def test_file_index_delivers_in_order_once(make: type, run_ctx: RunContext) -> None:
    owner = make().start(run_ctx)
    try:
        assert isinstance(owner, Indexed)
        writer = pickle.loads(pickle.dumps(owner.config())).connect()
        reader = owner.subscribe(num_sims=3)
        assert reader.poll(0) == []
        writer.publish(Published(1, 0, 11))
        writer.publish(Published(0, 0, 10))
        writer.publish(Published(1, 1, 12))
        got = reader.poll(1.0)
        assert sorted(got) == [(0, 0, 10), (1, 0, 11), (1, 1, 12)]
        assert [e for e in got if e.sim == 1] == [(1, 0, 11), (1, 1, 12)]  # per-sim order
        assert reader.poll(0) == []  # nothing twice
        writer.publish(Published(1, END, 2))
        assert reader.poll(1.0) == [(1, END, 2)]
        writer.close()
    finally:
        owner.close()
    assert not owner.root.exists(), "the index goes with the data"


def test_file_index_waits_out_a_torn_record(run_ctx: RunContext) -> None:
    owner = FilesystemConfig().start(run_ctx)
    try:
        reader = owner.subscribe(num_sims=1)
        path = index_path(owner.root, 0)
        path.parent.mkdir(parents=True)
        record = Published(0, 3, 2**64 - 1).pack()
        path.write_bytes(record[:5])
        assert reader.poll(0) == []
        with open(path, "ab") as fh:
            fh.write(record[5:])
        assert reader.poll(0) == [(0, 3, 2**64 - 1)]
        assert RECORD.size == 16
    finally:
        owner.close()


def test_file_index_poll_waits_for_news(run_ctx: RunContext) -> None:
    owner = FilesystemConfig().start(run_ctx)
    try:
        reader = owner.subscribe(num_sims=2)
        t0 = time.monotonic()
        assert reader.poll(0.2) == []
        assert time.monotonic() - t0 >= 0.2
    finally:
        owner.close()


def test_cursor_ignores_republished_ids_and_tracks_ends() -> None:
    cursor = Cursor(num_sims=2)
    cursor.take([Published(0, 0, 1), Published(0, 1, 2)])
    cursor.take([Published(0, 0, 1), Published(0, END, 2)])  # a retried simulation
    assert [(e.sim, e.step) for e in cursor.queue] == [(0, 0), (0, 1)]
    assert cursor.producing
    cursor.take([Published(1, END, 0)])
    assert not cursor.producing and cursor.ended == {0: 2, 1: 0}


def test_online_trainer_uses_each_buffered_sample_once() -> None:
    spec = StreamSpec(0, 1, 8, num_sims=1, buffer=6, seed=0)
    trainer = OnlineTrainer(spec, spec.buffer)
    for step in range(6):
        trainer.add((0, step), np.full((8, 8), step, float), np.zeros((8, 8)))
    assert trainer.full and len(trainer) == 6
    first = trainer.train_batch()
    assert len(first) == 4 and len(set(first)) == 4 and len(trainer) == 2
    second = trainer.train_batch()
    assert sorted(first + second) == [(0, s) for s in range(6)]
    assert len(trainer) == 0 and trainer.steps == 2
    # The by-value chain: state carried to a fresh trainer keeps weights and step count.
    again = OnlineTrainer(spec, 1, trainer.state())
    assert again.steps == 2 and np.array_equal(again.weights(), trainer.weights())


def test_measures_from_records() -> None:
    sims = [TaskRecord("sim", 0, start=100.0, end=110.0)]
    a = TaskRecord("train", 0, extra={"step_times": [102.0, 111.0], "first_step": 102.0})
    b = TaskRecord("train", 1, extra={"step_times": [104.0, 109.0], "first_step": 104.0})
    a.extra["idle_s"], b.extra["idle_s"] = 1.0, 3.0
    m = stream_measures(100.0, sims, [a, b])
    assert m == {
        "time_to_first_step_s": 2.0,
        "overlap_fraction": 0.75,
        "trainer_idle_s": 2.0,
        "last_sim_end_s": 10.0,
    }
    total = merge(None, TaskRecord("sim", 0, start=5.0, end=6.0, transfer_s=1.0, bytes=10))
    total = merge(total, TaskRecord("sim", 0, start=6.0, end=8.0, transfer_s=0.5, bytes=10))
    assert (total.start, total.end, total.transfer_s, total.bytes) == (5.0, 8.0, 1.5, 20)


# -- real runs ------------------------------------------------------------------------------

# Six simulations one after another at 0.05 s a step: 3 s of production, long enough for
# trainers (warmed before the first simulation starts) to step while data still arrives.
STREAM = ["--mode", "streaming", "--num-sims", "6", "--sim-workers", "1", "--grid-size", "16"]
STREAM += ["--step-seconds", "0.05"]


def check_streaming_run(
    run: Path, trainers: int, overlap: bool = True, num_sims: int = 6, grid: int = 16
) -> None:
    s = summary(run)
    assert s["status"] == "ok" and s["mode"] == "streaming"
    assert s["verified_samples"] == {str(i): 10 * num_sims for i in range(trainers)}
    recs = records(run)
    sims = [r for r in recs if r["kind"] == "sim"]
    trains = sorted((r for r in recs if r["kind"] == "train"), key=lambda r: r["index"])
    assert sorted(r["index"] for r in sims) == list(range(num_sims))
    assert [r["index"] for r in trains] == list(range(trainers))
    want = sorted((sim, step) for sim in range(num_sims) for step in range(10))
    last_sim_end = max(r["end"] for r in sims)
    for r in trains:
        consumed = [tuple(c) for c in r["extra"]["consumed"]]
        assert sorted(consumed) == want, f"trainer {r['index']} did not use each sample once"
        assert r["extra"]["train_steps"] == -(-10 * num_sims // 4)
        if overlap:
            assert r["extra"]["first_step"] < last_sim_end, "training did not overlap simulations"
    assert all(r["bytes"] == 10 * 2 * grid * grid * 8 for r in sims)
    if overlap:
        assert 0 < s["time_to_first_step_s"] < s["last_sim_end_s"]
        assert 0 < s["overlap_fraction"] <= 1
    assert s["trainer_idle_s"] >= 0 and s["wall_s"] > s["last_sim_end_s"]
    for key in ("sim_run_s", "sim_io_s", "train_run_s", "train_io_s"):
        assert s[key] > 0, key
    weights = sorted(p.name for p in (run / "weights").iterdir())
    assert weights == [f"trainer-{i:03d}.npy" for i in range(trainers)]
    assert not (run / "data").exists(), "sample data and index must be freed"


def skip_unavailable(transport: str) -> None:
    from simferry import plugins

    known = plugins.transports()
    if transport not in known:
        pytest.skip(f"the {transport} transport is not part of this checkout")
    reason = known[transport](name=transport).unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["futures", "filesystem", "shm", "redis"])
def test_streaming_run_each_transport(tmp_path: Path, transport: str) -> None:
    skip_unavailable(transport)
    trainers = 2 if transport in ("futures", "filesystem") else 1
    # The smallest buffer (one batch) still has to use every sample once.
    buffer = ["--replay-buffer", "4", "--seed", "1"] if transport == "filesystem" else []
    simferry(
        "run", "--transport", transport, *STREAM, "--trainers", str(trainers), *buffer,
        cwd=tmp_path, check=True,
    )  # fmt: skip
    run = only_run_dir(tmp_path / "runs")
    check_streaming_run(run, trainers)  # and the autouse fixture checks /dev/shm
    assert summary(run)["replay_buffer"] == (4 if buffer else 64)


@pytest.mark.integration
def test_streaming_run_ddict_on_dragon(tmp_path: Path) -> None:
    """DDict's index (a key per record) under the Dragon runtime, which the run starts."""
    skip_unavailable("ddict")
    args = ["--launcher", "dragon", "--transport", "ddict", "--mode", "streaming"]
    args += ["--num-sims", "4", "--sim-workers", "1", "--grid-size", "16", "--step-seconds", "0.05"]
    simferry("run", *args, cwd=tmp_path, check=True, timeout=600)
    check_streaming_run(only_run_dir(tmp_path / "runs"), 1, num_sims=4)


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["futures", "filesystem"])
def test_streaming_run_on_parsl(tmp_path: Path, transport: str) -> None:
    """Parsl's HTEX pools: trainers subscribe while its simulation tasks publish."""
    from simferry.launchers.parsl import ParslConfig

    reason = ParslConfig().unavailable_reason()
    if reason:
        pytest.skip(reason)
    simferry(
        "run", "--launcher", "parsl", "--transport", transport, *STREAM, "--trainers", "2",
        cwd=tmp_path, check=True, timeout=600,
    )  # fmt: skip
    run = only_run_dir(tmp_path / "runs")
    check_streaming_run(run, 2)
    assert summary(run)["launcher"] == "parsl"


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["futures", "filesystem"])
def test_streaming_survives_killed_workers(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retried simulation publishes again and a retried trainer starts over: still once."""
    faults = [f"kill-sim:1:4@{tmp_path / 'sim-killed'}"]
    if transport == "filesystem":  # by-value batches have no per-sample fault point
        faults.append(f"kill-train:0:10@{tmp_path / 'train-killed'}")
    monkeypatch.setenv("SIMFERRY_FAULT", ",".join(faults))
    simferry(
        "run", "--transport", transport, *STREAM, "--retries", "1", cwd=tmp_path, check=True
    )  # fmt: skip
    assert (tmp_path / "sim-killed").exists()
    run = only_run_dir(tmp_path / "runs")
    check_streaming_run(run, 1, overlap=False)
    attempts = {(r["kind"], r["index"]): r["attempt"] for r in records(run)}
    assert attempts[("sim", 1)] == 2
    if transport == "filesystem":
        assert (tmp_path / "train-killed").exists() and attempts[("train", 0)] == 2


def test_report_puts_streaming_beside_phased(tmp_path: Path) -> None:
    from simferry.analysis.tables import write_table
    from simferry.records import write_json

    base = {
        "status": "ok", "implementation": "Local + file system", "launcher": "local",
        "transport": "filesystem", "nodes": 1, "num_sims": 8, "grid_size": 512,
        "trainers": 1, "inputs_gb": 0.17, "total_gb": 0.34, "total_gib": 0.31,
        "sim_run_s": 20.0, "sim_io_s": 0.1, "train_run_s": 30.0, "train_io_s": 0.5,
        "startup_s": 1.0,
    }  # fmt: skip
    stream = {"time_to_first_step_s": 1.5, "overlap_fraction": 0.5, "trainer_idle_s": 0.25}
    runs = {
        "phased": {**base, "mode": "phased", "wall_s": 60.0},
        "streaming": {**base, "mode": "streaming", "wall_s": 40.0, **stream},
    }
    summaries = []
    for name, s in runs.items():
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "summary.json", s)
        summaries.append({**s, "run_dir": str(tmp_path / name)})
    text = write_table(summaries, tmp_path)
    section = text.split("## Streaming mode (online training)")[1]
    assert "| 40.00 | 60.00 | 0.67 | 1.50 | 50% | 0.25 |" in section
    csv_text = (tmp_path / "results.csv").read_text()
    assert "overlap_fraction" in csv_text.splitlines()[0] and ",0.5," in csv_text
