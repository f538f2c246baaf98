"""Pass-by-value before/after: the futures variants of this tree and of a baseline revision.

``bench/end_to_end.py --baseline`` reruns only ``local:*`` variants at the baseline; this
alternates ``parsl:futures`` and ``local:futures`` at both revisions with
``reference:futures`` and ``local:filesystem`` (the no-regression control) in one loop,
the order rotating every repeat, and reports each variant's medians: peak PSS of the
process tree (Parsl's detached pools included) over the float64 data, and training IO.
The tables are rewritten after every run, so a cut-short sitting still leaves its rows.

    python bench/results/futures/before_after.py --baseline 22dedde --repeat 2
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # bench/: end_to_end and _measure

from end_to_end import export, revision, run_variant  # noqa: E402

VARIANTS = [
    ("parsl", "futures", True),
    ("local", "futures", True),
    ("reference", "futures", False),
    ("local", "filesystem", False),
]
KEYS = ("wall_s", "peak_pss", "train_io_s", "sim_io_s", "trainer_rss")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, metavar="REV")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--only", help="comma-separated launcher:transport pairs to run, of the four")
    p.add_argument(
        "--resume", action="store_true", help="keep the rows of before_after.csv, add to them"
    )
    a = p.parse_args()
    size = ["--num-sims", str(a.num_sims), "--grid-size", str(a.grid_size)]
    data = a.num_sims * 10 * 2 * a.grid_size**2 * 8
    rows: dict[str, list[dict]] = {}
    if a.resume:
        with open(HERE / "before_after.csv", newline="") as f:
            for r in csv.DictReader(f):
                rows.setdefault(r["variant"], []).append({k: float(r[k]) for k in KEYS})
    only = a.only.split(",") if a.only else None
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        tree = export(a.baseline, tmp / "baseline")
        rev = revision(a.baseline)
        runs = []
        for launcher, transport, before in VARIANTS:
            if only is not None and f"{launcher}:{transport}" not in only:
                continue
            runs.append((launcher, transport, None))
            if before:
                runs.append((launcher, transport, tree))
        for rep in range(a.repeat):
            shift = (rep * 3) % len(runs)
            for launcher, transport, base in runs[shift:] + runs[:shift]:
                name = f"{launcher}+{transport}" + (f" @{rev}" if base else "")
                row = run_variant(launcher, transport, size, tmp, base)
                loads.append(os.getloadavg()[0])
                if row is not None:
                    rows.setdefault(name, []).append(row)
                    print(f"[{rep}] {name}: {row['wall_s']:.1f} s", file=sys.stderr)
                write(rows, a, rev, data, loads)


def write(rows: dict[str, list[dict]], a: argparse.Namespace, rev: str, data: int, loads) -> None:
    header = ["variant", "runs", "wall (s)", "peak PSS tree (MB)", "peak / data",
              "train IO (s)", "sim IO (s)", "trainer peak RSS (MB)"]  # fmt: skip
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    out = []
    for name, rs in sorted(rows.items()):
        med = {k: statistics.median(r.get(k, float("nan")) for r in rs) for k in KEYS}
        cells = [name, len(rs), f"{med['wall_s']:.1f}", f"{med['peak_pss'] / 1e6:.0f}",
                 f"{med['peak_pss'] / data:.2f}", f"{med['train_io_s']:.3f}",
                 f"{med['sim_io_s']:.3f}", f"{med['trainer_rss'] / 1e6:.0f}"]  # fmt: skip
        md += "| " + " | ".join(map(str, cells)) + " |\n"
        out += [
            {"variant": name, "repeat": i, **{k: r.get(k) for k in KEYS}} for i, r in enumerate(rs)
        ]
    md += (
        f"\nmedians of each variant's runs; data = {data / 1e6:.1f} MB (float64 inputs and "
        f"targets); `@{rev}` = simferry as of {rev} (before); 1-min load average "
        f"{min(loads):.1f}..{max(loads):.1f} during the run.\n\ncommand: `python "
        + " ".join(["bench/results/futures/before_after.py", *sys.argv[1:]])
        + "`\n"
    )
    (HERE / "before_after.md").write_text(md)
    with open(HERE / "before_after.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["variant", "repeat", *KEYS])
        w.writeheader()
        w.writerows(out)


if __name__ == "__main__":
    main()
