"""The whole description of a run: workload, launcher and transport, validated up front.

Every parameter lands in the run's ``config.toml``; ``load_config`` reads one back so a
run can be repeated exactly (``simferry run --config runs/.../config.toml``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simferry import plugins
from simferry.errors import UsageError
from simferry.launchers.base import LauncherConfig
from simferry.records import STEPS, dataset_bytes
from simferry.transports.base import TransportConfig

# Beyond these the data could not be held by one trainer on any node we target; the
# precise memory and space checks happen before the run against the real machine.
MAX_GRID = 65_536
MAX_SIMS = 1_000_000


class WorkloadConfig(BaseModel):
    """The reference workflow's parameters, the same for every transport and launcher."""

    model_config = ConfigDict(extra="forbid")

    num_sims: int = Field(8, ge=1, le=MAX_SIMS, description="number of simulations")
    grid_size: int = Field(256, ge=2, le=MAX_GRID, description="grid points per side")
    step_seconds: float = Field(
        0.5,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="sleep per simulation step, standing for real compute",
    )
    trainers: int | None = Field(
        None, ge=1, le=1024, description="trainer processes (default: one per GPU, 1 on CPU)"
    )
    mode: Literal["phased", "streaming"] = Field(
        "phased", description="phased: all simulations then all trainers; streaming: overlap"
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="seed for the trainers' shuffling and weights"
    )
    retries: int = Field(
        1, ge=0, le=10, description="times a task is resubmitted when its worker process dies"
    )
    replay_buffer: int = Field(
        64,
        ge=4,
        le=1_000_000,
        description="streaming mode: samples a trainer holds awaiting training; batches are "
        "drawn at random from them and each sample is used once",
    )

    @property
    def data_bytes(self) -> int:
        return dataset_bytes(self.num_sims, self.grid_size)

    @property
    def samples(self) -> int:
        return self.num_sims * STEPS


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workload: WorkloadConfig = Field(default_factory=lambda: WorkloadConfig())
    launcher: LauncherConfig
    transport: TransportConfig
    runs_dir: Path = Path("runs")

    def dump(self) -> dict[str, Any]:
        return {
            "workload": self.workload.model_dump(mode="json"),
            "launcher": self.launcher.model_dump(mode="json"),
            "transport": self.transport.model_dump(mode="json"),
            "runs_dir": str(self.runs_dir),
        }


def validation_message(exc: ValidationError) -> str:
    """One sentence out of pydantic's report (the first problem is enough to act on)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    msg = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
    return f"Invalid {where.replace('_', '-')}: {msg}."


def build(
    workload: dict[str, Any], launcher: dict[str, Any], transport: dict[str, Any], **rest: Any
) -> RunConfig:
    """Validate plain values into a RunConfig, turning any problem into a UsageError."""
    launcher_cls = plugins.launcher_config_class(str(launcher.get("name", "local")))
    transport_cls = plugins.transport_config_class(str(transport.get("name", "filesystem")))
    try:
        cfg = RunConfig(
            workload=WorkloadConfig(**workload),
            launcher=launcher_cls(**launcher),
            transport=transport_cls(**transport),
            **rest,
        )
    except ValidationError as exc:
        raise UsageError(validation_message(exc)) from None
    except TypeError as exc:
        raise UsageError(f"Invalid configuration: {exc}.") from None
    check_paths(cfg)
    allowed = cfg.transport.launchers
    if allowed is not None and cfg.launcher.name not in allowed:
        raise UsageError(
            f"The {cfg.transport.name} transport works only with the "
            f"{' or '.join(allowed)} launcher, not {cfg.launcher.name}; pass "
            f"--launcher {allowed[0]} or choose another transport."
        )
    return cfg


def check_paths(cfg: RunConfig) -> None:
    """Refuse paths no system call accepts (a config file can spell a NUL byte)."""
    for part in (cfg, cfg.workload, cfg.launcher, cfg.transport):
        for name in type(part).model_fields:
            value = getattr(part, name)
            if isinstance(value, Path) and "\x00" in str(value):
                raise UsageError(f"Invalid {name.replace('_', '-')}: a path cannot contain NUL.")


def load_config(path: Path) -> RunConfig:
    """Read a ``config.toml`` written by a run (or by hand)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}.") from None
    sections = {}
    for name in ("workload", "launcher", "transport"):
        value = data.pop(name, {})
        if not isinstance(value, dict):
            raise UsageError(f"{path}: [{name}] must be a table.")
        sections[name] = value
    unknown = set(data) - {"runs_dir"}
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}.")
    return build(**sections, **data)
