"""Worker functions of streaming mode: simulations that publish, trainers that learn online.

Store-backed transports run one long task per simulation (store each step, then
publish it in the transport's index) and one long task per trainer (poll the index,
read and verify what is new into a bounded buffer, train a batch of 4 whenever one is
there). Pass-by-value has no store, so there a simulation is a chain of one-step tasks
and a trainer a chain of one-batch tasks whose model and optimizer state travel by value
(transports/futures.py). Both kinds of trainer record the ids they trained on, in order,
and when each step ended, so the workflow can prove exactly-once use and measure overlap.
"""

from __future__ import annotations

import io
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simferry.faults import fault_point
from simferry.records import TaskRecord
from simferry.transports.base import SampleKey, Transport, WeightsKey
from simferry.transports.exceptions import DataIntegrityError
from simferry.transports.index import END, Indexed, Published
from simferry.workload.simulation import STEPS, periods, simulate
from simferry.workload.simulation import field as wave
from simferry.workload.tasks import (
    ManifestEntry,
    SimResult,
    SimSpec,
    TrainOutcome,
    checksum,
    store_sample,
)

#: How long a trainer with nothing to do waits in one poll before checking again.
POLL_WAIT_S = 1.0
#: ``workload.training.BATCH_SIZE``, restated: importing that module loads torch, which
#: the main process must not (it forks the workers). A test keeps the two equal.
BATCH_SIZE = 4

SampleId = tuple[int, int]


@dataclass(frozen=True)
class StreamSpec:
    trainer: int
    trainers_here: int
    grid_size: int
    num_sims: int
    buffer: int
    gpus: int = 0
    seed: int | None = None


class OnlineTrainer:
    """A trainer's model, optimizer and bounded buffer of samples not trained on yet.

    Batches of 4 are drawn at random from the buffer (a shuffle buffer: the online
    stand-in for the phased epoch's shuffle) and leave it, so each sample is used once.
    """

    def __init__(self, spec: StreamSpec, capacity: int, state: bytes | None = None) -> None:
        import torch
        from torch import nn

        from simferry.workload.model import build_model
        from simferry.workload.training import LEARNING_RATE, device

        self.dev = device()
        seed = None if spec.seed is None else spec.seed + spec.trainer
        if seed is not None:
            torch.manual_seed(seed)
        self.model = build_model(spec.trainer).to(self.dev)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
        self.loss_fn = nn.MSELoss()
        self.loss = float("nan")
        self.steps = 0
        if state is not None:
            saved = torch.load(io.BytesIO(state), map_location=self.dev, weights_only=True)
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            self.loss, self.steps = float(saved["loss"]), int(saved["steps"])
        g = spec.grid_size
        self.inputs = torch.empty((capacity, 1, g, g), dtype=torch.float32)
        self.targets = torch.empty((capacity, 1, g, g), dtype=torch.float32)
        self.ids: list[SampleId | None] = [None] * capacity
        self.free = list(range(capacity - 1, -1, -1))
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.ids) - len(self.free)

    @property
    def full(self) -> bool:
        return not self.free

    def add(self, sample: SampleId, inp: np.ndarray, target: np.ndarray) -> None:
        """Convert one sample into a free float32 slot (straight from a memory map)."""
        slot = self.free.pop()
        self.inputs[slot, 0].numpy()[...] = inp
        self.targets[slot, 0].numpy()[...] = target
        self.ids[slot] = sample

    def train_batch(self) -> list[SampleId]:
        """One optimizer step on up to 4 random buffered samples; return their ids."""
        import torch

        used = [i for i, s in enumerate(self.ids) if s is not None]
        slots = self.rng.sample(used, min(BATCH_SIZE, len(used)))
        idx = torch.tensor(slots)
        x = self.inputs[idx].to(self.dev, non_blocking=True)
        y = self.targets[idx].to(self.dev, non_blocking=True)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        self.loss = float(loss.detach())
        self.steps += 1
        ids = []
        for slot in slots:
            sample = self.ids[slot]
            assert sample is not None
            ids.append(sample)
            self.ids[slot] = None
            self.free.append(slot)
        return ids

    def state(self) -> bytes:
        """Model and optimizer state, for the next task of a by-value trainer chain."""
        import torch

        out = io.BytesIO()
        saved = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss,
            "steps": self.steps,
        }
        torch.save(saved, out)
        return out.getvalue()

    def weights(self) -> np.ndarray:
        from simferry.workload.model import flatten_weights

        return flatten_weights(self.model.cpu())


