"""One ``.npy`` file per array under a directory: the store of the filesystem and shm transports.

The two backends differ only in where the directory is and what they check before a run
(``filesystem.py``, ``shm.py``), so the store is written once, here.

Writes go to a hidden temporary name and are renamed into place, so a reader sees a whole
file or none. Reads memory-map the file: the trainer converts straight from the page
cache into its float32 buffer without an intermediate float64 copy.

Streaming index (``--mode streaming``): one append-only file per simulation,
``index/s<sim>.idx``, of fixed 16-byte records (``transports/index.py``), each written by
one ``O_APPEND`` write after the sample's files were renamed into place. One writer per
file means no interleaving even on NFS, where ``O_APPEND`` is not atomic across clients;
readers take whole records only and reopen the files on every poll, so close-to-open
consistency shows them appends made on other nodes. Polls back off from 2 to 50 ms while
nothing is new; the files are tiny (160 bytes per simulation) and go with the data.
"""

from __future__ import annotations

import contextlib
import errno
import math
import mmap
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from simferry.transports.base import ClientSpec, Key, get_many_each, put_many_each
from simferry.transports.exceptions import KeyNotFoundError, TransportError, TransportFullError
from simferry.transports.index import END, Backoff, Published, unpack

SUFFIX = ".npy"
#: Read-only shared mapping, populated up front where the platform can (Linux).
MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def write_failed(root: Path, path: Path, exc: OSError) -> TransportError | TransportFullError:
    """The error for a write under ``root`` that failed: a full disk is its own error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransportFullError(
            f"{root} is full ({exc.strerror}); free space there, choose another "
            "directory, or make the run smaller."
        )
    return TransportError(f"Could not write {path}: {exc.strerror or exc}.")


class FilesystemTransport:
    """Arrays as files under ``root``; the owner removes ``root`` on close."""

    def __init__(self, root: Path, owner: bool = False, keep: bool = False) -> None:
        self.root = root
        self.owner = owner
        self.keep = keep
        self._index_fds: dict[int, int] = {}

    def _path(self, key: Key) -> Path:
        return self.root / (key.name() + SUFFIX)

    def put(self, key: Key, array: np.ndarray) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise write_failed(self.root, path, exc) from None

    def get(self, key: Key) -> np.ndarray:
        path = self._path(key)
        try:
            return load_mapped(path)
        except FileNotFoundError:
            raise KeyNotFoundError(f"{key.name()} is not in {self.root}.") from None

    def put_many(self, items: Sequence[tuple[Key, np.ndarray]]) -> None:
        put_many_each(self, items)

    def get_many(self, keys: Sequence[Key]) -> list[np.ndarray]:
        return get_many_each(self, keys)

    def exists(self, key: Key) -> bool:
        return self._path(key).exists()

    def keys(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        names = (
            p.relative_to(self.root).as_posix()[: -len(SUFFIX)]
            for p in self.root.rglob("*" + SUFFIX)
            if not p.name.startswith(".")
        )
        return sorted(n for n in names if n.startswith(prefix))

    def delete(self, key: Key) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def close(self) -> None:
        for fd in self._index_fds.values():
            os.close(fd)
        self._index_fds = {}
        if self.owner and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def config(self) -> FilesystemSpec:
        return FilesystemSpec(root=self.root)

    def publish(self, entry: Published) -> None:
        """Append one index record for ``entry.sim`` (streaming mode; see module docstring)."""
        path = index_path(self.root, entry.sim)
        record = entry.pack()
        try:
            fd = self._index_fds.get(entry.sim)
            if fd is None:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._index_fds[entry.sim] = fd
            written = os.write(fd, record)
        except OSError as exc:
            raise write_failed(self.root, path, exc) from None
        if written != len(record):
            raise TransportError(f"Could not append a whole index record to {path}.")

    def subscribe(self, num_sims: int) -> FileIndexReader:
        return FileIndexReader(self.root, num_sims)


HEADER_READERS = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}


def load_mapped(path: Path) -> np.ndarray:
    """Memory-map a ``.npy`` file read-only, its pages mapped in one system call.

    ``np.load(mmap_mode="r")`` maps lazily: the first touch of every page (or small group
    of pages) is a page fault. ``MAP_POPULATE`` maps the whole file at once, which made
    reading a 2-16 MiB array from the page cache or tmpfs 5-20 % faster here, still with
    no copy (bench/transports.py measures it beside the previous ``np.load`` memmap).
    Headers other than the plain 1.0/2.0 that ``np.save`` writes go through ``np.load``;
    object arrays are refused either way (no pickles are ever loaded).
    """
    with open(path, "rb") as fh:
        read_header = HEADER_READERS.get(npformat.read_magic(fh))
        if read_header is None:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        shape, fortran, dtype = read_header(fh)
        if dtype.hasobject:
            raise ValueError(f"{path} holds Python objects, which are never unpickled.")
        offset = fh.tell()
        count = math.prod(shape)
        if count == 0:
            return np.empty(shape, dtype)
        mapped = mmap.mmap(fh.fileno(), 0, flags=MAP_FLAGS, prot=mmap.PROT_READ)
    array = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")


def index_path(root: Path, sim: int) -> Path:
    return root / "index" / f"s{sim:06d}.idx"


class FileIndexReader:
    """A trainer's cursor over every simulation's index file (streaming mode)."""

    def __init__(self, root: Path, num_sims: int) -> None:
        self.root = root
        #: Read offset of each simulation whose end marker has not been seen yet.
        self.offsets = dict.fromkeys(range(num_sims), 0)
        self.backoff = Backoff()

    def _scan(self) -> list[Published]:
        found: list[Published] = []
        for sim, offset in list(self.offsets.items()):
            try:
                with open(index_path(self.root, sim), "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                continue  # this simulation has not published yet
            entries, used = unpack(data)
            self.offsets[sim] = offset + used
            if any(e.step == END for e in entries):
                del self.offsets[sim]
            found.extend(entries)
        return found

    def poll(self, timeout: float) -> list[Published]:
        return self.backoff.poll(self._scan, timeout, lambda: not self.offsets)

    def close(self) -> None:
        """Nothing to release: files are opened only for the length of a poll."""


class FilesystemSpec(ClientSpec):
    root: Path

    def connect(self) -> FilesystemTransport:
        return FilesystemTransport(self.root)
