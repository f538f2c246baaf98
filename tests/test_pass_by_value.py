"""A pass-by-value trainer unpickles one simulation at a time, lets go of what it has read
and returns only its weights."""

from __future__ import annotations

import pickle
import sys
from typing import Any

import numpy as np
import pytest

from simferry.engine.handoff import Inbound, carry, take
from simferry.transports.base import Transport
from simferry.transports.exceptions import KeyNotFoundError
from simferry.transports.futures import FuturesSpec, pack, unpack
from simferry.workload.tasks import (
    SimSpec,
    TrainOutcome,
    TrainSpec,
    simulation_task,
    trainer_task,
)


def run_sims(num_sims: int, grid: int) -> tuple[list, list[bytes]]:
    sims = [
        carry(SimSpec(k, num_sims, grid, 0), simulation_task, FuturesSpec(), ())
        for k in range(num_sims)
    ]
    manifest = sorted(e for s in sims for e in s.manifest)
    return manifest, [s.payload for s in sims if s.payload is not None]


def test_trainer_returns_only_its_weights() -> None:
    manifest, payloads = run_sims(3, 16)
    out = carry(TrainSpec(0, 1, 16, 30, seed=0), trainer_task, FuturesSpec(), payloads, manifest)
    assert out.verified == 30
    assert out.payload is not None
    # Before, every sample it had read went back to the main process with the weights.
    assert set(unpack(out.payload)) == {"weights/trainer-000"}
    assert len(out.payload) < len(payloads[0])


def test_a_missing_simulation_is_named() -> None:
    manifest, payloads = run_sims(2, 8)
    with pytest.raises(KeyNotFoundError, match="s000001/0000-input"):
        carry(TrainSpec(0, 1, 8, 20), trainer_task, FuturesSpec(), payloads[:1], manifest)


def test_a_trainer_lets_go_of_each_blob_it_has_read() -> None:
    """Once read, no blob is held by the engine or the transport, only by who sent it.

    A worker keeps a task's arguments until the task returns: blobs left in them stayed
    in the trainer for its whole epoch, one more copy of the dataset beside its buffer.
    """
    manifest, payloads = run_sims(3, 16)
    # What a launcher's worker is given: the engine's Inbound, pickled and unpickled.
    inbound = pickle.loads(pickle.dumps(Inbound(payloads)))
    blobs = list(inbound)
    control = [b"x" * len(b) for b in blobs]  # bytes held by this list alone
    counts: dict[str, list[int]] = {}

    def train_then_count(transport: Transport, spec: TrainSpec, *args: Any) -> TrainOutcome:
        out = trainer_task(transport, spec, *args)
        counts["blobs"] = [sys.getrefcount(b) for b in blobs]
        counts["control"] = [sys.getrefcount(b) for b in control]
        return out

    out = carry(TrainSpec(0, 1, 16, 30, seed=0), train_then_count, FuturesSpec(), inbound, manifest)
    assert out.verified == 30
    assert counts["blobs"] == counts["control"]


def test_the_main_process_keeps_its_blobs_for_a_retry() -> None:
    """Only a copy that travelled is emptied: the main process resubmits its own."""
    blobs = [b"a", b"b"]
    inbound = Inbound(blobs)
    assert take(inbound) == blobs
    assert inbound == blobs
    moved = pickle.loads(pickle.dumps(inbound))
    assert take(moved) == blobs
    assert moved == []


def test_blobs_hold_views_not_copies() -> None:
    """Unpacking a blob copies no array: each is a read-only view into the blob."""
    arrays = {"a": np.arange(10.0), "b": np.ones((4, 4), dtype=np.float32), "c": np.eye(3)[:, 1]}
    blob = pack(arrays)
    got = unpack(blob)
    for name, array in arrays.items():
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array)
    assert not got["a"].flags.writeable and got["a"].flags.aligned
    assert np.shares_memory(got["a"], np.frombuffer(blob, dtype=np.uint8))
