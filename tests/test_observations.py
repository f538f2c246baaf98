"""Each rule of observations.md, on constructed records: when it speaks and when it stays silent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simferry.analysis.fits import linear_fit
from simferry.analysis.model import Group, group_runs, load_runs, load_summaries, series
from simferry.analysis.observations import fastest, is_straggler, observations, scaling, stragglers

from .runs import fake_run

GRIDS = (64, 128, 256)


def groups_of(dirs: list[Path]) -> list[Group]:
    runs, _ = load_runs(load_summaries(dirs))
    return group_runs(runs)


def sizes_sweep(tmp_path: Path, grids: tuple[int, ...], repeats: int = 2) -> list[Group]:
    """Filesystem runs whose trainer IO grows linearly with size (plus a little jitter)."""
    dirs = []
    for grid in grids:
        gb = 2 * 10 * grid**2 * 8 / 2**30
        for r in range(repeats):
            jitter = 1 + 0.01 * r
            dirs.append(
                fake_run(
                    tmp_path, f"fs-{grid}-{r}", grid_size=grid, train_io=(0.01 + 2 * gb) * jitter
                )
            )
    return groups_of(dirs)


def pair(tmp_path: Path, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[Group]:
    """Runs of two transports at one configuration, with the times given per run."""
    dirs = [fake_run(tmp_path, f"fs-{i}", **kw) for i, kw in enumerate(a)]
    dirs += [fake_run(tmp_path, f"shm-{i}", transport="shm", **kw) for i, kw in enumerate(b)]
    return groups_of(dirs)


# --- size trends --------------------------------------------------------------------------


def test_two_sizes_give_no_fitted_slope(tmp_path: Path) -> None:
    text = "\n".join(scaling(series(sizes_sweep(tmp_path, GRIDS[:2]))))
    assert "2 data size(s) measured" in text and "no slope is fitted" in text
    assert "s/GB" not in text and "R²" not in text and "Extrapolation" not in text


def test_three_sizes_give_a_slope_with_its_uncertainty(tmp_path: Path) -> None:
    text = "\n".join(scaling(series(sizes_sweep(tmp_path, GRIDS))))
    assert "Local + file system, per trainer: IO time ≈" in text
    assert "± " in text and "95% interval" in text and "at 3 sizes" in text


def test_slope_standard_error_matches_the_textbook_formula() -> None:
    fit = linear_fit([1, 2, 3, 4], [1.0, 3.0, 2.0, 5.0])
    assert fit is not None
    # slope 1.1, residual SS 2.7 over 2 dof, Sxx 5: se = sqrt(1.35 / 5)
    assert fit.slope == pytest.approx(1.1) and fit.slope_se == pytest.approx(0.5196, rel=1e-3)
    lo, hi = fit.ci95()
    assert lo == pytest.approx(1.1 - 4.303 * 0.5196, rel=1e-3) and hi > fit.slope
    two = linear_fit([1, 2], [1.0, 2.0])
    assert two is not None and two.r2 == 1 and two.ci95() == (-float("inf"), float("inf"))


def test_extrapolation_stops_at_ten_times_the_largest_size(tmp_path: Path) -> None:
    text = "\n".join(scaling(series(sizes_sweep(tmp_path, GRIDS))))
    largest = 2 * 10 * 256**2 * 8 / 2**30
    assert "*Extrapolation* (at most 10x the largest size measured)" in text
    assert f"at {10 * largest:.3g} GB (10x the largest measured)" in text
    # The reference's 0.62 GB lies 25x beyond 0.0244 GB: not predicted.
    assert "32 sims x 512²" not in text


def test_a_falling_slope_is_written_with_a_minus_and_not_extrapolated(tmp_path: Path) -> None:
    dirs = [
        fake_run(tmp_path, f"fs-{g}-{r}", grid_size=g, train_io=1.0 - g / 1000 + r * 1e-3)
        for g in GRIDS
        for r in range(2)
    ]
    text = "\n".join(scaling(series(groups_of(dirs))))
    assert "+ -" not in text and "s - " in text
    assert "no extrapolation is given" in text and "*Extrapolation*" not in text


# --- winners --------------------------------------------------------------------------


def test_single_runs_within_the_noise_floor_name_no_winner(tmp_path: Path) -> None:
    groups = pair(tmp_path, [{"train_run": 2.0}], [{"train_run": 2.1}])  # 3.0 vs 3.1 s
    (line,), _ = fastest(groups)
    assert "run times are not distinguishable here" in line and "was fastest" not in line
    assert "3.00 s" in line and "3.10 s" in line and "noise floor (10% and 0.05 s)" in line


def test_single_runs_beyond_the_noise_floor_name_the_winner(tmp_path: Path) -> None:
    groups = pair(tmp_path, [{"train_run": 2.0}], [{"train_run": 4.0}])  # 3.0 vs 5.0 s
    (line,), _ = fastest(groups)
    assert "**Local + file system** was fastest, 3.00 s" in line
    assert "2.00 s (40%) less than Local + shared memory (5.00 s)" in line


def test_repeats_decide_by_their_spread(tmp_path: Path) -> None:
    apart = pair(
        tmp_path / "a",
        [{"train_run": t} for t in (2.0, 2.1)],
        [{"train_run": t} for t in (2.3, 2.4)],
    )
    (line,), _ = fastest(apart)
    assert "**Local + file system** was fastest" in line and "Every repeat agrees" in line
    overlap = pair(
        tmp_path / "b",
        [{"train_run": t} for t in (2.0, 2.5)],
        [{"train_run": t} for t in (2.3, 2.4)],
    )
    (line,), _ = fastest(overlap)
    assert "not distinguishable here" in line
    assert (
        "Their repeats overlap (Local + file system up to 3.50 s, Local + shared memory down to 3.30 s)"
        in line
    )


def test_minor_io_says_the_transport_does_not_decide(tmp_path: Path) -> None:
    # IO 0.03 of 3.0 s: 1%.
    groups = pair(tmp_path / "a", [{"train_run": 2.0}], [{"train_run": 4.0}])
    (line,), _ = fastest(groups)
    assert "IO is under 5% of the run time for every implementation here (at most 1.0%" in line
    assert "the transport is not what decides the run time at this size" in line
    # IO 0.5 of 3.0 s: the rule stays silent.
    heavy = pair(tmp_path / "b", [{"train_io": 0.5}], [{"train_io": 0.5, "train_run": 4.0}])
    (line,), _ = fastest(heavy)
    assert "not what decides" not in line


def test_different_configurations_are_never_ranked_together(tmp_path: Path) -> None:
    dirs = [
        fake_run(tmp_path, "a", step_seconds=0.0, train_run=1.0),
        fake_run(tmp_path, "b", transport="shm", step_seconds=0.05, train_run=5.0),
    ]
    lines, _ = fastest(groups_of(dirs))
    assert len(lines) == 2 and all("nothing to compare it with" in x for x in lines)


# --- stragglers ----------------------------------------------------------------------------


def test_straggler_needs_an_absolute_floor_as_well_as_a_ratio() -> None:
    assert not is_straggler(0.020, 0.005)  # 4x, but 20 ms is noise
    assert not is_straggler(0.12, 0.1)  # long, but not 3x
    assert is_straggler(0.5, 0.1)


def test_straggler_report_quotes_the_task_and_stays_silent_on_small_times(tmp_path: Path) -> None:
    d = fake_run(tmp_path, "fs", num_sims=4, sim_io=0.005)
    quiet = stragglers(groups_of([d]))
    assert quiet == []
    lines = (d / "records.jsonl").read_text().splitlines()
    lines[2] = lines[2].replace('"transfer_s": 0.005', '"transfer_s": 0.6')
    (d / "records.jsonl").write_text("\n".join(lines) + "\n")
    (line,) = stragglers(groups_of([d]))
    assert "simulation 2 of Local + file system" in line and "0.600 s in IO" in line


def test_every_section_is_present_and_quotes_numbers(tmp_path: Path) -> None:
    text = observations(sizes_sweep(tmp_path, GRIDS), [])
    for heading in ("## Fastest", "## Share of IO", "## How IO time scales", "## Anomalies"):
        assert heading in text
    assert "10% of the slower time" in text  # the noise floor is stated
