"""Capacity of one configuration outside a study, and latency against offered load (the hockey
stick). Both run the one capacity search of the composition layer (``tuner.tuning``), so a
capacity found here equals the one a capacity objective finds in a study."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuner.backends import Backend
from tuner.core import ConfigError, LoadPoint, ServingConfig, Workload
from tuner.objectives import (
    SLO,
    CapacitySettings,
    MetricRef,
    Objective,
    binding_slo,
    infeasible_error,
    parse_slos,
)
from tuner.tuning import capacity_trial

WorkloadAt = Callable[[float], Workload]
"""Builds the workload offered at a request rate (with fixed seeds, so only the rate varies)."""


@dataclass(frozen=True)
class CapacityResult:
    """The highest load found to meet every SLO, and every load measured on the way."""

    config: ServingConfig
    rate: float
    """The highest load at which every SLO held (a lattice point; see ``RateLattice``)."""
    lowest_infeasible: float | None
    """The lowest load above ``rate`` that missed an SLO (None: none, ``rate`` is a bound)."""
    points: tuple[LoadPoint, ...]
    note: str | None = None
    """Set when ``rate`` is a bound rather than a measured boundary (``>= high``)."""

    @property
    def bounded(self) -> bool:
        """Whether every load tried held (so ``rate`` is only a lower bound)."""
        return self.lowest_infeasible is None

    @property
    def binding(self) -> str | None:
        """The SLO that failed first above capacity (the one that limits the load)."""
        over = [p for p in self.points if not p.feasible and p.slo_results]
        if not over:
            return None
        worst = binding_slo(min(over, key=lambda p: p.rate).slo_results)
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
    max_probes: int = 40,
    start: float | None = None,
) -> CapacityResult:
    """The highest load (on a lattice of ``rel_tol`` steps from ``start``, default ``low``)
    at which every SLO holds, between ``low`` and ``high``.

    Raises:
        InfeasibleError: the SLOs fail even at ``low``.
        ConfigError: bad arguments, or no SLO (capacity is unbounded without one).

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
    parsed = parse_slos(slos)
    if not parsed:
        raise ConfigError("find_capacity: give at least one SLO (capacity is a rate under SLOs)")
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (low, high)) or not (
        0 < low < high
    ):
        raise ConfigError(f"find_capacity: need 0 < low < high, got low={low!r}, high={high!r}")
    if not 0 < rel_tol < 1:
        raise ConfigError(f"find_capacity.rel_tol = {rel_tol!r}: must be in (0, 1)")
    settings = CapacitySettings(
        low=low, high=high, rel_tol=rel_tol, max_probes=max_probes, shortcut=False, start=start
    )
    objective = Objective(metric="capacity", direction="maximize", load=settings)
    metrics = list(dict.fromkeys(s.metric for s in parsed))

    def values(m: object) -> dict[str, float]:
        return {name: MetricRef.parse(name).value(m) for name in metrics}  # type: ignore[arg-type]

    trial = capacity_trial(
        0,
        config,
        1.0,
        backend,
        workload_at,
        settings.first_rate(low),
        parsed,
        objective,
        values,
        None,
        (),
    )
    if not trial.ok:
        raise ConfigError(
            f"find_capacity: {config.describe()} could not be measured: {trial.error}"
        )
    if not trial.feasible:
        raise infeasible_error([trial], parsed, note=f"the SLOs fail even at {low:g}")
    cap = trial.values["capacity"]
    above = [p.rate for p in trial.load_points if not p.feasible and p.rate > cap]
    return CapacityResult(
        config, cap, min(above) if above else None, trial.load_points, trial.capacity_note
    )


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
        with backend.session(cfg) as measure:
            out[cfg] = [(r, ref.value(measure(workload_at(r)))) for r in sorted(rates)]
    return out
