"""A pass-by-value trainer unpickles one simulation at a time and returns only its weights."""

from __future__ import annotations

import pickle

import pytest

from simferry.engine.handoff import carry
from simferry.transports.exceptions import KeyNotFoundError
from simferry.transports.futures import FuturesSpec
from simferry.workload.tasks import SimSpec, TrainSpec, simulation_task, trainer_task


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
    assert set(pickle.loads(out.payload)) == {"weights/trainer-000"}
    assert len(out.payload) < len(payloads[0])


def test_a_missing_simulation_is_named() -> None:
    manifest, payloads = run_sims(2, 8)
    with pytest.raises(KeyNotFoundError, match="s000001/0000-input"):
        carry(TrainSpec(0, 1, 8, 20), trainer_task, FuturesSpec(), payloads[:1], manifest)