def prepare(spec: StreamSpec) -> None:
    from simferry.workload import training  # torch, in the trainer's process only

    training.prepare_trainer(spec.trainer, spec.trainers_here, spec.gpus)


def warm_trainer(spec: StreamSpec) -> int:
    """Import what a trainer needs (torch, the optimizer) before the first batch arrives."""
    prepare(spec)
    OnlineTrainer(spec, 1)
    return spec.trainer


def read_verified(
    transport: Transport, rec: TaskRecord, trainer: int, entry: Published
) -> tuple[np.ndarray, np.ndarray]:
    """Fetch one announced sample and check it against its producer's checksum."""
    keys = [SampleKey(entry.sim, entry.step, "input"), SampleKey(entry.sim, entry.step, "target")]
    with rec.io("transfer"):
        inp, target = transport.get_many(keys)
    rec.bytes += inp.nbytes + target.nbytes
    if checksum(inp, target) != entry.checksum:
        raise DataIntegrityError(
            f"Sample (sim {entry.sim}, step {entry.step}) read by trainer {trainer} does not "
            "match the checksum its simulation published; the data was overwritten or "
            "corrupted in transit."
        )
    rec.samples += 1
    return inp, target


# -- store-backed transports: one long task per simulation and per trainer ----------------


def stream_simulation_task(transport: Transport, spec: SimSpec) -> SimResult:
    """Run one simulation, storing then publishing each step as soon as it is computed."""
    rec = TaskRecord("sim", spec.sim)
    assert isinstance(transport, Indexed)
    manifest: list[ManifestEntry] = []
    for s in simulate(spec.sim, spec.num_sims, spec.grid_size, spec.step_seconds):
        entry = Published(*store_sample(transport, rec, s.sim, s.step, s.input, s.target))
        with rec.io("transfer"):
            transport.publish(entry)
        manifest.append(entry)
        fault_point("sim", spec.sim, s.step)
    with rec.io("transfer"):
        transport.publish(Published(spec.sim, END, rec.samples))
    return SimResult(rec.finish(), manifest)


@dataclass
class Cursor:
    """What a streaming trainer has been told: announced ids, ended simulations."""

    num_sims: int
    seen: set[SampleId] = field(default_factory=set)
    queue: deque[Published] = field(default_factory=deque)
    ended: dict[int, int] = field(default_factory=dict)

    def take(self, entries: list[Published]) -> None:
        for e in entries:
            if e.step == END:
                self.ended[e.sim] = e.checksum
            elif (e.sim, e.step) not in self.seen:  # at-least-once publication
                self.seen.add((e.sim, e.step))
                self.queue.append(e)

    @property
    def producing(self) -> bool:
        return len(self.ended) < self.num_sims


