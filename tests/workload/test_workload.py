from __future__ import annotations

import itertools

import numpy as np
import pytest

from simferry.records import STEPS, dataset_bytes
from simferry.workload.simulation import field, periods, simulate


def test_periods_match_reference() -> None:
    assert np.allclose(periods(5), [40, 50, 60, 70, 80])
    assert len(set(periods(64).tolist())) == 64


def test_field_formula_at_known_points() -> None:
    n = 5
    period = 50.0
    u = field(n, period, 3)
    axis = np.linspace(0, 1, n) * 4 * np.pi - 2 * np.pi
    # centre: x = y = 0, r = 0 -> sin(-w t) / 1
    w = 2 * np.pi / period
    assert u[2, 2] == pytest.approx(np.sin(-w * 3))
    r = np.hypot(axis[0], axis[4])
    assert u[4, 0] == pytest.approx(np.sin(2 * r - w * 3) / (r + 1))
    assert u.dtype == np.float64 and u.shape == (n, n)


def test_simulation_pairs_inputs_with_their_own_targets() -> None:
    samples = list(simulate(2, 4, 16, step_seconds=0))
    assert [s.step for s in samples] == list(range(STEPS))
    p = periods(4)[2]
    for s in samples:
        assert s.sim == 2
        assert np.array_equal(s.input, field(16, p, s.step))
        assert np.array_equal(s.target, field(16, p, s.step + 1))
    for a, b in itertools.pairwise(samples):
        assert np.array_equal(a.target, b.input)


def test_simulation_rejects_bad_index() -> None:
    with pytest.raises(ValueError):
        next(simulate(4, 4, 8, 0))


def test_dataset_bytes_counts_inputs_and_targets() -> None:
    assert dataset_bytes(8, 512) == 2 * 8 * 10 * 512 * 512 * 8


def test_model_kernel_sizes_and_shapes() -> None:
    torch = pytest.importorskip("torch")
    from simferry.workload.model import build_model, flatten_weights, load_flat_weights

    for i, k in [(0, 3), (1, 5), (3, 9)]:
        model = build_model(i)
        convs = [m for m in model if isinstance(m, torch.nn.Conv2d)]
        assert [c.kernel_size for c in convs] == [(k, k)] * 4
        assert [(c.in_channels, c.out_channels) for c in convs] == [
            (1, 8),
            (8, 16),
            (16, 8),
            (8, 1),
        ]
        out = model(torch.zeros(2, 1, 12, 12))
        assert out.shape == (2, 1, 12, 12)
    m = build_model(1)
    flat = flatten_weights(m)
    other = build_model(1)
    load_flat_weights(other, flat)
    assert np.array_equal(flatten_weights(other), flat)


def test_training_epoch_reduces_nothing_silently() -> None:
    pytest.importorskip("torch")
    from simferry.workload.training import SampleBuffer, train_epoch

    samples = list(simulate(0, 1, 16, 0))
    buf = SampleBuffer(len(samples), 16)
    for row, s in enumerate(samples):
        buf.fill(row, s.input, s.target)
    assert buf.inputs.dtype.is_floating_point and str(buf.inputs.dtype) == "torch.float32"
    assert np.allclose(buf.inputs[3, 0].numpy(), samples[3].input.astype(np.float32))
    result = train_epoch(0, buf, seed=0)
    assert result.steps == 3  # 10 samples in batches of 4
    assert np.isfinite(result.loss)
