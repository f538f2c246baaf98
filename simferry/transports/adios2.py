"""ADIOS2: each simulation writes its steps as an ADIOS2 stream, BP5 files or SST staging.

This is how a simulation code on a leadership machine hands data to its consumers. Each
simulation is one ADIOS2 *writer* of its own stream ``s<sim>``; one ADIOS2 step holds
what one ``put_many`` gave (a sample's input and target, as variables named by kind,
dtype and rank, plus a small ``meta`` variable with the sample's step number).

- ``--adios2-engine bp5``: the stream is a BP5 file (directory ``s<sim>.bp``) in the data
  directory; it stays readable after the writer closed it, so phased runs are plain.
- ``--adios2-engine sst``: the stream goes from the writer's memory straight to the
  readers through SST, with the WAN (EVPath sockets) data plane and socket control
  plane on loopback; only a small contact file ``s<sim>.sst`` touches the data
  directory. Loopback is only the address in that contact file: EVPath binds its
  sockets to every interface (no SST or environment setting changes that in adios2
  2.12), and SST has no authentication, so while a run lasts its writers and readers
  can be reached from the network (the transports guide says so). SST delivers every
  step to every reader connected when it is written, so the writer waits
  (``RendezvousReaderCount``) until all trainers joined.

Several trainers, each reading all data: every trainer is one independent ADIOS2 reader
of every simulation's stream, so N simulations and T trainers make N writers and N x T
readers. BP5 readers just open the file; an SST writer holds each step in its queue until
all T readers released it, so with SST all trainers must run at the same time (a
launcher that queued some behind others would leave the first ones waiting, and their
reads fail after ``READ_WAIT_S``). Readers read a stream in step order (a stream has no random
access); what was read ahead is kept until asked for, and each step is handed out once.

Every SST stream has a writer process of its own (``WriterProcess``), fed the steps
through a pipe. EVPath keeps per-process connection state that goes stale once a
process's last SST stream closed: a second stream written later from the same worker
(pool and Parsl workers run many simulations) had trainers' queries delivered to the
wrong process, which then crashed (seen under load on 2 cores: the contact's stream
pointer belonged to another worker). One stream per process never reuses that state,
and a crash in a writer fails its simulation instead of killing the worker. The same
misdelivery still happens, rarely and only under heavy load, between fresh writer
processes when one started after another had ended (2 runs in 40 with 6 busy loops on
2 cores; none in 24 when every simulation had a worker of its own, all alive at once;
ENet as the control transport crashed as often, elsewhere): the run then fails with one sentence
naming the stream instead of hanging.

Phased mode with SST: the simulation phase ends before any trainer exists, but an SST
writer can only hand its steps to readers that are connected. So a phased writer process
keeps the steps (``buffered``), outlives the simulation's task, then opens the stream,
waits for the trainers, sends, and exits. It holds the data in memory until then (like a
staging server); launchers that stop simulation workers after their phase (Dragon)
cannot serve this and are refused.

Streaming index (``--mode streaming``): the stream itself. After a data step a
simulation writes a publication step (``meta`` = step, checksum, 1), and its end is the
stream's end (``EndOfStream``). A trainer polls every stream it has opened with a zero
timeout and opens a stream once its BP5 metadata or SST contact file appears.

Trained weights are small BP5 files ``w<trainer>.bp`` for both engines (the main process
reads them after the trainers ended, when no SST reader is left).

IO figures: BP5 simulation IO is writing its steps to the file system; SST simulation IO
is piping the step to its writer process, the transfer itself lands in the
trainers' read time (which also includes waiting for slower readers of the same stream).
The owner removes the data directory (files, contact files) on every exit path; SST
ports close with the processes that opened them.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
from pydantic import Field

from simferry.errors import UsageError
from simferry.plugins import register_transport
from simferry.transports.base import (
    ClientSpec,
    Key,
    RunContext,
    SampleKey,
    TransportConfig,
    WeightsKey,
    get_many_each,
)
from simferry.transports.common import (
    DATA_DIR_HELP,
    HeldByName,
    check_data_dir,
    check_memory,
    die_with_parent,
    make_data_dir,
    stop_process,
)
from simferry.transports.exceptions import KeyNotFoundError, TransportError
from simferry.transports.index import END, Backoff, Published
from simferry.units import MIB


def _import_bindings() -> Any:
    """``adios2.bindings`` without the package's optional torch and cupy imports.

    ``import adios2`` imports torch and cupy when they are installed, for integrations
    simferry does not use: 2.5 s instead of 0.15 s here, paid by every simulation worker
    and by each SST writer process. Both are hidden for that one import only.
    """
    hidden = {m: sys.modules.get(m) for m in ("torch", "cupy") if m not in sys.modules}
    for name in hidden:
        # None is the documented way to block an import ("import torch" then raises
        # ImportError); typeshed types sys.modules without it, hence the cast.
        cast(dict[str, Any], sys.modules)[name] = None
    try:
        import adios2.bindings

        return adios2.bindings
    except ImportError:  # reported by unavailable_reason(); the transport stays listed
        return None
    finally:
        for name in hidden:
            sys.modules.pop(name, None)


ab = _import_bindings()

Engine = Literal["bp5", "sst"]
#: Longest wait for the next step of a stream a reader needs (phased reads).
READ_WAIT_S = 300.0
#: Longest wait for a phased SST writer to open its stream before a key counts as missing.
APPEAR_WAIT_S = 30.0
#: How long a reader retries opening an SST stream whose writer did not answer yet.
OPEN_RETRY_S = 60.0
#: ``meta`` of a step: (sample step, checksum as int64, 1 for a publication step).
META = "meta"


def _sst_params(readers: int) -> dict[str, str]:
    return {
        "RendezvousReaderCount": str(readers),
        "QueueLimit": "0",
        "DataTransport": "WAN",
        "ControlTransport": "sockets",
        "NetworkInterface": "lo",
        "OpenTimeoutSecs": "60",
    }


def var_name(kind: str, array: np.ndarray) -> str:
    return f"{kind}|{array.dtype.str}|{array.ndim}"


class StreamWriter:
    """One ADIOS2 writer of one stream, in this process."""

    def __init__(self, path: Path, engine: Engine, readers: int) -> None:
        self.path = path
        self.adios = ab.ADIOS()
        self.io = self.adios.DeclareIO(path.name)
        self.io.SetEngine("SST" if engine == "sst" else "BP5")
        if engine == "sst":
            self.io.SetParameters(_sst_params(readers))
        self.handle: Any = None
        self.vars: dict[str, Any] = {}

    def write(self, arrays: dict[str, np.ndarray], meta: np.ndarray) -> None:
        if self.handle is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # SST: returns once every reader joined (the trainers are already polling).
            self.handle = self.io.Open(str(self.path), ab.Mode.Write)
        self.handle.BeginStep()
        for name, array in [*arrays.items(), (META, meta)]:
            var = self.vars.get(name)
            shape = list(array.shape)
            if var is None:
                var = self.io.DefineVariable(name, array, shape, [0] * len(shape), shape, False)
                self.vars[name] = var
            else:
                var.SetShape(shape)
                var.SetSelection([[0] * len(shape), shape])
            self.handle.Put(var, array, ab.Mode.Sync)
        self.handle.EndStep()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.Close()
            self.handle = None

    def release(self) -> None:
        """The client closes: a file stream ends as written (see ``WriterProcess``)."""
        self.close()


HEADER = struct.Struct("<I")


class WriterProcess:
    """An SST writer in a process of its own, one per stream (module docstring).

    The steps go to it through a pipe as raw bytes (no pickles). ``buffered`` (phased
    runs): it keeps every step in memory until the stream ends, then opens the stream,
    waits for every trainer, sends and exits, outliving the simulation's task. Otherwise
    (streaming) it opens the stream at the first step and sends each step as it comes, and
    ``close`` waits until the trainers took them all. (The ADIOS2 bindings hold the GIL
    while SST waits for readers, so a thread could not do this.) It dies with the worker
    (``PR_SET_PDEATHSIG``) and keeps out of a terminal's Ctrl-C.
    """

    def __init__(self, path: Path, readers: int, buffered: bool) -> None:
        self.path = path
        self.buffered = buffered
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        code = (
            "from simferry.transports.adios2 import stage; "
            f"stage({str(path)!r}, {readers}, {buffered})"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=die_with_parent,
        )

    def write(self, arrays: dict[str, np.ndarray], meta: np.ndarray) -> None:
        items = [*arrays.items(), (META, meta)]
        head = json.dumps([[n, a.dtype.str, list(a.shape)] for n, a in items]).encode()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(HEADER.pack(len(head)) + head)
            for _, array in items:
                self.proc.stdin.write(array.reshape(-1).view(np.uint8).data)
            self.proc.stdin.flush()  # the whole step, now: a trainer may be waiting for it
        except BrokenPipeError:
            raise TransportError(f"The ADIOS2 SST writer of {self.path.name} died.") from None

    def close(self) -> None:
        """End the stream; a streaming writer's end waits until the trainers took it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if not self.buffered and self.proc.wait() != 0:
            raise TransportError(
                f"The ADIOS2 SST writer of {self.path.name} failed "
                f"(exit status {self.proc.returncode}) before its trainers took every step."
            )

    def release(self) -> None:
        """The client closes with this stream still open: a phased stream ends here as
        written; a streaming one never got its end because its task failed, so its writer
        is stopped (the stream must not look complete, and no trainer may be waited for)."""
        if self.buffered:
            self.close()
        else:
            stop_process(self.proc)


