"""The report's capacity section: what each top configuration sustains, what a million tokens
cost there, how the SLO metric grows with offered load (the hockey stick), against vLLM's
defaults; and the warning when an objective is flat."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tuner.core import Trial
from tuner.objectives import Objective, binding_slo, is_flat, objective_spread, rank
from tuner.report import _figures
from tuner.report._document import Block, Heading, Image, Para, Table
from tuner.report._plots import legend_label
from tuner.report._units import knobs_text
from tuner.studies import StudyOutcome

#: How many of the best configurations the capacity table and the hockey stick show.
TOP = 5


def flat_warning(trials: Sequence[Trial], objective: Objective) -> str | None:
    """A warning when every feasible trial's objective ties the best's: what decided the
    winner then, and the suggestion to tune for capacity (None when the objective decides)."""
    if objective.is_capacity or not is_flat(trials, objective):
        return None
    spread = objective_spread(trials, objective) or 0.0
    pool = [t.values[objective.metric] for t in trials if t.feasible and t.fidelity == 1.0]
    decided = (
        f"the tie-break ({objective.tie_break_direction} {objective.tie_break}), then trial order"
        if objective.tie_break
        else "trial order (there is no tie-break)"
    )
    return (
        f"The objective is flat: every feasible configuration's {objective.metric} lies within "
        f"{100 * spread:.2g}% of the best ({min(pool):.6g} to {max(pool):.6g}), so it did not "
        f"decide; {decided} did. When every configuration keeps up with the offered load, "
        "throughput equals the load. Tune for capacity instead (objective: {maximize: "
        "capacity}): the most load each configuration sustains under the SLOs."
    )


def capacity_text(t: Trial) -> str:
    """A capacity as measured: a number, ``>= x`` when only bounded, or why there is none."""
    if not t.ok:
        return "FAILED: " + (t.error or "").splitlines()[0][:60] if t.error else "FAILED"
    cap = t.values.get("capacity", math.nan)
    if math.isnan(cap):
        return "none (" + (t.capacity_note or "no load held") + ")"
    if t.capacity_note and t.capacity_note.startswith(">="):
        return f">= {cap:.4g}"
    return f"{cap:.4g}"


def capacity_cell(t: Trial) -> str:
    """A capacity in the trial table, as short as the truth allows: ``14.37``, ``>= 64`` (every
    load held), ``< 14.37`` (failed there: below the incumbent's capacity, or no load held), ``-``
    (the trial failed: its verdict says why)."""
    cap = t.values.get("capacity", math.nan)
    if not t.ok:
        return "-"
    if math.isnan(cap):
        ff = first_failing(t)
        return "-" if ff is None else f"< {ff:.4g}"
    bound = ">= " if t.capacity_note and t.capacity_note.startswith(">=") else ""
    return f"{bound}{cap:.4g}"


def first_failing(t: Trial) -> float | None:
    """The lowest probed load above the capacity that did not hold."""
    cap = t.values.get("capacity", math.nan)
    above = [p.rate for p in t.load_points if not p.feasible and not p.rate <= cap]
    return min(above) if above else None


def limiting_slo(t: Trial) -> str | None:
    """The SLO that failed first above capacity."""
    rate = first_failing(t)
    point = next((p for p in t.load_points if p.rate == rate), None)
    worst = binding_slo(point.slo_results) if point is not None else None
    return worst.slo if worst is not None else None


def capacity_blocks(o: StudyOutcome) -> list[Block]:
    """The capacity section of a capacity study's report (nothing for other objectives)."""
    if not o.objective.is_capacity:
        return []
    unit = load_unit(o)
    users = unit == "users"
    ranked = [t for t in rank(list(o.trials), o.objective) if t.feasible and t.fidelity == 1.0]
    top = ranked[:TOP]
    rows_of = list(top)
    base = o.baseline
    if base is not None and all(t.config != base.config for t in top):
        rows_of.append(base)
    rows = []
    for t in rows_of:
        label = knobs_text(t.config, o.space.base)
        if base is not None and t.config == base.config:
            label = "vLLM's defaults" + ("" if label == "the base" else f" ({label})")
        ff = first_failing(t)
        rows.append(
            [
                label,
                capacity_text(t),
                "-" if ff is None else f"{ff:.4g}",
                limiting_slo(t) or "-",
                _num(t.values.get("throughput_per_gpu")),
                _num(t.values.get("cost_per_million_tokens")),
                str(len(t.load_points)),
            ]
        )
    out: list[Block] = [
        Heading("Capacity"),
        Para(
            "The most load each configuration sustains with every SLO held, found by bracketing "
            + (
                "and bisecting the number of concurrent users (closed loop: each user sends its "
                "next request when its previous one finished) on a lattice of whole users, "
                f"{100 * _tol(o):g}% steps once those are coarser"
                if users
                else f"and bisecting the offered rate on a lattice of {100 * _tol(o):g}% steps"
            )
            + " (the resolution: capacities one step apart are not told apart). '>= x' means "
            "every load tried held: a bound, never an extrapolation."
        ),
        Table(
            [
                "config",
                f"capacity ({unit})",
                f"first failing ({unit})",
                "binding SLO",
                "tok/s per GPU",
                "$ per 1M output tokens",
                "probes",
            ],
            rows,
        ),
    ]
    best, shortcut = o.best, [t for t in o.trials if _stopped_early(t)]
    if best is not None and base is not None and base.feasible:
        gain = best.values["capacity"] / base.values["capacity"] - 1
        out.append(
            Para(
                f"The winner sustains {abs(100 * gain):.1f}% "
                f"{'more' if gain >= 0 else 'less'} load than vLLM's defaults "
                f"({best.values['capacity']:.4g} against {base.values['capacity']:.4g} "
                f"{unit}).",
                strong=True,
            )
        )
    if shortcut:
        full = [len(t.load_points) for t in o.trials if t.ok and not _stopped_early(t)]
        mean = sum(full) / len(full) if full else 0.0
        out.append(
            Para(
                f"{len(shortcut)} of {len(o.trials)} configurations failed at the incumbent's "
                f"capacity on their first probe and stopped there (they cannot win), saving about "
                f"{len(shortcut) * max(mean - 1, 0):.0f} probes (a full search took "
                f"{mean:.1f} probes)."
            )
        )
    curves = {_label(t, base, o): t for t in rows_of if t.load_points}
    png = _figures.hockey_stick(curves, unit, o.folder / "capacity.png")
    if png is not None:
        out += [
            Heading("Latency against offered load", 3),
            Para(
                "Each line is one configuration's capacity probes: its binding SLO's value as "
                "a fraction of the limit, against the offered load. Where a line crosses 1, "
                "that configuration stops keeping its promises."
            ),
            Image(png, "binding SLO against offered load"),
        ]
    return out


def load_unit(o: StudyOutcome) -> str:
    """The unit of a capacity study's loads: ``users`` (mode concurrency), ``req/s`` or
    ``req/step`` (the unit step clock)."""
    if o.objective.load is not None and o.objective.load.mode == "concurrency":
        return "users"
    return "req/s" if o.time_unit == "s" else "req/step"


def _num(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.4g}"


def _tol(o: StudyOutcome) -> float:
    return o.objective.load.rel_tol if o.objective.load is not None else 0.0


def _stopped_early(t: Trial) -> bool:
    return bool(t.capacity_note and t.capacity_note.startswith("below the incumbent"))


def _label(t: Trial, base: Trial | None, o: StudyOutcome) -> str:
    bind = limiting_slo(t)
    why = f" [{bind.split()[0]}]" if bind else ""
    if base is not None and t.config == base.config:
        return "vLLM's defaults" + why
    return f"#{t.number} {legend_label(knobs_text(t.config, o.space.base))}" + why
