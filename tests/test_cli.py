"""Bad input: exit 2, one sentence, no traceback, nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest

from simferry.cli import main

BAD = [
    (["run", "--num-sims", "0"], "num-sims"),
    (["run", "--num-sims", "-3"], "num-sims"),
    (["run", "--num-sims", "abc"], "num-sims"),
    (["run", "--grid-size", "1"], "grid-size"),
    (["run", "--grid-size", "99999999"], "grid-size"),
    (["run", "--step-seconds", "-1"], "step-seconds"),
    (["run", "--trainers", "0"], "trainers"),
    (["run", "--transport", "carrier-pigeon"], "invalid choice"),
    (["run", "--launcher", "nope"], "invalid choice"),
    (["run", "--sim", "2"], "unrecognized arguments: --sim"),  # never --sim-workers
    (["compare", "--repeat", "0"], "--repeat must be at least 1"),
    (["run", "--mode", "sideways"], "invalid choice"),
    (["run", "--transport", "shm", "--data-dir", "/tmp"], "does not apply"),
    (["run", "--num-sims", "100000", "--grid-size", "4096", "--step-seconds", "0"], "GiB"),
    (["run", "--transport", "filesystem", "--data-dir", "/proc/nope"], "data directory"),
    (["run", "--config", "/nonexistent/config.toml"], "Cannot read"),
    (["compare", "--transports", "futures,warp"], "Unknown transport"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_sentence_and_exit_2(
    argv: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == [], "bad input must create nothing"


def test_shm_too_small_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    tiny = tmp_path / "tiny-shm"
    tiny.mkdir()
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: real(p)._replace(free=1024) if Path(p) == tiny else real(p)
    )
    code = main(
        [
            "run",
            "--transport",
            "shm",
            "--shm-dir",
            str(tiny),
            "--num-sims",
            "2",
            "--grid-size",
            "64",
        ]
    )
    assert code == 2
    assert "Shared memory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tiny] and list(tiny.iterdir()) == []
