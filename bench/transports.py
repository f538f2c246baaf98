"""Transport bandwidth against the machine's own limits, measured side by side.

For array sizes 1 MiB ... 512 MiB: put and get bandwidth (GB/s, median of repeats) of each
transport usable here, beside the raw limits on the same machine in the same run:
``memcpy`` (numpy copy), ``np.save`` / ``np.load`` on the file system of the filesystem
transport (the working directory) and on tmpfs (``/dev/shm``, the shm transport's), and
pickle dumps / loads. Each transport is held to the limit of its own medium: filesystem
and redis to the working directory's file system, shm to tmpfs, futures to pickle.
ProxyStore (``proxystore:file|redis|zmq``) and ADIOS2 (``adios2:bp5|sst``) are held to the
file system too: a ProxyStore put is storing the array and pickling its proxy, a get is
unpickling the proxy and resolving it; an ADIOS2 put is one step of a stream, a get reads
the next step. SST's writer is a forked process that puts on request (its stream waits
for its reader while holding the GIL), so an SST put includes one pipe round trip.

Every repetition writes a new key (and a new file for ``np.save``), deleted untimed
afterwards, as a run writes each sample once: overwriting a file is a different and, on
ext4, much slower operation (``auto_da_alloc`` starts writeback on close). A get counts
until the data is in this process's memory (memory-mapped results are copied out; a
pass-by-value get is the unpickling, after which the array is in memory). File reads
right after writes come from the page cache, as they do in a one-node run. ``ddict``
needs the Dragon runtime and is measured by its own tests under ``dragon``.
Writes CSV, markdown and a plot under bench/results/.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from simferry import plugins
from simferry.transports.base import ClientSpec, RunContext, SampleKey, TransportConfig

HERE = Path(__file__).resolve().parent
MIB = 2**20
SHM = Path("/dev/shm")
#: The raw limit each transport is held to (its ratio columns).
LIMIT_OF = {"shm": "np.save/np.load tmpfs", "futures": "pickle"}
DISK_LIMIT = "np.save/np.load"
#: Measured beside the current get, in the same run: the previous one (np.load mmap).
PREVIOUS_GET = "(previous get: np.load mmap)"


class Subject:
    """One thing measured: ``put(i)`` and ``get(i)`` are timed, ``cleanup(i)`` is not.

    ``get(i)`` reads what ``put(i)`` wrote (fresh, as a trainer reads a sample); every
    repetition uses its own key or file.
    """

    def __init__(
        self,
        put: Callable[[int], object],
        get: Callable[[int], object],
        cleanup: Callable[[int], object] = lambda i: None,
    ) -> None:
        self.put, self.get, self.cleanup = put, get, cleanup


def file_limit(arr: np.ndarray, tmp: Path) -> Subject:
    """``np.save`` of a new file, ``np.load`` of it."""
    path = lambda i: tmp / f"raw-{i}.npy"  # noqa: E731
    return Subject(
        lambda i: np.save(path(i), arr),
        lambda i: np.load(path(i), allow_pickle=False),
        lambda i: path(i).unlink(),
    )


def raw_limits(arr: np.ndarray, dirs: dict[str, Path]) -> dict[str, Subject]:
    dst = np.empty_like(arr)
    out = {"memcpy": Subject(lambda i: np.copyto(dst, arr), lambda i: np.copyto(dst, arr))}
    for label, tmp in dirs.items():
        out[label] = file_limit(arr, tmp)
    blobs: dict[int, bytes] = {}
    out["pickle"] = Subject(
        lambda i: blobs.__setitem__(i, pickle.dumps(arr, protocol=5)),
        lambda i: pickle.loads(blobs[i]),
        lambda i: blobs.pop(i),
    )
    return out


def config_of(label: str) -> TransportConfig:
    """A transport's config from ``name`` or ``name:variant`` (e.g. ``adios2:sst``)."""
    name, _, variant = label.partition(":")
    cls = plugins.transport_config_class(name)
    for options in cls.compare_variants:
        if variant in options.values():
            return cls(name=name, **options)
    return cls(name=name)


def _sst_writer(spec: ClientSpec, conn: Connection, arr: np.ndarray) -> None:
    client = spec.connect()
    while (i := conn.recv()) is not None:
        client.put(SampleKey(0, i, "input"), arr)
        conn.send(i)
    client.close()


