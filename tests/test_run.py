"""End-to-end runs of the real command with the local launcher (process pools)."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from .helpers import only_run_dir, records, simferry, summary

pytestmark = pytest.mark.integration

SMALL = ["--num-sims", "4", "--grid-size", "32", "--step-seconds", "0"]


@pytest.mark.parametrize("transport", ["futures", "filesystem", "shm"])
def test_run_each_transport(tmp_path: Path, transport: str) -> None:
    proc = simferry(
        "run", "--transport", transport, *SMALL, "--trainers", "2", cwd=tmp_path, check=True
    )
    run = only_run_dir(tmp_path / "runs")
    assert run.name.endswith(f"-local-{transport}")
    s = summary(run)
    assert s["status"] == "ok"
    assert s["verified_samples"] == {"0": 40, "1": 40}
    assert "40 samples verified by each of 2 trainer(s)" in proc.stdout
    for key in ("sim_run_s", "sim_io_s", "train_run_s", "train_io_s", "wall_s"):
        assert s[key] > 0, key
    recs = records(run)
    assert sorted((r["kind"], r["index"]) for r in recs) == [("sim", i) for i in range(4)] + [
        ("train", 0),
        ("train", 1),
    ]
    sims = [r for r in recs if r["kind"] == "sim"]
    assert s["sim_io_s"] == pytest.approx(sum(r["io_s"] for r in sims) / 4)
    assert all(r["bytes"] == 10 * 2 * 32 * 32 * 8 for r in sims)
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["transport"]["name"] == transport
    assert config["workload"]["num_sims"] == 4
    assert (run / "environment.json").exists()
    assert sorted(p.name for p in (run / "weights").iterdir()) == [
        "trainer-000.npy",
        "trainer-001.npy",
    ]
    assert not (run / "data").exists(), "sample data must be freed at the end of the run"
    mode = stat.S_IMODE(os.stat(run).st_mode)
    assert mode & 0o077 == 0, oct(mode)


def test_sixty_four_simulations_give_640_verified_samples(tmp_path: Path) -> None:
    proc = simferry(
        "run",
        "--transport",
        "filesystem",
        "--num-sims",
        "64",
        "--grid-size",
        "32",
        "--step-seconds",
        "0",
        cwd=tmp_path,
        check=True,
    )
    s = summary(only_run_dir(tmp_path / "runs"))
    assert s["verified_samples"] == {"0": 640}
    assert "640 samples verified by each of 1 trainer(s)" in proc.stdout


def test_reference_flag_aliases(tmp_path: Path) -> None:
    simferry(
        "run",
        "--num_sims",
        "2",
        "--grid_size",
        "16",
        "--step-seconds",
        "0",
        cwd=tmp_path,
        check=True,
    )
    s = summary(only_run_dir(tmp_path / "runs"))
    assert (s["num_sims"], s["grid_size"]) == (2, 16)


def test_config_file_reproduces_a_run(tmp_path: Path) -> None:
    simferry("run", "--transport", "shm", *SMALL, cwd=tmp_path, check=True)
    first = only_run_dir(tmp_path / "runs")
    again = tmp_path / "again"
    again.mkdir()
    simferry(
        "run",
        "--config",
        str(first / "config.toml"),
        "--runs-dir",
        str(again / "runs"),
        cwd=again,
        check=True,
    )
    s = summary(only_run_dir(again / "runs"))
    assert (s["transport"], s["num_sims"], s["grid_size"]) == ("shm", 4, 32)


def test_compare_prints_table(tmp_path: Path) -> None:
    proc = simferry(
        "compare", "--transports", "futures,filesystem,shm", *SMALL, cwd=tmp_path, check=True
    )
    for label in ("Local + futures", "Local + file system", "Local + shared memory"):
        assert label in proc.stdout
    assert "Simulation Run / IO Time (sec)" in proc.stdout
    (cmp_dir,) = (tmp_path / "runs").iterdir()
    assert (cmp_dir / "table.md").exists() and (cmp_dir / "results.csv").exists()
    assert len([p for p in cmp_dir.iterdir() if (p / "summary.json").exists()]) == 3
