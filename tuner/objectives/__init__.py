"""Objectives: metrics extracted from a Measurement, the objective, SLOs, and all ranking of
trials (feasible first, one relative SLO shortfall, closest miss, binding SLO, ties)."""

from tuner.objectives._capacity import (
    CAPACITY_METRICS,
    CapacitySettings,
    RateLattice,
    UserLattice,
    cost_per_million_tokens,
    load_lattice,
    throughput_per_gpu,
)
from tuner.objectives._metrics import MetricRef, metric_names, metric_value
from tuner.objectives._objective import DEFAULT_OBJECTIVE, Objective
from tuner.objectives._ranking import (
    best_trial,
    binding_slo,
    infeasible_error,
    is_flat,
    judge,
    objective_spread,
    rank,
    rank_key,
    relative_margin,
    relative_shortfall,
    shortfalls,
    tied_with_best,
    within_margin,
)
from tuner.objectives._slo import SLO, parse_slos
from tuner.objectives._stats import percentile_of_runs, statistic

__all__ = [
    "CAPACITY_METRICS",
    "DEFAULT_OBJECTIVE",
    "SLO",
    "CapacitySettings",
    "MetricRef",
    "Objective",
    "RateLattice",
    "UserLattice",
    "best_trial",
    "binding_slo",
    "cost_per_million_tokens",
    "infeasible_error",
    "is_flat",
    "judge",
    "load_lattice",
    "metric_names",
    "metric_value",
    "objective_spread",
    "parse_slos",
    "percentile_of_runs",
    "rank",
    "rank_key",
    "relative_margin",
    "relative_shortfall",
    "shortfalls",
    "statistic",
    "throughput_per_gpu",
    "tied_with_best",
    "within_margin",
]