def stage(path: str, readers: int, buffered: bool) -> None:
    """The SST writer process (``WriterProcess``): read steps from stdin and serve them."""
    # sys.stdin.buffer is a BufferedReader (it has readinto); typeshed says BinaryIO.
    src = cast(io.BufferedReader, sys.stdin.buffer)
    steps: Iterable[tuple[dict[str, np.ndarray], np.ndarray]] = _read_steps(src)
    if buffered:
        steps = list(steps)
    writer = StreamWriter(Path(path), "sst", readers)
    for arrays, meta in steps:
        writer.write(arrays, meta)
    writer.close()


def _read_steps(src: io.BufferedReader) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    while head := src.read(HEADER.size):
        (size,) = HEADER.unpack(head)
        arrays: dict[str, np.ndarray] = {}
        for name, dtype, shape in json.loads(src.read(size)):
            array = np.empty(shape, np.dtype(dtype))
            src.readinto(array.reshape(-1).view(np.uint8).data)
            arrays[name] = array
        yield arrays, arrays.pop(META)


_READER_IDS = itertools.count()


class StreamReader:
    """One ADIOS2 reader of one stream, reading steps in order."""

    def __init__(self, adios: Any, path: Path, engine: Engine) -> None:
        # A name used once: a failed Open leaves its IO declared, and a retry's object
        # could get the same id().
        name = f"r-{path.name}-{next(_READER_IDS)}"
        self.io = adios.DeclareIO(name)
        self.io.SetEngine("SST" if engine == "sst" else "BP5")
        if engine == "sst":
            self.io.SetParameters(_sst_params(1))
        try:
            self.handle = self.io.Open(str(path), ab.Mode.Read)
        except RuntimeError:
            adios.RemoveIO(name)
            raise
        self.ended = False
        self.samples = 0

    def next(self, timeout: float) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        """The next step's arrays and meta, or ``None`` (nothing yet, or the stream ended)."""
        if self.ended:
            return None
        status = self.handle.BeginStep(ab.StepMode.Read, timeout)
        if status == ab.StepStatus.EndOfStream:
            self.ended = True
            return None
        if status != ab.StepStatus.OK:
            if status == ab.StepStatus.OtherError:
                raise TransportError("An ADIOS2 stream failed (its writer died?).")
            return None
        out: dict[str, np.ndarray] = {}
        for name in self.io.AvailableVariables():
            var = self.io.InquireVariable(name)
            shape = [int(n) for n in var.Shape()]
            dtype = np.dtype(META_DTYPE if name == META else name.split("|")[1])
            buf = np.empty(shape, dtype)
            if buf.size:
                var.SetSelection([[0] * len(shape), shape])
                self.handle.Get(var, buf, ab.Mode.Deferred)
            out[name] = buf
        self.handle.EndStep()
        meta = out.pop(META)
        if not meta[2]:
            self.samples += 1
        return out, meta

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.Close()


