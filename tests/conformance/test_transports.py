"""The definition of "a transport works": one suite, run over every transport."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from simferry.transports.base import SampleKey, Transport, WeightsKey, hand_over
from simferry.transports.exceptions import KeyNotFoundError

from .conftest import data_paths


def peer(owner: Transport) -> Transport:
    """A second client built the way workers build theirs: from a pickled spec."""
    return pickle.loads(pickle.dumps(owner.config())).connect()


def test_owner_satisfies_protocol(owner: Transport) -> None:
    assert isinstance(owner, Transport)


def test_round_trip_is_bit_exact(owner: Transport) -> None:
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((64, 64))
    arr[0, 0] = np.nan
    arr[0, 1] = -0.0
    client = peer(owner)
    client.put(SampleKey(3, 7, "input"), arr)
    hand_over(client, owner)
    got = owner.get(SampleKey(3, 7, "input"))
    assert got.dtype == arr.dtype and got.shape == arr.shape
    assert np.asarray(got).tobytes() == arr.tobytes()


def test_float32_weights_round_trip(owner: Transport) -> None:
    w = np.arange(1000, dtype=np.float32)
    owner.put(WeightsKey(2), w)
    reader = peer(owner)
    hand_over(owner, reader)
    got = reader.get(WeightsKey(2))
    assert got.dtype == np.float32 and np.array_equal(got, w)


def test_many_keys_are_distinct(owner: Transport) -> None:
    items = [
        (SampleKey(sim, step, kind), np.full((4, 4), sim * 100 + step + (kind == "target") * 0.5))
        for sim in range(64)
        for step in range(10)
        for kind in ("input", "target")
    ]
    owner.put_many(items)
    keys = [k for k, _ in items]
    got = owner.get_many(keys)
    for (_, want), have in zip(items, got, strict=True):
        assert np.array_equal(want, have)
    assert len(owner.keys("s")) == 1280
    assert len(owner.keys("s000063/")) == 20


def test_large_array(owner: Transport) -> None:
    arr = np.random.default_rng(1).standard_normal(9 * 2**20)  # 72 MiB
    owner.put(SampleKey(0, 0, "input"), arr)
    reader = peer(owner)
    hand_over(owner, reader)
    got = reader.get(SampleKey(0, 0, "input"))
    assert np.array_equal(got, arr)


def test_missing_key_raises_key_not_found(owner: Transport) -> None:
    with pytest.raises(KeyNotFoundError) as info:
        owner.get(SampleKey(9, 9, "target"))
    assert isinstance(info.value, KeyError)
    assert "s000009/0009-target" in str(info.value)


def test_exists_and_delete(owner: Transport) -> None:
    key = SampleKey(1, 2, "target")
    assert not owner.exists(key)
    owner.put(key, np.zeros(3))
    assert owner.exists(key)
    owner.delete(key)
    assert not owner.exists(key)
    owner.delete(key)  # deleting twice is not an error


def test_overwrite_replaces_value(owner: Transport) -> None:
    key = SampleKey(0, 1, "input")
    owner.put(key, np.zeros(8))
    owner.put(key, np.ones(8))
    assert np.array_equal(owner.get(key), np.ones(8))


def test_close_releases_resources(transport_config, run_ctx) -> None:
    owner = transport_config.start(run_ctx)
    owner.put(SampleKey(0, 0, "input"), np.ones(16))
    paths = data_paths(owner)
    assert all(p.exists() for p in paths)
    client = pickle.loads(pickle.dumps(owner.config())).connect()
    client.close()  # a client closing frees nothing of the owner's
    assert np.array_equal(owner.get(SampleKey(0, 0, "input")), np.ones(16))
    owner.close()
    assert not any(p.exists() for p in paths)
    assert owner.keys() == []
