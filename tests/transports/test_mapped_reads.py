"""``load_mapped``: the filesystem/shm read path, against ``np.load`` on every header kind."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npformat

from simferry.transports.filestore import load_mapped


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).standard_normal((33, 17)),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.arange(10, dtype=np.float32),
        np.zeros((0, 5)),
        np.array(3.5),
    ],
    ids=["float64-2d", "fortran", "float32", "empty", "scalar"],
)
def test_same_array_as_np_load(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "a.npy"
    np.save(path, array)
    got = load_mapped(path)
    want = np.load(path, allow_pickle=False)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes(order="A") == want.tobytes(order="A")
    assert got.flags.f_contiguous == want.flags.f_contiguous
    if got.size:
        assert not got.flags.writeable, "a shared read-only mapping must not be writable"


@pytest.mark.parametrize("version", [(2, 0), (3, 0)])
def test_other_header_versions(tmp_path: Path, version: tuple[int, int]) -> None:
    array = np.arange(20.0).reshape(4, 5)
    path = tmp_path / "a.npy"
    with open(path, "wb") as fh:
        npformat.write_array(fh, array, version=version)
    assert np.array_equal(load_mapped(path), array)


def test_object_arrays_are_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        load_mapped(path)


def test_data_outlives_the_file(tmp_path: Path) -> None:
    """The mapping keeps the data after the file is deleted (the run frees its directory)."""
    path = tmp_path / "a.npy"
    np.save(path, np.arange(5.0))
    got = load_mapped(path)
    path.unlink()
    assert got.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert pickle.loads(pickle.dumps(got)).tolist() == got.tolist()
