"""``observations.md``: the reference's "short paragraph on your observations", from numbers.

Every sentence is built from the grouped measurements and quotes the figures it rests
on (medians over repeats, as in ``table.md``); a claim the data cannot support (one
data size, one run) is replaced by what would be needed to make it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simferry.report import (
    Fit,
    Group,
    linear_fit,
    series,
    sim_io_points,
    train_io_points,
)

#: IO shares of run time whose crossing is reported.
SHARE_THRESHOLDS = (0.10, 0.25, 0.50)
#: Coefficient of variation across repeats above which a configuration is flagged.
VARIANCE_CV = 0.20
MAX_VARIANCE = 3
#: A task whose IO exceeds this multiple of its run's median (and by 10 ms) is a straggler.
STRAGGLER = 3.0
STRAGGLER_MIN_S = 0.010
MAX_STRAGGLERS = 3
#: The reference's dataset: 0.62 GB of inputs, so 1.24 GB of inputs + targets.
REFERENCE_TOTAL_GB = 1.24
MIN_R2 = 0.8


def run_total(g: Group) -> float:
    return g.median("sim_run_s") + g.median("train_run_s")


def io_total(g: Group) -> float:
    return g.median("sim_io_s") + g.median("train_io_s")


def where(g: Group) -> str:
    f = g.first
    nodes = f"{f['nodes']} node" + ("s" if f["nodes"] != 1 else "")
    return f"{nodes}, {f['inputs_gb']:.3g} GB of inputs ({g.size()})"


def gb(x: float) -> str:
    return f"{x:.3g} GB"


def gb_in(x: float) -> str:
    """A dataset size given, like the reference's, as GB of inputs."""
    return f"{x:.3g} GB of inputs"


def pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 or x == 0 else f"{100 * x:.1g}%"


def secs(x: float) -> str:
    """Seconds with two decimals, or three significant digits below 0.01 s."""
    return f"{x:.2f} s" if abs(x) >= 0.01 or x == 0 else f"{x:.2g} s"


Winners = dict[Any, list[tuple[float, str, bool]]]
#: How a group is ranked: run time (the reference's two columns) or IO time.
MEASURES = {"run": ("sim_run_s", "train_run_s"), "io": ("sim_io_s", "train_io_s")}


def per_run(g: Group, measure: str) -> list[float]:
    a, b = MEASURES[measure]
    return [r.m[a] + r.m[b] for r in g.runs]


def settled(best: Group, second: Group, measure: str) -> bool:
    """True when repeats of both exist and every run of ``best`` beat every run of ``second``."""
    if best.n < 2 or second.n < 2:
        return False
    return max(per_run(best, measure)) < min(per_run(second, measure))


def fastest(groups: Sequence[Group]) -> tuple[list[str], dict[str, Winners]]:
    """One line per (node count, data size): the fastest implementation and its margin."""
    buckets: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        f = g.first
        key = (f["nodes"], f["inputs_gb"], f["num_sims"], f["grid_size"], f["mode"], f["trainers"])
        buckets.setdefault(key, []).append(g)
    lines = []
    winners: dict[str, Winners] = {"run": {}, "io": {}}
    for key, gs in buckets.items():
        ranked = sorted(gs, key=run_total)
        best = ranked[0]
        sim, train = best.median("sim_run_s"), best.median("train_run_s")
        if len(ranked) == 1:
            lines.append(
                f"- {where(best)}: only {best.label} ran ({sim + train:.2f} s of simulation + "
                "training run time); nothing to compare it with."
            )
            continue
        second = ranked[1]
        t1, t2 = run_total(best), run_total(second)
        text = (
            f"- {where(best)}: **{best.label}** was fastest, {t1:.2f} s of simulation + training "
            f"run time ({sim:.2f} + {train:.2f} s), {secs(t2 - t1)} ({pct((t2 - t1) / t2)}) less "
            f"than {second.label} ({t2:.2f} s)"
        )
        if len(ranked) > 2:
            text += f"; slowest was {ranked[-1].label} ({run_total(ranked[-1]):.2f} s)"
        text += "."
        ok = settled(best, second, "run")
        winners["run"].setdefault(key[0], []).append((key[1], best.label, ok))
        if best.n > 1 and second.n > 1 and not ok:
            text += (
                f" Their repeats overlap ({best.label} up to {max(per_run(best, 'run')):.2f} s, "
                f"{second.label} down to {min(per_run(second, 'run')):.2f} s), so the order is "
                "not settled."
            )
        elif not ok and (t2 - t1) / t2 < 0.1:
            text += " With one run and a margin under 10%, rerun with --repeat to confirm it."
        by_io = sorted(gs, key=io_total)
        io_ok = settled(by_io[0], by_io[1], "io")
        winners["io"].setdefault(key[0], []).append((key[1], by_io[0].label, io_ok))
        if by_io[0] is best:
            text += f" It also spent the least time in IO ({io_total(best):.3f} s"
        else:
            text += f" Least IO time: {by_io[0].label} ({io_total(by_io[0]):.3f} s"
        text += f", simulation + training, vs {io_total(by_io[1]):.3f} s for {by_io[1].label}"
        text += "; every repeat)." if io_ok else ")."
        lines.append(text)
    return lines, winners


