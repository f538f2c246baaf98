"""The DDict transport: its size bound, its placement, and the shared suite inside Dragon.

A DDict exists only inside a Dragon runtime, so the conformance suite (and the checks
marked ``in_dragon`` below) run in a pytest started under ``dragon`` by
``test_conformance_suite_passes_inside_dragon``; outside, they skip.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ByteSize

from simferry.errors import UsageError
from simferry.launchers import common as dragon_runtime
from simferry.launchers import dragon
from simferry.records import STEPS, dataset_bytes
from simferry.transports.base import RunContext, SampleKey, WeightsKey
from simferry.transports.ddict import (
    FULL_THRESHOLD,
    RESERVED_BYTES,
    DDictConfig,
    RawArrays,
    bundle_sim,
    manager_bytes,
    placement,
)
from simferry.transports.exceptions import KeyNotFoundError, TransportFullError

REPO = Path(__file__).resolve().parents[2]
in_dragon = pytest.mark.skipif(not dragon_runtime.in_runtime(), reason="runs inside Dragon only")


def block(nbytes: int) -> int:
    """What a DDict manager allocates for a value: a power-of-two block (measured)."""
    return 1 << math.ceil(math.log2(nbytes + 400))


@pytest.mark.parametrize("managers", [1, 2, 3, 8, 32])
@pytest.mark.parametrize(("num_sims", "grid"), [(1, 2), (1, 300), (3, 64), (8, 512), (64, 33)])
def test_size_bound_holds_the_fullest_manager(num_sims: int, grid: int, managers: int) -> None:
    load = Counter[int]()
    for sim in range(num_sims):
        for step in range(STEPS):
            for kind in ("input", "target"):
                key = SampleKey(sim, step, kind)  # type: ignore[arg-type]
                load[placement(key, managers)] += block(grid * grid * 8)
    pool = manager_bytes(dataset_bytes(num_sims, grid), managers)
    usable = min(pool * FULL_THRESHOLD, pool - RESERVED_BYTES)
    # The trained weights share the allowance; a 1 MiB block per trainer on one manager.
    assert max(load.values()) + 8 * 2**20 <= usable


def test_placement_deals_samples_evenly_and_keeps_pairs_together() -> None:
    managers = 3
    counts = Counter(
        placement(SampleKey(s, t, "input"), managers) for s in range(7) for t in range(10)
    )
    assert max(counts.values()) - min(counts.values()) <= 1
    for s, t in [(0, 0), (5, 9), (6, 3)]:
        assert placement(SampleKey(s, t, "input"), 3) == placement(SampleKey(s, t, "target"), 3)
    assert {placement(WeightsKey(i), managers) for i in range(3)} == {0, 1, 2}


def test_check_refuses_a_ddict_smaller_than_the_data(tmp_path: Path) -> None:
    ctx = RunContext(tmp_path, "t", dataset_bytes(8, 512))
    with pytest.raises(UsageError, match="--ddict-mem"):
        DDictConfig(ddict_mem=64 * 2**20).check(ctx)
    DDictConfig().check(ctx)  # the default size fits by construction


class Stream:
    """What DDict hands ``RawArrays``: a stream written, then read, in pieces."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.data = b""

    def write(self, piece: bytes | memoryview) -> None:
        self.pieces.append(bytes(piece))

    def read(self, n: int) -> bytes:
        if not self.data:
            self.data = b"".join(self.pieces)
        out, self.data = self.data[:n], self.data[n:]
        assert len(out) == n, "RawArrays read past what was written"
        return out


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12.0).reshape(3, 4),
        np.float32(2.5) * np.ones((), dtype=np.float32),
        np.zeros((0, 5)),
        np.asfortranarray(np.arange(6).reshape(2, 3)),
        np.arange(10, dtype=np.uint8)[::3],
    ],
)
def test_raw_arrays_round_trip_dtype_shape_and_bytes(array: np.ndarray) -> None:
    stream = Stream()
    RawArrays.dump(array, stream)
    got = RawArrays.load(stream)
    assert isinstance(got, np.ndarray)
    assert got.dtype == array.dtype and got.shape == array.shape
    assert got.tobytes() == np.ascontiguousarray(array).tobytes()


def test_raw_arrays_bundle_sends_an_array_given_twice_once() -> None:
    shared, other = np.arange(1000.0), np.ones(7, dtype=np.float32)
    bundle = {"a": shared, "b": other, "c": shared}
    stream = Stream()
    RawArrays.dump(bundle, stream)
    assert sum(len(p) for p in stream.pieces) < 2 * shared.nbytes
    got = RawArrays.load(stream)
    assert isinstance(got, dict) and list(got) == ["a", "b", "c"]
    for name, array in bundle.items():
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array)


def test_raw_arrays_refuse_objects() -> None:
    with pytest.raises(TypeError, match="numeric arrays only"):
        RawArrays.dump(np.array([object()]), Stream())


def test_simulation_layout_refuses_streaming_and_sizes_for_a_whole_simulation(
    tmp_path: Path,
) -> None:
    ctx = RunContext(tmp_path, "t", dataset_bytes(8, 512), mode="streaming")
    with pytest.raises(UsageError, match="--mode phased"):
        DDictConfig(ddict_layout="simulation").check(ctx)
    DDictConfig().check(ctx)
    data = dataset_bytes(1, 512)  # one simulation: its bundle is all the data
    usable = manager_bytes(data, 2, by_sim=True) * FULL_THRESHOLD - RESERVED_BYTES
    assert usable >= block(data) + 8 * 2**20
    assert bundle_sim("s000012/samples") == 12
    assert bundle_sim("s000012/0001-input") is None and bundle_sim("weights/x") is None


