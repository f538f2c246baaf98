"""End-to-end cost of simferry against the bare work, side by side in one script run.

For one configuration (default ``--num-sims 8 --grid-size 512``) this runs the bare work
(bench/bare.py: a process pool of simulations, then in-process training) and then
``simferry run`` for each launcher x transport asked for, alternating repeats so drift
on the machine hits every variant alike. ``reference:futures`` and
``reference:filesystem`` run the reference's own data paths (bench/reference.py) in the
same loop, so simferry's transports are measured beside their reference equivalents.
A transport may name its variant: ``local:proxystore:redis``, ``local:adios2:sst``.
It prints the whole wall time, the ratio to bare, start-up time, peak PSS of the process
tree and each trainer's peak RSS -- also above the bare trainer's own peak, which is what
the data path adds -- and writes CSV + markdown under bench/results/.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _measure import Measured, measure

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_VARIANTS = (
    "local:filesystem,local:shm,local:futures,local:redis,parsl:filesystem,parsl:futures,"
    "reference:filesystem,reference:futures"
)
#: Targets (issue 9): local + filesystem/shm wall vs bare; trainer peak vs float32 data.
WALL_TARGET = 1.10
TRAINER_ALLOWANCE = 400e6


def key_values(line: str) -> dict[str, float]:
    """The ``key=value`` pairs of the last line a bench script printed."""
    last = line.strip().splitlines()[-1]
    return {k: float(v) for k, v in (w.split("=", 1) for w in last.split() if "=" in w)}


def simferry_row(m: Measured, runs: Path) -> dict[str, float]:
    (run_dir,) = runs.iterdir()
    s = json.loads((run_dir / "summary.json").read_text())
    recs = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines()]
    return {
        "wall_s": m.wall_s,
        "cpu_s": m.cpu_s,
        "peak_pss": m.peak_pss,
        "startup_s": s.get("startup_s", 0.0) + s.get("trainer_ready_s", 0.0),
        "trainer_rss": max(r["peak_rss"] for r in recs if r["kind"] == "train"),
        "sim_run_s": s["sim_run_s"],
        "sim_io_s": s["sim_io_s"],
        "train_run_s": s["train_run_s"],
        "train_io_s": s["train_io_s"],
        # NaN for a revision that timed the conversion inside its reads.
        "train_convert_s": s.get("train_convert_s", math.nan),
    }


def export(rev: str, dest: Path) -> Path:
    """The ``simferry`` package as of git revision ``rev``, extracted under ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(HERE.parent), "archive", rev, "simferry"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    where = subprocess.run(
        [sys.executable, "-c", "import simferry; print(simferry.__file__)"],
        env={**os.environ, "PYTHONPATH": str(dest)},
        cwd=dest,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if not where.startswith(str(dest)):
        raise SystemExit(f"--baseline: simferry still imports from {where.strip()}")
    return dest


def revision(rev: str) -> str:
    """``rev`` as a short commit hash, so a table names exactly what it compared with."""
    out = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def run_variant(
    launcher: str,
    transport: str,
    size: list[str],
    tmp: Path,
    tree: Path | None = None,
    keep: Path | None = None,
) -> dict | None:
    """One measured run of a variant; ``None`` (and a note) when it failed.

    ``tree``: run simferry from that directory (a ``--baseline`` revision) instead.
    ``keep``: move the run directory there, for ``simferry report`` (table and
    observations from the same runs as this table).
    """
    if launcher == "reference":
        cmd = [sys.executable, str(HERE / "reference.py"), transport, *size]
        m = measure(cmd)
        if m.returncode == 0:
            row = key_values(m.stdout)
            row.update(wall_s=m.wall_s, cpu_s=m.cpu_s, peak_pss=m.peak_pss)
            return row
    else:
        runs = tmp / f"{launcher}-{transport.replace(':', '-')}{'-baseline' if tree else ''}"
        cmd = [sys.executable, "-m", "simferry", "run", "--quiet", "--launcher", launcher]
        cmd += ["--transport", *transport_flags(transport), *size, "--runs-dir", str(runs)]
        env = cwd = None
        if tree is not None:
            # ``python -m`` puts the working directory first on sys.path: run from the tree.
            env, cwd = {**os.environ, "PYTHONPATH": str(tree)}, str(tree)
        m = measure(cmd, marker=str(runs), env=env, cwd=cwd)
        try:
            if m.returncode == 0:
                row = simferry_row(m, runs)
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    for run_dir in runs.iterdir():
                        shutil.move(run_dir, keep / run_dir.name)
                return row
        finally:
            shutil.rmtree(runs, ignore_errors=True)
    print(f"{launcher}+{transport} failed: {m.stderr.strip()[-500:]}", file=sys.stderr)
    return None


def variant_options(transport: str) -> dict[str, str]:
    """The options of ``name:variant`` (``proxystore:redis``, ``adios2:sst``), else none."""
    from simferry import plugins

    name, _, variant = transport.partition(":")
    tcls = plugins.transports().get(name)
    for options in tcls.compare_variants:
        if variant and variant in options.values():
            return dict(options)
    return {}


def transport_flags(transport: str) -> list[str]:
    flags = [transport.partition(":")[0]]
    for k, v in variant_options(transport).items():
        flags += ["--" + k.replace("_", "-"), v]
    return flags


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="comma-separated launcher:transport pairs; launcher 'reference' runs the "
        "reference's data path (bench/reference.py)",
    )
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run every local:* variant with simferry as of this git revision "
        "(before/after an optimization, alternated in the same run)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--keep-runs",
        type=Path,
        metavar="DIR",
        help="keep each successful simferry run directory under DIR (for simferry report)",
    )
    a = p.parse_args()
    size = ["--num-sims", str(a.num_sims), "--grid-size", str(a.grid_size)]
    size += ["--step-seconds", str(a.step_seconds)]
    # launcher:transport, or launcher:transport:variant (local:proxystore:redis).
    variants = [tuple(v.split(":", 1)) for v in a.variants.split(",") if v]
    variants = [v for v in variants if usable(*v)]
    rows: dict[str, list[dict]] = {}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        tree = None
        if a.baseline:
            tree = export(a.baseline, tmp / "baseline")
            a.baseline = revision(a.baseline)
        runs = [(v, None) for v in variants]
        if tree is not None:
            runs += [(v, tree) for v in variants if v[0] == "local"]
        m = measure([sys.executable, str(HERE / "bare.py"), "--trainer-only", *size])
        if m.returncode:
            raise SystemExit(f"bare trainer failed:\n{m.stderr}")
        trainer_floor = key_values(m.stdout)["train_peak_rss"]
        # The bare work is one more entry, and the order rotates every repeat: other load
        # on the machine (often periodic) must not always hit the same slot.
        runs = [(("bare", ""), None), *runs]
        for rep in range(a.repeat):
            shift = rep % len(runs)
            for (launcher, transport), base in runs[shift:] + runs[:shift]:
                if launcher == "bare":
                    m = measure([sys.executable, str(HERE / "bare.py"), *size])
                    if m.returncode:
                        raise SystemExit(f"bare run failed:\n{m.stderr}")
                    name = "bare"
                    result: dict | None = {"wall_s": m.wall_s, "cpu_s": m.cpu_s}
                    result.update(peak_pss=m.peak_pss, trainer_rss=trainer_floor)
                else:
                    name = f"{launcher}+{transport}" + (f" @{a.baseline}" if base else "")
                    keep = None if base else a.keep_runs
                    result = run_variant(launcher, transport, size, tmp, base, keep)
                if result is not None:
                    rows.setdefault(name, []).append(result)
                    print(f"[{rep}] {name}: {result['wall_s']:.2f} s", file=sys.stderr)
                loads.append(os.getloadavg()[0])
    rows = {"bare": rows.pop("bare"), **rows}
    write(rows, a, loads)


