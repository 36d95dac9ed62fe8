"""The report's view of noise: values with their intervals and runs, a mark on values whose
decision is within noise, the measured noise per configuration, and how a tie was broken."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tuner.core import Trial
from tuner.objectives import SLO, Objective, decide, score_interval
from tuner.report._document import Block, Heading, Para, Table

#: The mark on a value whose decision is within noise.
NOISE_MARK = "~"


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}"


def noisy(trials: Sequence[Trial]) -> bool:
    """Whether any trial was measured in more than one run (the report then shows noise)."""
    return any(t.repeats > 1 for t in trials)


def within_noise(
    t: Trial, metric: str, slos: Sequence[SLO], objective: Objective, best: Trial | None
) -> bool:
    """Whether ``t``'s decision on ``metric`` is within noise: an SLO limit inside the
    metric's interval, or (for the objective) an interval that overlaps the winner's."""
    iv = t.intervals.get(metric)
    if iv is None or iv[0] == iv[1] or any(math.isnan(x) for x in iv):
        return False
    for slo in slos:
        if slo.metric == metric and slo.satisfied_by(iv[0]) != slo.satisfied_by(iv[1]):
            return True
    if metric == objective.metric and best is not None and t.number != best.number:
        a = score_interval(t, metric, objective.direction)
        b = score_interval(best, metric, objective.direction)
        return a[0] <= b[1] and b[0] <= a[1]
    return False


def value_cell(
    t: Trial, metric: str, slos: Sequence[SLO], objective: Objective, best: Trial | None
) -> str:
    """``value``, or ``value [low, high]`` when the interval has width, marked with
    :data:`NOISE_MARK` when its decision is within noise."""
    v = t.values.get(metric, math.nan)
    iv = t.intervals.get(metric)
    text = _fmt(v)
    if iv is not None and iv[0] != iv[1] and not any(math.isnan(x) for x in iv):
        text += f" [{_fmt(iv[0])}, {_fmt(iv[1])}]"
    if within_noise(t, metric, slos, objective, best):
        text += " " + NOISE_MARK
    return text


def tie_blocks(trials: Sequence[Trial], objective: Objective, best: Trial) -> list[Block]:
    """A sentence when the winner came out of a tie: how many tied and what broke it."""
    d = decide(trials, objective)
    if d.best is None or d.best.number != best.number or d.broken_by is None:
        return []
    others = ", ".join(f"#{t.number}" for t in d.tied if t.number != best.number)
    return [Para(d.describe(objective) + f" Tied with it: {others}.")]


def noise_blocks(trials: Sequence[Trial], metrics: Sequence[str], confidence: float) -> list[Block]:
    """The measured noise per configuration: runs, and per metric the spread of the runs
    (``(max - min) / median``) -- only when some configuration was repeated."""
    if not noisy(trials):
        return []
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        if not t.ok:
            continue
        cells = []
        for m in metrics:
            vals = [v for v in t.repeat_values.get(m, ()) if math.isfinite(v)]
            med = t.values.get(m, math.nan)
            if len(vals) < 2 or not med:
                cells.append("-")
            else:
                cells.append(f"{100 * (max(vals) - min(vals)) / abs(med):.1f}%")
        rows.append([str(t.number), t.config.describe(), str(t.repeats), *cells])
    return [
        Heading("Measured noise"),
        Para(
            "Each configuration was measured in as many runs of the identical workload as its "
            "decision needed; values are medians, brackets their "
            f"{100 * confidence:g}% intervals, {NOISE_MARK} marks a value whose decision is "
            "within noise (an SLO limit inside its interval, or an objective interval "
            "overlapping the winner's). Spread: (max - min) / median over the runs."
        ),
        Table(["#", "config", "runs", *(f"{m} spread" for m in metrics)], rows),
    ]
