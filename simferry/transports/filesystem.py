"""The reference's shared-file-system path: one ``.npy`` file per array under ``--data-dir``.

The files, their atomic writes, memory-mapped reads and the streaming index are the store
in ``filestore.py``, which the shm transport shares; this module is the backend's
configuration: where the directory is, and the space check before a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from simferry.plugins import register_transport
from simferry.transports.base import RunContext, TransportConfig
from simferry.transports.common import DATA_DIR_HELP, check_data_dir, make_data_dir
from simferry.transports.filestore import FilesystemTransport


@register_transport
class FilesystemConfig(TransportConfig):
    """One file per array on a (shared) file system."""

    name: Literal["filesystem"] = "filesystem"
    display: ClassVar[str] = "file system"
    #: What serialize / transfer / deserialize mean here; reports quote it under the table.
    io_note: ClassVar[str] = (
        "one .npy file per array. Arrays are written raw (header + bytes), so "
        "serialization and the write are one step, counted as *transfer*: write to a "
        "temporary file and rename (simulations), memory-map with its pages populated "
        "(trainers), weights save. *serialize* and "
        "*deserialize* are 0."
    )
    data_dir: Path | None = Field(
        None,
        description=DATA_DIR_HELP,
    )
    keep_data: bool = Field(False, description="keep the data files after the run")

    def root(self, ctx: RunContext) -> Path:
        if self.data_dir is None:
            return ctx.run_dir / "data"
        return self.data_dir.expanduser().resolve() / f"simferry-{ctx.run_id}"

    def check(self, ctx: RunContext) -> None:
        check_data_dir(self.root(ctx), ctx.data_bytes * 1.02)

    def start(self, ctx: RunContext) -> FilesystemTransport:
        root = make_data_dir(self.root(ctx))
        return FilesystemTransport(root, owner=True, keep=self.keep_data)