def sst_subject(arr: np.ndarray, tmp: Path, stack: ExitStack) -> Subject:
    """SST needs its writer in another process (it waits for the reader while holding
    the GIL): a forked writer puts on request, and this process reads, as a trainer."""
    run = Path(tempfile.mkdtemp(prefix="run-sst-", dir=tmp))
    ctx = RunContext(run, f"benchsst{arr.nbytes}", 4 * arr.nbytes, mode="streaming")
    owner = config_of("adios2:sst").start(ctx)
    stack.callback(owner.close)
    mp = multiprocessing.get_context("fork")
    mine, theirs = mp.Pipe()
    proc = mp.Process(target=_sst_writer, args=(owner.config(), theirs, arr), daemon=True)
    proc.start()
    stack.callback(proc.join, 30)
    stack.callback(mine.send, None)
    reader = owner.config().connect()
    stack.callback(reader.close)
    warm = 10**6  # the writer's first put opens the stream and waits for this reader
    mine.send(warm)
    deadline = time.monotonic() + 60
    while reader.reader(0) is None and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    mine.recv()
    reader.get(SampleKey(0, warm, "input"))

    def put(i: int) -> None:
        mine.send(i)
        mine.recv()

    return Subject(put, lambda i: np.array(reader.get(SampleKey(0, i, "input")), copy=True))


def transport_subject(
    name: str, arr: np.ndarray, tmp: Path, stack: ExitStack, previous: bool = False
) -> Subject:
    if name == "adios2:sst":
        return sst_subject(arr, tmp, stack)
    cfg = config_of(name)
    run = Path(tempfile.mkdtemp(prefix=f"run-{name}-", dir=tmp))
    tag = name.replace(":", "")
    # Room for every repetition: ProxyStore keeps what a pass-by-proxy delete forgets.
    ctx = RunContext(run, f"bench{tag}{arr.nbytes}{int(previous)}", 16 * arr.nbytes)
    owner = cfg.start(ctx)
    stack.callback(owner.close)
    key = lambda i: SampleKey(0, i, "input")  # noqa: E731
    if getattr(owner, "by_value", False):
        # Pass-by-value: a put is storing + pickling the task result; a get is the
        # unpickling on the other side, after which the array is in memory.
        blobs: dict[int, bytes] = {}

        def put(i: int) -> None:
            owner.put(key(i), arr)
            blobs[i] = owner.drain()  # type: ignore[attr-defined]

        def get(i: int) -> None:
            owner.load(blobs[i])  # type: ignore[attr-defined]
            owner.get(key(i))

        def cleanup(i: int) -> None:
            owner.delete(key(i))
            blobs.pop(i)

        return Subject(put, get, cleanup)
    client = owner.config().connect()
    stack.callback(client.close)
    read = client.get
    if previous:
        # The get before MAP_POPULATE (transports/filestore.py load_mapped).
        read = lambda k: np.load(client._path(k), mmap_mode="r", allow_pickle=False)  # type: ignore[attr-defined]  # noqa: E731
    return Subject(
        lambda i: client.put(key(i), arr),
        lambda i: np.array(read(key(i)), copy=True),
        lambda i: client.delete(key(i)),
    )


def measure(subjects: dict[str, Subject], repeat: int) -> dict[str, tuple[float, float]]:
    """Median put and get seconds of each subject.

    Subjects take turns in every repetition, so drift in the machine's load hits limits
    and transports alike.
    """
    times: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in subjects}
    for i in range(repeat):
        # A new order every repetition: a subject's time can depend on the one before it
        # (a read right after an unpickle measured 2x slower whatever the read method),
        # so no subject may always follow the same one. Medians drop the odd slot out.
        order = list(subjects.items())
        random.Random(i).shuffle(order)
        for op in (0, 1):
            for label, subject in order:
                fn = subject.get if op else subject.put
                t0 = time.perf_counter()
                fn(i)
                times[label][op].append(time.perf_counter() - t0)
        for subject in subjects.values():
            subject.cleanup(i)
    return {s: (statistics.median(p), statistics.median(g)) for s, (p, g) in times.items()}


