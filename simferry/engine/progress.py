"""Progress shown while simulations and trainers run: bars on a terminal, lines in logs."""

from __future__ import annotations

import sys
import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as Bars


class Progress(Protocol):
    def phase(self, name: str, total: int) -> None: ...

    def advance(self, name: str, note: str = "") -> None: ...

    def close(self) -> None: ...


class NullProgress:
    def phase(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, note: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """For pipes and CI logs: one line per finished task, with elapsed time."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.t0 = time.perf_counter()

    def phase(self, name: str, total: int) -> None:
        self.totals[name] = total
        self.done[name] = 0

    def advance(self, name: str, note: str = "") -> None:
        self.done[name] += 1
        elapsed = time.perf_counter() - self.t0
        extra = f" ({note})" if note else ""
        print(
            f"{self.label}{name}: {self.done[name]}/{self.totals[name]} done{extra} "
            f"[{elapsed:.1f} s]",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        pass


class RichProgress:
    """Bars with elapsed and remaining time on an interactive terminal."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.bars = Bars(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.started = False

    def phase(self, name: str, total: int) -> None:
        # Started lazily: the bars' refresh thread must not exist when launchers fork.
        if not self.started:
            self.bars.start()
            self.started = True
        self.tasks[name] = self.bars.add_task(f"{self.label}{name}", total=total)

    def advance(self, name: str, note: str = "") -> None:
        self.bars.advance(self.tasks[name])

    def close(self) -> None:
        if self.started:
            self.bars.stop()


def make_progress(label: str = "", quiet: bool = False) -> Progress:
    if quiet:
        return NullProgress()
    if sys.stderr.isatty():
        return RichProgress(label)
    return LineProgress(label)