def winner_trend(winners: Winners, what: str) -> list[str]:
    """How the winner of one measure changes with data size, per node count."""
    lines = []
    for nodes, items in winners.items():
        items.sort()
        if len(items) < 2:
            continue
        stretches: list[tuple[str, float, float]] = []
        for size, label, _ in items:
            if stretches and stretches[-1][0] == label:
                stretches[-1] = (label, stretches[-1][1], size)
            else:
                stretches.append((label, size, size))
        where_ = f"On {nodes} node" + ("s" if nodes != 1 else "")
        if len(stretches) == 1:
            text = (
                f"- {where_}, **{stretches[0][0]}** {what} at all {len(items)} data sizes "
                f"compared ({gb(items[0][0])} to {gb_in(items[-1][0])})."
            )
        else:
            parts = [
                f"{label} at {gb(a)}" if a == b else f"{label} from {gb(a)} to {gb(b)}"
                for label, a, b in stretches
            ]
            text = f"- {where_}, which one {what} changes with data size (inputs): "
            text += "; ".join(parts) + "."
        unsettled = sum(1 for *_, ok in items if not ok)
        if unsettled:
            text += (
                f" At {unsettled} of these {len(items)} sizes that is not settled (a single "
                "run, or overlapping repeats: see above)."
            )
        else:
            text += " Every repeat agrees at every size."
        lines.append(text)
    return lines


def io_share(by_series: dict[str, list[Group]]) -> list[str]:
    lines = []
    for name, gs in by_series.items():
        gs = sorted(gs, key=lambda g: g.first["inputs_gb"])
        shares = [io_total(g) / run_total(g) for g in gs]
        sizes = [g.first["inputs_gb"] for g in gs]
        if len(gs) == 1:
            g = gs[0]
            lines.append(
                f"- {name}: IO is {pct(shares[0])} of simulation + training run time at "
                f"{gb_in(sizes[0])} ({io_total(g):.3f} of {run_total(g):.2f} s); one data size "
                "only, so no trend."
            )
            continue
        text = (
            f"- {name}: IO share of simulation + training run time goes from {pct(shares[0])} "
            f"at {gb_in(sizes[0])} to {pct(shares[-1])} at {gb_in(sizes[-1])}"
        )
        crossings = []
        for t in SHARE_THRESHOLDS:
            for i in range(1, len(shares)):
                a, b = shares[i - 1], shares[i]
                if (a < t) != (b < t):
                    way = "rising above" if b >= t else "falling below"
                    crossings.append(
                        f"{way} {pct(t)} between {gb(sizes[i - 1])} and {gb_in(sizes[i])}"
                    )
        if crossings:
            text += ", " + ", ".join(crossings)
        else:
            below = [t for t in SHARE_THRESHOLDS if max(shares) < t]
            above = [t for t in SHARE_THRESHOLDS if min(shares) >= t]
            if below:
                text += f", staying below {pct(below[0])} throughout"
            elif above:
                text += f", staying above {pct(above[-1])} throughout"
        lines.append(text + " (plots/runtime_breakdown.png).")
    return lines


def _fit_text(fit: Fit, what: str, unit: str) -> str:
    return (
        f"IO time ≈ {fit.intercept:.3g} s + {fit.slope:.3g} s/GB x {what} "
        f"(R² = {fit.r2:.2f}, {fit.n} {unit}, measured {gb(fit.xmin)} to {gb(fit.xmax)})"
    )


