"""The functions that run inside worker processes: one simulation, one trainer.

They receive small pickleable specs and a client of the run's transport (which
``engine.handoff.carry`` connects in the worker, whatever the transport is) and return
their ``TaskRecord`` with whatever the engine must see: checksums from producers,
verification counts and losses from trainers. ``payload`` is filled by the engine for a
by-value transport, never by the task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from simferry.faults import fault_point
from simferry.records import TaskRecord
from simferry.transports.base import SampleKey, Transport, WeightsKey
from simferry.transports.exceptions import DataIntegrityError
from simferry.workload.simulation import simulate

if TYPE_CHECKING:
    from simferry.workload.training import SampleBuffer

#: (sim, step, checksum of input bytes followed by target bytes)
ManifestEntry = tuple[int, int, int]


def checksum(inp: np.ndarray, target: np.ndarray) -> int:
    h = xxhash.xxh3_64()
    h.update(np.ascontiguousarray(inp).data)
    h.update(np.ascontiguousarray(target).data)
    return h.intdigest()


@dataclass(frozen=True)
class SimSpec:
    sim: int
    num_sims: int
    grid_size: int
    step_seconds: float


@dataclass
class SimResult:
    record: TaskRecord
    manifest: list[ManifestEntry]
    payload: bytes | None = None


def store_sample(
    transport: Transport, rec: TaskRecord, sim: int, step: int, inp: np.ndarray, target: np.ndarray
) -> ManifestEntry:
    """Store one sample's input and target (timed as transfer) and return its manifest entry.

    Every mode stores a sample this way, so the checksum a trainer verifies is always taken
    from the arrays as they were handed to the transport.
    """
    items = [(SampleKey(sim, step, "input"), inp), (SampleKey(sim, step, "target"), target)]
    with rec.io("transfer", inp.nbytes + target.nbytes):
        transport.put_many(items)
    rec.samples += 1
    return (sim, step, checksum(inp, target))


def simulation_task(transport: Transport, spec: SimSpec) -> SimResult:
    """Run one simulation, writing each step's input and target through the transport."""
    rec = TaskRecord("sim", spec.sim)
    manifest: list[ManifestEntry] = []
    for s in simulate(spec.sim, spec.num_sims, spec.grid_size, spec.step_seconds):
        manifest.append(store_sample(transport, rec, s.sim, s.step, s.input, s.target))
        fault_point("sim", spec.sim, s.step)
    return SimResult(rec.finish(), manifest)


@dataclass(frozen=True)
class TrainSpec:
    trainer: int
    trainers_here: int
    grid_size: int
    expected_samples: int
    gpus: int = 0
    seed: int | None = None


@dataclass
class TrainOutcome:
    record: TaskRecord
    verified: int
    loss: float
    steps: int
    payload: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_manifest(manifest: list[ManifestEntry], expected: int, trainer: int) -> None:
    ids = {(sim, step) for sim, step, _ in manifest}
    if len(manifest) != expected or len(ids) != expected:
        raise DataIntegrityError(
            f"Trainer {trainer} was given {len(manifest)} samples ({len(ids)} distinct) but the "
            f"run produces {expected}; samples were lost or duplicated."
        )


def trainer_task(
    transport: Transport, spec: TrainSpec, manifest: list[ManifestEntry]
) -> TrainOutcome:
    """Read and verify every sample, train one epoch, save the weights through the transport."""
    # torch loads here, in the trainer's process: the main process imports this module
    # before it forks workers, which must not inherit torch's threads.
    from simferry.workload import model, training

    rec = TaskRecord("train", spec.trainer)
    training.prepare_trainer(spec.trainer, spec.trainers_here, spec.gpus)
    check_manifest(manifest, spec.expected_samples, spec.trainer)
    buf = training.SampleBuffer(len(manifest), spec.grid_size)
    read_all(transport, rec, spec, manifest, buf)
    result = training.train_epoch(spec.trainer, buf, spec.seed)
    del buf
    weights = model.flatten_weights(result.model)
    with rec.io("transfer", weights.nbytes):
        transport.put(WeightsKey(spec.trainer), weights)
    rec.extra["loss"] = result.loss
    rec.extra["train_steps"] = result.steps
    return TrainOutcome(rec.finish(), rec.samples, result.loss, result.steps)


def read_all(
    transport: Transport,
    rec: TaskRecord,
    spec: TrainSpec,
    manifest: list[ManifestEntry],
    buf: SampleBuffer,
) -> None:
    """Read every sample of the manifest into the float32 buffer, checking each checksum."""
    for row, (sim, step, expected) in enumerate(manifest):
        keys = [SampleKey(sim, step, "input"), SampleKey(sim, step, "target")]
        # A get returns data in memory (memory-mapped transports populate their mapping),
        # so the conversion after it is computation, timed on its own.
        with rec.io("transfer"):
            inp, target = transport.get_many(keys)
        with rec.converting():
            buf.fill(row, inp, target)
        rec.bytes += inp.nbytes + target.nbytes
        if checksum(inp, target) != expected:
            raise DataIntegrityError(
                f"Sample (sim {sim}, step {step}) read by trainer {spec.trainer} does not "
                "match the checksum its simulation recorded; the data was overwritten or "
                "corrupted in transit."
            )
        rec.samples += 1
        fault_point("train", spec.trainer, row)
        del inp, target
