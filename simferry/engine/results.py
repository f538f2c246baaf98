"""What a mode (phased, streaming) hands back to the run, which turns it into the summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simferry.records import TaskRecord
from simferry.workload.tasks import TrainOutcome


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


def mean_io(records: list[TaskRecord]) -> float:
    return float(np.mean([r.io_s for r in records])) if records else 0.0
