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

from tuner.backends._base import Backend
from tuner.backends.simulator import Calibration, SimulatorBackend, fit_cost_model
from tuner.core._config import ServingConfig
from tuner.core._errors import ConfigError, InfeasibleError, TunerError
from tuner.core._loop import Loop
from tuner.core._selection import infeasible_error
from tuner.core._space import SearchSpace
from tuner.core._trial import Trial
from tuner.core._workload import Workload
from tuner.objectives import SLO, Objective, parse_slos
from tuner.search._base import Search
from tuner.search._list import ListSearch


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

    best: Trial
    """The best feasible trial measured by the EXPENSIVE backend."""
    cheap: tuple[Trial, ...]
    """Every cheap-tier trial."""
    expensive: tuple[Trial, ...]
    """Every expensive-tier trial (the shortlist)."""
    shortlist: tuple[ServingConfig, ...]
    comparisons: tuple[Comparison, ...]
    calibration: Calibration | None = None
    calibrated_cheap: tuple[Trial, ...] = field(default=())
    """The shortlist re-run on the cheap tier with the calibrated cost model."""

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

    def near(t: Trial) -> bool:
        return not t.feasible and all(
            r.ok or -r.margin <= margin * max(abs(r.limit), 1e-12) for r in t.slo_results
        )

    close = [t.config for t in by_score if near(t)][:top_k]
    return list(dict.fromkeys(feasible + close))


def two_tier(
    cheap: Backend,
    expensive: Backend,
    search: Search,
    space: SearchSpace,
    workload: Workload,
    objective: Objective | None = None,
    slos: Sequence[SLO | str] = (),
    *,
    top_k: int = 3,
    margin: float = 0.15,
    calibrate: bool = True,
    compare: Sequence[str] = ("output_throughput", "ttft.p99", "tpot.p90"),
) -> TwoTierResult:
    """Search ``space`` on the cheap backend, confirm the shortlist on the expensive one.

    The shortlist is the cheap tier's ``top_k`` feasible configurations plus up to ``top_k``
    that miss an SLO by at most ``margin`` (relative to its limit). With ``calibrate``, a cost
    model is fitted to the expensive tier's step log and the shortlist re-run on a simulator
    with it, to report the cheap tier's error before and after calibration.

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
    if top_k < 1:
        raise ConfigError(f"two_tier.top_k = {top_k!r}: must be >= 1")
    if not 0 <= margin < 10:
        raise ConfigError(f"two_tier.margin = {margin!r}: must be in [0, 10)")
    objective = objective or Objective.maximize("output_throughput")
    parsed = parse_slos(list(slos))
    cheap_trials = _trials(Loop(cheap, search, objective, parsed), space, workload)
    picks = shortlist(cheap_trials, objective, top_k, margin)
    if not picks:
        raise infeasible_error(cheap_trials, parsed)
    confirm = Loop(expensive, ListSearch(picks), objective, parsed)
    try:
        result = confirm.run(space, workload)
    except InfeasibleError as e:
        raise InfeasibleError(
            e.shortfalls, e.trials,
            note=f"none of the {len(picks)} configurations the cheap tier shortlisted is "
            "feasible when measured by the expensive backend",
        ) from None  # fmt: skip
    calibration: Calibration | None = None
    calibrated: tuple[Trial, ...] = ()
    if calibrate:
        measured = [t.measurement for t in result.trials if t.measurement is not None]
        try:
            calibration = fit_cost_model(measured, source=expensive.describe())
        except TunerError:
            calibration = None  # the expensive backend has no step times (e.g. attach mode)
        if calibration is not None:
            sim = SimulatorBackend(calibration.cost_model)
            calibrated = _trials(Loop(sim, ListSearch(picks), objective, parsed), space, workload)
    metrics = list(dict.fromkeys([*objective.metrics, *(s.metric for s in parsed), *compare]))
    return TwoTierResult(
        best=result.best, cheap=tuple(cheap_trials), expensive=result.trials,
        shortlist=tuple(picks),
        comparisons=_compare(cheap_trials, result.trials, calibrated, picks, metrics),
        calibration=calibration, calibrated_cheap=calibrated,
    )  # fmt: skip


def _trials(loop: Loop, space: SearchSpace, workload: Workload) -> tuple[Trial, ...]:
    """Every trial of a run, feasible or not."""
    try:
        return loop.run(space, workload).trials
    except InfeasibleError as e:
        return tuple(e.trials)


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