@in_dragon
def test_simulation_layout_stores_a_simulation_when_it_ends_in_dragon(tmp_path: Path) -> None:
    grid = 64
    owner = DDictConfig(ddict_layout="simulation").start(
        RunContext(tmp_path, "t", dataset_bytes(2, grid))
    )
    writer = pickle.loads(pickle.dumps(owner.config())).connect()
    try:
        rng = np.random.default_rng(0)
        current = rng.random((grid, grid))
        sent = {}
        for step in range(STEPS):
            following = rng.random((grid, grid))  # a step's target is the next one's input
            pair = [
                (SampleKey(1, step, "input"), current),
                (SampleKey(1, step, "target"), following),
            ]
            writer.put_many(pair)  # type: ignore[arg-type]
            sent.update({k: a.copy() for k, a in pair})
            if step == STEPS - 2:  # held in the writer until the simulation's last step
                assert not owner.exists(SampleKey(1, 0, "input"))
                with pytest.raises(KeyNotFoundError):
                    owner.get(SampleKey(1, 0, "input"))
            current = following
        assert len(owner.keys("s000001/")) == 2 * STEPS
        for key, want in sent.items():  # in manifest order, then again out of order
            assert owner.get(key).tobytes() == want.tobytes()
        assert owner.get_many([SampleKey(1, 9, "target"), SampleKey(1, 0, "input")])[
            0
        ].tobytes() == (sent[SampleKey(1, 9, "target")].tobytes())
        # A retried simulation rewrites its bundle (read by a new reader: one that read it
        # before keeps what it read, as a phased trainer never reads a running simulation).
        writer.put_many([(SampleKey(1, STEPS - 1, k), np.zeros(3)) for k in ("input", "target")])  # type: ignore[misc]
        reader = pickle.loads(pickle.dumps(owner.config())).connect()
        assert np.array_equal(reader.get(SampleKey(1, STEPS - 1, "input")), np.zeros(3))
        assert (
            reader.get(SampleKey(1, 0, "input")).tobytes()
            == sent[SampleKey(1, 0, "input")].tobytes()
        )
        reader.close()
        owner.delete(SampleKey(1, 0, "input"))  # a deleted sample is gone, not the rest
        assert not owner.exists(SampleKey(1, 0, "input")) and owner.exists(
            SampleKey(1, 0, "target")
        )
        owner.delete(SampleKey(1, 0, "input"))  # deleting twice is not an error
        assert len(owner.keys("s000001/")) == 2 * STEPS - 1
    finally:
        writer.close()
        owner.close()


@in_dragon
@pytest.mark.parametrize("batch", [True, False])
def test_default_size_stores_an_awkward_grid_in_dragon(tmp_path: Path, batch: bool) -> None:
    """300x300 float64 arrays take 1.46x their bytes in power-of-two blocks."""
    num_sims, grid = 2, 300
    ctx = RunContext(tmp_path, "t", dataset_bytes(num_sims, grid))
    owner = DDictConfig(ddict_batch=batch).start(ctx)
    try:
        rng = np.random.default_rng(0)
        for sim in range(num_sims):
            for step in range(STEPS):
                pair = [
                    (SampleKey(sim, step, k), rng.random((grid, grid))) for k in ("input", "target")
                ]
                owner.put_many(pair)  # type: ignore[arg-type]
        assert len(owner.keys("s")) == 2 * num_sims * STEPS
        assert np.array_equal(owner.get(pair[1][0]), pair[1][1])  # batched puts read back
        stats = owner.stats()
        assert len(stats) == 2 and all(s.total_used_bytes < s.total_bytes for s in stats)
    finally:
        owner.close()


@in_dragon
def test_a_full_ddict_is_a_clear_error_in_dragon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simferry.transports import ddict

    monkeypatch.setattr(ddict, "TIMEOUT_S", 5.0)  # a manager with no free block waits this
    owner = DDictConfig(ddict_mem=ByteSize(8 * 2**20)).start(RunContext(tmp_path, "t", 2**20))
    try:
        with pytest.raises(TransportFullError, match="--ddict-mem"):
            for step in range(STEPS):
                owner.put(SampleKey(0, step, "input"), np.zeros(2**19))  # 4 MiB each
    finally:
        owner.close()


@pytest.mark.integration
@pytest.mark.skipif(
    dragon_runtime.missing_reason() is not None or dragon_runtime.in_runtime(),
    reason=dragon_runtime.missing_reason() or "this test starts the runtime itself",
)
def test_conformance_suite_passes_inside_dragon(tmp_path: Path) -> None:
    exe = dragon_runtime.dragon_executable()
    assert exe is not None
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    tests = ["tests/conformance/test_transports.py", "tests/transports/test_ddict.py"]
    tests += ["-k", "ddict and not test_ddict.py or in_dragon"]
    # On a login node (a Slurm/PBS client, no allocation) Dragon needs to be told: one node.
    cmd = [str(exe), *dragon.launch_flags([]), "--", sys.executable, "-m", "pytest", "-q"]
    cmd += ["-p", "no:cacheprovider"]
    cmd += ["--basetemp", str(tmp_path / "t"), *tests]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    # Every conformance test ran on the DDict (none skipped) plus the in-Dragon checks.
    result = [line for line in proc.stdout.splitlines() if " deselected in " in line]
    assert result and result[-1].startswith("13 passed, ") and "skip" not in result[-1], out
