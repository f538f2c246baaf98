"""Transport bandwidth against the machine's own limits, measured side by side.

For array sizes 1 MiB ... 512 MiB: put and get bandwidth (GB/s, median of repeats) of each
transport usable here, beside the raw limits on the same machine in the same run:
``memcpy`` (numpy copy), ``np.save`` / ``np.load`` on the same file system as the
filesystem transport, and pickle dumps / loads. A get counts until the data is in this
process's memory (memory-mapped results are copied out), as a trainer needs it.
File reads right after writes come from the page cache, as they do in a one-node run.
Writes CSV, markdown and a plot under bench/results/.
"""

from __future__ import annotations

import argparse
import csv
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from simferry import plugins
from simferry.transports.base import RunContext, SampleKey

HERE = Path(__file__).resolve().parent
MIB = 2**20


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def raw_limits(arr: np.ndarray, tmp: Path, repeat: int) -> dict[str, tuple[float, float]]:
    dst = np.empty_like(arr)
    path = tmp / "raw.npy"
    blob = pickle.dumps(arr, protocol=5)
    out = {"memcpy": (timed(lambda: np.copyto(dst, arr), repeat),) * 2}
    out["np.save/np.load"] = (
        timed(lambda: np.save(path, arr), repeat),
        timed(lambda: np.load(path), repeat),
    )
    out["pickle"] = (
        timed(lambda: pickle.dumps(arr, protocol=5), repeat),
        timed(lambda: pickle.loads(blob), repeat),
    )
    path.unlink()
    return out


def transport_times(name: str, arr: np.ndarray, tmp: Path, repeat: int) -> tuple[float, float]:
    cfg = plugins.transport_config_class(name)(name=name)
    run = Path(tempfile.mkdtemp(prefix=f"run-{name}-", dir=tmp))
    ctx = RunContext(run, f"bench{name}{arr.nbytes}", 4 * arr.nbytes)
    owner = cfg.start(ctx)
    key = SampleKey(0, 0, "input")
    try:
        if getattr(owner, "by_value", False):
            # Pass-by-value: a put is storing + pickling the task result; a get is the
            # unpickling on the other side.
            def put() -> None:
                owner.put(key, arr)
                owner.blob = owner.drain()  # type: ignore[attr-defined]

            def get() -> None:
                owner.load(owner.blob)  # type: ignore[attr-defined]
                np.array(owner.get(key), copy=True)
        else:
            client = owner.config().connect()

            def put() -> None:
                client.put(key, arr)

            def get() -> None:
                np.array(client.get(key), copy=True)

        t_put = timed(put, repeat)
        t_get = timed(get, repeat)
        return t_put, t_get
    finally:
        owner.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes-mib", default="1,4,16,64,256,512")
    p.add_argument("--transports", default="futures,filesystem,shm,redis")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=HERE / "results")
    a = p.parse_args()
    names = []
    for n in a.transports.split(","):
        cls = plugins.transports().get(n)
        reason = "not registered" if cls is None else cls(name=n).unavailable_reason()
        if reason:
            print(f"skipping {n}: {reason}")
        else:
            names.append(n)
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmpd:
        tmp = Path(tmpd)
        for mib in [int(s) for s in a.sizes_mib.split(",")]:
            arr = np.random.default_rng(0).standard_normal(mib * MIB // 8)
            repeat = max(2, a.repeat if mib <= 64 else a.repeat // 2)
            limits = raw_limits(arr, tmp, repeat)
            for label, (tp, tg) in limits.items():
                rows.append({"size_mib": mib, "what": label, "kind": "limit", "put": tp, "get": tg})
            for name in names:
                tp, tg = transport_times(name, arr, tmp, repeat)
                rows.append(
                    {"size_mib": mib, "what": name, "kind": "transport", "put": tp, "get": tg}
                )
            print(f"{mib} MiB done")
    for r in rows:
        nbytes = r["size_mib"] * MIB
        r["put_gbs"] = nbytes / r["put"] / 1e9
        r["get_gbs"] = nbytes / r["get"] / 1e9
    write(rows, a.out)


def write(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "transports.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    by = {(r["size_mib"], r["what"]): r for r in rows}
    header = [
        "size (MiB)", "transport", "put GB/s", "get GB/s",
        "put / np.save", "get / np.load", "put / memcpy", "get / memcpy",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        s = r["size_mib"]
        save, mem = by[(s, "np.save/np.load")], by[(s, "memcpy")]
        lines.append(
            f"| {s} | {r['what']} | {r['put_gbs']:.2f} | {r['get_gbs']:.2f} | "
            f"{r['put_gbs'] / save['put_gbs']:.2f} | {r['get_gbs'] / save['get_gbs']:.2f} | "
            f"{r['put_gbs'] / mem['put_gbs']:.2f} | {r['get_gbs'] / mem['get_gbs']:.2f} |"
        )
    md = "\n".join(lines) + "\n"
    (out / "transports.md").write_text(md)
    print(md)
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
