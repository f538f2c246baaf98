"""Soak: 50 small runs back to back in one process, across transports and both modes.

Whatever a run leaks -- open files, child processes, /dev/shm entries, memory -- shows up
as growth over many runs; the counts after the warm-up runs must stay flat.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import psutil
import pytest
import torch  # noqa: F401  -- forked workers inherit it: ~1 s runs

from simferry import plugins
from simferry.config import build
from simferry.engine.run import execute
from simferry.records import read_summary

from .leaks import our_children, shm_entries

pytestmark = pytest.mark.integration

#: 50 runs take ~2 min on 2 quiet cores (~2.5 s each); pytest's timeout bounds a stuck one.
RUNS = 50
WARMUP = 5
#: Memory the main process may gain over the measured runs (allocator noise, caches).
RSS_TOLERANCE = 48 * 2**20


def transports() -> list[str]:
    names = []
    for name, cls in sorted(plugins.transports().items()):
        local = cls.launchers is None or "local" in cls.launchers
        if local and not cls(name=name).unavailable_reason():
            names.append(name)
    return names


def usage(present: frozenset[int] = frozenset()) -> dict[str, int]:
    """What this process holds; ``present``: child pids that were there before the soak."""
    gc.collect()
    me = psutil.Process()
    children = [c for c in our_children() if c.pid not in present]
    return {
        "fds": me.num_fds(),
        "threads": me.num_threads(),
        "children": len(children),
        "shm": len(shm_entries()),
        "rss": me.memory_info().rss,
    }


@pytest.mark.timeout(300)
def test_fifty_runs_leave_nothing_behind(tmp_path: Path) -> None:
    names = transports()
    assert {"futures", "filesystem", "shm"} <= set(names)
    os.umask(0o077)
    # Processes an earlier test in this session left are that test's to answer for (each
    # checks its own leftovers); what these runs leave is counted from here.
    present = frozenset(c.pid for c in our_children())
    seen: dict[str, int] = {}
    baseline: dict[str, int] = {}
    t0 = time.perf_counter()
    for i in range(RUNS):
        name = names[i % len(names)]
        mode = "streaming" if i % 5 == 4 else "phased"
        cfg = build(
            {"num_sims": 2, "grid_size": 16, "step_seconds": 0, "mode": mode},
            {"name": "local"},
            {"name": name},
        )
        run_dir = execute(cfg, parent=tmp_path / "runs")
        assert read_summary(run_dir)["status"] == "ok"
        seen[f"{name}/{mode}"] = seen.get(f"{name}/{mode}", 0) + 1
        if i + 1 == WARMUP:
            baseline = usage(present)
    after = usage(present)
    elapsed = time.perf_counter() - t0
    print(f"\n{RUNS} runs in {elapsed:.0f} s: {seen}\nbaseline {baseline}\nafter    {after}")
    assert len(list((tmp_path / "runs").iterdir())) == RUNS
    for key in ("fds", "threads", "children", "shm"):
        assert after[key] <= baseline[key], f"{key} grew: {baseline[key]} -> {after[key]}"
    assert after["children"] == 0 and after["shm"] == 0
    grew = after["rss"] - baseline["rss"]
    assert grew <= RSS_TOLERANCE, f"RSS grew by {grew / 2**20:.0f} MiB over {RUNS - WARMUP} runs"
