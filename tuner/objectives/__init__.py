"""Objectives: metrics extracted from a Measurement, the objective, and SLOs."""

from tuner.objectives._metrics import MetricRef, metric_names, metric_value
from tuner.objectives._objective import Objective
from tuner.objectives._slo import SLO, parse_slos
from tuner.objectives._stats import percentile_of_runs, statistic

__all__ = [
    "SLO",
    "MetricRef",
    "Objective",
    "metric_names",
    "metric_value",
    "parse_slos",
    "percentile_of_runs",
    "statistic",
]