META_DTYPE = np.int64


class Adios2Transport(HeldByName):
    """Writers of the streams this process produces, readers of those it consumes.

    A stream cannot be listed and is append-only: ``keys`` and ``delete`` see only the
    arrays read ahead and not handed out yet (``held``).
    """

    def __init__(self, spec: Adios2Spec, owner: bool = False) -> None:
        self.spec = spec
        self.root = spec.root
        self.owner = owner
        self._writers: dict[int, StreamWriter | WriterProcess] = {}
        self._readers: dict[int, StreamReader] = {}
        self.held: dict[str, np.ndarray] = {}
        self._adios: Any = None
        self._published: list[Published] = []
        #: When opening each SST stream first failed (``reader``).
        self._open_failed: dict[int, float] = {}

    # -- paths ------------------------------------------------------------------------
    def stream_path(self, sim: int) -> Path:
        name = f"s{sim:06d}"
        return self.root / (name + ".bp" if self.spec.engine == "bp5" else name)

    def ready(self, sim: int) -> bool:
        """Whether a reader can open ``sim``'s stream now (its writer has started)."""
        path = self.stream_path(sim)
        if self.spec.engine == "sst":
            return path.with_name(path.name + ".sst").exists()
        return (path / "md.idx").exists()

    def weights_path(self, trainer: int) -> Path:
        return self.root / f"w{trainer:06d}.bp"

    # -- writing ----------------------------------------------------------------------
    def expect_readers(self, readers: int) -> None:
        """Set how many trainers read every stream (an SST writer waits for all of them)."""
        self.spec = self.spec.model_copy(update={"readers": max(1, readers)})

    def _writer(self, sim: int) -> StreamWriter | WriterProcess:
        writer = self._writers.get(sim)
        if writer is None:
            path = self.stream_path(sim)
            if self.spec.engine == "sst":
                writer = WriterProcess(path, self.spec.readers, buffered=self.spec.staged)
            else:
                writer = StreamWriter(path, self.spec.engine, self.spec.readers)
            self._writers[sim] = writer
        return writer

    def put(self, key: Key, array: np.ndarray) -> None:
        self.put_many([(key, array)])

    def put_many(self, items: Sequence[tuple[Key, np.ndarray]]) -> None:
        steps: dict[int, tuple[int, dict[str, np.ndarray]]] = {}
        for key, array in items:
            arr = np.ascontiguousarray(array).reshape(np.shape(array))
            if arr.ndim == 0 or arr.dtype.hasobject or arr.dtype.fields is not None:
                raise TransportError(
                    f"The ADIOS2 transport stores numeric arrays of rank >= 1, not {key.name()}."
                )
            if isinstance(key, WeightsKey):
                self._write_weights(key, arr)
                continue
            step, arrays = steps.setdefault(key.sim, (key.step, {}))
            if step != key.step:  # one ADIOS2 step per sample
                self._writer(key.sim).write(arrays, np.array([step, 0, 0], META_DTYPE))
                steps[key.sim] = (key.step, {})
                arrays = steps[key.sim][1]
            arrays[var_name(key.kind, arr)] = arr
        try:
            for sim, (step, arrays) in steps.items():
                self._writer(sim).write(arrays, np.array([step, 0, 0], META_DTYPE))
        except RuntimeError as exc:
            raise TransportError(f"ADIOS2 could not write to {self.root}: {exc}") from None

    def _write_weights(self, key: WeightsKey, array: np.ndarray) -> None:
        writer = StreamWriter(self.weights_path(key.trainer), "bp5", 1)
        writer.write({var_name("weights", array): array}, np.array([0, 0, 0], META_DTYPE))
        writer.close()

    def publish(self, entry: Published) -> None:
        writer = self._writer(entry.sim)
        if entry.step == END:
            writer.close()
            del self._writers[entry.sim]
            return
        checksum = np.array([entry.checksum], np.uint64).view(np.int64)[0]
        writer.write({}, np.array([entry.step, checksum, 1], META_DTYPE))

    def subscribe(self, num_sims: int) -> Adios2IndexReader:
        return Adios2IndexReader(self, num_sims)

    # -- reading ----------------------------------------------------------------------
    def reader(self, sim: int) -> StreamReader | None:
        found = self._readers.get(sim)
        if found is None and self.ready(sim):
            if self._adios is None:
                self._adios = ab.ADIOS()
            try:
                found = StreamReader(self._adios, self.stream_path(sim), self.spec.engine)
            except RuntimeError as exc:
                if self._retry_open(sim, str(exc)):
                    return None
                raise TransportError(f"ADIOS2 could not open stream s{sim:06d}: {exc}") from None
            self._readers[sim] = found
        return found

    def _retry_open(self, sim: int, error: str) -> bool:
        """Whether to try opening ``sim``'s SST stream again later.

        An SST reader fails at once when it cannot connect to the writer named in the
        contact file; on a loaded host that happens to a writer that has just written it
        (seen with Parsl's worker pools under load 20+ on 2 cores), and the next try
        connects. So it is retried for ``OPEN_RETRY_S``, as not-ready-yet.
        """
        if self.spec.engine != "sst" or "did not find active Writer contact" not in error:
            return False
        first = self._open_failed.setdefault(sim, time.monotonic())
        if time.monotonic() - first > OPEN_RETRY_S:
            return False
        time.sleep(0.2)
        return True

    def read_step(self, sim: int, timeout: float) -> tuple[bool, Published | None]:
        """Read ``sim``'s next step into the cache: (whether a step or the end came, and
        its publication or END marker if it was one)."""
        reader = self.reader(sim)
        if reader is None or reader.ended:
            return False, None
        try:
            step = reader.next(timeout)
        except RuntimeError as exc:
            raise TransportError(f"ADIOS2 could not read stream s{sim:06d}: {exc}") from None
        if step is None:
            return (True, Published(sim, END, reader.samples)) if reader.ended else (False, None)
        arrays, meta = step
        for name, array in arrays.items():
            kind = cast(Literal["input", "target"], name.split("|")[0])
            self.held[SampleKey(sim, int(meta[0]), kind).name()] = array
        if meta[2]:
            checksum = int(np.array([meta[1]], np.int64).view(np.uint64)[0])
            return True, Published(sim, int(meta[0]), checksum)
        return True, None

    def get(self, key: Key) -> np.ndarray:
        name = key.name()
        if isinstance(key, WeightsKey):
            return self._read_weights(key)
        deadline = time.monotonic() + READ_WAIT_S
        # A phased SST writer opens its stream a moment after its task ended.
        appear = time.monotonic() + (APPEAR_WAIT_S if self.spec.staged else 0.0)
        while name not in self.held:
            reader = self.reader(key.sim)
            if reader is None and (time.monotonic() < appear or key.sim in self._open_failed):
                time.sleep(0.05)
                continue
            if reader is None or reader.ended:
                raise KeyNotFoundError(f"{name} is not in the ADIOS2 streams under {self.root}.")
            if time.monotonic() > deadline:
                raise TransportError(
                    f"ADIOS2 stream s{key.sim:06d} gave no new step for {READ_WAIT_S:.0f} s "
                    f"while {name} was awaited; its writer stalled or died."
                )
            self.read_step(key.sim, 1.0)
        # A stream hands each step out once: a trainer reads every sample once.
        return self.held.pop(name)

    def _read_weights(self, key: WeightsKey) -> np.ndarray:
        path = self.weights_path(key.trainer)
        if not (path / "md.idx").exists():
            raise KeyNotFoundError(f"{key.name()} is not under {self.root}.")
        if self._adios is None:
            self._adios = ab.ADIOS()
        reader = StreamReader(self._adios, path, "bp5")
        try:
            step = reader.next(10.0)
        finally:
            reader.close()
        if step is None:
            raise KeyNotFoundError(f"{key.name()} under {self.root} is empty.")
        return next(iter(step[0].values()))

    def get_many(self, keys: Sequence[Key]) -> list[np.ndarray]:
        return get_many_each(self, keys)

    def exists(self, key: Key) -> bool:
        if isinstance(key, WeightsKey):
            return (self.weights_path(key.trainer) / "md.idx").exists()
        return super().exists(key)

    # -- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers = {}
        self.held = {}
        for writer in self._writers.values():
            with contextlib.suppress(Exception):
                writer.release()
        self._writers = {}
        if self.owner:
            shutil.rmtree(self.root, ignore_errors=True)

    def config(self) -> Adios2Spec:
        return self.spec


