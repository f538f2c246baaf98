"""The bench scripts stay runnable (``make bench``): tiny sizes, real files, real workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=None if env is None else {**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_transport_bandwidth_table(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run(
        str(BENCH / "transports.py"),
        "--sizes-mib", "1", "--repeat", "2", "--transports", "futures,filesystem,shm,ddict",
        "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    md = (out / "transports.md").read_text()
    for row in ("| 1 | futures |", "| 1 | filesystem |", "| 1 | shm |", "| 1 | np.save/np.load |"):
        assert row in md
    assert "| 1 | shm | " in md and "np.save/np.load tmpfs" in md
    assert "- filesystem get >= 0.6 x np.save/np.load: worst" in md
    rows = [line for line in md.splitlines() if line.startswith("|")]
    # The recorded command names ddict; no table row may (it needs the Dragon runtime).
    assert not [r for r in rows if "ddict" in r], "ddict must be skipped here"
    assert (out / "transports.png").stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["results"], "temporary files left behind"


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["futures", "filesystem"])
def test_reference_data_path_runs(tmp_path: Path, transport: str) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    line = run(
        str(BENCH / "reference.py"), transport,
        "--num-sims", "2", "--grid-size", "16", "--step-seconds", "0",
        cwd=tmp_path, env={"TMPDIR": str(scratch)},
    )  # fmt: skip
    values = dict(w.split("=") for w in line.split()[1:])
    assert float(values["train_run_s"]) > 0 and int(values["trainer_rss"]) > 0
    assert float(values["sim_io_s"]) > 0
    # torch keeps its own compile cache (torchinductor_<user>) in TMPDIR: not ours.
    left = [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")]
    assert left == [], "the reference data directory was left behind"