def usable(launcher: str, transport: str) -> bool:
    """Skip, with a note, variants whose software is missing here (like ``compare``)."""
    if launcher == "reference":
        return transport in ("futures", "filesystem")
    from simferry import plugins

    name = transport.partition(":")[0]
    lcls, tcls = plugins.launchers().get(launcher), plugins.transports().get(name)
    if lcls is None or tcls is None:
        print(f"skipping {launcher}+{transport}: not registered", file=sys.stderr)
        return False
    tcfg = tcls(name=name, **variant_options(transport))
    reason = lcls(name=launcher).unavailable_reason() or tcfg.unavailable_reason()
    if reason is None and tcls.launchers is not None and launcher not in tcls.launchers:
        reason = f"{transport} runs only with {' or '.join(tcls.launchers)}"
    if reason:
        print(f"skipping {launcher}+{transport}: {reason}", file=sys.stderr)
    return reason is None


def write(rows: dict[str, list[dict]], a: argparse.Namespace, loads: list[float]) -> None:
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rows.items()
    }
    for name, rs in rows.items():
        med[name]["best_wall_s"] = min(r["wall_s"] for r in rs)
    bare = med["bare"]
    float32 = a.num_sims * 10 * a.grid_size**2 * 4 * 2
    header = [
        "variant", "wall (s)", "x bare", "best wall (s)", "x bare (best)", "CPU (s)",
        "x bare CPU", "start-up (s)", "sim run/IO (s)", "train run/IO (s)", "train float32 conversion (s)",
        "peak PSS tree (MB)", "PSS above bare (MB)", "trainer peak RSS (MB)",
        "trainer RSS above bare trainer (MB)",
    ]  # fmt: skip
    table = []
    for name, m in med.items():
        has = "sim_run_s" in m
        table.append(
            [
                name,
                f"{m['wall_s']:.2f}",
                f"{m['wall_s'] / bare['wall_s']:.3f}",
                f"{m['best_wall_s']:.2f}",
                f"{m['best_wall_s'] / bare['best_wall_s']:.3f}",
                f"{m['cpu_s']:.1f}",
                f"{m['cpu_s'] / bare['cpu_s']:.3f}",
                f"{m['startup_s']:.2f}" if has else "",
                f"{m['sim_run_s']:.2f} / {m['sim_io_s']:.3f}" if has else "",
                f"{m['train_run_s']:.2f} / {m['train_io_s']:.3f}" if has else "",
                f"{m['train_convert_s']:.3f}" if has else "",
                f"{m['peak_pss'] / 1e6:.0f}",
                f"{(m['peak_pss'] - bare['peak_pss']) / 1e6:.0f}",
                f"{m['trainer_rss'] / 1e6:.0f}",
                f"{(m['trainer_rss'] - bare['trainer_rss']) / 1e6:.0f}",
            ]
        )
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    md += "".join("| " + " | ".join(r) + " |\n" for r in table)
    md += (
        f"\nconfig: --num-sims {a.num_sims} --grid-size {a.grid_size} --step-seconds "
        f"{a.step_seconds}, {a.repeat} repeat(s), variants alternated; medians except 'best "
        f"wall' (the least disturbed repeat); float32 dataset {float32 / 1e6:.0f} MB; "
        f"{os.cpu_count()} cores shared with other work, 1-min load average "
        f"{min(loads):.1f}..{max(loads):.1f} during the run. CPU = user + system time of the "
        "whole process tree (hardly changed by other load; Parsl's detached worker pools are "
        "not in it). Start-up includes waiting for the trainers' torch import. Bare trainer "
        "= `bench/bare.py --trainer-only`: a fresh process with torch, the float32 buffer "
        "and one epoch, no data path.\n\n"
    )
    md += targets(med, float32)
    md += "\ncommand: `python " + " ".join(["bench/end_to_end.py", *sys.argv[1:]]) + "`\n"
    print(md)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "end_to_end.md").write_text(md)
    (a.out / "end_to_end_runs.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(a.out / "end_to_end.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(table)


def ratios(m: dict[str, float], ref: dict[str, float]) -> str:
    return (
        f"wall {m['wall_s'] / ref['wall_s']:.3f} x (best {m['best_wall_s'] / ref['best_wall_s']:.3f}"
        f" x), CPU {m['cpu_s'] / ref['cpu_s']:.3f} x"
    )


def targets(med: dict[str, dict[str, float]], float32: int) -> str:
    """Each target met or not, with its ratios (README and issue 9 quote these lines).

    Wall-time targets are judged on the median; the best repeat and CPU time are given
    beside it because other work on a shared machine inflates medians.
    """
    bare = med["bare"]
    lines = ["Targets:\n"]
    for name in ("local+filesystem", "local+shm"):
        if name in med:
            ratio = med[name]["wall_s"] / bare["wall_s"]
            verdict = "met" if ratio <= WALL_TARGET else "NOT met"
            lines.append(
                f"- {name} wall <= {WALL_TARGET} x bare: {ratios(med[name], bare)}; {verdict}\n"
            )
    limit = float32 + TRAINER_ALLOWANCE
    for name, m in med.items():
        if name == "bare" or name.startswith("reference") or "@" in name:
            continue
        ratio = m["trainer_rss"] / limit
        verdict = "met" if ratio <= 1 else "NOT met"
        lines.append(
            f"- {name} trainer peak RSS <= float32 data + 400 MB ({limit / 1e6:.0f} MB): "
            f"{m['trainer_rss'] / 1e6:.0f} MB = {ratio:.2f} x, {verdict}; the data path adds "
            f"{(m['trainer_rss'] - bare['trainer_rss']) / 1e6:.0f} MB to the bare trainer's "
            f"{bare['trainer_rss'] / 1e6:.0f} MB\n"
        )
    for transport in ("futures", "filesystem"):
        ref = med.get(f"reference+{transport}")
        m = med.get(f"local+{transport}")
        if ref is None or m is None:
            continue
        # Same workers on both sides (local process pools): the difference is the data path.
        verdict = "met" if m["wall_s"] <= ref["wall_s"] else "NOT met"
        lines.append(
            f"- local+{transport} not slower than the reference's {transport}: "
            f"{ratios(m, ref)}, train IO {m['train_io_s']:.3f} vs {ref['train_io_s']:.3f} s "
            f"(float32 conversion apart: {m['train_convert_s']:.3f} vs "
            f"{ref['train_convert_s']:.3f} s), "
            f"sim IO {m['sim_io_s']:.3f} vs {ref['sim_io_s']:.3f} s, trainer RSS "
            f"{m['trainer_rss'] / 1e6:.0f} vs {ref['trainer_rss'] / 1e6:.0f} MB, peak PSS "
            f"{m['peak_pss'] / 1e6:.0f} vs {ref['peak_pss'] / 1e6:.0f} MB; {verdict}\n"
        )
    for name, before in med.items():
        now_name = name.split(" @")[0]
        now = med.get(now_name)
        if "@" in name and now is not None:
            lines.append(
                f"- {now_name} now vs {name.split(' @')[1]} (before): {ratios(now, before)}, "
                f"train run/IO {now['train_run_s']:.2f}/{now['train_io_s']:.3f} vs "
                f"{before['train_run_s']:.2f}/{before['train_io_s']:.3f} s, trainer RSS "
                f"{now['trainer_rss'] / 1e6:.0f} vs {before['trainer_rss'] / 1e6:.0f} MB, peak "
                f"PSS {now['peak_pss'] / 1e6:.0f} vs {before['peak_pss'] / 1e6:.0f} MB\n"
            )
    return "".join(lines)


if __name__ == "__main__":
    main()