def extrapolate(fit: Fit, targets: Sequence[tuple[float, str]]) -> str:
    if fit.slope <= 0:
        return (
            "IO time did not grow with data size in the measured range, so no extrapolation "
            "is given."
        )
    text = ""
    if fit.r2 < MIN_R2:
        text = (
            f"The fit is loose (R² below {MIN_R2}): much of the IO time varies with something "
            "other than data size here, so treat the extrapolation with caution. "
        )
    outside = sorted((x, note) for x, note in targets if x > fit.xmax)
    if outside:
        preds = ", ".join(f"{fit.at(x):.3g} s at {gb(x)}{note}" for x, note in outside)
        text += f"*Extrapolation* beyond the measured sizes, assuming the line holds: {preds}."
    return text


def scaling(by_series: dict[str, list[Group]]) -> list[str]:
    lines = []
    train_fits: dict[str, Fit] = {}
    for name, gs in by_series.items():
        fit = linear_fit(*train_io_points(gs))
        if fit is None:
            lines.append(
                f"- {name}: one data size only; sweep --grid-size or --num-sims to fit a slope."
            )
            continue
        train_fits[name] = fit
        targets = [(REFERENCE_TOTAL_GB, " (the reference's 0.62 GB of inputs)")]
        targets.append((10 * fit.xmax, " (10x the largest measured)"))
        text = f"- {name}, per trainer: {_fit_text(fit, 'data read', 'runs')}"
        if fit.slope > 0:
            text += f", i.e. {1 / fit.slope:.3g} GB/s at the margin"
        lines.append(f"{text}. {extrapolate(fit, targets)}".rstrip())
        sfit = linear_fit(*sim_io_points(gs))
        if sfit is not None:
            stext = f"  Per simulation: {_fit_text(sfit, 'data written', 'tasks')}. "
            stext += extrapolate(sfit, [(10 * sfit.xmax, " per simulation (10x measured)")])
            lines.append(stext.rstrip())
    lines += crossovers(train_fits)
    return lines


