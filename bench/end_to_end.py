"""End-to-end cost of simferry against the bare work, side by side in one script run.

For one configuration (default ``--num-sims 8 --grid-size 512``) this runs the bare work
(bench/bare.py: a process pool of simulations, then in-process training) and then
``simferry run`` for each launcher x transport asked for, alternating repeats so drift
on the machine hits every variant alike. It prints the whole wall time, the ratio to
bare, start-up time, peak PSS of the process tree and each trainer's peak RSS, and
writes CSV + markdown under bench/results/.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _measure import measure

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-sims", type=int, default=8)
    p.add_argument("--grid-size", type=int, default=512)
    p.add_argument("--step-seconds", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument(
        "--variants",
        default="local:filesystem,local:shm,local:futures",
        help="comma-separated launcher:transport pairs",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args()
    size = ["--num-sims", str(a.num_sims), "--grid-size", str(a.grid_size)]
    size += ["--step-seconds", str(a.step_seconds)]
    variants = [tuple(v.split(":")) for v in a.variants.split(",") if v]
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeat):
            m = measure([sys.executable, str(HERE / "bare.py"), *size])
            if m.returncode:
                raise SystemExit(f"bare run failed:\n{m.stderr}")
            rows.setdefault("bare", []).append({"wall_s": m.wall_s, "peak_pss": m.peak_pss})
            print(f"[{rep}] bare: {m.wall_s:.2f} s", file=sys.stderr)
            for launcher, transport in variants:
                runs = Path(tmp) / f"{launcher}-{transport}-{rep}"
                cmd = [sys.executable, "-m", "simferry", "run", "--quiet", "--launcher", launcher]
                cmd += ["--transport", transport, *size, "--runs-dir", str(runs)]
                m = measure(cmd)
                if m.returncode:
                    print(f"{launcher}+{transport} failed: {m.stderr.strip()}", file=sys.stderr)
                    continue
                (run_dir,) = runs.iterdir()
                s = json.loads((run_dir / "summary.json").read_text())
                recs = [json.loads(x) for x in (run_dir / "records.jsonl").read_text().splitlines()]
                trainer_rss = max(r["peak_rss"] for r in recs if r["kind"] == "train")
                rows.setdefault(f"{launcher}+{transport}", []).append(
                    {
                        "wall_s": m.wall_s,
                        "peak_pss": m.peak_pss,
                        "startup_s": s.get("startup_s", 0.0),
                        "trainer_rss": trainer_rss,
                        "sim_run_s": s["sim_run_s"],
                        "sim_io_s": s["sim_io_s"],
                        "train_run_s": s["train_run_s"],
                        "train_io_s": s["train_io_s"],
                    }
                )
                print(f"[{rep}] {launcher}+{transport}: {m.wall_s:.2f} s", file=sys.stderr)
    bare = statistics.median(r["wall_s"] for r in rows["bare"])
    bare_pss = statistics.median(r["peak_pss"] for r in rows["bare"])
    float32_mb = a.num_sims * 10 * a.grid_size**2 * 4 * 2 / 1e6
    header = [
        "variant", "wall (s)", "x bare", "start-up (s)", "sim run/IO (s)", "train run/IO (s)",
        "peak PSS tree (MB)", "PSS above bare (MB)", "trainer peak RSS (MB)",
    ]  # fmt: skip
    table = []
    for name, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        table.append(
            [
                name,
                f"{med['wall_s']:.2f}",
                f"{med['wall_s'] / bare:.3f}",
                f"{med.get('startup_s', 0):.2f}",
                f"{med['sim_run_s']:.2f} / {med['sim_io_s']:.3f}" if "sim_run_s" in med else "",
                f"{med['train_run_s']:.2f} / {med['train_io_s']:.3f}"
                if "train_run_s" in med
                else "",
                f"{med['peak_pss'] / 1e6:.0f}",
                f"{(med['peak_pss'] - bare_pss) / 1e6:.0f}",
                f"{med['trainer_rss'] / 1e6:.0f}" if "trainer_rss" in med else "",
            ]
        )
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    md += "".join("| " + " | ".join(r) + " |\n" for r in table)
    md += (
        f"\nconfig: --num-sims {a.num_sims} --grid-size {a.grid_size} --step-seconds "
        f"{a.step_seconds}, repeats {a.repeat} (medians); float32 dataset {float32_mb:.0f} MB\n"
    )
    print(md)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "end_to_end.md").write_text(md)
    with open(a.out / "end_to_end.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(table)


if __name__ == "__main__":
    main()