def usable(names: str) -> list[str]:
    """The transports that can run in this process, with a note for each skipped one."""
    out = []
    for n in names.split(","):
        cls = plugins.transports().get(n.partition(":")[0])
        if cls is None:
            reason: str | None = "not registered"
        elif cls.launchers is not None and "local" not in cls.launchers:
            reason = f"needs the {' or '.join(cls.launchers)} runtime; measured by its tests"
        else:
            reason = config_of(n).unavailable_reason()
        if reason:
            print(f"skipping {n}: {reason}")
        else:
            out.append(n)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mib", default="1,2,4,16,64,256,512")
    p.add_argument(
        "--transports",
        default="futures,filesystem,shm,redis,ddict,proxystore:file,proxystore:redis,"
        "proxystore:zmq,adios2:bp5,adios2:sst",
    )
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args()
    names = usable(a.transports)
    rows = []
    loads = [os.getloadavg()[0]]
    with (
        tempfile.TemporaryDirectory(dir=Path.cwd()) as tmpd,
        tempfile.TemporaryDirectory(dir=SHM if SHM.is_dir() else None) as shmd,
    ):
        tmp = Path(tmpd)
        dirs = {DISK_LIMIT: tmp, "np.save/np.load tmpfs": Path(shmd)}
        for mib in [int(s) for s in a.sizes_mib.split(",")]:
            arr = np.random.default_rng(0).standard_normal(mib * MIB // 8)
            repeat = max(2, a.repeat if mib <= 64 else a.repeat // 2)
            with ExitStack() as stack:
                subjects = raw_limits(arr, dirs)
                limits = set(subjects)
                for name in names:
                    subjects[name] = transport_subject(name, arr, tmp, stack)
                    if name in ("filesystem", "shm"):
                        label = f"{name} {PREVIOUS_GET}"
                        subjects[label] = transport_subject(name, arr, tmp, stack, True)
                for label, (tp, tg) in measure(subjects, repeat).items():
                    kind = "limit" if label in limits else "transport"
                    rows.append(
                        {"size_mib": mib, "what": label, "kind": kind, "put": tp, "get": tg}
                    )
            loads.append(os.getloadavg()[0])
            print(f"{mib} MiB done")
    for r in rows:
        nbytes = r["size_mib"] * MIB
        r["put_gbs"] = nbytes / r["put"] / 1e9
        r["get_gbs"] = nbytes / r["get"] / 1e9
    write(rows, a.out, loads)


def write(rows: list[dict], out: Path, loads: list[float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "transports.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    by = {(r["size_mib"], r["what"]): r for r in rows}
    header = [
        "size (MiB)", "transport", "put GB/s", "get GB/s", "held to",
        "put / limit", "get / limit", "put / memcpy", "get / memcpy",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        s = r["size_mib"]
        base = r["what"].split(" ")[0]
        held = LIMIT_OF.get(base, DISK_LIMIT) if r["kind"] == "transport" else r["what"]
        lim, mem = by[(s, held)], by[(s, "memcpy")]
        lines.append(
            f"| {s} | {r['what']} | {r['put_gbs']:.2f} | {r['get_gbs']:.2f} | {held} | "
            f"{r['put_gbs'] / lim['put_gbs']:.2f} | {r['get_gbs'] / lim['get_gbs']:.2f} | "
            f"{r['put_gbs'] / mem['put_gbs']:.2f} | {r['get_gbs'] / mem['get_gbs']:.2f} |"
        )
    md = "\n".join(lines) + "\n"
    md += (
        f"\n{os.cpu_count()} cores; 1-min load average {min(loads):.1f}..{max(loads):.1f} "
        "during the run. Targets: shm and filesystem get >= 0.6 x np.load and put >= 0.6 x "
        "np.save of their own medium ('held to').\n"
    )
    md += targets(rows, by)
    md += "\ncommand: `python " + " ".join(["bench/transports.py", *sys.argv[1:]]) + "`\n"
    (out / "transports.md").write_text(md)
    print(md)
    plot(rows, by, out)


def targets(rows: list[dict], by: dict) -> str:
    """The worst ratio of each target over all sizes, met or not."""
    lines = ["\nTargets:\n"]
    for name in ("filesystem", "shm"):
        mine = [r for r in rows if r["what"] == name]
        if not mine:
            continue
        held = LIMIT_OF.get(name, DISK_LIMIT)
        for op in ("put", "get"):
            ratios = [(r[f"{op}_gbs"] / by[(r["size_mib"], held)][f"{op}_gbs"], r) for r in mine]
            worst, r = min(ratios, key=lambda x: x[0])
            verdict = "met" if worst >= 0.6 else "NOT met"
            lines.append(
                f"- {name} {op} >= 0.6 x {held}: worst {worst:.2f} x (at {r['size_mib']} MiB), "
                f"median {statistics.median(x for x, _ in ratios):.2f} x, {verdict}\n"
            )
    return "".join(lines)


def plot(rows: list[dict], by: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, op in zip(axes, ("put", "get"), strict=True):
        for what in dict.fromkeys(r["what"] for r in rows):
            pts = [(r["size_mib"], r[f"{op}_gbs"]) for r in rows if r["what"] == what]
            style = "--" if by[(pts[0][0], what)]["kind"] == "limit" else "-"
            ax.plot(*zip(*pts, strict=True), style, marker="o", label=what)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("array size (MiB)")
        ax.set_title(f"{op} bandwidth")
    axes[0].set_ylabel("GB/s")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "transports.png", dpi=110)


if __name__ == "__main__":
    main()
