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
