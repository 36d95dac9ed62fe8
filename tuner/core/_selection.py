"""Pure functions of a list of trials: judging SLOs, choosing the best, explaining infeasibility."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.core._errors import InfeasibleError, SLOShortfall
from tuner.core._measurement import Measurement
from tuner.core._trial import SLOResult, Trial
from tuner.objectives import SLO, Objective


def judge(slos: Sequence[SLO], m: Measurement) -> tuple[SLOResult, ...]:
    """Each SLO's verdict on a measurement."""
    out = []
    for slo in slos:
        v = slo.value(m)
        out.append(
            SLOResult(
                slo=slo.text, value=v, limit=slo.limit, ok=slo.satisfied_by(v),
                margin=slo.margin(v),
            )
        )  # fmt: skip
    return tuple(out)


def best_trial(trials: Sequence[Trial], objective: Objective) -> Trial | None:
    """The best feasible full-fidelity trial: best objective, then tie-break, then earliest.

    Trials run on part of the workload (fidelity < 1) are never chosen.
    """
    pool = [t for t in trials if t.feasible and t.fidelity == 1.0]
    if not pool:
        return None
    top = min(objective.score(t.values) for t in pool)
    tied = [t for t in pool if objective.is_tie(objective.score(t.values), top)]
    return min(tied, key=lambda t: (objective.tie_score(t.values), t.number))


def infeasible_error(trials: Sequence[Trial], slos: Sequence[SLO]) -> InfeasibleError:
    """The loud refusal: per SLO, the best value any trial reached, the limit and who did it."""
    measured = [t for t in trials if t.ok and t.fidelity == 1.0] or [t for t in trials if t.ok]
    shortfalls = []
    for i, slo in enumerate(slos):
        rows = [(t, t.slo_results[i]) for t in measured if len(t.slo_results) > i]
        rows = [(t, r) for t, r in rows if r.value == r.value]  # drop NaN
        if not rows:
            shortfalls.append(SLOShortfall(slo.text, slo.limit, None, None, 0))
            continue
        t, r = min(rows, key=lambda tr: (-tr[1].margin, tr[0].number))
        satisfied = sum(1 for _, rr in rows if rr.ok)
        shortfalls.append(SLOShortfall(slo.text, slo.limit, r.value, t.config, satisfied))
    return InfeasibleError(shortfalls, trials)
