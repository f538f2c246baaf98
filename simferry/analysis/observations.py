"""``observations.md``: the reference's "short paragraph on your observations", from numbers.

Every sentence is built from the grouped measurements and quotes the figures it rests
on (medians over repeats, as in ``table.md``). A claim the data cannot carry is not
made: no winner inside the noise, no size trend from fewer than three sizes, no
extrapolation beyond ten times the largest size measured; the text says what is missing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simferry.analysis.fits import (
    MAX_EXTRAPOLATION,
    MIN_R2,
    Fit,
    sim_io_points,
    size_fit,
    slope_known,
    train_io_points,
)
from simferry.analysis.model import Group, inputs_gib, series, task_io
from simferry.records import data_sizes
from simferry.units import GIB

#: IO shares of run time whose crossing is reported.
SHARE_THRESHOLDS = (0.10, 0.25, 0.50)
#: Below this IO share the transport is not what decides the run time.
IO_MINOR = 0.05
#: Coefficient of variation across repeats above which a configuration is flagged.
VARIANCE_CV = 0.20
MAX_VARIANCE = 3
#: With a single run a side, a difference must exceed this share of the slower time and
#: this many seconds (per measure) to name a winner: the stated noise floor.
NOISE_REL = 0.10
NOISE_ABS = {"run": 0.05, "io": 0.005}
#: A task is a straggler when its IO exceeds this multiple of its run's median, by at
#: least STRAGGLER_EXCESS_S, and lasts at least STRAGGLER_MIN_S (tiny times are noise).
STRAGGLER = 3.0
STRAGGLER_EXCESS_S = 0.05
STRAGGLER_MIN_S = 0.10
MAX_STRAGGLERS = 3
#: The reference's dataset, in the homework's GB (32 simulations of 512²).
REFERENCE_GB = data_sizes(32, 512)["inputs_bytes"] / GIB


def run_total(g: Group) -> float:
    return g.median("sim_run_s") + g.median("train_run_s")


def io_total(g: Group) -> float:
    return g.median("sim_io_s") + g.median("train_io_s")


def where(g: Group) -> str:
    f = g.first
    return f"{g.nodes} node(s), {gb(inputs_gib(f))} ({g.size()})"


def gb(x: float) -> str:
    return f"{x:.3g} GB"


def pct(x: float) -> str:
    return f"{100 * x:.0f}%" if x >= 0.01 or x == 0 else f"{100 * x:.1g}%"


def secs(x: float) -> str:
    """Seconds with two decimals, or three significant digits below 0.01 s."""
    return f"{x:.2f} s" if abs(x) >= 0.01 or x == 0 else f"{x:.2g} s"


def signed(x: float, unit: str) -> str:
    """``+ 3 s/GB`` or ``- 1.4 s/GB``: a term of a formula, never ``+ -1.4``."""
    return f"{'-' if x < 0 else '+'} {abs(x):.3g} {unit}"


#: Per node count: (data size, winner, how it was settled: "repeats", "floor" or "").
Winners = dict[Any, list[tuple[float, str, str]]]
#: How a group is ranked: run time (the reference's two columns) or IO time.
MEASURES = {"run": ("sim_run_s", "train_run_s"), "io": ("sim_io_s", "train_io_s")}


def per_run(g: Group, measure: str) -> list[float]:
    a, b = MEASURES[measure]
    return [r.m[a] + r.m[b] for r in g.runs]


def median_of(g: Group, measure: str) -> float:
    return run_total(g) if measure == "run" else io_total(g)


def settled(best: Group, second: Group, measure: str) -> bool:
    """Whether ``best`` beat ``second`` by more than the noise.

    With repeats on both sides, every run of ``best`` must beat every run of ``second``
    (the difference exceeds the spread of the repeats); otherwise the difference must
    exceed the stated noise floor, NOISE_REL of the slower time and NOISE_ABS seconds.
    """
    if best.n >= 2 and second.n >= 2:
        return max(per_run(best, measure)) < min(per_run(second, measure))
    t1, t2 = median_of(best, measure), median_of(second, measure)
    return t2 - t1 > max(NOISE_REL * t2, NOISE_ABS[measure])


def why_unsettled(best: Group, second: Group, measure: str) -> str:
    """The numbers that make a difference indistinguishable, as one sentence."""
    fmt = ".2f" if measure == "run" else ".3f"
    if best.n >= 2 and second.n >= 2:
        return (
            f"Their repeats overlap ({best.tag} up to {max(per_run(best, measure)):{fmt}} s, "
            f"{second.tag} down to {min(per_run(second, measure)):{fmt}} s)."
        )
    t1, t2 = median_of(best, measure), median_of(second, measure)
    return (
        f"With a single run on a side, the difference ({secs(t2 - t1)}, {pct((t2 - t1) / t2)}) "
        f"is within the noise floor ({pct(NOISE_REL)} and {secs(NOISE_ABS[measure])}); "
        "rerun with --repeat 3 to settle it."
    )


def comparable(g: Group) -> tuple[Any, ...]:
    """What two implementations must share to be compared: workload, pools, hosts."""
    shared = {
        k: v
        for k, v in g.params.items()
        if not k.startswith(("launcher.", "transport.")) and k not in ("launcher", "transport")
    }
    f = g.first
    size = tuple(f.get(k) for k in ("num_sims", "grid_size", "nodes", "mode", "trainers"))
    return (repr(sorted(shared.items())), f.get("hosts"), size)


def how(best: Group, second: Group, ok: bool) -> str:
    if not ok:
        return ""
    return "repeats" if best.n >= 2 and second.n >= 2 else "floor"


def fastest(groups: Sequence[Group]) -> tuple[list[str], dict[str, Winners]]:
    """One line per configuration: the fastest implementation, if the data can tell."""
    buckets: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        buckets.setdefault(comparable(g), []).append(g)
    lines = []
    winners: dict[str, Winners] = {"run": {}, "io": {}}
    for gs in buckets.values():
        ranked = sorted(gs, key=run_total)
        best = ranked[0]
        if len(ranked) == 1:
            sim, train = best.median("sim_run_s"), best.median("train_run_s")
            lines.append(
                f"- {where(best)}: only {best.tag} ran ({sim + train:.2f} s of simulation + "
                "training run time); nothing to compare it with."
            )
            continue
        size, nodes = inputs_gib(best.first), best.nodes
        ok = settled(best, ranked[1], "run")
        winners["run"].setdefault(nodes, []).append((size, best.tag, how(best, ranked[1], ok)))
        by_io = sorted(gs, key=io_total)
        io_ok = settled(by_io[0], by_io[1], "io")
        winners["io"].setdefault(nodes, []).append(
            (size, by_io[0].tag, how(by_io[0], by_io[1], io_ok))
        )
        lines.append(run_winner(ranked, ok) + io_minor(gs) + io_winner(by_io, io_ok))
    return lines, winners


def run_winner(ranked: Sequence[Group], ok: bool) -> str:
    """The run-time sentence for groups ranked by run time (``ok``: settled by the data)."""
    best, second = ranked[0], ranked[1]
    t1, t2 = run_total(best), run_total(second)
    if not ok:
        return (
            f"- {where(best)}: run times are not distinguishable here: {best.tag} "
            f"{t1:.2f} s, {second.tag} {t2:.2f} s of simulation + training run time. "
            + why_unsettled(best, second, "run")
        )
    sim, train = best.median("sim_run_s"), best.median("train_run_s")
    text = (
        f"- {where(best)}: **{best.tag}** was fastest, {t1:.2f} s of simulation + "
        f"training run time ({sim:.2f} + {train:.2f} s), {secs(t2 - t1)} "
        f"({pct((t2 - t1) / t2)}) less than {second.tag} ({t2:.2f} s)"
    )
    text += (
        f"; slowest was {ranked[-1].tag} ({run_total(ranked[-1]):.2f} s)."
        if len(ranked) > 2
        else "."
    )
    if best.n >= 2 and second.n >= 2:
        text += f" Every repeat agrees ({best.n} and {second.n} runs)."
    return text


def io_minor(gs: Sequence[Group]) -> str:
    """A sentence when IO is too small a share of every run time here to decide it."""
    shares = {g.tag: io_total(g) / run_total(g) for g in gs if run_total(g) > 0}
    if not shares or max(shares.values()) >= IO_MINOR:
        return ""
    top = max(shares, key=lambda k: shares[k])
    return (
        f" IO is under {pct(IO_MINOR)} of the run time for every implementation here "
        f"(at most {100 * shares[top]:.1f}%, {top}), so the transport is not what decides "
        "the run time at this size."
    )


def io_winner(by_io: Sequence[Group], ok: bool) -> str:
    """The IO-time sentence for groups ranked by IO time (``ok``: settled by the data)."""
    a, b = io_total(by_io[0]), io_total(by_io[1])
    if not ok:
        return (
            f" IO times are not distinguishable here ({by_io[0].tag} {a:.3f} s, "
            f"{by_io[1].tag} {b:.3f} s). " + why_unsettled(by_io[0], by_io[1], "io")
        )
    text = (
        f" Least IO time: {by_io[0].tag} ({a:.3f} s, simulation + training, vs "
        f"{b:.3f} s for {by_io[1].tag}"
    )
    return text + ("; every repeat)." if by_io[0].n >= 2 and by_io[1].n >= 2 else ").")


def winner_trend(winners: Winners, what: str) -> list[str]:
    """How the winner of one measure changes with data size, per node count.

    Sizes where no implementation was distinguishable from the next count as "no clear
    winner"; when that is every size, the per-size lines above already say so.
    """
    lines = []
    for nodes, items in winners.items():
        items.sort()
        if len(items) < 2 or not any(ok for *_, ok in items):
            continue
        stretches: list[tuple[str, float, float]] = []
        for size, label, ok in items:
            name = f"**{label}**" if ok else "no clear winner"
            if stretches and stretches[-1][0] == name:
                stretches[-1] = (name, stretches[-1][1], size)
            else:
                stretches.append((name, size, size))
        where_ = f"On {nodes} node" + ("s" if nodes != "1" else "")
        if len(stretches) == 1:
            text = (
                f"- {where_}, {stretches[0][0]} {what} at all {len(items)} data sizes "
                f"compared ({gb(items[0][0])} to {gb(items[-1][0])})."
            )
            if all(h == "repeats" for *_, h in items):
                text += " Every repeat agrees at every size."
            else:
                text += " Every difference exceeded the noise floor (see above)."
        else:
            parts = [
                f"{label} at {gb(a)}" if a == b else f"{label} from {gb(a)} to {gb(b)}"
                for label, a, b in stretches
            ]
            text = f"- {where_}, which one {what} changes with data size: "
            text += "; ".join(parts) + "."
        lines.append(text)
    return lines


def io_share(by_series: dict[str, list[Group]]) -> list[str]:
    """How much of each series' run time IO takes, and where it crosses the thresholds."""
    lines = []
    for name, gs in by_series.items():
        gs = sorted(gs, key=lambda g: inputs_gib(g.first))
        shares = [io_total(g) / run_total(g) for g in gs]
        sizes = [inputs_gib(g.first) for g in gs]
        if len(gs) == 1:
            g = gs[0]
            text = (
                f"- {name}: IO is {pct(shares[0])} of simulation + training run time at "
                f"{gb(sizes[0])} ({io_total(g):.3f} of {run_total(g):.2f} s); one data size "
                "only, so no trend."
            )
            if shares[0] < IO_MINOR:
                text += " The transport is not what decides the run time at this size."
            lines.append(text)
            continue
        text = (
            f"- {name}: IO share of simulation + training run time goes from {pct(shares[0])} "
            f"({io_total(gs[0]):.3f} of {run_total(gs[0]):.2f} s) at {gb(sizes[0])} to "
            f"{pct(shares[-1])} ({io_total(gs[-1]):.3f} of {run_total(gs[-1]):.2f} s) at "
            f"{gb(sizes[-1])}"
        )
        crossings = []
        for t in SHARE_THRESHOLDS:
            for i in range(1, len(shares)):
                a, b = shares[i - 1], shares[i]
                if (a < t) != (b < t):
                    way = "rising above" if b >= t else "falling below"
                    crossings.append(
                        f"{way} {pct(t)} between {gb(sizes[i - 1])} and {gb(sizes[i])}"
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
        minor = [gb(x) for x, sh in zip(sizes, shares, strict=True) if sh < IO_MINOR]
        if minor:
            text += (
                f"; under {pct(IO_MINOR)} at {', '.join(minor)}, where the transport is not "
                "what decides the run time"
            )
        lines.append(text + " (plots/runtime_breakdown.png).")
    return lines


def _fit_text(fit: Fit, what: str, unit: str) -> str:
    lo, hi = fit.ci95()
    return (
        f"IO time ≈ {fit.intercept:.3g} s {signed(fit.slope, 's/GB')} x {what}; slope "
        f"{fit.slope:.3g} ± {fit.slope_se:.2g} s/GB (standard error; 95% interval {lo:.3g} to "
        f"{hi:.3g}), R² = {fit.r2:.2f}, {fit.n} {unit} at {fit.sizes} sizes, measured "
        f"{gb(fit.xmin)} to {gb(fit.xmax)}"
    )


def extrapolate(fit: Fit, targets: Sequence[tuple[float, str]]) -> str:
    """Predictions beyond the measured sizes, at most MAX_EXTRAPOLATION times the largest."""
    if not slope_known(fit):
        return (
            "The slope's 95% interval includes zero or the line fits loosely "
            f"(R² under {MIN_R2}), so no extrapolation is given."
        )
    limit = MAX_EXTRAPOLATION * fit.xmax
    outside = sorted((x, note) for x, note in targets if fit.xmax < x <= limit)
    if not outside:
        return ""
    preds = ", ".join(f"{fit.at(x):.3g} s at {gb(x)}{note}" for x, note in outside)
    return (
        f"*Extrapolation* (at most {MAX_EXTRAPOLATION:.0f}x the largest size measured), "
        f"assuming the line holds: {preds}."
    )


def scaling(by_series: dict[str, list[Group]]) -> list[str]:
    """Fitted IO-time trends per series, with extrapolations only where the fit allows."""
    lines = []
    train_fits: dict[str, Fit] = {}
    for name, gs in by_series.items():
        xs, ys = train_io_points(gs)
        fit = size_fit(xs, ys)
        if fit is None:
            sizes = ", ".join(gb(x) for x in sorted(set(xs)))
            lines.append(
                f"- {name}: {len(set(xs))} data size(s) measured ({sizes}); a size trend needs "
                "at least 3, so no slope is fitted (sweep --grid-size or --num-sims over 3 or "
                "more values)."
            )
            continue
        train_fits[name] = fit
        targets = [(REFERENCE_GB, " (the reference's 32 sims x 512²)")]
        targets.append((MAX_EXTRAPOLATION * fit.xmax, " (10x the largest measured)"))
        text = f"- {name}, per trainer: {_fit_text(fit, 'training data size', 'runs')}"
        if slope_known(fit):
            text += f"; {1 / fit.slope:.3g} GB/s at the margin"
        lines.append(f"{text}. {extrapolate(fit, targets)}".rstrip())
        sfit = size_fit(*sim_io_points(gs))
        if sfit is not None:
            stext = f"  Per simulation: {_fit_text(sfit, 'data written', 'tasks')}. "
            stext += extrapolate(sfit, [(10 * sfit.xmax, " per simulation (10x measured)")])
            lines.append(stext.rstrip())
    lines += crossovers(train_fits)
    return lines


def crossovers(fits: dict[str, Fit]) -> list[str]:
    """Where two fitted trainer-IO lines cross beyond the measured sizes (extrapolated)."""
    lines = []
    names = [n for n in fits if slope_known(fits[n])]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fa, fb = fits[a], fits[b]
            if fa.slope == fb.slope:
                continue
            x = (fb.intercept - fa.intercept) / (fa.slope - fb.slope)
            top = max(fa.xmax, fb.xmax)
            if top < x <= MAX_EXTRAPOLATION * top:
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
    """Configurations whose repeats disagree, and tasks far slower than their run's others."""
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
            f"CV: {pct(max(cvs[id(worst)].values()))}, {worst.tag} at {where(worst)})."
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
                f"- High variance over {g.n} runs of {g.tag} at {where(g)}: simulation + "
                f"training {' and '.join(parts)}."
            )
        if len(noisy) > MAX_VARIANCE:
            lines.append(
                f"- ...and {len(noisy) - MAX_VARIANCE} more configurations (table.md, spread "
                "across repeats)."
            )
    return lines + stragglers(groups)