class Adios2IndexReader:
    """A trainer's view of every simulation's stream (streaming mode)."""

    def __init__(self, transport: Adios2Transport, num_sims: int) -> None:
        self.transport = transport
        self.pending = set(range(num_sims))
        self.backoff = Backoff()

    def _scan(self) -> list[Published]:
        found: list[Published] = []
        for sim in sorted(self.pending):
            while True:  # everything this stream has ready now
                advanced, entry = self.transport.read_step(sim, 0.0)
                if entry is not None:
                    found.append(entry)
                    if entry.step == END:
                        self.pending.discard(sim)
                if not advanced or sim not in self.pending:
                    break
        return found

    def poll(self, timeout: float) -> list[Published]:
        return self.backoff.poll(self._scan, timeout, lambda: not self.pending)

    def close(self) -> None:
        """Readers belong to the transport, which closes them."""


class Adios2Spec(ClientSpec):
    root: Path
    engine: Engine
    readers: int = 1
    #: Phased SST: writers outlive their tasks (``WriterProcess``, buffered).
    staged: bool = False

    def connect(self) -> Adios2Transport:
        return Adios2Transport(self)


@register_transport
class Adios2Config(TransportConfig):
    """ADIOS2 streams: BP5 files or SST staging from each simulation to the trainers."""

    name: Literal["adios2"] = "adios2"
    display: ClassVar[str] = "ADIOS2"
    #: What serialize / transfer / deserialize mean here; reports quote it under the table.
    io_note: ClassVar[str] = (
        "one ADIOS2 stream per simulation, one step per sample, all *transfer*. BP5: "
        "writing steps to the file (simulations), reading them in step order "
        "(trainers). SST: in phased runs a simulation only hands its "
        "steps to its staging writer process (a pipe), and the transfer shows in the "
        "trainers' reads, which also wait for the slowest reader of each stream; in "
        "streaming runs a simulation's puts include waiting for every trainer to join. "
        "Weights are a small BP5 file either way."
    )
    compare_variants: ClassVar[tuple[dict[str, Any], ...]] = (
        {"adios2_engine": "bp5"},
        {"adios2_engine": "sst"},
    )
    adios2_engine: Engine = Field(
        "bp5",
        description="bp5 (steps in BP5 files in the data directory) or sst (steps staged "
        "from each simulation's memory to the trainers over sockets, one node; SST has no "
        "authentication and its sockets listen on every interface while the run lasts)",
    )
    data_dir: Path | None = Field(
        None,
        description=DATA_DIR_HELP,
    )

    def describe(self) -> str:
        return f"{self.display} {self.adios2_engine.upper()}"

    def unavailable_reason(self) -> str | None:
        if ab is None:
            return "ADIOS2 is not installed; run pip install 'simferry[adios2]'."
        return None

    def root(self, ctx: RunContext) -> Path:
        if self.data_dir is None:
            return ctx.run_dir / "adios2"
        return self.data_dir.expanduser().resolve() / f"simferry-{ctx.run_id}"

    def check(self, ctx: RunContext) -> None:
        if self.adios2_engine == "sst":
            if ctx.nodes > 1:
                raise UsageError(
                    "ADIOS2 SST here streams over loopback and cannot span "
                    f"{ctx.nodes} nodes; use --adios2-engine bp5 on a shared --data-dir."
                )
            if ctx.launcher not in ("local", "parsl"):
                raise UsageError(
                    f"ADIOS2 SST cannot run under the {ctx.launcher} launcher: its writers "
                    "live in simulation workers, which it stops after their phase; use "
                    "--launcher local or parsl, or --adios2-engine bp5."
                )
            check_memory(ctx.data_bytes, "ADIOS2 SST's writers")
        check_data_dir(
            self.root(ctx), ctx.data_bytes * 1.05 if self.adios2_engine == "bp5" else MIB
        )

    def start(self, ctx: RunContext) -> Adios2Transport:
        if self.adios2_engine == "sst":
            # EVPath's socket transport binds INADDR_ANY unconditionally (cmsockets.c,
            # non_blocking_listen); no SST parameter or environment variable narrows it.
            print(
                "simferry: warning: ADIOS2 SST's sockets listen on every interface and take "
                "no password while this run lasts, so anyone who can reach this host can "
                "read its samples; use --adios2-engine bp5 on a shared network.",
                file=sys.stderr,
            )
        root = make_data_dir(self.root(ctx))
        staged = self.adios2_engine == "sst" and ctx.mode == "phased"
        spec = Adios2Spec(root=root, engine=self.adios2_engine, staged=staged)
        return Adios2Transport(spec, owner=True)
