from __future__ import annotations

from pathlib import Path

import pytest

from simferry.config import build, load_config
from simferry.errors import UsageError


def test_load_config_round_trip(tmp_path: Path) -> None:
    import tomli_w

    from simferry.records import drop_none

    cfg = build({"num_sims": 3}, {"name": "local"}, {"name": "shm"})
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(drop_none(cfg.dump())))
    again = load_config(path)
    assert again.workload.num_sims == 3
    assert again.transport.name == "shm"


@pytest.mark.parametrize(
    "text",
    [
        "not toml [",
        "workload = 3",
        "[workload]\nnum_sims = -1",
        "[transport]\nname = 'x'",
        "extra = 1",
    ],
)
def test_bad_config_files_are_usage_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(UsageError):
        load_config(path)


@pytest.mark.parametrize(("mode", "refused"), [("phased", True), ("streaming", False)])
def test_the_memory_check_counts_a_streaming_trainers_buffer_not_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, refused: bool
) -> None:
    import types

    import psutil

    from simferry.engine.run import preflight
    from simferry.transports.base import RunContext

    # 3.4 GB of samples on a node with 3 GiB free (2.7 usable): a phased trainer would hold
    # 1.56 GiB as float32; a streaming one its 64-sample buffer (0.5 GiB). Either adds its
    # process (0.25 GiB) and its working memory at 1024² (1.5 GiB).
    free = types.SimpleNamespace(available=3 * 2**30)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: free)
    cfg = build(
        {"num_sims": 20, "grid_size": 1024, "mode": mode, "replay_buffer": 64},
        {"name": "local"},
        {"name": "shm"},
        runs_dir=tmp_path,
    )
    ctx = RunContext(tmp_path / "run", "t", 20 * 10 * 2 * 1024**2 * 8)
    monkeypatch.setattr(type(cfg.transport), "check", lambda self, ctx: None)  # /dev/shm size
    if refused:
        with pytest.raises(UsageError, match=r"needs about 3\.3 GiB of memory"):
            preflight(cfg, ctx, 1)
    else:
        preflight(cfg, ctx, 1)


def test_the_memory_model_counts_a_trainers_working_memory_and_parsls_copies() -> None:
    from simferry.engine.memory import TRAINER_BYTES_PER_POINT, need_bytes

    # One 4096² simulation: 2.7 GB of samples, but a trainer's activations alone take
    # 24 GiB at that grid, as the data never would.
    small = build({"num_sims": 1, "grid_size": 4096}, {"name": "local"}, {"name": "shm"})
    assert need_bytes(small, small.workload.data_bytes, 1) > 24 * 2**30
    assert need_bytes(small, small.workload.data_bytes, 2) > 2 * TRAINER_BYTES_PER_POINT * 4096**2
    # Pass-by-value through Parsl holds results in its interchange and pool too.
    args = {"num_sims": 8, "grid_size": 256}
    local = build(args, {"name": "local"}, {"name": "futures"})
    parsl = build(args, {"name": "parsl"}, {"name": "futures"})
    data = local.workload.data_bytes
    assert need_bytes(parsl, data, 1) - need_bytes(local, data, 1) == 3 * data