def is_straggler(io: float, median: float) -> bool:
    """Slow by a ratio and by absolute time: 0.02 s against 0.005 s is noise, not a straggler."""
    return io > STRAGGLER * median and io - median >= STRAGGLER_EXCESS_S and io >= STRAGGLER_MIN_S


def stragglers(groups: Sequence[Group]) -> list[str]:
    """The tasks whose IO took far longer than their run's median, worst first."""
    found: list[tuple[float, str]] = []
    for g in groups:
        for r in g.runs:
            for kind, word in (("sim", "simulation"), ("train", "trainer")):
                recs = [x for x in r.records if x.get("kind") == kind]
                if len(recs) < 3:
                    continue
                ios = [task_io(x) for x in recs]
                med = statistics.median(ios)
                for rec, io in zip(recs, ios, strict=True):
                    if is_straggler(io, med):
                        found.append(
                            (
                                io / med if med > 0 else math.inf,
                                f"- Straggler: {word} {rec.get('index')} of {g.tag} at "
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
    """Runs that failed or were skipped, with the reason each recorded."""
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
    """``observations.md``'s text: each claim with the figures it rests on."""
    by_series = series(groups)
    runs = sum(g.n for g in groups)
    out = [
        "# Observations\n",
        f"Derived from {runs} successful run(s) in {len(groups)} configuration(s); times are "
        "medians over repeats, as in table.md. *Run time* is the reference's simulation + "
        "training run time; *IO* the mean time per task inside transport calls. Data "
        "sizes are the homework's Training Data Size (GB): inputs, num_sims x 10 x grid² "
        "x 8 bytes / 1024³. A winner is named only when the difference exceeds the spread "
        f"of the repeats or, with a single run, {pct(NOISE_REL)} of the slower time (and "
        f"{secs(NOISE_ABS['run'])} of run time, {secs(NOISE_ABS['io'])} of IO time).\n",
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
    """Write ``observations.md``; return its text."""
    text = observations(groups, not_ok)
    path.write_text(text, encoding="utf-8")
    return text
