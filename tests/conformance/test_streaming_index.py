"""The definition of "a streaming index works": one suite, run over every transport with one.

Streaming mode stores a sample, then publishes ``(sim, step, checksum)``; trainers
subscribe and read what was announced. Writers here are forked processes that connect
from the owner's pickled spec, as simulation workers do, so every announcement crosses a
process boundary. Transports without an index (pass-by-value, ProxyStore) are skipped
with that reason; those that start a server or a runtime are integration tests, and the
DDict runs inside Dragon (``test_inside_dragon.py``).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import psutil
import pytest
import xxhash

from simferry.launchers.common import in_runtime
from simferry.transports.adios2 import Adios2Transport
from simferry.transports.base import RunContext, SampleKey, Transport
from simferry.transports.index import END, Indexed, IndexReader, Published

from .conftest import FACTORIES, data_paths, skip_if_not_applicable

STEPS = 3
SIMS = 2
GRID = 16
WAIT_S = 60.0
#: Factories whose backend is a server or a runtime of its own, not a library in this process.
RUNTIMES = {"redis", "redis-tcp-chunked", "proxystore-redis", "proxystore-zmq", "ddict"}
#: (factory, test) -> why that test does not apply to that transport's index.
NOT_APPLICABLE = {
    ("adios2-sst", "test_a_reader_that_starts_late_sees_everything"): (
        "an SST writer waits for all its readers before it sends a step, so no reader can "
        "come after the data (the engine starts trainers first)"
    ),
}
#: Factories found to have no index (no need to start them again for every test).
NO_INDEX: dict[str, str] = {}
#: This process's descendants just before the current test's owner started.
BEFORE_START: set[int] = set()
FORK = multiprocessing.get_context("fork")


def sample(sim: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrays whose values name their sample, so a mixed-up key shows."""
    inp = np.full((GRID, GRID), sim * 1000.0 + step)
    return inp, (inp + 0.5).astype(np.float32)


def checksum(inp: np.ndarray, target: np.ndarray) -> int:
    return xxhash.xxh3_64_intdigest(inp.tobytes() + target.tobytes())


def _write(spec: Any, sim: int) -> None:
    client = spec.connect()
    try:
        for step in range(STEPS):
            inp, target = sample(sim, step)
            client.put_many(
                [(SampleKey(sim, step, "input"), inp), (SampleKey(sim, step, "target"), target)]
            )
            client.publish(Published(sim, step, checksum(inp, target)))
        client.publish(Published(sim, END, STEPS))
    finally:
        client.close()


class Writers:
    """One forked simulation process per sim, as a launcher's workers would run them.

    Inside Dragon they are threads with their own clients instead: a forked child of a
    Dragon process cannot reach the runtime's services (it fails to attach to a DDict).
    """

    def __init__(self) -> None:
        self.procs: list[Any] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, owner: Transport) -> None:
        spec = owner.config()
        if in_runtime():
            self.threads = [
                threading.Thread(target=self._write, args=(spec, sim)) for sim in range(SIMS)
            ]
            for thread in self.threads:
                thread.start()
            return
        self.procs = [FORK.Process(target=_write, args=(spec, sim)) for sim in range(SIMS)]
        for proc in self.procs:
            proc.start()

    def _write(self, spec: Any, sim: int) -> None:
        try:
            _write(spec, sim)
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(WAIT_S)
        assert self.errors == [] and not any(t.is_alive() for t in self.threads)
        for proc in self.procs:
            proc.join(WAIT_S)
        assert [p.exitcode for p in self.procs] == [0] * len(self.procs)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)
        for thread in self.threads:
            thread.join(WAIT_S)


def expect_readers(owner: Transport, readers: int) -> None:
    """What the engine tells a transport whose writers wait for every reader (ADIOS2 SST)."""
    if isinstance(owner, Adios2Transport):
        owner.expect_readers(readers)


def read_all(owner: Transport, reader: IndexReader) -> list[Published]:
    """Poll until every simulation ended, reading and checking each sample as it is announced."""
    got: list[Published] = []
    deadline = time.monotonic() + WAIT_S
    while sum(e.step == END for e in got) < SIMS:
        assert time.monotonic() < deadline, f"the index announced only {got}"
        for entry in reader.poll(1.0):
            if entry.step != END:
                check_sample(owner, entry)
            got.append(entry)
    return got


def check_sample(transport: Transport, entry: Published) -> None:
    """The announced sample is already stored, whole, under its identity and checksum."""
    keys = [SampleKey(entry.sim, entry.step, "input"), SampleKey(entry.sim, entry.step, "target")]
    inp, target = transport.get_many(keys)
    want_inp, want_target = sample(entry.sim, entry.step)
    assert inp.tobytes() == want_inp.tobytes() and target.dtype == np.float32
    assert target.tobytes() == want_target.tobytes()
    assert checksum(np.asarray(inp), np.asarray(target)) == entry.checksum


