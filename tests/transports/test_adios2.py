"""ADIOS2 streams across real processes: what the shared suite cannot show for a stream.

Writers run in forked processes, as simulations do; the owner (or several readers) read.
SST runs here with its real socket data plane on loopback.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import replace

import numpy as np
import psutil
import pytest

from simferry.transports.base import RunContext, SampleKey
from simferry.transports.index import END, Published

adios2 = pytest.importorskip("simferry.transports.adios2")
if adios2.ab is None:
    pytest.skip("ADIOS2 is not installed", allow_module_level=True)

STEPS = 3
GRID = 64


def sample(sim: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    inp = np.full((GRID, GRID), sim * 100.0 + step)
    return inp, (inp * 2).astype(np.float32)


def _write(
    spec: object, sim: int, publish: bool, die_after: int | None, hold: object, done: object
) -> None:
    client = spec.connect()  # type: ignore[attr-defined]
    for step in range(STEPS):
        inp, target = sample(sim, step)
        client.put_many(
            [(SampleKey(sim, step, "input"), inp), (SampleKey(sim, step, "target"), target)]
        )
        if publish:
            client.publish(Published(sim, step, 1000 + step))
        if die_after == step:
            os.kill(os.getpid(), signal.SIGKILL)
    if publish:
        client.publish(Published(sim, END, STEPS))
    client.close()
    done.set()  # type: ignore[attr-defined]
    # A simulation worker outlives its task; a staged SST writer dies with it.
    hold.wait(60)  # type: ignore[attr-defined]


HOLD = multiprocessing.get_context("fork").Event()


@pytest.fixture(autouse=True)
def _release_writers():
    HOLD.clear()
    yield
    HOLD.set()


def writer(spec: object, sim: int, publish: bool, die_after: int | None = None):
    ctx = multiprocessing.get_context("fork")
    done = ctx.Event()
    proc = ctx.Process(target=_write, args=(spec, sim, publish, die_after, HOLD, done))
    proc.start()
    proc.done = done  # type: ignore[attr-defined]
    return proc


def finish(procs: list) -> None:
    """Let the writer processes ("workers") end, as a launcher's shutdown does."""
    HOLD.set()
    for proc in procs:
        proc.join(60)


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def check_sample(transport: object, sim: int, step: int) -> None:
    inp, target = transport.get_many(  # type: ignore[attr-defined]
        [SampleKey(sim, step, "input"), SampleKey(sim, step, "target")]
    )
    want_inp, want_target = sample(sim, step)
    assert inp.tobytes() == want_inp.tobytes()
    assert target.dtype == np.float32 and target.tobytes() == want_target.tobytes()


@pytest.mark.parametrize("engine", ["bp5", "sst"])
def test_phased_read_after_writers_ended(engine: str, run_ctx: RunContext) -> None:
    """Phased mode: two simulations write and end, then one trainer reads every sample."""
    before = descendants()
    owner = adios2.Adios2Config(adios2_engine=engine).start(run_ctx)
    try:
        procs = [writer(owner.config(), sim, publish=False) for sim in range(2)]
        assert all(p.done.wait(60) for p in procs)  # the simulation phase ended
        for sim in range(2):
            for step in range(STEPS):
                check_sample(owner, sim, step)
        with pytest.raises(KeyError):
            owner.get(SampleKey(0, STEPS, "input"))  # past the end of the stream
        finish(procs)
        assert [p.exitcode for p in procs] == [0, 0]
    finally:
        owner.close()
    assert not owner.root.exists()
    deadline = time.monotonic() + 30  # staged SST writers exit once their readers are done
    while descendants() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert descendants() <= before, "a staged SST writer outlived its stream"


def test_sst_serves_every_step_to_each_of_several_readers(run_ctx: RunContext) -> None:
    """T trainers are T readers of each stream; the writer waits for all of them."""
    owner = adios2.Adios2Config(adios2_engine="sst").start(run_ctx)
    owner.expect_readers(2)
    try:
        proc = writer(owner.config(), 0, publish=False)
        assert proc.done.wait(60)
        readers = [owner.config().connect() for _ in range(2)]
        deadline = time.monotonic() + 30
        for reader in readers:  # both join before either reads (they are one thread here)
            while reader.reader(0) is None and time.monotonic() < deadline:
                time.sleep(0.05)
        for step in range(STEPS):
            for reader in readers:
                check_sample(reader, 0, step)
        for reader in readers:
            reader.close()
        finish([proc])
    finally:
        owner.close()


