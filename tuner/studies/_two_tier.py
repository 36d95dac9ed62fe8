"""Two-tier tuning: a cheap backend searches the whole space, an expensive one decides.

The seed lab's closing lesson -- use the cheap model to shrink the search, never to replace the
final measurement -- as one call. The answer comes only from expensive measurements; the cheap
tier's predictions are reported next to them, and the cheap tier's cost model can be calibrated
from the expensive tier's step log and re-run to show how much that helped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from tuner.backends import Backend, CostModel
from tuner.backends.simulator import (
    Calibration,
    CalibrationRun,
    SimulatorBackend,
    calibrate,
    calibrated_backend,
)
from tuner.core import (
    InfeasibleError,
    SearchSpace,
    ServingConfig,
    Settings,
    Trial,
    TunerError,
    Workload,
)
from tuner.objectives import (
    DEFAULT_OBJECTIVE,
    SLO,
    Objective,
    infeasible_error,
    parse_slos,
    within_margin,
)
from tuner.search import ListSearch, Search
from tuner.tuning import Loop


class TwoTierSettings(Settings):
    """How two-tier tuning picks the shortlist and checks the cheap tier."""

    _owner = "two_tier"

    top_k: int = Field(default=3, ge=1)
    """The cheap tier's best feasible configurations confirmed by the expensive backend."""
    margin: float = Field(default=0.15, ge=0, lt=10)
    """Also confirm up to ``top_k`` near misses: configurations that miss an SLO by at most
    this fraction of its limit (the cheap tier's error could have put them on the wrong
    side)."""
    calibrate: bool = True
    """Fit a cost model to the expensive tier's step log and re-run the shortlist with it, to
    report the cheap tier's error before and after calibration. The calibration is checked on
    held-out runs (each shortlisted configuration predicted by a fit of the others); one that
    predicts them worse than the cheap tier's own cost model is reported, not re-run."""


@dataclass(frozen=True)
class Comparison:
    """One shortlisted configuration and metric: what the cheap tier predicted, what the
    expensive tier measured, and the relative error."""

    config: ServingConfig
    metric: str
    cheap: float
    expensive: float
    calibrated: float | None = None

    @property
    def error(self) -> float:
        """(cheap - expensive) / expensive."""
        return _rel(self.cheap, self.expensive)

    @property
    def calibrated_error(self) -> float | None:
        return None if self.calibrated is None else _rel(self.calibrated, self.expensive)


@dataclass(frozen=True)
class TwoTierResult:
    """The expensive tier's answer, and how the cheap tier's picture compared with it."""

    best: Trial | None
    """The best feasible trial measured by the EXPENSIVE backend (None: none is feasible)."""
    cheap: tuple[Trial, ...]
    """Every cheap-tier trial."""
    expensive: tuple[Trial, ...]
    """Every expensive-tier trial (the shortlist)."""
    shortlist: tuple[ServingConfig, ...]
    comparisons: tuple[Comparison, ...]
    calibration: Calibration | None = None
    calibrated_cheap: tuple[Trial, ...] = field(default=())
    """The shortlist re-run on the cheap tier with the calibrated cost model (empty when the
    calibration predicted held-out runs worse than the cheap tier: see
    :attr:`Calibration.usable`)."""
    infeasible: InfeasibleError | None = None
    """Why there is no answer, when ``best`` is None (what :func:`two_tier` raises)."""
    interrupted: bool = False
    """Whether Ctrl-C stopped a tier before its search ended."""

    def mean_abs_error(self, calibrated: bool = False) -> dict[str, float]:
        """Per metric, the mean |relative error| of the cheap tier over the shortlist."""
        out: dict[str, list[float]] = {}
        for c in self.comparisons:
            e = c.calibrated_error if calibrated else c.error
            if e is not None and math.isfinite(e):
                out.setdefault(c.metric, []).append(abs(e))
        return {k: sum(v) / len(v) for k, v in out.items()}


def shortlist(
    trials: Sequence[Trial], objective: Objective, top_k: int, margin: float
) -> list[ServingConfig]:
    """The top ``top_k`` feasible configurations, then up to ``top_k`` near misses: trials that
    miss SLOs only by at most ``margin`` relative to each limit -- the cheap tier's error could
    have put them on the wrong side."""
    full = [t for t in trials if t.ok and t.fidelity == 1.0]
    by_score = sorted(full, key=lambda t: (objective.score(t.values), t.number))
    feasible = [t.config for t in by_score if t.feasible][:top_k]

    close = [t.config for t in by_score if not t.feasible and within_margin(t.slo_results, margin)][
        :top_k
    ]
    return list(dict.fromkeys(feasible + close))


