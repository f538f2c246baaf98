"""Node-local shared memory: ``.npy`` files on tmpfs (``/dev/shm``), read by memory map.

Files on tmpfs *are* shared memory pages, and memory-mapped reads of them are zero-copy;
unlike ``multiprocessing.shared_memory`` no resource tracker can unlink a segment behind
our back when a worker exits. The owner removes the whole directory at the end of the
run, on success, failure and Ctrl-C; ``simferry doctor --clean`` removes directories
left by a run that was killed outright.

Streaming index: the file store's (``FilesystemTransport.publish``/``subscribe``), an
append-only file of 16-byte records per simulation, here on tmpfs, so a poll is a few
page-cache reads and never touches a disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from simferry.errors import UsageError
from simferry.plugins import register_transport
from simferry.transports.base import RunContext, TransportConfig
from simferry.transports.common import check_space
from simferry.transports.filestore import FilesystemTransport

PREFIX = "simferry-"


def segment_dir(shm_dir: Path, run_id: str) -> Path:
    # The owner's pid in the name lets `doctor --clean` tell live runs from dead ones.
    return shm_dir / f"{PREFIX}{run_id}-{os.getpid()}"


@register_transport
class ShmConfig(TransportConfig):
    """Node-local shared memory (tmpfs); single node only."""

    name: Literal["shm"] = "shm"
    display: ClassVar[str] = "shared memory"
    #: What serialize / transfer / deserialize mean here; reports quote it under the table.
    io_note: ClassVar[str] = (
        "the file-system path on tmpfs (/dev/shm): the same split, with shared-memory "
        "pages instead of a disk."
    )
    shm_dir: Path = Field(Path("/dev/shm"), description="tmpfs mount used by the shm transport")

    def check(self, ctx: RunContext) -> None:
        if ctx.nodes > 1:
            raise UsageError(
                f"The shm transport is node-local, but this run's processes span {ctx.nodes} "
                "hosts; use filesystem, redis or ddict for multi-node runs."
            )
        if not self.shm_dir.is_dir():
            raise UsageError(
                f"{self.shm_dir} does not exist or is not a directory; pass --shm-dir with a "
                "tmpfs mount."
            )
        check_space(
            self.shm_dir,
            int(ctx.data_bytes * 1.02),
            "Shared memory",
            "make the run smaller, use --transport filesystem, or enlarge /dev/shm.",
        )

    def start(self, ctx: RunContext) -> FilesystemTransport:
        root = segment_dir(self.shm_dir, ctx.run_id)
        root.mkdir(mode=0o700)
        return FilesystemTransport(root, owner=True)
