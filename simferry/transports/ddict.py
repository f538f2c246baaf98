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

Streaming index (``--mode streaming``): a key per record, ``index/s<sim>/<position>``,
holding one 16-byte record (``transports/index.py``) on manager ``sim mod managers``.
Positions 0-9 are the steps and position 10 the end marker, so a trainer knows the one
key to try next for each simulation: a poll is one small get per unfinished simulation,
and a retried simulation rewrites the same keys with the same bytes. DDict has no
blocking read, so polls back off from 2 to 50 ms while nothing is new.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
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


def manager_bytes(data_bytes: int, managers: int) -> int:
    """Pool size per manager for ``data_bytes`` of samples placed round-robin.

    Each manager holds at most ``ceil(samples / managers)`` samples, i.e. its share plus
    one sample; a run has at least ``STEPS`` samples, so a sample is at most a tenth of
    the data. Power-of-two blocks can take up to twice a value's bytes.
    """
    load = 2 * (data_bytes / managers + data_bytes / STEPS)
    need = (load + ALLOWANCE_BYTES) / FULL_THRESHOLD + RESERVED_BYTES
    return max(MIN_MANAGER_BYTES, int(need))


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
        self, dd: Any, managers: int, batch: bool, owner: bool = False, home: Path | None = None
    ) -> None:
        self._dd = dd
        self.managers = managers
        self.batch = batch
        self.owner = owner
        self._handles: dict[int, Any] = {}
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
        with translated(key.name()):
            self._handle(key)[key.name()] = array

    def get(self, key: Key) -> np.ndarray:
        try:
            with translated(key.name()):
                return np.asarray(self._handle(key)[key.name()])
        except KeyError:
            raise KeyNotFoundError(f"{key.name()} is not in the DDict.") from None

    def put_many(self, items: Sequence[tuple[Key, np.ndarray]]) -> None:
        """With ``batch``, stream each manager's puts and wait for one reply, not one each."""
        if not self.batch or len(items) < 2:
            for key, array in items:
                self.put(key, array)
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

    def get_many(self, keys: Sequence[Key]) -> list[np.ndarray]:
        return [self.get(key) for key in keys]

    def exists(self, key: Key) -> bool:
        with translated(key.name()):
            return key.name() in self._handle(key)

    def keys(self, prefix: str = "") -> list[str]:
        if self._closed:
            return []
        with translated("the key listing"):
            names = list(self._dd.keys())
        return sorted(k for k in names if isinstance(k, str) and k.startswith(prefix))

    def delete(self, key: Key) -> None:
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
        self._closed = True
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
        return DDictSpec(descriptor=self._dd.serialize(), managers=self.managers, batch=self.batch)

    def _manager(self, m: int) -> Any:
        """The client directed at manager ``m`` (one attachment per manager, reused)."""
        if m not in self._handles:
            with translated("a manager connection"):
                self._handles[m] = self._dd.manager(m)
        return self._handles[m]

    def publish(self, entry: Published) -> None:
        """Store one index record (streaming mode; see the module docstring)."""
        position = entry.checksum if entry.step == END else entry.step
        with translated(f"the index record of (sim {entry.sim}, step {entry.step})"):
            self._manager(entry.sim % self.managers)[index_key(entry.sim, position)] = entry.pack()

    def subscribe(self, num_sims: int) -> DDictIndexReader:
        return DDictIndexReader(self, num_sims)


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

    def connect(self) -> DDictTransport:
        # Dragon: an optional extra that works only inside its runtime; imported where used.
        from dragon.data.ddict import DDict

        with translated("attaching to the dictionary"):
            dd = DDict.attach(self.descriptor, timeout=TIMEOUT_S)
        return DDictTransport(dd, self.managers, self.batch)


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

    def unavailable_reason(self) -> str | None:
        return missing_reason()

    def total_bytes(self, ctx: RunContext) -> int:
        managers = self.ddict_managers_per_node * ctx.nodes
        # A plain int: DDict refuses int subclasses such as ByteSize.
        return int(self.ddict_mem or managers * manager_bytes(ctx.data_bytes, managers))

    def check(self, ctx: RunContext) -> None:
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
        return DDictTransport(dd, managers, self.ddict_batch, owner=True, home=ctx.run_dir)
