"""Every bad input we could think of: exit 2, one sentence, no traceback, nothing created.

The table below is the whole test. ``python -m tests.test_bad_input`` prints it with the
message each input gets (the table in the issue's closing note comes from there).
Placeholders in braces are paths made outside the working directory by ``make_places``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from simferry import plugins
from simferry.cli import main
from simferry.transports.base import TransportConfig

LONG = "x" * 300

#: (argv, text the one-line message must contain)
CASES: list[tuple[list[str], str]] = [
    # sizes: zero, negative, fractional, non-numbers, NaN/inf, huge
    (["run", "--num-sims", "0"], "num-sims"),
    (["run", "--num-sims", "-3"], "num-sims"),
    (["run", "--num-sims", "1.5"], "num-sims"),
    (["run", "--num-sims", "1e3"], "num-sims"),
    (["run", "--num-sims", "abc"], "num-sims"),
    (["run", "--num-sims", ""], "num-sims"),
    (["run", "--num-sims", "nan"], "num-sims"),
    (["run", "--num-sims", "1" + "0" * 30], "num-sims"),
    (["run", "--grid-size", "1"], "grid-size"),
    (["run", "--grid-size", "0x10"], "grid-size"),
    (["run", "--grid-size", "inf"], "grid-size"),
    (["run", "--grid-size", "99999999"], "grid-size"),
    (["run", "--step-seconds", "-1"], "step-seconds"),
    (["run", "--step-seconds", "nan"], "step-seconds: Input should be a finite number"),
    (["run", "--step-seconds", "inf"], "step-seconds"),
    (["run", "--step-seconds", "1e400"], "step-seconds"),
    (["run", "--step-seconds", "3601"], "step-seconds"),
    (["run", "--trainers", "0"], "trainers"),
    (["run", "--trainers", "-1"], "trainers"),
    (["run", "--trainers", "many"], "trainers"),
    (["run", "--retries", "-1"], "retries"),
    (["run", "--retries", "11"], "retries"),
    (["run", "--seed", "-1"], "seed"),
    (["run", "--seed", "99999999999999999999"], "seed"),
    (["run", "--sim-workers", "0"], "sim-workers"),
    (["run", "--sim-workers", "100000"], "sim-workers"),
    # sizes that do not fit this machine, found from the computed data size
    (["run", "--num-sims", "100000", "--grid-size", "4096"], "The data directory would go in"),
    (["run", "--trainers", "1000", "--num-sims", "1", "--grid-size", "16"], "GiB of memory"),
    (["run", "--transport", "futures", "--num-sims", "5000", "--grid-size", "1024"], "memory"),
    (["run", "--transport", "shm", "--num-sims", "2000", "--grid-size", "2048"], "Shared memory"),
    (["run", "--num-sims", "9000", "--grid-size", "8192"], "The data directory"),
    # unknown names
    (["run", "--transport", "carrier-pigeon"], "invalid choice"),
    (["run", "--transport", ""], "invalid choice"),
    (["run", "--transport", "FILESYSTEM"], "invalid choice"),
    (["run", "--launcher", "nope"], "invalid choice"),
    (["run", "--mode", "sideways"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    (["run", "--frobnicate"], "unrecognized arguments"),
    (["run", "--num", "3"], "unrecognized arguments: --num"),  # flags are never abbreviated
    (["run", "--keep-data=maybe"], "ignored explicit argument"),
    # flags that do not belong together
    (["run", "--transport", "shm", "--data-dir", "{dir}"], "does not apply"),
    (["run", "--transport", "shm", "--keep-data"], "does not apply"),
    (["run", "--transport", "futures", "--shm-dir", "/dev/shm"], "does not apply"),
    (["run", "--transport", "dragon-only", "--launcher", "local"], "works only with the dragon"),
    # paths: unusable, not directories, too long, open to other users
    (["run", "--runs-dir", "/proc/simferry"], "runs directory"),
    (["run", "--runs-dir", "{file}"], "not a directory"),
    (["run", "--runs-dir", "{long}"], "File name too long"),
    (["run", "--data-dir", "{file}"], "not a directory"),
    (["run", "--data-dir", "/proc/simferry"], "data directory"),
    (["run", "--data-dir", "{long}"], "File name too long"),
    (["run", "--data-dir", "{open}"], "no sticky bit"),
    (["run", "--data-dir", "{theirs}"], "belongs to another user"),
    (["run", "--transport", "shm", "--shm-dir", "/nonexistent"], "does not exist"),
    (["run", "--transport", "shm", "--shm-dir", "{file}"], "shm-dir"),
    (["run", "--transport", "shm", "--shm-dir", "{open}"], "no sticky bit"),
    # config files
    (["run", "--config", "/nonexistent/config.toml"], "Cannot read"),
    (["run", "--config", "{dir}"], "Cannot read"),
    (["run", "--config", "{bad_toml}"], "not valid TOML"),
    (["run", "--config", "{nul_path}"], "cannot contain NUL"),
    (["run", "--config", "{unknown_key}"], "unknown setting"),
    (["run", "--config", "{wrong_type}"], "num-sims"),
    (["run", "--config", "{not_table}"], "must be a table"),
    # compare and report
    (["compare", "--transports", "futures,warp"], "Unknown transport"),
    (["compare", "--transports", "shm", "--data-dir", "{dir}"], "does not apply"),
    (["compare", "--num-sims", "100000", "--grid-size", "4096"], "GiB"),
    (["compare", "--transports", ","], "names no transport"),
    (["report", "/nonexistent/run"], "does not exist"),
    (["report", "{dir}"], "No run directories"),
]

#: Only once the Redis transport exists (it does, as a plug-in, when redis-py is installed).
REDIS_CASES: list[tuple[list[str], str]] = [
    (["run", "--transport", "redis", "--redis-url", "http://example.org"], "redis-url"),
    (["run", "--transport", "redis", "--redis-url", "redis://localhost:port/0"], "redis-url"),
    (["run", "--transport", "redis", "--redis-url", "redis://127.0.0.1:1/0"], "127.0.0.1:1"),
    (
        ["run", "--transport", "redis", "--redis-url", "redis://h:1/0", "--redis-bind", "::1"],
        "--redis-bind",
    ),
    (["run", "--transport", "redis", "--redis-chunk-bytes", "0"], "redis-chunk-bytes"),
    (["run", "--transport", "redis", "--redis-maxmemory", "lots"], "redis-maxmemory"),
]


#: Only once the DDict transport exists: the real invalid pair.
DDICT_CASES: list[tuple[list[str], str]] = [
    (["run", "--transport", "ddict", "--launcher", "local"], "works only with the dragon"),
    (["run", "--transport", "ddict", "--launcher", "parsl"], "works only with the dragon"),
]


#: ProxyStore and ADIOS2 (their options exist even where the libraries are missing).
DATA_PATH_CASES: list[tuple[list[str], str]] = [
    (["run", "--transport", "proxystore", "--proxystore-connector", "carrier"], "invalid choice"),
    (["run", "--transport", "adios2", "--adios2-engine", "hdf5"], "invalid choice"),
    (["run", "--transport", "adios2", "--adios2-engine", "sst", "--launcher", "dragon"], "dragon"),
    (
        [
            "run",
            "--transport",
            "proxystore",
            "--proxystore-connector",
            "zmq",
            "--data-dir",
            "{dir}",
        ],
        "file only",
    ),
]


def all_cases() -> list[tuple[list[str], str]]:
    known = plugins.transports()
    if "proxystore" in known and "adios2" in known:
        return _all_cases(known) + DATA_PATH_CASES
    return _all_cases(known)


def _all_cases(known: dict[str, type[TransportConfig]]) -> list[tuple[list[str], str]]:
    if "ddict" in known:  # the real invalid pair replaces the stand-in
        return (
            [c for c in CASES if "dragon-only" not in c[0]]
            + DDICT_CASES
            + (REDIS_CASES if "redis" in known else [])
        )
    return CASES + (REDIS_CASES if "redis" in known else [])


class DragonOnlyConfig(TransportConfig):
    """Stands in for ddict (dragon launcher only) where ddict is not installed."""

    name: Literal["dragon-only"] = "dragon-only"
    launchers: ClassVar[tuple[str, ...] | None] = ("dragon",)


@contextlib.contextmanager
def dragon_only_transport() -> Iterator[None]:
    known = plugins.transports()  # loads the real plug-ins first
    if "ddict" in known:
        yield
        return
    plugins._TRANSPORTS.setdefault("dragon-only", DragonOnlyConfig)
    try:
        yield
    finally:
        if "dragon-only" not in known:
            plugins._TRANSPORTS.pop("dragon-only", None)


def make_places(root: Path) -> dict[str, str]:
    """The paths the placeholders stand for, made under ``root`` (never the cwd)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "file").write_text("not a directory\n")
    (root / "dir").mkdir()
    (root / "open").mkdir()
    (root / "open").chmod(0o777)
    (root / "theirs").mkdir()
    if os.getuid() == 0:
        os.chown(root / "theirs", 65534, 65534)
    configs = {
        "bad_toml": "[workload\nnum_sims = 2\n",
        "nul_path": '[transport]\nname = "filesystem"\ndata_dir = "/tmp/a\\u0000b"\n',
        "unknown_key": "colour = 'blue'\n",
        "wrong_type": "[workload]\nnum_sims = 'many'\n",
        "not_table": "transport = 'shm'\n",
    }
    for name, text in configs.items():
        (root / f"{name}.toml").write_text(text)
    places = {k: str(root / k) for k in ("file", "dir", "open", "theirs")}
    places |= {k: str(root / f"{k}.toml") for k in configs}
    places["long"] = str(root / LONG / "x")
    return places


