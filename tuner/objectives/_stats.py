"""Pure statistics over latency samples (the same definitions as ``vllm bench serve``)."""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from tuner.core import SLOError

STATISTICS = ("mean", "median", "min", "max", "std", "pNN (e.g. p50, p90, p99, p99.9)")
_PCT = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")


def percentile_of_runs(values: npt.ArrayLike, counts: npt.ArrayLike, q: float) -> float:
    """``np.percentile(np.repeat(values, counts), q)`` without expanding the runs.

    Linear interpolation between the two order statistics around rank ``q/100 * (N-1)``,
    numpy's default method. NaN when there is no sample.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(counts, dtype=np.int64)
    keep = (c > 0) & ~np.isnan(v)
    v, c = v[keep], c[keep]
    total = int(c.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(v, kind="stable")
    v, c = v[order], c[order]
    ends = np.cumsum(c)  # ends[i] = number of samples <= v[i] (as sorted ranks, exclusive)
    rank = q / 100.0 * (total - 1)
    lo = int(np.floor(rank))
    hi = min(lo + 1, total - 1)
    v_lo = v[np.searchsorted(ends, lo, side="right")]
    v_hi = v[np.searchsorted(ends, hi, side="right")]
    return float(v_lo + (v_hi - v_lo) * (rank - lo))


def statistic(values: npt.ArrayLike, stat: str, counts: npt.ArrayLike | None = None) -> float:
    """One statistic of samples (NaNs -- failed requests, 1-token TPOT -- are left out).

    ``stat`` is ``mean``, ``median``, ``min``, ``max``, ``std`` or ``pNN``. ``counts`` gives
    each value's multiplicity (runs of equal samples). NaN when there is no sample.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.ones(len(v), dtype=np.int64) if counts is None else np.asarray(counts, np.int64)
    keep = (c > 0) & ~np.isnan(v)
    v, c = v[keep], c[keep]
    n = int(c.sum())
    if n == 0:
        return float("nan")
    if stat == "mean":
        return float((v * c).sum() / n)
    if stat == "min":
        return float(v.min())
    if stat == "max":
        return float(v.max())
    if stat == "std":
        mean = (v * c).sum() / n
        return float(np.sqrt((c * (v - mean) ** 2).sum() / n))
    if stat == "median":
        return percentile_of_runs(v, c, 50.0)
    q = parse_percentile(stat)
    return percentile_of_runs(v, c, q)


def parse_percentile(stat: str) -> float:
    """``"p99"`` -> 99.0; raises :class:`SLOError` for anything else."""
    m = _PCT.match(stat)
    if not m:
        raise SLOError(f"unknown statistic {stat!r}; allowed: {', '.join(STATISTICS)}")
    return float(m.group(1))


def check_statistic(stat: str) -> None:
    """Raise :class:`SLOError` unless ``stat`` is a known statistic."""
    if stat not in ("mean", "median", "min", "max", "std"):
        parse_percentile(stat)
