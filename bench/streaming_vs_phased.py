"""Whole wall time of streaming vs phased mode on the same configuration, in one script run.

For each transport (default filesystem and shm) and each repeat this runs ``simferry run``
in phased then streaming mode (alternating, so drift on the machine hits both alike) at
``--num-sims 8 --grid-size 512`` and prints, per transport, the medians of the command's
wall time, streaming / phased, and the streaming measures (time to first training step,
overlap, trainer idle). Issue 8's target is streaming <= 0.75 x phased on 2 cores, where
training overlaps the simulations' 0.5 s sleeps. Writes markdown + CSV under bench/results/.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _measure import measure

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODES = ("phased", "streaming")


def run_once(transport: str, mode: str, size: list[str], runs: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "simferry", "run", "--quiet", "--transport", transport]
    cmd += ["--mode", mode, *size, "--runs-dir", str(runs)]
    m = measure(cmd)
    if m.returncode:
        raise SystemExit(f"{transport} {mode} failed:\n{m.stderr}")
    (run_dir,) = runs.iterdir()
    s = json.loads((run_dir / "summary.json").read_text())
    return {"wall_s": m.wall_s, "summary_wall_s": s["wall_s"], **s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--transports", default="filesystem,shm")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    size = ["--num-sims", str(a.num_sims), "--grid-size", str(a.grid_size)]
    size += ["--step-seconds", str(a.step_seconds)]
    transports = [t for t in a.transports.split(",") if t]
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeat):
            for t in transports:
                for mode in MODES:
                    r = run_once(t, mode, size, Path(tmp) / f"{t}-{mode}-{rep}")
                    rows.setdefault((t, mode), []).append(r)
                    print(f"[{rep}] {t} {mode}: {r['wall_s']:.2f} s", file=sys.stderr)

    def med(t: str, mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in rows[(t, mode)]))

    header = [
        "transport", "phased wall (s)", "streaming wall (s)", "streaming / phased",
        "phased sim / train run (s)", "streaming sim / train run (s)",
        "first step (s)", "overlap", "trainer idle (s)", "ratio per repeat", "target met",
    ]  # fmt: skip
    table = []
    for t in transports:
        ratio = med(t, "streaming", "wall_s") / med(t, "phased", "wall_s")
        pairs = zip(rows[(t, "streaming")], rows[(t, "phased")], strict=True)
        per_repeat = " ".join(f"{s['wall_s'] / p['wall_s']:.2f}" for s, p in pairs)
        table.append(
            [
                t,
                f"{med(t, 'phased', 'wall_s'):.2f}",
                f"{med(t, 'streaming', 'wall_s'):.2f}",
                f"{ratio:.3f}",
                f"{med(t, 'phased', 'sim_run_s'):.2f} / {med(t, 'phased', 'train_run_s'):.2f}",
                f"{med(t, 'streaming', 'sim_run_s'):.2f} / {med(t, 'streaming', 'train_run_s'):.2f}",
                f"{med(t, 'streaming', 'time_to_first_step_s'):.2f}",
                f"{100 * med(t, 'streaming', 'overlap_fraction'):.0f}%",
                f"{med(t, 'streaming', 'trainer_idle_s'):.2f}",
                per_repeat,
                "yes" if ratio <= 0.75 else "no",
            ]
        )
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    md += "".join("| " + " | ".join(r) + " |\n" for r in table)
    md += (
        f"\nconfig: local launcher, 1 trainer, --num-sims {a.num_sims} --grid-size {a.grid_size}"
        f" --step-seconds {a.step_seconds}; wall = the whole `simferry run` command; medians "
        f"of {a.repeat} repeat(s); target streaming / phased <= 0.75\n"
    )
    print(md)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "streaming_vs_phased.md").write_text(md)
    with open(a.out / "streaming_vs_phased.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(table)


if __name__ == "__main__":
    main()