def check_announced(got: list[Published]) -> None:
    """Each sample once, each simulation in step order, its end last with its count."""
    assert Counter((e.sim, e.step) for e in got) == Counter(
        {(sim, step): 1 for sim in range(SIMS) for step in [*range(STEPS), END]}
    )
    for sim in range(SIMS):
        mine = [e for e in got if e.sim == sim]
        assert [e.step for e in mine] == [*range(STEPS), END]
        assert mine[-1].checksum == STEPS


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.integration] if name in RUNTIMES else [])
        for name in sorted(FACTORIES)
    ]
)
def owner(request: pytest.FixtureRequest, run_ctx: RunContext) -> Iterator[Any]:
    """The owning client of a transport with an index, started for streaming mode."""
    name = request.param
    skip_if_not_applicable(name, request.node.originalname)
    why = NOT_APPLICABLE.get((name, request.node.originalname))
    if why:
        pytest.skip(why)
    if name in NO_INDEX:
        pytest.skip(NO_INDEX[name])
    ctx = replace(run_ctx, mode="streaming")
    cfg = FACTORIES[name](ctx)
    reason = cfg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    BEFORE_START.clear()
    BEFORE_START.update(descendants())
    transport = cfg.start(ctx)
    if not isinstance(transport, Indexed):
        transport.close()
        NO_INDEX[name] = f"{name} has no streaming index"
        pytest.skip(NO_INDEX[name])
    yield transport
    transport.close()


@pytest.fixture
def writers() -> Iterator[Writers]:
    found = Writers()
    yield found
    found.kill()


def test_reader_sees_each_sample_once_after_it_is_stored(owner: Any, writers: Writers) -> None:
    """A subscriber from the start sees every sample once, readable when announced."""
    expect_readers(owner, 1)
    reader = owner.subscribe(SIMS)
    try:
        writers.start(owner)
        got = read_all(owner, reader)
        writers.join()
    finally:
        reader.close()
    check_announced(got)


def test_a_reader_that_starts_late_sees_everything(owner: Any, writers: Writers) -> None:
    """A trainer may subscribe after the simulations ended (a slow start, a retry)."""
    writers.start(owner)
    writers.join()
    reader = owner.subscribe(SIMS)
    try:
        got = read_all(owner, reader)
    finally:
        reader.close()
    check_announced(got)


def test_after_the_end_a_poll_finds_nothing_new(owner: Any, writers: Writers) -> None:
    """Once every simulation ended, polls return nothing: no repeats, no invented samples."""
    expect_readers(owner, 1)
    reader = owner.subscribe(SIMS)
    try:
        assert reader.poll(0.0) == []  # nothing published yet
        writers.start(owner)
        check_announced(read_all(owner, reader))
        writers.join()
        t0 = time.monotonic()
        assert reader.poll(0.5) == []
        assert time.monotonic() - t0 < 5.0  # waits at most about its timeout
    finally:
        reader.close()


def test_several_readers_each_read_all_data(owner: Any, writers: Writers) -> None:
    """Every trainer reads every sample: one reader's reads take nothing from another's."""
    expect_readers(owner, 2)
    clients = [owner.config().connect() for _ in range(2)]
    readers = [c.subscribe(SIMS) for c in clients]
    try:
        writers.start(owner)
        got: list[list[Published]] = [[], []]
        deadline = time.monotonic() + WAIT_S
        while any(sum(e.step == END for e in g) < SIMS for g in got):
            assert time.monotonic() < deadline, f"the readers were announced only {got}"
            for client, reader, mine in zip(clients, readers, got, strict=True):
                for entry in reader.poll(0.2):
                    if entry.step != END:
                        check_sample(client, entry)
                    mine.append(entry)
        writers.join()
    finally:
        for client, reader in zip(clients, readers, strict=True):
            reader.close()
            client.close()
    for mine in got:
        check_announced(mine)


def test_close_removes_the_index_with_the_data(owner: Any, writers: Writers) -> None:
    """The owner's close frees the index like the samples: files, servers, processes."""
    expect_readers(owner, 1)
    reader = owner.subscribe(SIMS)
    try:
        writers.start(owner)
        check_announced(read_all(owner, reader))
        writers.join()
    finally:
        reader.close()
    paths = data_paths(owner)
    assert all(p.exists() for p in paths)
    owner.close()
    assert not any(p.exists() for p in paths)
    deadline = time.monotonic() + 10
    while descendants() - BEFORE_START and time.monotonic() < deadline:
        time.sleep(0.1)
    assert descendants() <= BEFORE_START, "a process of the transport outlived its close"
