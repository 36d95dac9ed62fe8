"""When a configuration's decision is still open: the adaptive repeat rule's question, asked
after every run (:func:`open_question`), with the futility stops of :mod:`._futility`."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tuner.core import ServingConfig, Trial
from tuner.objectives import SLO, Objective, score_interval
from tuner.tuning._futility import reversible, separable, tie_against, tie_reversible
from tuner.tuning._repeats import Interval, Repeater, Runs


def _beyond(slo: SLO, iv: Interval) -> bool:
    """Whether the whole interval breaks the SLO (a clear loss)."""
    return not slo.satisfied_by(iv[0]) and not slo.satisfied_by(iv[1])


def _inside(slo: SLO, iv: Interval) -> bool:
    """Whether the limit lies inside the interval (the verdict is within noise)."""
    return slo.satisfied_by(iv[0]) != slo.satisfied_by(iv[1])


def open_question(
    runs: Runs,
    repeater: Repeater,
    slos: Sequence[SLO],
    objective: Objective | None,
    incumbent: Trial | None,
    config: ServingConfig | None = None,
) -> str | None:
    """Why the decision on these runs is still open (None: decided, stop repeating).

    Open first of all while the run-to-run noise of a decision metric (the objective's, the
    SLOs') is unknown: one run, and no configuration repeated yet (a single run's interval
    only sees the spread within it). Then decided: an SLO clearly lost (its whole interval
    breaks it); or, against the incumbent (the best feasible trial so far), an objective
    interval wholly worse and outside the tie tolerance. Open: an SLO limit inside its
    interval; an objective interval that overlaps the incumbent's, unless the medians are
    within the tie tolerance already (a tie, which the tie-break decides).

    Futility (:mod:`tuner.tuning._futility`, on :meth:`Repeater.outlook`): a question that
    ``max`` runs could not settle, for any median inside the prediction interval of the
    median after ``max`` runs, is settled now. An SLO whose limit lies inside its interval is
    open only while ``max`` runs could reverse its verdict (:func:`reversible`: under
    ``confident`` a pass is reachable; under ``median`` the median can cross the limit).
    Against the incumbent, a configuration (``config``; None: counted as changing the fewest
    knobs) that can neither come to lie wholly above the incumbent's objective interval nor
    win a tie against it (:func:`tie_against`: its tie-break interval wholly worse than the
    incumbent's, or without a tie-break no fewer knobs changed from vLLM's defaults; the
    incumbent is the earlier trial) cannot be chosen over the incumbent: decided. An overlap
    keeps the question open only while a separation is reachable that could change the pick
    (above the incumbent, or below it for a configuration that would win the tie); and a
    configuration that would win the tie on the tie-break median now, within noise of the
    incumbent's, is confirmed while ``max`` runs could reverse that (:func:`tie_reversible`).
    """
    metrics = [s.metric for s in slos]
    if objective is not None and objective.metric in runs.medians:
        metrics.append(objective.metric)
    unknown = [k for k in metrics if not repeater.noise_known(runs, k)]
    if unknown:
        return f"the noise of {', '.join(unknown)} is not known yet"
    for slo in slos:
        iv = runs.intervals.get(slo.metric)
        if iv is not None and not math.isnan(iv[0]) and _beyond(slo, iv):
            return None
    overlap = False
    winner = ""
    if objective is not None and incumbent is not None and objective.metric in runs.medians:
        probe = Trial(
            number=0,
            config=incumbent.config,
            status=incumbent.status,
            values=runs.medians,
            intervals=runs.intervals,
        )
        mine = score_interval(probe, objective.metric, objective.direction)
        theirs = score_interval(incumbent, objective.metric, objective.direction)
        tie = objective.is_tie(objective.score(runs.medians), objective.score(incumbent.values))
        if mine[0] > theirs[1] and not tie:
            return None  # a clear loser: it cannot win whatever its SLOs
        if tie or (mine[0] <= theirs[1] and theirs[0] <= mine[1]):
            ahead = repeater.outlook(runs, objective.metric)
            better, worse = separable(ahead, objective, incumbent)
            against = tie_against(probe, objective, incumbent, config)
            if not better and against == "lose":
                return None  # a tie at best, and it loses the tie to the incumbent
            # Medians within the tie tolerance are a tie whatever more runs show of the noise:
            # the tie-break decides, so only the SLOs and the tie-break keep the question open.
            overlap = not tie and (better or (worse and against == "win"))
            k = objective.tie_break
            if against == "open" and k is not None:
                ahead_k = repeater.outlook(runs, k)
                if tie_reversible(ahead_k, probe, objective, incumbent):
                    winner = f"{k}: would win the tie with the incumbent, within noise"
    for slo in slos:
        iv = runs.intervals.get(slo.metric)
        if iv is None or not _inside(slo, iv):
            continue
        ahead = repeater.outlook(runs, slo.metric)
        if ahead is not None and not reversible(slo, *ahead, repeater.repeats.rule):
            continue  # the verdict after max runs would be this one: settled
        return f"{slo.text}: the limit is inside the interval {iv[0]:.4g}..{iv[1]:.4g}"
    if overlap:
        return f"{objective.metric if objective else ''}: overlaps the incumbent's interval"
    return winner or None


__all__ = ["open_question"]
