"""Futility: whether more runs of a configuration, up to ``Repeats.max``, could still change a
verdict -- the stopping rule's arithmetic, pure and on plain intervals.

After ``n`` runs a metric's median moves with every further run, and its interval shrinks.
:meth:`Repeater.outlook <tuner.tuning._repeats.Repeater.outlook>` gives both for ``max``
runs, with the run-to-run noise pooled so far: the *prediction interval* of the median after
``max`` runs (where the runs still to come may move it; each end a one-sided bound at the
policy's confidence) and the *reach* (the log half-widths, below and above the median, its
interval will have then). A verdict that no median inside the prediction interval would
reverse after ``max`` runs is settled now -- more runs would reverse it with a probability
below ``1 - confidence`` -- and repeating would only spend runs:

- :func:`reversible` -- an SLO whose limit lies inside the interval now: under the
  ``confident`` rule it fails now and more runs can only turn that into a pass
  (:func:`pass_reachable`); under ``median`` the verdict flips only if the median can cross
  the limit;
- :func:`separation_reachable` (:func:`separable` for an objective) -- whether the objective
  interval after ``max`` runs could lie wholly above or wholly below another one (the
  incumbent's): if neither, the two are ties whatever more runs show, and the tie band decides;
- :func:`tie_against` -- how a configuration fares in such a tie against the incumbent, by the
  order :func:`tuner.objectives.decide` breaks ties in: one that can neither separate above
  the incumbent nor win the tie cannot be chosen over it, whatever its SLOs;
- :func:`tie_reversible` -- a configuration that would win such a tie on the tie-break
  median now is confirmed while ``max`` runs could still reverse that (a single lucky run
  must not crown a winner).

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
from collections.abc import Sequence
from typing import Literal

import numpy.typing as npt

from tuner.core import ServingConfig, Trial
from tuner.objectives import (
    SLO,
    Objective,
    Rule,
    knobs_changed,
    median_of,
    score_interval,
    t_quantile,
    within_run_spread,
)

Interval = tuple[float, float]
Reach = tuple[float, float]
"""Log half-widths (below, above the median) of an interval after ``max`` runs."""


def outlook(
    values: Sequence[float],
    replicates: Sequence[npt.ArrayLike],
    log_sd: float,
    df: int,
    confidence: float,
    max_runs: int,
) -> tuple[Interval, Reach]:
    """What ``max_runs`` runs could show of a metric whose finite positive run values are
    ``values`` (with their request-level ``replicates``), the run-to-run noise being
    ``log_sd`` with ``df`` degrees of freedom: the prediction interval of the median after
    ``max_runs`` runs, ``median * exp(+-t * log_sd * sqrt((max - n) / (max * n)))`` (each end
    a one-sided bound at ``confidence``), and the reach then (the run-to-run part
    ``t * log_sd / sqrt(max)``, with the degrees of freedom the runs still to come add, and the
    within-run part, which more runs of the same requests do not shrink, in quadrature).

    Example:
        >>> (lo, hi), reach = outlook([100.0], [[100.0]], 0.1, 10_000, 0.95, 5)
        >>> round(lo, 1), round(hi, 1), [round(r, 3) for r in reach]
        (86.3, 115.8, [0.088, 0.088])
    """
    m = median_of(values)
    n, n_max = len(values), max(max_runs, len(values))
    one_sided = 2.0 * confidence - 1.0  # each question asks whether the median moves one way
    moves = (
        t_quantile(one_sided, df) * log_sd * math.sqrt((n_max - n) / (n_max * n))
        if one_sided > 0
        else 0.0
    )
    noise = t_quantile(confidence, df + n_max - n) * log_sd / math.sqrt(n_max)
    low, high = within_run_spread(values, replicates, confidence)
    return (m * math.exp(-moves), m * math.exp(moves)), (
        math.hypot(noise, low),
        math.hypot(noise, high),
    )


#: The run-to-run noise :func:`abort_margin` assumes before a study has measured its own: a
#: log-sd of 0.2 (live runs on a busy host move 15-20 %), worth 2 degrees of freedom, so that
#: the study's first repeated configurations soon outweigh it.
PRIOR_NOISE: tuple[float, int] = (0.2, 2)


def abort_margin(
    slo: SLO,
    log_sd: float,
    df: int,
    confidence: float,
    max_runs: int,
    rule: Rule,
    prior: tuple[float, int] = PRIOR_NOISE,
) -> float:
    """How far past its limit one run must provably be before no ``max_runs`` runs could
    bring ``slo`` back (so that stopping that run early throws nothing away): the factor
    ``m >= 1`` such that a run bound past ``limit * m`` (an upper limit; ``limit / m`` for a
    lower one) fails ``slo`` whatever the other runs show, by :func:`outlook` of that one run.

    The run-to-run noise is the study's (``log_sd`` with ``df`` degrees of freedom) pooled
    with ``prior`` (a log-sd and its degrees of freedom, as if measured: the variances
    weighted by degrees of freedom), so that a first run, before any repeat, is judged too.
    Under ``median`` the median after ``max_runs`` runs must be unable to cross the limit;
    under ``confident`` the interval's unfavourable end too (its run-to-run part only: the
    within-run part would make a pass only harder). 1 when nothing more is run (``max_runs``
    1, or ``single``) or the noise is nil; ``inf`` when no noise is known and there is no
    prior (any run might yet be brought back). An SLO without a direction gets 1.

    Example:
        >>> slo = SLO.parse("ttft.p99 <= 2s")
        >>> no_prior = (0.0, 0)
        >>> round(abort_margin(slo, 0.15, 20, 0.95, 5, "median", no_prior), 2)  # 2.5 s
        1.26
        >>> round(abort_margin(slo, 0.15, 20, 0.95, 5, "confident", no_prior), 2)
        1.1
        >>> round(abort_margin(slo, 0.0, 0, 0.95, 5, "median"), 2)  # the prior alone
        1.69
        >>> abort_margin(slo, 0.15, 20, 0.95, 1, "median")  # one run: nothing to bring it back
        1.0
    """
    if max_runs <= 1 or rule == "single" or slo.op not in ("<=", "<", ">=", ">"):
        return 1.0
    prior_sd, prior_df = prior
    known = df >= 1 and math.isfinite(log_sd)
    total = (df if known else 0) + prior_df
    if total < 1:
        return math.inf
    var = ((df * log_sd**2 if known else 0.0) + prior_df * prior_sd**2) / total
    (lo, hi), (below, above) = outlook([1.0], [[1.0]], math.sqrt(var), total, confidence, max_runs)
    if slo.op in ("<=", "<"):
        best = lo * math.exp(above) if rule == "confident" else lo
        return max(1.0, 1.0 / best)
    best = hi * math.exp(-below) if rule == "confident" else hi
    return max(1.0, best)


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


def tie_reversible(
    ahead: tuple[Interval, Reach] | None, probe: Trial, objective: Objective, incumbent: Trial
) -> bool:
    """Whether these runs would win a tie against the incumbent on the tie-break median now,
    and ``max`` runs could reverse that (the incumbent's tie-break median inside the
    prediction interval ``ahead`` of this configuration's one): a would-be winner is
    confirmed while its win is within noise. False without a tie-break or a projection.

    Example:
        >>> from tuner.core import ServingConfig, TrialStatus
        >>> obj = Objective.maximize("output_throughput", tie_break="ttft.p99")
        >>> inc = Trial(number=0, config=ServingConfig(), status=TrialStatus.COMPLETE,
        ...             values={"output_throughput": 1.0, "ttft.p99": 10.0})
        >>> me = inc.model_copy(update={"values": {"output_throughput": 1.0, "ttft.p99": 9.0}})
        >>> tie_reversible(((8.0, 11.0), (0.1, 0.1)), me, obj, inc)  # 9 wins; 11 would lose
        True
        >>> tie_reversible(((8.0, 9.5), (0.1, 0.1)), me, obj, inc)  # wins whatever comes
        False
    """
    k = objective.tie_break
    if ahead is None or k is None or k not in probe.values or k not in incumbent.values:
        return False
    if not objective.tie_score(probe.values) < objective.tie_score(incumbent.values):
        return False
    lo, hi = ahead[0]
    return lo <= incumbent.values[k] <= hi


__all__ = [
    "PRIOR_NOISE",
    "Reach",
    "abort_margin",
    "outlook",
    "pass_reachable",
    "reversible",
    "separable",
    "separation_reachable",
    "tie_against",
    "tie_reversible",
]