def stream_trainer_task(transport: Transport, spec: StreamSpec) -> TrainOutcome:
    """Train on samples as their simulations publish them, until every one was used once."""
    rec = TaskRecord("train", spec.trainer)
    prepare(spec)
    assert isinstance(transport, Indexed)
    reader = transport.subscribe(spec.num_sims)
    try:
        trainer = OnlineTrainer(spec, spec.buffer)
        cursor = Cursor(spec.num_sims)
        consumed: list[SampleId] = []
        step_times: list[float] = []
        idle = 0.0
        while True:
            while cursor.queue and not trainer.full:
                entry = cursor.queue.popleft()
                inp, target = read_verified(transport, rec, spec.trainer, entry)
                with rec.converting():
                    trainer.add((entry.sim, entry.step), inp, target)
                del inp, target
                fault_point("train", spec.trainer, rec.samples - 1)
            last = not cursor.producing and not cursor.queue
            if len(trainer) >= BATCH_SIZE or (last and len(trainer)):
                consumed += trainer.train_batch()
                step_times.append(time.time())
                timeout = 0.0  # just look for news between steps
            elif last:
                break
            else:
                timeout = POLL_WAIT_S  # nothing to train on: wait for data
            t0 = time.perf_counter()
            news = reader.poll(timeout)
            if timeout:
                idle += time.perf_counter() - t0
            else:
                rec.transfer_s += time.perf_counter() - t0
            cursor.take(news)
        short = {s: n for s, n in cursor.ended.items() if n != STEPS}
        if short:
            raise DataIntegrityError(
                f"Trainer {spec.trainer} saw simulations end after fewer than {STEPS} steps: "
                + ", ".join(f"sim {s} ({n})" for s, n in sorted(short.items()))
                + "."
            )
        weights = trainer.weights()
        with rec.io("transfer", weights.nbytes):
            transport.put(WeightsKey(spec.trainer), weights)
        note_stream(rec, trainer, consumed, step_times, idle)
        return TrainOutcome(rec.finish(), rec.samples, trainer.loss, trainer.steps)
    finally:
        reader.close()


def note_stream(
    rec: TaskRecord,
    trainer: OnlineTrainer,
    consumed: list[SampleId],
    step_times: list[float],
    idle: float,
) -> None:
    rec.extra.update(
        loss=trainer.loss,
        train_steps=trainer.steps,
        consumed=[list(i) for i in consumed],
        step_times=step_times,
        first_step=step_times[0] if step_times else None,
        idle_s=idle,
    )


# -- pass-by-value: chains of one-step and one-batch tasks ---------------------------------


@dataclass
class StepResult:
    record: TaskRecord
    entry: Published
    payload: bytes | None = None


def sim_step_task(transport: Transport, spec: SimSpec, step: int) -> StepResult:
    """One step of a simulation, returned by value (its completion is the publication)."""
    rec = TaskRecord("sim", spec.sim)
    period = float(periods(spec.num_sims)[spec.sim])
    if spec.step_seconds > 0:
        time.sleep(spec.step_seconds)
    inp = wave(spec.grid_size, period, step)
    target = wave(spec.grid_size, period, step + 1)
    entry = Published(*store_sample(transport, rec, spec.sim, step, inp, target))
    fault_point("sim", spec.sim, step)
    return StepResult(rec.finish(), entry)


@dataclass
class BatchResult:
    record: TaskRecord
    state: bytes
    consumed: list[SampleId]
    step_time: float | None
    loss: float
    steps: int
    #: The chain's last batch: the trainer saved its weights.
    final: bool = False
    payload: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def train_batch_task(
    transport: Transport,
    spec: StreamSpec,
    state: bytes | None,
    batch: list[Published],
    final: bool,
) -> BatchResult:
    """One training step of a by-value trainer chain; the last one also saves the weights."""
    rec = TaskRecord("train", spec.trainer)
    prepare(spec)
    t0 = time.perf_counter()
    trainer = OnlineTrainer(spec, max(1, len(batch)), state)
    state_s = time.perf_counter() - t0
    for entry in batch:
        inp, target = read_verified(transport, rec, spec.trainer, entry)
        with rec.io("transfer"):
            trainer.add((entry.sim, entry.step), inp, target)
    consumed, step_time = [], None
    if batch:
        consumed = trainer.train_batch()
        step_time = time.time()
    if final:
        weights = trainer.weights()
        with rec.io("transfer", weights.nbytes):
            transport.put(WeightsKey(spec.trainer), weights)
    t0 = time.perf_counter()
    new_state = trainer.state()
    state_s += time.perf_counter() - t0
    rec.finish()
    return BatchResult(
        rec, new_state, consumed, step_time, trainer.loss, trainer.steps, final,
        extra={"state_s": state_s, "state_bytes": len(new_state)},
    )  # fmt: skip
