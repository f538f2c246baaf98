"""Least-squares size trends of IO time, and how far they may be carried.

Shared by the written observations and the fit plot, so a line drawn and a slope quoted
always come from the same points and the same limits.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from simferry.analysis.model import Group, inputs_gib, task_io
from simferry.units import GIB

#: Extrapolations go no further than this multiple of the largest size measured.
MAX_EXTRAPOLATION = 10.0
#: A line that explains less of the variance than this is too loose to extrapolate.
MIN_R2 = 0.8
#: Distinct data sizes below which no size trend is fitted: a line through two points
#: always fits (R² = 1) and says nothing about the trend's shape or its noise.
MIN_FIT_SIZES = 3


#: Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
       2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069,
       2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t95(df: int) -> float:
    return T95[df - 1] if df <= len(T95) else 2.0 if df <= 60 else 1.98


@dataclass(frozen=True)
class Fit:
    """Least-squares line ``y = intercept + slope * x`` over ``n`` points in [xmin, xmax].

    ``slope_se`` is the slope's standard error (nan with only two points); ``sizes`` the
    number of distinct x values.
    """

    slope: float
    intercept: float
    r2: float
    n: int
    xmin: float
    xmax: float
    slope_se: float = math.nan
    sizes: int = 0

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x

    def ci95(self) -> tuple[float, float]:
        """The slope's 95% confidence interval (Student's t with n - 2 degrees of freedom)."""
        half = t95(self.n - 2) * self.slope_se if self.n > 2 else math.inf
        return self.slope - half, self.slope + half


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """Fit a line; ``None`` when fewer than two distinct x values make it meaningless."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 1.0
    n = len(xs)
    se = math.sqrt(ss_res / (n - 2) / sxx) if n > 2 else math.nan
    return Fit(slope, intercept, r2, n, min(xs), max(xs), se, len(set(xs)))


def size_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit | None:
    """A size trend, only from at least ``MIN_FIT_SIZES`` distinct data sizes."""
    return linear_fit(xs, ys) if len(set(xs)) >= MIN_FIT_SIZES else None


def train_io_points(groups: Sequence[Group]) -> tuple[list[float], list[float]]:
    """(training data size in the homework's GB, trainer IO s): one point per run."""
    xs, ys = [], []
    for g in groups:
        for r in g.runs:
            if not math.isnan(r.m["train_io_s"]):
                xs.append(inputs_gib(r.m))
                ys.append(float(r.m["train_io_s"]))
    return xs, ys


def sim_io_points(groups: Sequence[Group]) -> tuple[list[float], list[float]]:
    """(GB, 1024³ bytes, one simulation writes; its IO s): one point per simulation task."""
    xs, ys = [], []
    for g in groups:
        for r in g.runs:
            for rec in r.records:
                if rec.get("kind") == "sim":
                    xs.append(int(rec.get("bytes", 0)) / GIB)
                    ys.append(task_io(rec))
    return xs, ys


def slope_known(fit: Fit) -> bool:
    """Whether the 95% interval of the slope excludes zero and the line fits at all."""
    return fit.ci95()[0] > 0 and fit.r2 >= MIN_R2