def crossovers(fits: dict[str, Fit]) -> list[str]:
    """Where two fitted trainer-IO lines cross beyond the measured sizes (extrapolated)."""
    lines = []
    names = list(fits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fa, fb = fits[a], fits[b]
            if fa.slope == fb.slope or min(fa.r2, fb.r2) < MIN_R2:
                continue
            x = (fb.intercept - fa.intercept) / (fa.slope - fb.slope)
            top = max(fa.xmax, fb.xmax)
            if top < x <= 100 * top:
                steep, flat = (a, b) if fa.slope > fb.slope else (b, a)
                lines.append(
                    f"- *Extrapolation*: the trainer-IO lines of {a} and {b} cross near "
                    f"{gb(x)}; beyond it {flat} ({fits[flat].slope:.3g} s/GB) is predicted to "
                    f"spend less time in IO than {steep} ({fits[steep].slope:.3g} s/GB)."
                )
    return lines


def cv(values: Sequence[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean if len(values) > 1 and mean > 0 else 0.0


def anomalies(groups: Sequence[Group]) -> list[str]:
    repeated = [g for g in groups if g.n > 1]
    if not repeated:
        return [
            "- Every configuration ran once, so variance across repeats is unknown; "
            "`simferry sweep --repeat 3` measures it.",
            *stragglers(groups),
        ]
    cvs = {id(g): {m: cv(per_run(g, m)) for m in MEASURES} for g in repeated}
    noisy = [g for g in repeated if max(cvs[id(g)].values()) > VARIANCE_CV]
    med = {m: statistics.median(c[m] for c in cvs.values()) for m in MEASURES}
    lines = []
    if not noisy:
        worst = max(repeated, key=lambda g: max(cvs[id(g)].values()))
        lines.append(
            f"- No configuration varied by more than {pct(VARIANCE_CV)} across repeats (largest "
            f"CV: {pct(max(cvs[id(worst)].values()))}, {worst.label} at {where(worst)})."
        )
    else:
        n_run = sum(1 for g in repeated if cvs[id(g)]["run"] > VARIANCE_CV)
        n_io = sum(1 for g in repeated if cvs[id(g)]["io"] > VARIANCE_CV)
        text = (
            f"- Across repeats, run time varied by more than {pct(VARIANCE_CV)} (coefficient of "
            f"variation) in {n_run} of {len(repeated)} configurations and IO time in {n_io}; "
            f"median CV {pct(med['run'])} for run time, {pct(med['io'])} for IO time."
        )
        if med["io"] < med["run"]:
            text += " IO time is the steadier measure here: compare implementations on it."
        lines.append(text)
        noisy.sort(key=lambda g: max(cvs[id(g)].values()), reverse=True)
        for g in noisy[:MAX_VARIANCE]:
            parts = [
                f"{what} {min(per_run(g, m)):.3f}-{max(per_run(g, m)):.3f} s "
                f"(CV {pct(cvs[id(g)][m])})"
                for m, what in (("run", "run time"), ("io", "IO time"))
                if cvs[id(g)][m] > VARIANCE_CV
            ]
            lines.append(
                f"- High variance over {g.n} runs of {g.label} at {where(g)}: simulation + "
                f"training {' and '.join(parts)}."
            )
        if len(noisy) > MAX_VARIANCE:
            lines.append(
                f"- ...and {len(noisy) - MAX_VARIANCE} more configurations (table.md, spread "
                "across repeats)."
            )
    return lines + stragglers(groups)


def stragglers(groups: Sequence[Group]) -> list[str]:
    found: list[tuple[float, str]] = []
    for g in groups:
        for r in g.runs:
            for kind, word in (("sim", "simulation"), ("train", "trainer")):
                recs = [x for x in r.records if x.get("kind") == kind]
                if len(recs) < 3:
                    continue
                ios = [
                    float(x.get("serialize_s", 0) + x.get("transfer_s", 0))
                    + float(x.get("deserialize_s", 0))
                    for x in recs
                ]
                med = statistics.median(ios)
                for rec, io in zip(recs, ios, strict=True):
                    if io > STRAGGLER * med and io - med > STRAGGLER_MIN_S:
                        found.append(
                            (
                                io / med if med > 0 else math.inf,
                                f"- Straggler: {word} {rec.get('index')} of {g.label} at "
                                f"{where(g)} (run {Path(str(r.m['run_dir'])).name}) spent "
                                f"{io:.3f} s in IO, {io / med:.1f}x its run's median of "
                                f"{med:.3f} s (plots/io_distribution.png).",
                            )
                        )
    found.sort(reverse=True)
    lines = [text for _, text in found[:MAX_STRAGGLERS]]
    if len(found) > MAX_STRAGGLERS:
        lines.append(f"- ...and {len(found) - MAX_STRAGGLERS} more stragglers.")
    return lines


def not_completed(not_ok: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for s in not_ok:
        size = ""
        if s.get("num_sims") and s.get("grid_size"):
            size = f" ({s['num_sims']} sims x {s['grid_size']}²)"
        lines.append(
            f"- {s.get('implementation', '?')}{size}: {s.get('status', 'failed')} — "
            f"{s.get('error') or 'no reason recorded'}"
        )
    return lines


def observations(groups: Sequence[Group], not_ok: Sequence[dict[str, Any]]) -> str:
    by_series = series(groups)
    runs = sum(g.n for g in groups)
    out = [
        "# Observations\n",
        f"Derived from {runs} successful run(s) in {len(groups)} configuration(s); times are "
        "medians over repeats, as in table.md. *Run time* is the reference's simulation + "
        "training run time; *IO* the mean time per task inside transport calls.\n",
    ]
    if groups:
        fast, winners = fastest(groups)
        out += ["\n## Fastest implementation per data size and node count\n", *fast]
        trend = winner_trend(winners["run"], "was fastest")
        trend += winner_trend(winners["io"], "spent the least time in IO")
        if trend:
            out += ["", *trend]
        out += ["\n## Share of IO in the run time\n", *io_share(by_series)]
        out += [
            "\n## How IO time scales with data size (least squares, plots/io_fit.png)\n",
            *scaling(by_series),
        ]
        out += ["\n## Anomalies\n", *anomalies(groups)]
    else:
        out.append("\nNo run completed, so there is nothing to compare.")
    if not_ok:
        out += ["\n## Runs that did not complete\n", *not_completed(not_ok)]
    return "\n".join(out) + "\n"


def write_observations(
    groups: Sequence[Group], not_ok: Sequence[dict[str, Any]], path: Path
) -> str:
    text = observations(groups, not_ok)
    path.write_text(text, encoding="utf-8")
    return text
