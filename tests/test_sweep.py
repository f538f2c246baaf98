"""``simferry sweep``: grids, bad input, and resuming after Ctrl-C without redoing work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simferry.cli import main

from .helpers import simferry

SWEEP = ["sweep", "--transports", "filesystem", "--num-sims", "2", "--grid-size", "16"]
SWEEP += ["--repeat", "2", "--step-seconds", "0"]


def ok_runs(out: Path) -> list[Path]:
    found = []
    for s in sorted(out.glob("*/summary.json")):
        if json.loads(s.read_text())["status"] == "ok":
            found.append(s.parent)
    return found


@pytest.mark.integration
def test_interrupted_sweep_resumes_without_redoing_finished_points(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = [*SWEEP, "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "simferry", *argv],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ok_runs(out) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second run, past the first one's cleanup
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "sweep interrupted; 1 finished run(s) are kept" in err
    (first,) = ok_runs(out)
    stamp = (first / "summary.json").stat().st_mtime_ns
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["points"][0]["runs"] == [first.name]

    again = simferry(*argv, cwd=tmp_path, check=True)
    assert "1 finished run(s) reused, 1 run(s) done now" in again.stdout
    runs = ok_runs(out)
    assert len(runs) == 2 and first in runs
    assert (first / "summary.json").stat().st_mtime_ns == stamp, "a finished run was redone"
    table = (out / "table.md").read_text()
    assert "| Local + file system | 1 |" in table and "| 2 |" in table
    assert "## Spread across repeats" in table

    before = set(out.iterdir())
    third = simferry(*argv, cwd=tmp_path, check=True)
    assert "2 finished run(s) reused, 0 run(s) done now" in third.stdout
    assert {p for p in out.iterdir() if p.is_dir()} == {p for p in before if p.is_dir()}


BAD = [
    ([*SWEEP, "--num-sims", "4,x"], "comma-separated list of integers"),
    ([*SWEEP, "--repeat", "0"], "--repeat must be at least 1"),
    ([*SWEEP, "--transports", "filesystem,warp"], "Unknown transport"),
    ([*SWEEP, "--launchers", "nope"], "Unknown launcher"),
    ([*SWEEP, "--transports", "shm", "--data-dir", "/tmp"], "does not apply"),
    ([*SWEEP, "--grid-size", "1"], "grid-size"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[n for _, n in BAD])
def test_bad_sweep_input_is_one_sentence_and_exit_2(
    argv: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == [], "bad input must create nothing"
