"""A calibration's check on runs it was not fitted on: per-metric error and ranking agreement,
before and after calibration (pure numbers; running the simulator is ``_validation``'s)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field

from tuner.core import FrozenModel

#: The metrics a held-out check scores (the SLO metrics, and the throughput).
METRICS = (
    "ttft.p50",
    "ttft.p99",
    "tpot.p50",
    "tpot.p99",
    "itl.p50",
    "itl.p99",
    "e2e.p50",
    "e2e.p99",
    "output_throughput",
)
#: Metrics whose ranking of configurations is scored (Kendall's tau): the latency SLO metrics.
RANKED = tuple(m for m in METRICS if m != "output_throughput")


#: How much larger (relative) a calibration's mean held-out error must be to count as worse.
WORSE_MARGIN = 0.01


class HeldOut(FrozenModel):
    """Errors on held-out runs: mean absolute relative error per metric and Kendall's tau of
    the configurations' ranking per metric (within each workload, averaged), for the
    uncalibrated simulator (``before``) and the calibrated one (``after``)."""

    runs: int = Field(ge=1)
    """Held-out runs scored."""
    baseline: str
    """The uncalibrated cost model the calibration is compared with."""
    before: dict[str, float]
    """Mean |predicted - measured| / measured per metric, uncalibrated."""
    after: dict[str, float]
    """The same, calibrated."""
    tau_before: dict[str, float] = Field(default_factory=dict)
    """Kendall's tau between measured and predicted order of configurations, uncalibrated
    (only metrics with at least two configurations in some workload)."""
    tau_after: dict[str, float] = Field(default_factory=dict)
    """The same, calibrated."""

    @property
    def worse(self) -> bool:
        """Whether the calibration predicts the held-out runs worse than the uncalibrated model:
        its mean error over the metrics is larger by more than :data:`WORSE_MARGIN` (relative;
        a tie is not worse)."""
        common = [m for m in self.after if m in self.before]
        if not common:
            return False
        after = float(np.mean([self.after[m] for m in common]))
        before = float(np.mean([self.before[m] for m in common]))
        return after > before * (1 + WORSE_MARGIN) + 1e-12


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two orderings of the same items (1: the same order).

    Example:
        >>> kendall_tau([1, 2, 3], [10, 20, 30]), kendall_tau([1, 2, 3], [3, 2, 1])
        (1.0, -1.0)
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(x), k=1)
    dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordant = float((dx * dy).sum())
    nx, ny = float(np.count_nonzero(dx)), float(np.count_nonzero(dy))
    if nx == 0 or ny == 0:
        return math.nan
    return concordant / math.sqrt(nx * ny)


def mean_abs_rel_error(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean of |predicted - measured| / |measured| over the pairs with a non-zero measurement."""
    p, m = np.asarray(predicted, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(m) & (m != 0)
    return float(np.mean(np.abs(p[ok] - m[ok]) / np.abs(m[ok]))) if ok.any() else math.nan


def ranking_tau(
    groups: Sequence[str], predicted: Sequence[float], measured: Sequence[float]
) -> float | None:
    """Mean Kendall's tau over groups (workloads) of at least two runs (None: no such group)."""
    taus = []
    for g in dict.fromkeys(groups):
        idx = [k for k, h in enumerate(groups) if h == g]
        if len(idx) >= 2:
            t = kendall_tau([measured[k] for k in idx], [predicted[k] for k in idx])
            if not math.isnan(t):
                taus.append(t)
    return float(np.mean(taus)) if taus else None


def held_out(
    groups: Sequence[str],
    measured: Sequence[Mapping[str, float]],
    before: Sequence[Mapping[str, float]],
    after: Sequence[Mapping[str, float]],
    baseline: str,
    metrics: Sequence[str] = METRICS,
) -> HeldOut:
    """Score per-run metric values: ``measured[k]`` against ``before[k]`` and ``after[k]``."""
    out: dict[str, dict[str, float]] = {"before": {}, "after": {}, "tb": {}, "ta": {}}
    for metric in metrics:
        live = [r.get(metric, math.nan) for r in measured]
        for key, tau, pred in (("before", "tb", before), ("after", "ta", after)):
            p = [r.get(metric, math.nan) for r in pred]
            err = mean_abs_rel_error(p, live)
            if not math.isnan(err):
                out[key][metric] = err
            t = ranking_tau(groups, p, live) if metric in RANKED else None
            if t is not None:
                out[tau][metric] = t
    return HeldOut(
        runs=len(measured),
        baseline=baseline,
        before=out["before"],
        after=out["after"],
        tau_before=out["tb"],
        tau_after=out["ta"],
    )
