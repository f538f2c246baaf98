"""What a mode (phased, streaming) is given by the run, and hands back for the summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simferry.config import RunConfig
from simferry.engine.progress import Progress
from simferry.launchers.base import Launcher
from simferry.records import RunDir, TaskRecord
from simferry.transports.base import Transport
from simferry.workload.tasks import TrainOutcome


class Mode:
    """What both modes are given by the run: its config, launcher, transport, directory, bars."""

    def __init__(
        self,
        cfg: RunConfig,
        launcher: Launcher,
        transport: Transport,
        rundir: RunDir,
        progress: Progress,
    ) -> None:
        self.cfg = cfg
        self.launcher = launcher
        self.transport = transport
        self.rundir = rundir
        self.progress = progress


@dataclass
class PhaseResult:
    """The records of one kind of task (simulations or trainers) and its span in seconds."""

    records: list[TaskRecord] = field(default_factory=list)
    run_s: float = 0.0


@dataclass
class ModeResult:
    """A mode's tasks, trainer outcomes (by trainer) and the measures only that mode has."""

    sims: PhaseResult
    train: PhaseResult
    outcomes: list[TrainOutcome]
    extra: dict[str, Any] = field(default_factory=dict)
    #: Checked for each trainer before its verified count (streaming: exactly-once use).
    check: Callable[[TrainOutcome], None] | None = None


def mean_of(records: list[TaskRecord], name: str) -> float:
    """The mean of the measure ``name`` (``io_s``, ``convert_s``) over ``records``; 0 if none."""
    return float(np.mean([getattr(r, name) for r in records])) if records else 0.0
