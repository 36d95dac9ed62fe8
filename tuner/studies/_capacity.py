"""Capacity: the highest request rate a configuration sustains under the SLOs, and how a latency
percentile grows with offered load (the hockey stick)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tuner.backends import Backend
from tuner.core import (
    ConfigError,
    InfeasibleError,
    ServingConfig,
    SLOResult,
    SLOShortfall,
    Workload,
)
from tuner.objectives import SLO, MetricRef, binding_slo, judge, parse_slos

WorkloadAt = Callable[[float], Workload]
"""Builds the workload offered at a request rate (with fixed seeds, so only the rate varies)."""


@dataclass(frozen=True)
class LoadPoint:
    """One measurement at one offered rate."""

    rate: float
    feasible: bool
    slo_results: tuple[SLOResult, ...]
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CapacityResult:
    """The highest rate found to meet every SLO, and every point measured on the way."""

    config: ServingConfig
    rate: float
    """The highest feasible rate measured (within ``rel_tol`` of the true boundary)."""
    lowest_infeasible: float | None
    """The lowest rate measured that missed an SLO (None: none within the search range)."""
    points: tuple[LoadPoint, ...]

    @property
    def binding(self) -> str | None:
        """The SLO that failed first above capacity (the one that limits the rate)."""
        over = [p for p in self.points if not p.feasible]
        if not over:
            return None
        lowest = min(over, key=lambda p: p.rate)
        worst = binding_slo(lowest.slo_results)
        return None if worst is None else worst.slo


def find_capacity(
    backend: Backend,
    config: ServingConfig,
    workload_at: WorkloadAt,
    slos: Sequence[SLO | str],
    *,
    low: float,
    high: float,
    rel_tol: float = 0.02,
    max_evaluations: int = 40,
) -> CapacityResult:
    """Bisect over the request rate for the highest rate at which every SLO holds.

    Assumes latency grows with load (true of queues). ``low`` must meet the SLOs; if ``high``
    does too, the range is doubled (up to ``max_evaluations``) until a rate misses one. Each rate
    is measured on ``workload_at(rate)``, so fixed seeds make the search reproducible.

    Raises:
        InfeasibleError: the SLOs fail even at ``low``.
        ConfigError: bad arguments.

    Example:
        >>> from tuner import ServingConfig, Workload
        >>> from tuner.backends import CostModel, SimulatorBackend
        >>> sim = SimulatorBackend(CostModel(fixed=0.01, per_prefill_token=1e-4, time_unit="s"))
        >>> at = lambda rate: Workload.poisson(rate, 200, 256, 32, seed=0)
        >>> cap = find_capacity(sim, ServingConfig(max_num_seqs=16), at, ["ttft.p99 <= 0.5s"],
        ...                     low=1, high=64)
        >>> cap.rate > 1
        True
    """
    parsed = parse_slos(list(slos))
    if not parsed:
        raise ConfigError("find_capacity: give at least one SLO (capacity is a rate under SLOs)")
    if not (0 < low < high) or not all(math.isfinite(x) for x in (low, high)):
        raise ConfigError(f"find_capacity: need 0 < low < high, got low={low!r}, high={high!r}")
    if not 0 < rel_tol < 1:
        raise ConfigError(f"find_capacity.rel_tol = {rel_tol!r}: must be in (0, 1)")
    points: list[LoadPoint] = []

    def probe(rate: float) -> LoadPoint:
        m = backend.evaluate(config, workload_at(rate))
        for slo in parsed:
            slo.check_applicable(m)
        results = judge(parsed, m)
        point = LoadPoint(
            rate, all(r.ok for r in results), results, {r.slo: r.value for r in results}
        )
        points.append(point)
        return point

    first = probe(low)
    if not first.feasible:
        raise InfeasibleError(
            [SLOShortfall(r.slo, r.limit, r.value, config, int(r.ok)) for r in first.slo_results],
            (),
        )
    ok, bad = low, high
    top = probe(high)
    while top.feasible and len(points) < max_evaluations:
        ok, bad = bad, bad * 2
        top = probe(bad)
    if top.feasible:
        return CapacityResult(config, bad, None, tuple(points))
    while bad - ok > rel_tol * ok and len(points) < max_evaluations:
        mid = math.sqrt(ok * bad) if bad / ok > 4 else (ok + bad) / 2
        if probe(mid).feasible:
            ok = mid
        else:
            bad = mid
    return CapacityResult(config, ok, bad, tuple(points))


def load_sweep(
    backend: Backend,
    configs: Sequence[ServingConfig],
    workload_at: WorkloadAt,
    rates: Sequence[float],
    metric: str,
) -> dict[ServingConfig, list[tuple[float, float]]]:
    """``metric`` at each offered rate, for each configuration: the data of a hockey-stick plot."""
    ref = MetricRef.parse(metric)
    if not rates or any(not (r > 0) for r in rates):
        raise ConfigError(f"load_sweep.rates = {list(rates)!r}: need positive rates")
    out: dict[ServingConfig, list[tuple[float, float]]] = {}
    for cfg in configs:
        out[cfg] = [(r, ref.value(backend.evaluate(cfg, workload_at(r)))) for r in sorted(rates)]
    return out
