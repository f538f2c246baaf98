"""Shared fixtures: every test runs in its own directory and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def run_ctx(tmp_path: Path):
    from simferry.transports.base import RunContext

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return RunContext(run_dir=run_dir, run_id=f"test{os.getpid()}", data_bytes=256 * 2**20)


def _ours(name: str) -> bool:
    """Made by this process or one that is gone (not by another engineer's live run)."""
    import psutil

    pid = name.rsplit("-", 1)[-1]
    return not pid.isdigit() or int(pid) == os.getpid() or not psutil.pid_exists(int(pid))


@pytest.fixture(autouse=True)
def _no_shm_leftovers():
    before = {p.name for p in Path("/dev/shm").glob("simferry-*")}
    yield
    after = {p.name for p in Path("/dev/shm").glob("simferry-*") if _ours(p.name)}
    assert after <= before, f"test left shared memory behind: {sorted(after - before)}"
