"""The DDict transport: its size bound, its placement, and the shared suite inside Dragon.

A DDict exists only inside a Dragon runtime, so the conformance suite (and the checks
marked ``in_dragon`` below) run in a pytest started under ``dragon`` by
``test_conformance_suite_passes_inside_dragon``; outside, they skip.
"""

from __future__ import annotations

import math
import os
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
    manager_bytes,
    placement,
)
from simferry.transports.exceptions import TransportFullError

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
    assert result and result[-1].startswith("12 passed, ") and "skip" not in result[-1], out
