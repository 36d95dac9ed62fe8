"""Objectives: metrics extracted from a Measurement, the objective, SLOs, and all ranking of
trials (feasible first, one relative SLO shortfall, closest miss, binding SLO, ties)."""

from tuner.objectives._metrics import MetricRef, metric_names, metric_value
from tuner.objectives._objective import DEFAULT_OBJECTIVE, Objective
from tuner.objectives._ranking import (
    best_trial,
    binding_slo,
    infeasible_error,
    judge,
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
    "DEFAULT_OBJECTIVE",
    "SLO",
    "MetricRef",
    "Objective",
    "best_trial",
    "binding_slo",
    "infeasible_error",
    "judge",
    "metric_names",
    "metric_value",
    "parse_slos",
    "percentile_of_runs",
    "rank",
    "rank_key",
    "relative_margin",
    "relative_shortfall",
    "shortfalls",
    "statistic",
    "tied_with_best",
    "within_margin",
]
