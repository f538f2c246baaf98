"""Per-task measurements and the run directory they are written to.

Reports read only these files and never re-run anything, so every number in a table can
be traced to a record, a ``config.toml`` and the ``environment.json`` beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

import tomli_w

from simferry.units import GB, GIB

IoPart = Literal["serialize", "transfer", "deserialize"]

#: Samples each simulation writes (the reference's ten time steps). It lives with the
#: records because every data size a summary records is a multiple of it.
STEPS = 10


def dataset_bytes(num_sims: int, grid_size: int, steps: int = STEPS) -> int:
    """Bytes of inputs *and* targets, float64 grids (the reference reports inputs only)."""
    return 2 * num_sims * steps * grid_size * grid_size * 8


def data_sizes(num_sims: int, grid_size: int) -> dict[str, float]:
    """A run's data sizes as its summary records them: float64 grids, inputs and targets."""
    inputs = dataset_bytes(num_sims, grid_size) // 2
    return {
        "inputs_bytes": inputs,
        "inputs_gb": inputs / GB,
        "total_bytes": 2 * inputs,
        "total_gb": 2 * inputs / GB,
        "total_gib": 2 * inputs / GIB,
    }


class DescribedTransport(Protocol):
    """What a run's summary says about its transport (a transport's config class)."""

    @property
    def io_note(self) -> str: ...

    @property
    def by_value(self) -> bool: ...

    @property
    def by_proxy(self) -> bool: ...

    def describe(self) -> str: ...


def transport_summary(transport: DescribedTransport) -> dict[str, Any]:
    """The summary fields that let a report describe a transport without importing it."""
    return {
        "transport_display": transport.describe(),
        "io_note": transport.io_note,
        "pass_by_value": transport.by_value and not transport.by_proxy,
    }


@dataclass
class TaskRecord:
    """One simulation or trainer task, as measured inside the worker (plus hand-offs)."""

    kind: Literal["sim", "train"]
    index: int
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    start: float = field(default_factory=time.time)
    end: float = 0.0
    #: Main-process timestamps: when the task was submitted and its result was usable.
    submitted: float = 0.0
    received: float = 0.0
    serialize_s: float = 0.0
    transfer_s: float = 0.0
    deserialize_s: float = 0.0
    #: Trainers: float64 -> float32 into the training buffer, after the read. Not IO, so
    #: not in ``io_s``: a read is then comparable with the reference's ``np.load``.
    convert_s: float = 0.0
    bytes: int = 0
    samples: int = 0
    peak_rss: int = 0
    attempt: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def io_s(self) -> float:
        return self.serialize_s + self.transfer_s + self.deserialize_s

    @contextlib.contextmanager
    def io(self, part: IoPart = "transfer", nbytes: int = 0) -> Iterator[None]:
        """Time a transport call; the sum of these is the task's IO time."""
        try:
            with self._timed(f"{part}_s"):
                yield
        finally:
            self.bytes += nbytes

    def converting(self) -> contextlib.AbstractContextManager[None]:
        """Time the float32 conversion of data already read (see ``convert_s``)."""
        return self._timed("convert_s")

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        """Add the block's wall time to the field ``name``, even when it raises."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, name, getattr(self, name) + time.perf_counter() - t0)

    def finish(self) -> TaskRecord:
        self.end = time.time()
        self.peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["io_s"] = self.io_s
        return data


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def make_run_dir(parent: Path, label: str) -> Path:
    """A new private directory ``<parent>/<UTC>-<label>`` (suffixed if taken this second)."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = utc_stamp()
    for n in range(1000):
        path = parent / (f"{stamp}-{label}" if n == 0 else f"{stamp}-{label}-{n}")
        try:
            path.mkdir(mode=0o700)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run directory under {parent}")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(gpus: int, seed: int | None = None) -> dict[str, Any]:
    """Where and how the numbers were measured, so a reviewer can trace and repeat them.

    ``seed`` is the workload's (``None``: trainers were not seeded, so weights and
    shuffling differ between repeats).
    """
    import psutil

    packages = ["simferry", "numpy", "torch", "parsl", "dragonhpc", "redis", "pydantic"]
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "gpus": gpus,
        "gpu_models": gpu_models(),
        "git_commit": git_commit(),
        "argv": list(sys.argv),
        "job_id": job_id(),
        "seed": seed,
        "packages": {p: _version(p) for p in packages},
        "time_utc": datetime.now(UTC).isoformat(),
    }


def cpu_model() -> str | None:
    """The CPU's marketing name (``/proc/cpuinfo``), which is what tells machines apart."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _output(argv: list[str], cwd: Path | None = None) -> str | None:
    """A short command's stdout, or ``None`` when it is missing or fails (best effort)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def gpu_models() -> list[str]:
    """NVIDIA GPU names from ``nvidia-smi`` (empty where there is none)."""
    out = _output(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    return [line.strip() for line in out.splitlines() if line.strip()] if out else []


def git_commit() -> str | None:
    """The commit of the simferry source that ran, ``+dirty`` if it had local changes."""
    here = Path(__file__).resolve().parent
    commit = _output(["git", "rev-parse", "HEAD"], cwd=here)
    if not commit:
        return None
    dirty = _output(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here)
    return commit + ("+dirty" if dirty else "")


def job_id() -> dict[str, str] | None:
    """The batch job this ran in (PBS or Slurm), to find its scheduler logs later."""
    for scheduler, var in (("pbs", "PBS_JOBID"), ("slurm", "SLURM_JOB_ID")):
        if os.environ.get(var):
            return {"scheduler": scheduler, "id": os.environ[var]}
    return None


def drop_none(value: Any) -> Any:
    """TOML has no null: omit unset options (they mean "default")."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


class RunDir:
    """Writer of one run directory's files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records = open(path / "records.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def write_config(self, config: dict[str, Any]) -> None:
        (self.path / "config.toml").write_text(tomli_w.dumps(drop_none(config)), encoding="utf-8")

    def write_environment(self, env: dict[str, Any]) -> None:
        write_json(self.path / "environment.json", env)

    def record(self, rec: TaskRecord) -> None:
        self._records.write(json.dumps(rec.to_json()) + "\n")
        self._records.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.path / "summary.json", summary)

    def close(self) -> None:
        self._records.close()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "records.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((run_dir / "summary.json").read_text()))
