"""Dragon's distributed dictionary (DDict): the reference's DragonHPC data path.

The dictionary is sized from the run's data instead of the reference's half of every
node's memory. Placement is ours rather than DDict's key hash: sample ``k`` (and both its
arrays) goes to manager ``k mod managers``, so every manager holds at most one sample more
than its share and the size needed has a bound. Workers attach from the serialized
descriptor in the ``ClientSpec``; the owner ``destroy()``s the dictionary on close.

What the size must cover (measured with ``DDict.stats``): a manager's pool is a sparse
file in /dev/shm; each value takes a buddy-allocator block, i.e. its size rounded up to a
power of two (a 300x300 float64 array uses 1.46x its bytes, 512x512 exactly 1x), plus
~0.3 KiB; a manager refuses writes past 90 % of its pool or with under 1 MiB free; and
DDict's minimum is 3 MiB per manager. Untouched pool pages cost no memory, so the bound is
generous in address space only.

Layout (``--ddict-layout``): ``sample`` stores each array as its own value, readable as
soon as it is put. ``simulation`` (phased mode only) holds a simulation's samples in the
writer, by reference, and stores them at its last step as one *bundle* value,
``s<sim>/samples`` on manager ``sim mod managers``; a trainer reads a bundle in one get
and hands its arrays out one by one. Each DDict operation costs a round trip of
milliseconds on a busy node, so 2 operations per simulation instead of 40 is what
brings DDict IO near the reference's (which puts each simulation's ten inputs and ten
targets as two lists). A client sees its own held samples (it stores them before it
reads); other clients see a simulation once it ends, as in phased mode.

A sample's array is pickled by DDict (cloudpickle, protocol 5): ``RawArrays`` (a
``.npy`` header and the array's own buffer, through ``DDict.pickler``) measured both
slower (load 14-28) and faster (load 9) than pickling single arrays on this shared
2-core machine (``bench/results/ddict``), so they keep DDict's default. Bundles go through
``RawArrays``, which sends an array held under two names once; that is what the
whole-workflow figures in ``bench/results/ddict`` measured.

Streaming index (``--mode streaming``): a key per record, ``index/s<sim>/<position>``,
holding one 16-byte record (``transports/index.py``) on manager ``sim mod managers``.
Positions 0-9 are the steps and position 10 the end marker, so a trainer knows the one
key to try next for each simulation: a poll is one small get per unfinished simulation,
and a retried simulation rewrites the same keys with the same bytes. DDict has no
blocking read, so polls back off from 2 to 50 ms while nothing is new.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.lib import format as fmt
from pydantic import ByteSize, Field

from simferry.errors import UsageError
from simferry.launchers.common import how_it_ended, missing_reason, require_runtime
from simferry.plugins import register_transport
from simferry.records import STEPS
from simferry.transports.base import ClientSpec, Key, RunContext, SampleKey, TransportConfig
from simferry.transports.common import gib
from simferry.transports.exceptions import KeyNotFoundError, TransportError, TransportFullError
from simferry.transports.index import END, Backoff, Published, unpack
from simferry.units import MIB

#: DDict's own minimum pool per manager (``DDICT_MIN_SIZE``).
MIN_MANAGER_BYTES = 3 * MIB
#: A manager refuses writes past this fraction of its pool, or under 1 MiB free.
FULL_THRESHOLD = 0.9
RESERVED_BYTES = MIB
#: Per-manager room for trained weights and per-value bookkeeping.
ALLOWANCE_BYTES = 16 * MIB
#: Seconds any one DDict operation may take before it is an error, not a hang. A manager
#: whose pool has no block left for a value waits this long instead of refusing it.
TIMEOUT_S = 60.0
#: Seconds ``destroy`` may take; it waits forever for a manager that died.
DESTROY_S = 30.0


def manager_bytes(data_bytes: int, managers: int, by_sim: bool = False) -> int:
    """Pool size per manager for ``data_bytes`` of samples placed round-robin.

    Each manager holds at most its share plus one value: a sample (a run has at least
    ``STEPS`` samples, so a sample is at most a tenth of the data) or, with ``by_sim``, a
    simulation's bundle (at most all the data: the run's simulation count is not known
    here). Power-of-two blocks can take up to twice a value's bytes.
    """
    largest = data_bytes if by_sim else data_bytes / STEPS
    load = 2 * (data_bytes / managers + largest)
    need = (load + ALLOWANCE_BYTES) / FULL_THRESHOLD + RESERVED_BYTES
    return max(MIN_MANAGER_BYTES, int(need))


class RawArrays:
    """DDict value serializer (``DDict.pickler``): numpy arrays as ``.npy`` header + raw bytes.

    A value is one array, or a bundle (a dict of named arrays: a simulation's samples).
    DDict's batch put ignores the client's pickler and pickles, so bundles never go by one.
    DDict calls ``dump(value, file=...)`` and ``load(file=...)`` with its stream
    adapters; each ``write`` goes out as it is, so an array's buffer is sent without a
    copy, and ``read(n)`` returns exactly ``n`` bytes.
    """

    @staticmethod
    def dump(value: np.ndarray | dict[str, np.ndarray], file: Any) -> None:
        if not isinstance(value, dict):
            file.write(ARRAY)
            write_array(file, value)
            return
        # An array given under several names (a step's target is the next step's input:
        # the same object) is sent once; every name still maps to its own bytes.
        slots: dict[int, int] = {}
        unique: list[np.ndarray] = []
        for array in value.values():
            if id(array) not in slots:
                slots[id(array)] = len(unique)
                unique.append(array)
        table = {name: slots[id(array)] for name, array in value.items()}
        head = json.dumps({"slots": table, "arrays": len(unique)}).encode()
        file.write(BUNDLE + len(head).to_bytes(4, "little") + head)
        for array in unique:
            write_array(file, array)

    @staticmethod
    def load(file: Any) -> np.ndarray | dict[str, np.ndarray]:
        kind = file.read(1)
        if kind == ARRAY:
            return read_array(file)
        if kind != BUNDLE:  # DDict's batch put pickles whatever the client's pickler
            raise ValueError("a DDict value not written by RawArrays (a batch put?)")
        head = json.loads(file.read(int.from_bytes(file.read(4), "little")))
        arrays = [read_array(file) for _ in range(head["arrays"])]
        return {name: arrays[slot] for name, slot in head["slots"].items()}


ARRAY, BUNDLE = b"A", b"B"


def write_array(file: Any, value: np.ndarray) -> None:
    array = np.asarray(value)
    if not array.flags.c_contiguous:
        array = np.array(array, order="C")
    if array.dtype.hasobject:
        raise TypeError("the DDict transport stores numeric arrays only, not objects")
    header = io.BytesIO()
    fmt.write_array_header_1_0(header, fmt.header_data_from_array_1_0(array))
    file.write(header.getvalue())
    if array.nbytes:
        file.write(array.reshape(-1).view(np.uint8).data)


def read_array(file: Any) -> np.ndarray:
    """The array, read-only: a view of the one ``bytes`` its data arrived in."""
    fmt.read_magic(file)
    shape, _, dtype = fmt.read_array_header_1_0(file)  # always C order, as written
    count = math.prod(shape)
    data = file.read(count * dtype.itemsize) if count else b""
    return np.frombuffer(data, dtype=dtype, count=count).reshape(shape)


def placement(key: Key, managers: int) -> int:
    if isinstance(key, SampleKey):
        return (key.sim * STEPS + key.step) % managers
    return key.trainer % managers


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Dragon's errors as ours, with what to do about them."""
    # Dragon: an optional extra that works only inside its runtime; imported where used.
    from dragon.data.ddict.ddict import DDictError, DDictFullError, DDictTimeoutError

    try:
        yield
    except KeyError:  # DDictKeyError is a DDictError too; callers handle missing keys
        raise
    except DDictFullError:
        raise TransportFullError(
            f"The DDict had no room left for {what}; pass a larger --ddict-mem (e.g. 8GiB) or "
            "make the run smaller."
        ) from None
    except DDictTimeoutError:
        raise TransportError(
            f"The DDict did not answer within {TIMEOUT_S:.0f} s while handling {what}; a "
            "manager process may have died."
        ) from None
    except DDictError as exc:
        if "Time out while receiving memory" in str(exc):  # no block free in the pool
            raise TransportFullError(
                f"The DDict had no room left for {what}; pass a larger --ddict-mem (e.g. "
                "8GiB) or make the run smaller."
            ) from None
        raise TransportError(f"The DDict failed on {what}: {exc}".rstrip(".") + ".") from None


class DDictTransport:
    """A DDict client; ``owner`` is the process that created the dictionary."""

    def __init__(
        self,
        dd: Any,
        managers: int,
        batch: bool,
        owner: bool = False,
        home: Path | None = None,
        by_sim: bool = False,
    ) -> None:
        self._dd = dd
        self.managers = managers
        self.batch = batch
        self.by_sim = by_sim
        self.owner = owner
        #: The client bundle handles are made from: it serializes with ``RawArrays``.
        #: Kept for the transport's life: a DDict copy detaches shared channels when freed.
        self._raw = dd.pickler(value_pickler=RawArrays)
        #: Manager handles by (``RawArrays`` client or not, manager): each made once.
        self._handles: dict[tuple[bool, int], Any] = {}
        #: ``by_sim``: samples put but not stored yet, by simulation, and the simulations
        #: this client stored (a later put to one of them merges into its bundle).
        self._pending: dict[int, dict[str, np.ndarray]] = {}
        self._stored: set[int] = set()
        #: ``by_sim``: the bundle last read; each array leaves it when it is handed out.
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None
        self._closed = False
        #: The owner's DDict processes, parents first: orchestrator, its group, managers.
        self._processes = processes(dd) if owner else []
        self._dead: str | None = None
        #: Where the orchestrator keeps its state file (``create``), removed if it is killed.
        self._home = home

    def _handle(self, key: Key) -> Any:
        """The client directed at ``key``'s manager."""
        return self._manager(placement(key, self.managers))

    def put(self, key: Key, array: np.ndarray) -> None:
        self.put_many([(key, array)])

    def _store(self, key: Key, array: np.ndarray) -> None:
        with translated(key.name()):
            self._handle(key)[key.name()] = array

    def get(self, key: Key) -> np.ndarray:
        try:
            if self.by_sim and isinstance(key, SampleKey):
                return self._from_bundle(key)
            with translated(key.name()):
                return np.asarray(self._handle(key)[key.name()])
        except KeyError:
            raise KeyNotFoundError(f"{key.name()} is not in the DDict.") from None

    def put_many(self, items: Sequence[tuple[Key, np.ndarray]]) -> None:
        """Store each array; ``by_sim`` holds samples until their simulation's last step.

        With ``batch``, stream each manager's puts and wait for one reply, not one each.
        """
        if self.by_sim:
            self._hold(items)
            return
        if not self.batch or len(items) < 2:
            for key, array in items:
                self._store(key, array)
            return
        by_manager: dict[int, list[tuple[Key, np.ndarray]]] = {}
        for key, array in items:
            by_manager.setdefault(placement(key, self.managers), []).append((key, array))
        for group in by_manager.values():
            handle = self._handle(group[0][0])
            with translated(f"a batch of {len(group)} arrays"):
                handle.start_batch_put()
                try:
                    for key, array in group:
                        handle[key.name()] = array
                finally:
                    handle.end_batch_put()

    def _hold(self, items: Sequence[tuple[Key, np.ndarray]]) -> None:
        """Keep samples (the arrays themselves, no copy); store a simulation at its last step."""
        ended = set()
        for key, array in items:
            if not isinstance(key, SampleKey):
                self._store(key, array)
                continue
            self._pending.setdefault(key.sim, {})[key.name()] = array
            if key.step == STEPS - 1:
                ended.add(key.sim)
        for sim in ended:
            held = self._pending[sim]
            if all(SampleKey(sim, STEPS - 1, k).name() in held for k in ("input", "target")):
                self._flush(sim)

    def _flush(self, sim: int) -> None:
        """Store simulation ``sim``'s held samples as its bundle, one DDict value."""
        bundle = self._pending.pop(sim)
        if sim in self._stored:  # stored before (a read flushed it): keep what is there
            bundle = {**self._bundle(sim), **bundle}
        with translated(f"the samples of simulation {sim}"):
            self._bundles(sim)[bundle_key(sim)] = bundle
        self._stored.add(sim)
        if self._cached is not None and self._cached[0] == sim:
            self._cached = None

    def _flush_all(self) -> None:
        """A client reads its own puts: store what it holds before it looks."""
        for sim in list(self._pending):
            self._flush(sim)

    def _bundle(self, sim: int) -> dict[str, np.ndarray]:
        """Simulation ``sim``'s stored bundle (empty when there is none)."""
        try:
            with translated(f"the samples of simulation {sim}"):
                return dict(self._bundles(sim)[bundle_key(sim)])
        except KeyError:
            return {}

    def _from_bundle(self, key: SampleKey) -> np.ndarray:
        """One array of ``key``'s bundle; a trainer reads a whole simulation in one get."""
        self._flush_all()
        name = key.name()
        if self._cached is None or self._cached[0] != key.sim or name not in self._cached[1]:
            self._cached = (key.sim, self._bundle(key.sim))
        return self._cached[1].pop(name)

    def get_many(self, keys: Sequence[Key]) -> list[np.ndarray]:
        return [self.get(key) for key in keys]

    def exists(self, key: Key) -> bool:
        if self.by_sim and isinstance(key, SampleKey):
            self._flush_all()
            return key.name() in self._bundle(key.sim)
        with translated(key.name()):
            return key.name() in self._handle(key)

    def keys(self, prefix: str = "") -> list[str]:
        if self._closed:
            return []
        self._flush_all()
        with translated("the key listing"):
            names = list(self._dd.keys())
        found = []
        for name in (k for k in names if isinstance(k, str)):
            sim = bundle_sim(name)
            found += [name] if sim is None else list(self._bundle(sim))
        return sorted(k for k in found if k.startswith(prefix))

    def delete(self, key: Key) -> None:
        if self.by_sim and isinstance(key, SampleKey):
            self._flush_all()
            self._cached = None
            bundle = self._bundle(key.sim)
            if bundle.pop(key.name(), None) is None:
                return
            handle = self._bundles(key.sim)
            with translated(f"the samples of simulation {key.sim}"):
                if bundle:
                    handle[bundle_key(key.sim)] = bundle
                else:
                    handle.pop(bundle_key(key.sim))
            return
        with contextlib.suppress(KeyError), translated(key.name()):
            self._handle(key).pop(key.name())

    def stats(self) -> list[Any]:
        """Per-manager pool use (``DDictManagerStats``): bytes, keys, host."""
        with translated("the statistics"):
            return list(self._dd.stats)

    def check_alive(self) -> None:
        """Fail the run at once when a DDict process died (the workflow asks every second).

        Its samples are gone, and clients waiting on it would hang for ``TIMEOUT_S``.
        """
        if self._dead is None:
            self._dead = dead_process(self._processes)
        if self._dead is not None:
            raise TransportError(
                f"A DDict process died ({self._dead}) and the samples it held are lost; "
                "the run stops. Check the node's memory (an out-of-memory kill) and run again."
            )

    def close(self) -> None:
        """Detach; the owner also destroys the dictionary, freeing every manager's pool.

        ``destroy`` waits forever for a manager that died: then, or when it takes longer
        than ``DESTROY_S``, the DDict's processes are killed instead (managers first: a
        process group killed before its members takes the whole runtime down).
        """
        if self._closed:
            return
        with contextlib.suppress(TransportError):  # its trainers then find the samples lost
            self._flush_all()
        self._closed = True
        self._cached = None
        for handle in self._handles.values():
            with contextlib.suppress(Exception):
                handle.detach()
        self._handles = {}
        if not self.owner:
            with contextlib.suppress(Exception):
                self._dd.detach()
            return
        if self._dead is None and dead_process(self._processes) is None:
            destroyer = threading.Thread(target=self._destroy, name="ddict-destroy", daemon=True)
            destroyer.start()
            destroyer.join(DESTROY_S)
            if not destroyer.is_alive():
                return
        kill_processes(self._processes)
        for orphan in self._home.glob("ddict_orc_*") if self._home else ():
            orphan.unlink(missing_ok=True)

    def _destroy(self) -> None:
        with contextlib.suppress(Exception):
            self._dd.destroy()

    def config(self) -> DDictSpec:
        return DDictSpec(
            descriptor=self._dd.serialize(),
            managers=self.managers,
            batch=self.batch,
            by_sim=self.by_sim,
        )

    def _manager(self, m: int, raw: bool = False) -> Any:
        """The client directed at manager ``m``, the ``RawArrays`` one if ``raw`` (one
        attachment per manager and client, reused)."""
        if (raw, m) not in self._handles:
            with translated("a manager connection"):
                self._handles[raw, m] = (self._raw if raw else self._dd).manager(m)
        return self._handles[raw, m]

    def _bundles(self, sim: int) -> Any:
        """The ``RawArrays`` client directed at simulation ``sim``'s manager."""
        return self._manager(sim % self.managers, raw=True)

    def publish(self, entry: Published) -> None:
        """Store one index record (streaming mode; see the module docstring)."""
        position = entry.checksum if entry.step == END else entry.step
        with translated(f"the index record of (sim {entry.sim}, step {entry.step})"):
            self._manager(entry.sim % self.managers)[index_key(entry.sim, position)] = entry.pack()

    def subscribe(self, num_sims: int) -> DDictIndexReader:
        return DDictIndexReader(self, num_sims)


def bundle_key(sim: int) -> str:
    return f"s{sim:06d}/samples"


def bundle_sim(name: str) -> int | None:
    """The simulation whose bundle ``name`` is, or ``None`` for any other key."""
    head, _, tail = name.partition("/")
    if tail != "samples" or not head.startswith("s") or not head[1:].isdigit():
        return None
    return int(head[1:])


def index_key(sim: int, position: int) -> str:
    return f"index/s{sim:06d}/{position:04d}"


class DDictIndexReader:
    """A trainer's cursor: the next record position of every unfinished simulation."""

    def __init__(self, transport: DDictTransport, num_sims: int) -> None:
        self.transport = transport
        self.next = dict.fromkeys(range(num_sims), 0)
        self.backoff = Backoff()

    def _scan(self) -> list[Published]:
        found: list[Published] = []
        for sim, position in list(self.next.items()):
            handle = self.transport._manager(sim % self.transport.managers)
            while sim in self.next:
                try:
                    with translated("the streaming index"):
                        raw = handle[index_key(sim, position)]
                except KeyError:
                    break  # not published yet
                entry = unpack(bytes(raw))[0][0]
                found.append(entry)
                position += 1
                self.next[sim] = position
                if entry.step == END:
                    del self.next[sim]
        return found

    def poll(self, timeout: float) -> list[Published]:
        return self.backoff.poll(self._scan, timeout, lambda: not self.next)

    def close(self) -> None:
        """Nothing to release: the reader borrows its transport's manager connections."""


class DDictSpec(ClientSpec):
    descriptor: str
    managers: int
    batch: bool = False
    by_sim: bool = False

    def connect(self) -> DDictTransport:
        # Dragon: an optional extra that works only inside its runtime; imported where used.
        from dragon.data.ddict import DDict

        with translated("attaching to the dictionary"):
            dd = DDict.attach(self.descriptor, timeout=TIMEOUT_S)
        return DDictTransport(dd, self.managers, self.batch, by_sim=self.by_sim)


def processes(dd: Any) -> list[int]:
    """Dragon ids of a DDict's orchestrator and everything it started, parents first."""
    # Dragon: an optional extra that works only inside its runtime; imported where used.
    from dragon.globalservices import process as gs

    orc = getattr(getattr(dd, "_orc_proc", None), "puid", None)
    found = [orc] if orc is not None else []
    with contextlib.suppress(Exception):
        for puid in found:  # grows while it is walked: breadth first
            found.extend(sorted(gs.query(puid).live_children))
    return found


def dead_process(puids: Sequence[int]) -> str | None:
    """How the first process of ``puids`` that ended did (e.g. "killed by signal 9")."""
    # Dragon: an optional extra that works only inside its runtime; imported where used.
    from dragon.globalservices import process as gs
    from dragon.infrastructure.process_desc import ProcessDescriptor

    for puid in puids:
        with contextlib.suppress(Exception):
            desc = gs.query(puid)
            if desc.state == ProcessDescriptor.State.DEAD:
                return f"Dragon process {puid}, {how_it_ended(desc.ecode)}"
    return None


def kill_processes(puids: Sequence[int]) -> None:
    """SIGKILL ``puids`` children first and wait for them."""
    # Dragon: an optional extra that works only inside its runtime; imported where used.
    from dragon.globalservices import process as gs

    for puid in reversed(puids):
        with contextlib.suppress(Exception):
            gs.kill(puid, signal.SIGKILL)
    for puid in reversed(puids):
        with contextlib.suppress(Exception):
            gs.join(puid, timeout=10)


def create(managers_per_node: int, nodes: int, total_bytes: int, run_dir: Path) -> Any:
    """A new DDict; its orchestrator runs here and keeps its small state file in ``run_dir``."""
    # Dragon: an optional extra that works only inside its runtime; imported where used.
    from dragon.data.ddict import DDict
    from dragon.infrastructure.policy import Policy
    from dragon.native.machine import current

    here = Policy(placement=Policy.Placement.HOST_NAME, host_name=current().hostname)
    try:
        with translated("creating the dictionary"):
            return DDict(
                managers_per_node,
                nodes,
                total_bytes,
                orc_policy=here,
                persist_path=str(run_dir),
                timeout=TIMEOUT_S,
            )
    except RuntimeError as exc:  # DDict reports start-up failures with a traceback inside
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TransportError(f"Could not create the DDict ({first}).") from None


@register_transport
class DDictConfig(TransportConfig):
    """Dragon's distributed dictionary; needs the dragon launcher."""

    name: Literal["ddict"] = "ddict"
    display: ClassVar[str] = "DDict"
    launchers: ClassVar[tuple[str, ...] | None] = ("dragon",)
    ddict_mem: ByteSize | None = Field(
        None,
        ge=MIN_MANAGER_BYTES,
        le=2**50,
        description="DDict memory over all managers, e.g. 8GiB (default: sized from the "
        "run's data with headroom)",
    )
    ddict_managers_per_node: int = Field(
        2, ge=1, le=64, description="DDict manager processes per node"
    )
    ddict_batch: bool = Field(
        False,
        description="write each sample's two arrays as one DDict batch put (measured slower "
        "than two puts for 2 MiB arrays, see bench/dragon_ddict.py)",
    )
    ddict_layout: Literal["sample", "simulation"] = Field(
        "sample",
        description="'simulation': one DDict value per simulation, stored at its last step "
        "and read whole (phased mode only; a simulation's samples are readable only once "
        "it ends); 'sample': a value per array, readable as soon as it is put",
    )

    def unavailable_reason(self) -> str | None:
        return missing_reason()

    def total_bytes(self, ctx: RunContext) -> int:
        managers = self.ddict_managers_per_node * ctx.nodes
        # A plain int: DDict refuses int subclasses such as ByteSize.
        by_sim = self.ddict_layout == "simulation"
        return int(self.ddict_mem or managers * manager_bytes(ctx.data_bytes, managers, by_sim))

    def check(self, ctx: RunContext) -> None:
        if self.ddict_layout == "simulation" and ctx.mode != "phased":
            raise UsageError(
                "--ddict-layout simulation stores a simulation's samples only when it ends, "
                f"so it works with --mode phased, not --mode {ctx.mode}."
            )
        if self.ddict_mem is not None and self.ddict_mem < ctx.data_bytes:
            raise UsageError(
                f"--ddict-mem {self.ddict_mem.human_readable()} is less than the "
                f"{gib(ctx.data_bytes)} this run "
                "stores; raise it or leave it out to size the DDict from the data."
            )
        shm = Path("/dev/shm")
        per_node = ctx.data_bytes * 1.05 / ctx.nodes
        if shm.is_dir() and shutil.disk_usage(shm).free < per_node:
            raise UsageError(
                f"/dev/shm has {gib(shutil.disk_usage(shm).free)} free but the DDict keeps "
                f"{gib(per_node)} there on each node; make the run smaller or use more nodes."
            )

    def start(self, ctx: RunContext) -> DDictTransport:
        require_runtime("The ddict transport")
        dd = create(self.ddict_managers_per_node, ctx.nodes, self.total_bytes(ctx), ctx.run_dir)
        managers = self.ddict_managers_per_node * ctx.nodes
        by_sim = self.ddict_layout == "simulation"
        return DDictTransport(
            dd, managers, self.ddict_batch, owner=True, home=ctx.run_dir, by_sim=by_sim
        )