@pytest.mark.parametrize("engine", ["bp5", "sst"])
def test_streaming_index_announces_each_step_then_the_end(engine: str, run_ctx: RunContext) -> None:
    owner = adios2.Adios2Config(adios2_engine=engine).start(replace(run_ctx, mode="streaming"))
    try:
        reader = owner.subscribe(num_sims=1)
        assert reader.poll(0) == []  # nothing written yet: no stream to open
        proc = writer(owner.config(), 0, publish=True)
        got: list[Published] = []
        deadline = time.monotonic() + 60
        while reader.pending and time.monotonic() < deadline:
            got += reader.poll(1.0)
        finish([proc])
        assert got == [*(Published(0, s, 1000 + s) for s in range(STEPS)), Published(0, END, STEPS)]
        for step in range(STEPS):
            check_sample(owner, 0, step)
    finally:
        owner.close()


@pytest.mark.parametrize("engine", ["bp5", "sst"])
def test_writer_killed_mid_stream_shows_only_whole_steps_and_leaves_nothing(
    engine: str, run_ctx: RunContext
) -> None:
    """A simulation killed after its second step: readers see whole steps, then an end or
    an error, never a torn one; the owner removes every file and no process is left."""
    before = descendants()
    owner = adios2.Adios2Config(adios2_engine=engine).start(replace(run_ctx, mode="streaming"))
    try:
        reader = owner.subscribe(num_sims=1)
        proc = writer(owner.config(), 0, publish=True, die_after=1)
        got: list[Published] = []
        deadline = time.monotonic() + 20
        try:
            # BP5 has no end for a killed writer (the run fails the task); SST ends the stream.
            while reader.pending and time.monotonic() < deadline:
                got += reader.poll(0.5)
                if proc.exitcode is not None and len(got) >= 2:
                    got += reader.poll(0.5)
                    break
        except adios2.TransportError:
            pass  # SST: the stream failed with its writer, which is a clean failure too
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL
        steps = [e.step for e in got if e.step != END]
        assert steps == list(range(len(steps))) and len(steps) <= 2
        for step in steps:
            check_sample(owner, 0, step)
    finally:
        owner.close()
    assert not owner.root.exists()
    assert descendants() <= before


def test_each_sst_stream_has_a_writer_process_of_its_own(run_ctx: RunContext) -> None:
    """A worker that writes one stream after another never writes two from one process.

    EVPath's per-process state goes stale once a process's last SST stream closed, and a
    later stream from that process had trainers' queries delivered to another worker,
    which crashed (module docstring); pool and Parsl workers run many simulations.
    """
    owner = adios2.Adios2Config(adios2_engine="sst").start(replace(run_ctx, mode="streaming"))
    client = owner.config().connect()
    try:
        pids = []
        for sim in range(2):
            inp, target = sample(sim, 0)
            client.put_many(
                [(SampleKey(sim, 0, "input"), inp), (SampleKey(sim, 0, "target"), target)]
            )
            pids.append(client._writers[sim].proc.pid)
        assert len(set(pids)) == 2 and os.getpid() not in pids
        assert set(pids) <= descendants()
    finally:
        client.close()
        owner.close()


def test_a_streaming_writer_whose_task_failed_is_stopped_not_awaited(run_ctx: RunContext) -> None:
    """A task that fails before its stream's end closes its client: the writer, which
    would wait for a trainer that may never read, is stopped and the stream fails."""
    before = descendants()
    owner = adios2.Adios2Config(adios2_engine="sst").start(replace(run_ctx, mode="streaming"))
    try:
        reader = owner.subscribe(num_sims=1)
        client = owner.config().connect()
        inp, target = sample(0, 0)
        client.put_many([(SampleKey(0, 0, "input"), inp), (SampleKey(0, 0, "target"), target)])
        client.publish(Published(0, 0, 1000))
        deadline = time.monotonic() + 30
        while owner.reader(0) is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the writer's stream is open and has its reader
        t0 = time.monotonic()
        client.close()  # no END: its task failed
        assert time.monotonic() - t0 < 10
        got: list[Published] = []
        with pytest.raises(adios2.TransportError):
            while reader.pending and time.monotonic() < deadline:
                got += reader.poll(0.5)
        assert END not in [e.step for e in got]
    finally:
        owner.close()
    assert descendants() <= before
