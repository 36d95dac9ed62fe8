"""Futility: whether more runs of a configuration, up to ``Repeats.max``, could still change a
verdict -- the stopping rule's arithmetic, pure and on plain intervals.

After ``n`` runs a metric's median moves with every further run, and its interval shrinks.
:meth:`Repeater.outlook <tuner.tuning._repeats.Repeater.outlook>` gives both for ``max``
runs, with the run-to-run noise pooled so far: the *prediction interval* of the median after
``max`` runs (where the runs still to come may move it, at the policy's confidence) and the
*reach* (the log half-widths, below and above the median, its interval will have then). A
verdict that no median inside the prediction interval would reverse after ``max`` runs is
settled now; repeating would only spend runs:

- :func:`reversible` -- an SLO whose limit lies inside the interval now: under the
  ``confident`` rule it fails now and more runs can only turn that into a pass
  (:func:`pass_reachable`); under ``median`` the verdict flips only if the median can cross
  the limit;
- :func:`separation_reachable` (:func:`separable` for an objective) -- whether the objective
  interval after ``max`` runs could lie wholly above or wholly below another one (the
  incumbent's): if neither, the two are ties whatever more runs show, and the tie band decides;
- :func:`tie_against` -- how a configuration fares in such a tie against the incumbent, by the
  order :func:`tuner.objectives.decide` breaks ties in: one that can neither separate above
  the incumbent nor win the tie cannot be chosen over it, whatever its SLOs.

Example:
    >>> from tuner.objectives import SLO
    >>> slo = SLO.parse("tpot.p90 <= 10ms")
    >>> pass_reachable(slo, (0.0095, 0.0125), (0.1, 0.1))  # 9.5 ms * e^0.1 = 10.5 ms > 10 ms
    False
    >>> pass_reachable(slo, (0.0085, 0.0125), (0.1, 0.1))  # 8.5 ms * e^0.1 = 9.4 ms
    True
"""

from __future__ import annotations

import math
from typing import Literal

from tuner.core import ServingConfig, Trial
from tuner.objectives import SLO, Objective, Rule, knobs_changed, score_interval

Interval = tuple[float, float]
Reach = tuple[float, float]
"""Log half-widths (below, above the median) of an interval after ``max`` runs."""


def pass_reachable(slo: SLO, median_range: Interval, reach: Reach) -> bool:
    """Whether ``max`` runs could show ``slo`` met by the ``confident`` rule (the interval's
    unfavourable end within the limit), for some median after ``max`` runs inside
    ``median_range``: the most favourable one, widened by ``reach`` towards the limit. An SLO
    without a direction (``==``, ``!=``) is always reachable.

    Example:
        >>> slo = SLO.parse("output_throughput >= 100")
        >>> pass_reachable(slo, (90.0, 120.0), (0.1, 0.1))  # 120 * e^-0.1 = 108.6
        True
        >>> pass_reachable(slo, (80.0, 105.0), (0.1, 0.1))  # 105 * e^-0.1 = 95.0
        False
    """
    lo, hi = median_range
    below, above = reach
    if slo.op in ("<=", "<"):
        return slo.satisfied_by(lo * math.exp(above))
    if slo.op in (">=", ">"):
        return slo.satisfied_by(hi * math.exp(-below))
    return True


def reversible(slo: SLO, median_range: Interval, reach: Reach, rule: Rule) -> bool:
    """Whether ``max`` runs could reverse the verdict on an SLO whose limit lies inside its
    interval now. ``confident``: it fails now, so only a pass would (:func:`pass_reachable`);
    ``median`` (and ``single``): the median after ``max`` runs may land on either side of the
    limit.

    Example:
        >>> slo = SLO.parse("ttft.p99 <= 2")
        >>> reversible(slo, (1.8, 1.9), (0.1, 0.1), "median")  # stays under 2: met
        False
        >>> reversible(slo, (1.8, 1.9), (0.1, 0.1), "confident")  # 1.8 * e^0.1 = 1.99
        True
    """
    if rule == "confident":
        return pass_reachable(slo, median_range, reach)
    return slo.satisfied_by(median_range[0]) != slo.satisfied_by(median_range[1])


def separation_reachable(
    median_range: Interval, reach: Reach, other: Interval
) -> tuple[bool, bool]:
    """``(above, below)``: whether the interval after ``max`` runs, for some median inside
    ``median_range``, could lie wholly above ``other`` / wholly below it.

    Example:
        >>> separation_reachable((95.0, 105.0), (0.05, 0.05), (95.0, 105.0))
        (False, False)
        >>> separation_reachable((95.0, 120.0), (0.05, 0.05), (95.0, 105.0))
        (True, False)
    """
    lo, hi = median_range
    below, above = reach
    return (hi * math.exp(-below) > other[1], lo * math.exp(above) < other[0])


def separable(
    ahead: tuple[Interval, Reach] | None, objective: Objective, incumbent: Trial
) -> tuple[bool, bool]:
    """``(better, worse)``: whether ``max`` runs could show the objective wholly better /
    wholly worse than the incumbent's interval, given the objective's outlook ``ahead``
    (prediction interval of the median, reach); both when nothing can be projected."""
    k = objective.metric
    other = incumbent.intervals.get(k)
    if ahead is None or other is None or any(map(math.isnan, other)):
        return (True, True)
    above, below = separation_reachable(*ahead, other)
    return (above, below) if objective.direction == "maximize" else (below, above)


def tie_against(
    probe: Trial, objective: Objective, incumbent: Trial, config: ServingConfig | None
) -> Literal["lose", "win", "open"]:
    """How these runs fare in a tie against the incumbent, by the order
    :func:`tuner.objectives.decide` breaks ties in -- the tie-break median, then the fewest
    knobs changed from vLLM's defaults, then the earlier trial (always the incumbent):
    ``"lose"`` (the tie-break interval wholly worse than the incumbent's -- confidently, as
    the incumbent's own median may be a lucky one -- or, without a tie-break, no fewer knobs
    changed), ``"win"`` (wholly better, or fewer knobs changed; ``config`` None counts as
    fewer), ``"open"`` (the two tie-break intervals overlap: within noise)."""
    k = objective.tie_break
    if k is not None and k in probe.values and k in incumbent.values:
        mine = score_interval(probe, k, objective.tie_break_direction)
        theirs = score_interval(incumbent, k, objective.tie_break_direction)
        if mine[0] > theirs[1]:
            return "lose"
        if mine[1] < theirs[0]:
            return "win"
        return "open"
    if k is not None:
        return "open"
    if config is None:
        return "win"
    return "win" if knobs_changed(config) < knobs_changed(incumbent.config) else "lose"


__all__ = [
    "Reach",
    "pass_reachable",
    "reversible",
    "separable",
    "separation_reachable",
    "tie_against",
]
