"""Streaming mode (``--mode streaming``): trainers learn while simulations still produce.

Simulations publish each step's sample as soon as it is stored, plus an end marker, in
the transport's publication index (transports/index.py); trainers start with the
simulations, read what is new into a bounded buffer and train in batches of 4. The
epoch ends when every simulation has ended and every sample has been used once, which
the run proves from the ids each trainer recorded: a missed or repeated sample fails it.

Pass-by-value has no store to index, so there the main process is the index: simulations
and trainers run as chains of one-step and one-batch tasks, and each finished step is
forwarded to every trainer (transports/futures.py).

Besides the phased measures this reports ``time_to_first_step_s`` (first simulation
submitted -> first optimizer step; trainers are started just before), ``overlap_fraction`` (optimizer steps finished
before the last simulation ended), ``trainer_idle_s`` (mean time a trainer waited for data) and
``last_sim_end_s``; ``wall_s`` comes from the run as for phased runs.
"""

from __future__ import annotations

import functools
import random
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait
from dataclasses import dataclass, field
from typing import Any

from simferry.config import RunConfig
from simferry.engine.handoff import Inbound, arrived, carry, keep
from simferry.engine.progress import Progress
from simferry.engine.results import Mode, ModeResult, PhaseResult
from simferry.engine.retry import Task, gather, lost_errors, task_failure
from simferry.errors import Interrupted, RunFailure, UsageError
from simferry.launchers.base import KnowsCulprit, Launcher
from simferry.records import RunDir, TaskRecord
from simferry.transports.base import ByValue, Transport
from simferry.transports.index import Indexed, Published
from simferry.workload.online import (
    BATCH_SIZE,
    BatchResult,
    SampleId,
    StepResult,
    StreamSpec,
    sim_step_task,
    stream_simulation_task,
    stream_trainer_task,
    train_batch_task,
    warm_trainer,
)
from simferry.workload.simulation import STEPS
from simferry.workload.tasks import SimSpec, TrainOutcome


