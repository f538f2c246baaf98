"""Run directories built from constructed records, to test reports without running anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tomli_w

DISPLAY = {"futures": "futures", "filesystem": "file system", "shm": "shared memory"}


def fake_run(
    parent: Path,
    name: str,
    *,
    transport: str = "filesystem",
    num_sims: int = 2,
    grid_size: int = 32,
    sim_run: float = 1.0,
    train_run: float = 2.0,
    sim_io: float = 0.01,
    train_io: float = 0.02,
    step_seconds: float = 0.0,
    hosts: tuple[str, ...] = ("h1",),
    pools: int = 1,
    seed: int | None = None,
) -> Path:
    """A finished run: config.toml, summary.json and records.jsonl, with chosen times.

    Each phase's tasks span exactly the run time given and each task spends the IO time
    given, so the report's figures are known in advance.
    """
    d = parent / name
    d.mkdir(parents=True)
    inputs = num_sims * 10 * grid_size**2 * 8
    workload: dict[str, Any] = {"num_sims": num_sims, "grid_size": grid_size}
    workload |= {"step_seconds": step_seconds, "mode": "phased", "retries": 1}
    if seed is not None:
        workload["seed"] = seed
    config = {
        "workload": workload,
        "launcher": {"name": "local", "nodes": pools},
        "transport": {"name": transport},
    }
    (d / "config.toml").write_text(tomli_w.dumps(config))
    summary = {
        "status": "ok", "run_dir": str(d), "implementation": f"Local + {DISPLAY[transport]}",
        "launcher": "local", "transport": transport, "mode": "phased", "nodes": pools,
        "num_sims": num_sims, "grid_size": grid_size, "step_seconds": step_seconds,
        "inputs_gb": inputs / 1e9, "total_gb": 2 * inputs / 1e9, "total_gib": 2 * inputs / 2**30,
        "trainers": 1, "startup_s": 0.5, "trainer_ready_s": 0.25,
        "sim_run_s": sim_run, "sim_io_s": sim_io, "train_run_s": train_run, "train_io_s": train_io,
    }  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))
    recs = []
    t0 = 1000.0
    for i in range(num_sims):
        host = hosts[i % len(hosts)]
        end = t0 + sim_run * (i + 1) / num_sims
        recs.append(task("sim", i, host, t0, end, sim_io, inputs * 2 // num_sims))
    recs.append(task("train", 0, hosts[0], t0 + sim_run, t0 + sim_run + train_run, train_io, 0))
    (d / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


def task(kind: str, index: int, host: str, t0: float, end: float, io: float, nbytes: int) -> dict:
    return {
        "kind": kind, "index": index, "host": host, "pid": 1, "start": t0, "end": end,
        "submitted": t0, "received": end, "serialize_s": 0.0, "transfer_s": io,
        "deserialize_s": 0.0, "bytes": nbytes or 1000, "samples": 20, "peak_rss": 1, "attempt": 1,
    }  # fmt: skip
