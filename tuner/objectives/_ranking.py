"""All ranking of trials, defined once: SLO verdicts, relative shortfall, feasible-first order,
the tie band and the best feasible trial, the closest miss per SLO and the binding SLO.

The Loop, successive halving, two-tier shortlists, capacity probes and the report all rank
through these functions, so "how good is a trial" has one meaning everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tuner.core import (
    InfeasibleError,
    Measurement,
    ServingConfig,
    SLOResult,
    SLOShortfall,
    Trial,
)
from tuner.objectives._objective import Direction, Objective
from tuner.objectives._slo import SLO

Rule = Literal["confident", "median", "single"]
"""How repeated runs decide an SLO: ``confident`` -- the interval's unfavourable end meets the
limit; ``median`` -- the median does (vLLM recipes' rule); ``single`` -- the one run does."""


def judge(slos: Sequence[SLO], m: Measurement) -> tuple[SLOResult, ...]:
    """Each SLO's verdict on a measurement, in the order the SLOs were given."""
    out = []
    for slo in slos:
        v = slo.value(m)
        out.append(
            SLOResult(
                slo=slo.text, value=v, limit=slo.limit, ok=slo.satisfied_by(v), margin=slo.margin(v)
            )
        )
    return tuple(out)


def judge_values(
    slos: Sequence[SLO],
    values: Mapping[str, float],
    intervals: Mapping[str, tuple[float, float]],
    rule: Rule = "confident",
) -> tuple[SLOResult, ...]:
    """Each SLO's verdict on repeated runs: ``values`` are the medians, ``intervals`` their
    confidence intervals. Under ``confident`` the value judged (and recorded in the result) is
    the interval's unfavourable end -- the high end of an upper limit, the low end of a lower
    one; under ``median`` and ``single`` the median. A metric without an interval is judged on
    its value.

    Example:
        >>> r, = judge_values([SLO.parse("ttft.p99 <= 2")], {"ttft.p99": 1.8},
        ...                   {"ttft.p99": (1.5, 2.2)})
        >>> r.value, r.ok
        (2.2, False)
    """
    out = []
    for slo in slos:
        v = values.get(slo.metric, math.nan)
        lo, hi = intervals.get(slo.metric, (v, v))
        if rule == "confident":
            v = hi if slo.op in ("<=", "<") else lo
        out.append(
            SLOResult(
                slo=slo.text, value=v, limit=slo.limit, ok=slo.satisfied_by(v), margin=slo.margin(v)
            )
        )
    return tuple(out)


def relative_margin(result: SLOResult) -> float:
    """Slack to the limit as a fraction of the limit (>= 0 when met; ``-inf`` when the metric
    could not be measured). The scale is ``|limit|``, or 1 for a limit of 0.

    Example:
        >>> relative_margin(SLOResult(slo="x <= 10", value=12, limit=10, ok=False, margin=-2))
        -0.2
    """
    scale = abs(result.limit) or 1.0
    return result.margin / scale


def relative_shortfall(results: Sequence[SLOResult], required_margin: float = 0.0) -> float:
    """Total relative slack missing: ``sum(max(0, required_margin - relative_margin))`` over the
    SLOs. 0 when every SLO is met with ``required_margin`` to spare; ``inf`` when a metric could
    not be measured.

    Example:
        >>> r = SLOResult(slo="x <= 10", value=12, limit=10, ok=False, margin=-2)
        >>> relative_shortfall([r]), relative_shortfall([r], required_margin=0.1)
        (0.2, 0.30000000000000004)
    """
    return sum(max(0.0, required_margin - relative_margin(r)) for r in results)


def binding_slo(results: Sequence[SLOResult]) -> SLOResult | None:
    """The SLO with the least relative slack (the one that fails first as load grows)."""
    if not results:
        return None
    return min(results, key=relative_margin)


def within_margin(results: Sequence[SLOResult], margin: float) -> bool:
    """Whether every SLO is met or missed by at most ``margin`` relative to its limit."""
    return all(r.ok or -relative_margin(r) <= margin for r in results)


def rank_key(
    trial: Trial, objective: Objective, required_margin: float = 0.0
) -> tuple[int, float, float, int]:
    """Sort key, smaller is better: feasible trials (with ``required_margin`` to spare) by
    objective score; then the others by relative SLO shortfall, then score; failed trials last;
    ties to the earlier trial."""
    if not trial.ok:
        return (2, math.inf, math.inf, trial.number)
    score = objective.score(trial.values) if objective.metric in trial.values else math.inf
    shortfall = relative_shortfall(trial.slo_results, required_margin)
    if trial.feasible and shortfall == 0:
        return (0, score, 0.0, trial.number)
    return (1, shortfall, score, trial.number)


def rank(
    trials: Sequence[Trial], objective: Objective, required_margin: float = 0.0
) -> list[Trial]:
    """``trials`` best first, by :func:`rank_key`."""
    return sorted(trials, key=lambda t: rank_key(t, objective, required_margin))


def score_interval(trial: Trial, metric: str, direction: Direction) -> tuple[float, float]:
    """A metric's interval as scores (smaller is better; NaN counts as worst), low end first;
    a trial without an interval for it has a zero-width one at its value."""
    v = trial.values.get(metric, math.nan)
    lo, hi = trial.intervals.get(metric, (v, v))
    if math.isnan(lo) or math.isnan(hi):
        lo = hi = v
    a, b = _signed(lo, direction), _signed(hi, direction)
    return (min(a, b), max(a, b))


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    finite = all(math.isfinite(x) for x in (*a, *b))
    return finite and a[0] <= b[1] and b[0] <= a[1]


def tied_with_best(trials: Sequence[Trial], objective: Objective) -> list[Trial]:
    """The tie band: the feasible full-fidelity trials whose objective ties the best one's --
    within ``tie_tolerance``, or with an objective interval that overlaps the best's (the
    difference is within noise) -- in trial order. The best is the best median value (the
    earliest of equals)."""
    pool = [t for t in trials if t.feasible and t.fidelity == 1.0]
    if not pool:
        return []
    top = min(pool, key=lambda t: (objective.score(t.values), t.number))
    top_score = objective.score(top.values)
    top_band = score_interval(top, objective.metric, objective.direction)
    return [
        t
        for t in pool
        if objective.is_tie(objective.score(t.values), top_score)
        or _overlap(score_interval(t, objective.metric, objective.direction), top_band)
    ]


def knobs_changed(config: ServingConfig) -> int:
    """How many of ``config``'s fields differ from vLLM's defaults (``ServingConfig()``).
    Knobs a study does not search are the same in every trial, so among a study's trials this
    orders them as counting only the searched knobs would.

    Example:
        >>> knobs_changed(ServingConfig(max_num_seqs=8, max_num_batched_tokens=512))
        2
    """
    defaults = ServingConfig()
    return sum(1 for k in ServingConfig.model_fields if getattr(config, k) != getattr(defaults, k))


TieBreaker = Literal["tie_break", "knobs", "earliest"]


@dataclass(frozen=True)
class Decision:
    """How the best trial was chosen.

    Attributes:
        best: The best feasible full-fidelity trial (None when none is feasible).
        tied: The tie band it came out of (just ``best`` when it won outright).
        broken_by: What decided the tie: ``"tie_break"`` (the tie-break metric), ``"knobs"``
            (the fewest knobs changed from vLLM's defaults), ``"earliest"`` (the earliest
            trial); None without a tie.
    """

    best: Trial | None
    tied: tuple[Trial, ...] = ()
    broken_by: TieBreaker | None = None

    def describe(self, objective: Objective) -> str:
        """One sentence for reports ('' without a tie)."""
        if self.best is None or self.broken_by is None:
            return ""
        n, k = len(self.tied), knobs_changed(self.best.config)
        why = {
            "tie_break": f"the better {objective.tie_break} (the tie-break)",
            "knobs": f"the fewest knobs changed from vLLM's defaults ({k})",
            "earliest": "being the earliest trial (every other criterion tied)",
        }[self.broken_by]
        return (
            f"The winner came out of a tie of {n} configurations whose {objective.metric} "
            f"cannot be told apart (within tie_tolerance {objective.tie_tolerance:g} or "
            f"within noise); it won by {why}."
        )


def decide(trials: Sequence[Trial], objective: Objective) -> Decision:
    """The best feasible full-fidelity trial and what decided it: the tie band
    (:func:`tied_with_best`), then the best tie-break value (its median: a tie band on the
    tie-break too would hand noisy ties to trial order), then the fewest knobs changed from
    vLLM's defaults (:func:`knobs_changed`), then the earliest trial."""
    tied = tied_with_best(trials, objective)
    if not tied:
        return Decision(None)
    if len(tied) == 1:
        return Decision(tied[0], tuple(tied))
    pool = tied
    if objective.tie_break is not None:
        lead = min(objective.tie_score(t.values) for t in pool)
        pool = [t for t in pool if objective.tie_score(t.values) == lead]
        if len(pool) == 1:
            return Decision(pool[0], tuple(tied), "tie_break")
    fewest = min(knobs_changed(t.config) for t in pool)
    pool = [t for t in pool if knobs_changed(t.config) == fewest]
    if len(pool) == 1:
        return Decision(pool[0], tuple(tied), "knobs")
    return Decision(min(pool, key=lambda t: t.number), tuple(tied), "earliest")


def _signed(v: float, direction: Direction) -> float:
    if math.isnan(v):
        return math.inf
    return -v if direction == "maximize" else v


#: Below this relative spread, feasible objective values count as flat even when the objective's
#: own ``tie_tolerance`` is smaller (0.1 %: throughput equal to the offered load).
FLAT_SPREAD = 0.001


def objective_spread(trials: Sequence[Trial], objective: Objective) -> float | None:
    """``(best - worst) / |best|`` over the feasible full-fidelity trials' objective values
    (None with fewer than two such trials).

    Example:
        >>> from tuner import ServingConfig, Trial, TrialStatus
        >>> t = [Trial(number=i, config=ServingConfig(max_num_seqs=i + 1),
        ...            status=TrialStatus.COMPLETE, values={"output_throughput": v})
        ...      for i, v in enumerate([100.0, 99.0])]
        >>> objective_spread(t, Objective.maximize("output_throughput"))
        0.01
    """
    pool = [t for t in trials if t.feasible and t.fidelity == 1.0]
    vals = [t.values.get(objective.metric, math.nan) for t in pool]
    vals = [v for v in vals if math.isfinite(v)]
    if len(vals) < 2:
        return None
    best = max(vals) if objective.direction == "maximize" else min(vals)
    worst = min(vals) if objective.direction == "maximize" else max(vals)
    return abs(best - worst) / abs(best) if best else (0.0 if best == worst else math.inf)


def is_flat(trials: Sequence[Trial], objective: Objective) -> bool:
    """Whether every feasible trial's objective lies within the tie tolerance (at least
    :data:`FLAT_SPREAD`) of the best: the objective does not decide, the tie-break does."""
    spread = objective_spread(trials, objective)
    return spread is not None and spread <= max(objective.tie_tolerance, FLAT_SPREAD)


def best_trial(trials: Sequence[Trial], objective: Objective) -> Trial | None:
    """The best feasible full-fidelity trial: the tie band of the best objective, then the
    tie-break, then the fewest knobs changed from vLLM's defaults, then the earliest
    (:func:`decide`).

    Trials run on part of the workload (fidelity < 1) are never chosen.
    """
    return decide(trials, objective).best


def shortfalls(trials: Sequence[Trial], slos: Sequence[SLO]) -> tuple[SLOShortfall, ...]:
    """Per SLO, the closest any measured trial came: its value, the limit, the configuration,
    and how many trials met that SLO on its own (full-fidelity trials when there are any)."""
    measured = [t for t in trials if t.ok and t.fidelity == 1.0] or [t for t in trials if t.ok]
    out = []
    for i, slo in enumerate(slos):
        rows = [(t, t.slo_results[i]) for t in measured if len(t.slo_results) > i]
        rows = [(t, r) for t, r in rows if not math.isnan(r.value)]
        if not rows:
            out.append(SLOShortfall(slo.text, slo.limit, None, None, 0))
            continue
        t, r = min(rows, key=lambda tr: (-relative_margin(tr[1]), tr[0].number))
        satisfied = sum(1 for _, rr in rows if rr.ok)
        out.append(SLOShortfall(slo.text, slo.limit, r.value, t.config, satisfied))
    return tuple(out)


def infeasible_error(
    trials: Sequence[Trial], slos: Sequence[SLO], note: str = ""
) -> InfeasibleError:
    """The loud refusal: per SLO, the best value any trial reached, the limit and who did it."""
    return InfeasibleError(shortfalls(trials, slos), trials, note=note)