def two_tier(
    cheap: Backend,
    expensive: Backend,
    search: Search,
    space: SearchSpace,
    workload: Workload,
    objective: Objective | None = None,
    slos: Sequence[SLO | str] = (),
    settings: TwoTierSettings | None = None,
    *,
    compare: Sequence[str] = ("output_throughput", "ttft.p99", "tpot.p90"),
    **changes: Any,
) -> TwoTierResult:
    """Search ``space`` on the cheap backend, confirm the shortlist on the expensive one.

    The shortlist is the cheap tier's ``top_k`` feasible configurations plus up to ``top_k``
    that miss an SLO by at most ``margin`` (relative to its limit). With ``calibrate``, a cost
    model is fitted to the expensive tier's step log and the shortlist re-run on a simulator
    with it, to report the cheap tier's error before and after calibration. ``top_k``,
    ``margin`` and ``calibrate`` are :class:`TwoTierSettings` (the model, or its fields as
    keywords).

    Raises:
        InfeasibleError: no shortlisted configuration is feasible when measured by the expensive
            backend, or the cheap tier found nothing feasible or close to it.

    Example:
        >>> from tuner import Request, SearchSpace, ServingConfig, Workload
        >>> from tuner.backends import SimulatorBackend
        >>> from tuner.search import GridSearch
        >>> w = Workload([Request(arrival=0, prompt_tokens=64, output_tokens=4)] * 3)
        >>> space = SearchSpace({"max_num_batched_tokens": [32, 64, 128]},
        ...                     base=ServingConfig(max_num_seqs=4))
        >>> r = two_tier(SimulatorBackend(), SimulatorBackend(), GridSearch(), space, w,
        ...              slos=["max_step_tokens <= 64"], calibrate=False)
        >>> r.best.config.max_num_batched_tokens
        64
    """
    result = explore_two_tier(
        cheap,
        expensive,
        search,
        space,
        workload,
        objective,
        slos,
        settings,
        compare=compare,
        **changes,
    )
    if result.infeasible is not None:
        raise result.infeasible
    return result


def explore_two_tier(
    cheap: Backend,
    expensive: Backend,
    search: Search,
    space: SearchSpace,
    workload: Workload,
    objective: Objective | None = None,
    slos: Sequence[SLO | str] = (),
    settings: TwoTierSettings | None = None,
    *,
    compare: Sequence[str] = ("output_throughput", "ttft.p99", "tpot.p90"),
    **changes: Any,
) -> TwoTierResult:
    """Like :func:`two_tier`, but return every trial whatever the verdict (``best`` is None
    and ``infeasible`` says why when nothing shortlisted is feasible)."""
    opts = TwoTierSettings.build(settings, changes)
    objective = objective or DEFAULT_OBJECTIVE
    parsed = parse_slos(list(slos))
    first = Loop(cheap, search, objective, parsed).explore(space, workload)
    cheap_trials = first.trials
    picks = [] if first.interrupted else shortlist(cheap_trials, objective, opts.top_k, opts.margin)
    if not picks:
        return TwoTierResult(
            best=None,
            cheap=cheap_trials,
            expensive=(),
            shortlist=(),
            comparisons=(),
            infeasible=infeasible_error(cheap_trials, parsed),
            interrupted=first.interrupted,
        )
    confirmed = Loop(expensive, ListSearch(picks), objective, parsed).explore(space, workload)
    infeasible = None
    if confirmed.best is None:
        infeasible = infeasible_error(
            confirmed.trials,
            parsed,
            note=f"none of the {len(picks)} configurations the cheap tier shortlisted is "
            "feasible when measured by the expensive backend",
        )
    calibration: Calibration | None = None
    calibrated: tuple[Trial, ...] = ()
    if opts.calibrate and not confirmed.interrupted:
        runs = [
            CalibrationRun(t.config, workload, t.measurement)
            for t in confirmed.trials
            if t.measurement is not None and t.fidelity == 1.0
        ]
        try:
            calibration = calibrate(
                runs, baseline=_seconds_model(cheap), source=expensive.describe()
            )
        except TunerError:
            calibration = None  # no step times (e.g. attach mode), or nothing measured
        if calibration is not None and calibration.usable:
            sim = calibrated_backend(calibration)
            recheck = Loop(sim, ListSearch(picks), objective, parsed)
            calibrated = recheck.explore(space, workload).trials
    metrics = list(dict.fromkeys([*objective.metrics, *(s.metric for s in parsed), *compare]))
    return TwoTierResult(
        best=confirmed.best,
        cheap=cheap_trials,
        expensive=confirmed.trials,
        shortlist=tuple(picks),
        comparisons=_compare(cheap_trials, confirmed.trials, calibrated, picks, metrics),
        calibration=calibration,
        calibrated_cheap=calibrated,
        infeasible=infeasible,
        interrupted=confirmed.interrupted,
    )


def _seconds_model(cheap: Backend) -> CostModel | None:
    """The cheap tier's own cost model in seconds (what a calibration must beat), if it has
    one (not the unit step clock, not a roofline prior)."""
    sim = isinstance(cheap, SimulatorBackend) and not cheap.roofline
    if sim and isinstance(cheap, SimulatorBackend) and cheap.cost_model.time_unit == "s":
        return cheap.cost_model
    return None


def _compare(
    cheap: Sequence[Trial],
    expensive: Sequence[Trial],
    calibrated: Sequence[Trial],
    picks: Sequence[ServingConfig],
    metrics: Sequence[str],
) -> tuple[Comparison, ...]:
    def by_config(trials: Sequence[Trial]) -> dict[ServingConfig, Trial]:
        return {t.config: t for t in trials if t.ok and t.fidelity == 1.0}

    c, e, k = by_config(cheap), by_config(expensive), by_config(calibrated)
    out = []
    for cfg in picks:
        if cfg not in c or cfg not in e:
            continue
        for metric in metrics:
            if metric not in c[cfg].values or metric not in e[cfg].values:
                continue
            cal = k[cfg].values.get(metric) if cfg in k else None
            out.append(Comparison(cfg, metric, c[cfg].values[metric], e[cfg].values[metric], cal))
    return tuple(out)


def _rel(predicted: float, actual: float) -> float:
    if actual == 0:
        return 0.0 if predicted == 0 else math.inf
    return (predicted - actual) / abs(actual)
