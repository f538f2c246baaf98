"""The toy 2-D circular-wave simulation of the reference workflow, kept as the reference has it.

Kept free of any I/O so every transport moves exactly the same bytes and the
reference's numbers stay comparable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from simferry.records import STEPS


class Sample(NamedTuple):
    """One training pair; ``(sim, step)`` is its identity, never a rounded period."""

    sim: int
    step: int
    input: np.ndarray
    target: np.ndarray


def periods(num_sims: int) -> np.ndarray:
    """Wave periods of the ensemble, as the reference: ``linspace(40, 80, num_sims)``."""
    return np.linspace(40, 80, num_sims)


@lru_cache(maxsize=4)
def _radius(grid_size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.linspace(0, 1, grid_size) * 4 * np.pi - 2 * np.pi
    x, y = np.meshgrid(axis, axis)
    r = np.sqrt(x**2 + y**2)
    two_r = 2 * r
    inv = 1.0 / (r + 1)
    two_r.flags.writeable = False
    inv.flags.writeable = False
    return two_r, inv


def field(grid_size: int, period: float, t: int) -> np.ndarray:
    """u(t) = sin(2r - wt) / (r + 1) with w = 2 pi / period, float64 (grid_size, grid_size)."""
    two_r, inv = _radius(grid_size)
    omega = 2 * np.pi / period
    out = np.subtract(two_r, omega * t)
    np.sin(out, out=out)
    out *= inv
    return out


def simulate(
    sim: int, num_sims: int, grid_size: int, step_seconds: float = 0.5, steps: int = STEPS
) -> Iterator[Sample]:
    """Yield the ``steps`` samples of simulation ``sim``; the sleep stands for real compute."""
    if not 0 <= sim < num_sims:
        raise ValueError(f"simulation index {sim} is outside 0..{num_sims - 1}")
    period = float(periods(num_sims)[sim])
    current = field(grid_size, period, 0)
    for step in range(steps):
        if step_seconds > 0:
            time.sleep(step_seconds)
        following = field(grid_size, period, step + 1)
        yield Sample(sim, step, current, following)
        current = following


def sample_bytes(grid_size: int) -> int:
    """Bytes of one float64 array of the grid."""
    return grid_size * grid_size * 8