class StreamingRun(Mode):
    """Simulations and trainers at the same time; same contract as ``PhasedRun``."""

    def __init__(
        self,
        cfg: RunConfig,
        launcher: Launcher,
        transport: Transport,
        rundir: RunDir,
        progress: Progress,
    ) -> None:
        super().__init__(cfg, launcher, transport, rundir, progress)
        #: No store to index: the main process forwards each step (``ByValueStream``).
        self.by_value = isinstance(transport, ByValue)
        if not self.by_value and not isinstance(transport, Indexed):
            raise UsageError(
                f"The {cfg.transport.name} transport has no publication index for streaming "
                "yet; pass --mode phased or choose futures, filesystem, shm, redis or ddict."
            )
        w = cfg.workload
        per_node = -(-launcher.trainers // max(1, launcher.nodes))
        self.specs = [
            StreamSpec(i, per_node, w.grid_size, w.num_sims, w.replay_buffer, launcher.gpus, w.seed)
            for i in range(launcher.trainers)
        ]
        self.sim_specs = [
            SimSpec(k, w.num_sims, w.grid_size, w.step_seconds) for k in range(w.num_sims)
        ]

    def run(self) -> ModeResult:
        w = self.cfg.workload
        self.progress.phase("simulations", w.num_sims)
        self.progress.phase("training", self.launcher.trainers)
        warm_s = self.warm_trainers()
        if self.by_value:
            t0, sims, train, outcomes = ByValueStream(self).run()
        else:
            t0, sims, train, outcomes = self.stored()
        extra = {
            "replay_buffer": w.replay_buffer,
            "trainer_warmup_s": warm_s,
            **stream_measures(t0, sims.records, train.records),
        }

        def exactly_once(o: TrainOutcome) -> None:
            check_exactly_once(o.record.index, o.record.extra["consumed"], w.num_sims)

        return ModeResult(sims, train, outcomes, extra, exactly_once)

    def warm_trainers(self) -> float:
        """Have every trainer process import torch and the optimizer before data flows.

        Otherwise the first samples pile up behind a second or more of imports (more on a
        loaded machine), and time to first step would measure torch, not the data path.
        Returns the seconds spent, reported as ``trainer_warmup_s``.
        """
        t0 = time.perf_counter()
        futures = [self.launcher.submit("train", warm_trainer, s) for s in self.specs]
        for i, fut in enumerate(futures):
            try:
                fut.result()
            except BaseException as exc:
                raise task_failure(f"Trainer {i}", exc) from exc
        return time.perf_counter() - t0

    def stored(self) -> tuple[float, PhaseResult, PhaseResult, list[TrainOutcome]]:
        """One long task per simulation and per trainer, meeting in the transport's index."""
        client = self.transport.config()
        submit = self.launcher.submit
        futures: dict[Future[Any], Task] = {}
        # Trainers first, as a subscriber listens before anyone publishes. A retried
        # simulation publishes again (trainers drop ids seen); a retried trainer reads the
        # index from the start, the data being kept until the run ends.
        for tspec in self.specs:
            retry = functools.partial(
                submit, "train", carry, tspec, stream_trainer_task, client, ()
            )
            task = Task(f"Trainer {tspec.trainer}", retry)
            futures[task.start()] = task
        t0 = time.time()
        for spec in self.sim_specs:
            retry = functools.partial(
                submit, "sim", carry, spec, stream_simulation_task, client, ()
            )
            task = Task(f"Simulation {spec.sim}", retry)
            futures[task.start()] = task
        sims, train = PhaseResult(), PhaseResult()
        outcomes: list[TrainOutcome] = []

        def done(result: Any, received: float) -> None:
            rec: TaskRecord = result.record
            self.rundir.record(rec)
            if rec.kind == "sim":
                sims.records.append(rec)
                self.progress.advance("simulations", f"sim {rec.index}")
            else:
                train.records.append(rec)
                outcomes.append(result)
                self.progress.advance("training", f"trainer {rec.index}, loss {result.loss:.3g}")

        gather(futures, done, self.cfg.workload.retries, self.launcher, self.transport)
        finish_phases(t0, sims, train)
        return t0, sims, train, sorted(outcomes, key=lambda o: o.record.index)


@dataclass
class Chain:
    """A by-value trainer: its queue of forwarded samples and the state between tasks."""

    spec: StreamSpec
    rng: random.Random
    queue: list[tuple[Published, bytes]] = field(default_factory=list)
    state: bytes | None = None
    busy: bool = False
    done: bool = False
    record: TaskRecord | None = None
    consumed: list[SampleId] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    idle: float = 0.0
    idle_since: float | None = None
    state_s: float = 0.0
    last: BatchResult | None = None


class ByValueStream:
    """Pass-by-value streaming: the main process forwards finished steps to trainer chains."""

    def __init__(self, run: StreamingRun) -> None:
        self.run_ = run
        self.client = run.transport.config()
        seed = run.cfg.workload.seed
        self.chains = [
            Chain(s, random.Random(None if seed is None else seed + s.trainer)) for s in run.specs
        ]
        self.pending: dict[Future[Any], tuple[str, int, Task]] = {}
        self.sim_records: dict[int, TaskRecord] = {}
        self.ended: set[int] = set()
        self.retries = run.cfg.workload.retries
        self.lost = lost_errors(run.launcher)
        self.blame = run.launcher.died_running if isinstance(run.launcher, KnowsCulprit) else None

    def launch(self, kind: str, index: int, task: Task) -> None:
        try:
            self.pending[task.start()] = (kind, index, task)
        except BrokenExecutor as exc:
            raise RunFailure(
                f"{task.what} could not be submitted: the launcher could not replace its dead "
                f"worker ({exc})."
            ) from exc

    def retry(
        self, kind: str, index: int, task: Task, fut: Future[Any], exc: BaseException
    ) -> None:
        """Resubmit a task whose worker died (steps and batches are pure, so safe to repeat).

        Charged as ``gather`` does: not when the launcher says it only queued with the dead one.
        """
        if not isinstance(exc, self.lost):
            raise task_failure(task.what, exc) from exc
        task.charge(fut, exc, self.retries, self.blame)
        self.launch(kind, index, task)

    def submit_step(self, sim: int, step: int) -> None:
        spec = self.run_.sim_specs[sim]
        submit = functools.partial(
            self.run_.launcher.submit, "sim", carry, spec, sim_step_task, self.client, (), step
        )
        self.launch("sim", sim, Task(f"Simulation {sim} step {step}", submit))

    def run(self) -> tuple[float, PhaseResult, PhaseResult, list[TrainOutcome]]:
        t0 = time.time()
        for k in range(len(self.run_.sim_specs)):
            self.submit_step(k, 0)
        for chain in self.chains:
            chain.idle_since = t0
        sims, train = PhaseResult(), PhaseResult()
        outcomes: list[TrainOutcome] = []
        while self.pending:
            done, _ = wait(set(self.pending), return_when=FIRST_COMPLETED)
            received = time.time()
            for fut in done:
                kind, index, task = self.pending.pop(fut)
                try:
                    result = fut.result()
                except (Interrupted, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self.retry(kind, index, task, fut, exc)
                    continue
                rec = result.record
                rec.submitted, rec.received, rec.attempt = task.submitted, received, task.attempt
                payload = arrived(result, inbound=kind == "train")
                if kind == "sim":
                    assert payload is not None
                    self.step_done(result, payload, sims)
                else:
                    outcome = self.batch_done(self.chains[index], result, received)
                    if outcome is not None:
                        train.records.append(outcome.record)
                        outcomes.append(outcome)
            self.dispatch()
        finish_phases(t0, sims, train)
        return t0, sims, train, sorted(outcomes, key=lambda o: o.record.index)

    def step_done(self, result: StepResult, payload: bytes, sims: PhaseResult) -> None:
        e = result.entry
        self.sim_records[e.sim] = merge(self.sim_records.get(e.sim), result.record)
        for chain in self.chains:
            chain.queue.append((e, payload))
        if e.step + 1 < STEPS:
            self.submit_step(e.sim, e.step + 1)
            return
        self.ended.add(e.sim)
        rec = self.sim_records[e.sim]
        rec.extra["tasks"] = STEPS
        sims.records.append(rec)
        self.run_.rundir.record(rec)
        self.run_.progress.advance("simulations", f"sim {e.sim}")

    def batch_done(self, chain: Chain, result: BatchResult, now: float) -> TrainOutcome | None:
        chain.busy = False
        chain.idle_since = now
        chain.record = merge(chain.record, result.record)
        chain.state = result.state
        chain.consumed += result.consumed
        if result.step_time is not None:
            chain.step_times.append(result.step_time)
        chain.state_s += float(result.extra["state_s"])
        chain.last = result
        if not result.final:
            return None
        keep(self.run_.transport, result.payload)
        chain.done = True
        rec = chain.record
        rec.extra.update(
            loss=result.loss,
            train_steps=result.steps,
            consumed=[list(i) for i in chain.consumed],
            step_times=chain.step_times,
            first_step=chain.step_times[0] if chain.step_times else None,
            idle_s=chain.idle,
            state_s=chain.state_s,
            state_bytes=result.extra["state_bytes"],
        )
        self.run_.rundir.record(rec)
        self.run_.progress.advance("training", f"trainer {rec.index}, loss {result.loss:.3g}")
        return TrainOutcome(rec, rec.samples, result.loss, result.steps)

    def dispatch(self) -> None:
        """Give every waiting trainer its next batch: 4 random samples of its buffer window."""
        producing = len(self.ended) < len(self.run_.sim_specs)
        for chain in self.chains:
            if chain.busy or chain.done or (producing and len(chain.queue) < BATCH_SIZE):
                continue
            window = min(len(chain.queue), chain.spec.buffer)
            picked = sorted(chain.rng.sample(range(window), min(BATCH_SIZE, window)))
            batch = [chain.queue[j] for j in picked]
            for j in reversed(picked):
                del chain.queue[j]
            final = not producing and not chain.queue
            if chain.idle_since is not None:
                chain.idle += time.time() - chain.idle_since
                chain.idle_since = None
            submit = functools.partial(
                self.run_.launcher.submit, "train", carry, chain.spec, train_batch_task,
                self.client, Inbound(blob for _, blob in batch), chain.state, [e for e, _ in batch],
                final,
            )  # fmt: skip
            task = Task(f"Trainer {chain.spec.trainer}", submit)
            self.launch("train", chain.spec.trainer, task)
            chain.busy = True


def merge(total: TaskRecord | None, part: TaskRecord) -> TaskRecord:
    """One record for a chain of tasks: span, summed IO and bytes, largest memory, attempts."""
    if total is None:
        return part
    total.start = min(total.start, part.start)
    total.end = max(total.end, part.end)
    total.submitted = min(total.submitted, part.submitted)
    total.received = max(total.received, part.received)
    total.serialize_s += part.serialize_s
    total.transfer_s += part.transfer_s
    total.deserialize_s += part.deserialize_s
    total.convert_s += part.convert_s
    total.bytes += part.bytes
    total.samples += part.samples
    total.peak_rss = max(total.peak_rss, part.peak_rss)
    total.attempt = max(total.attempt, part.attempt)
    return total


def finish_phases(t0: float, sims: PhaseResult, train: PhaseResult) -> None:
    sims.run_s = max(r.received for r in sims.records) - t0
    train.run_s = max(r.received for r in train.records) - min(r.submitted for r in train.records)


def describe(ids: list[SampleId], limit: int = 8) -> str:
    text = ", ".join(f"(sim {s}, step {t})" for s, t in ids[:limit])
    return text + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def check_exactly_once(trainer: int, consumed: list[Any], num_sims: int) -> None:
    """Fail the run, naming the ids, unless ``consumed`` holds every sample exactly once."""
    counts = Counter((int(s), int(t)) for s, t in consumed)
    expected = {(s, t) for s in range(num_sims) for t in range(STEPS)}
    problems = []
    missed = sorted(expected - counts.keys())
    if missed:
        problems.append(f"missed {describe(missed)}")
    twice = sorted(k for k, n in counts.items() if n > 1)
    if twice:
        problems.append(f"used more than once {describe(twice)}")
    unknown = sorted(counts.keys() - expected)
    if unknown:
        problems.append(f"trained on ids no simulation produces {describe(unknown)}")
    if problems:
        raise RunFailure(
            f"Trainer {trainer} did not use every sample exactly once in the epoch: "
            + "; ".join(problems)
            + "."
        )


def stream_measures(
    t0: float, sims: list[TaskRecord], trainers: list[TaskRecord]
) -> dict[str, float | None]:
    """Overlap measures from the records' timestamps (one clock per node; t0 is the run's)."""
    last_sim_end = max(r.end for r in sims)
    times = [t for r in trainers for t in r.extra["step_times"]]
    firsts = [r.extra["first_step"] for r in trainers if r.extra.get("first_step") is not None]
    return {
        "time_to_first_step_s": min(firsts) - t0 if firsts else None,
        "overlap_fraction": sum(t <= last_sim_end for t in times) / len(times) if times else 0.0,
        "trainer_idle_s": sum(r.extra["idle_s"] for r in trainers) / len(trainers),
        "last_sim_end_s": last_sim_end - t0,
    }