def fill(argv: list[str], places: dict[str, str]) -> list[str]:
    return [a.format(**places) if a.startswith("{") else a for a in argv]


def snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p), p.stat().st_mode) for p in root.rglob("*"))


def run_case(argv: list[str]) -> tuple[int, str]:
    """Exit code and stderr of ``simferry ARGV`` run in this process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


def case_id(argv: list[str]) -> str:
    return " ".join(a if len(a) <= 24 else a[:21] + "..." for a in argv)


@pytest.mark.parametrize(("argv", "needle"), all_cases(), ids=[case_id(a) for a, _ in all_cases()])
def test_bad_input_is_one_sentence_exit_2_and_creates_nothing(
    argv: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "{theirs}" in argv and os.getuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    places = make_places(tmp_path / "elsewhere")
    before = snapshot(tmp_path / "elsewhere")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with dragon_only_transport():
        code, err = run_case(fill(argv, places))
    assert code == 2, err
    assert needle in err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("simferry: error: ") and lines[0].rstrip().endswith((".", "'.")), err
    assert list(cwd.iterdir()) == [], "bad input must create nothing"
    assert snapshot(tmp_path / "elsewhere") == before, "bad input must touch nothing"


def print_table() -> None:
    """The bad-input table (markdown) with the message each input gets here."""
    print("| Input | Exit | Message |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp, dragon_only_transport():
        places = make_places(Path(tmp) / "elsewhere")
        cwd = Path(tmp) / "cwd"
        cwd.mkdir()
        old = os.getcwd()
        os.chdir(cwd)
        try:
            for argv, _ in all_cases():
                code, err = run_case(fill(argv, places))
                shown = " ".join(argv).replace("|", "\\|") or "''"
                message = err.strip().removeprefix("simferry: error: ").replace("|", "\\|")
                print(f"| `simferry {shown}` | {code} | {message} |")
        finally:
            os.chdir(old)


if __name__ == "__main__":
    os.umask(0o077)
    print_table()
    sys.exit(0)
