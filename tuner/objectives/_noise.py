"""Noise: confidence intervals for a metric measured in repeated runs of the same workload.

Pure functions, seeded and deterministic:

- :func:`run_replicates` -- bootstrap replicates of one run's statistic, over its requests;
- :func:`repeat_interval` -- the interval of the median across runs: a two-level bootstrap
  (draw the runs with replacement, then one request-level replicate of each drawn run);
- :func:`pooled_log_sd` and :func:`noise_interval` -- the run-to-run noise pooled over many
  configurations' repeats (the relative spread is taken to be a property of the backend and the
  workload), and the interval it gives a configuration measured in only ``R`` runs, with
  Student's t for the pooled estimate's degrees of freedom. A bootstrap over two or three runs
  cannot see run-to-run noise (with two runs its percentile interval is just their range);
  the pooled estimate can;
- :func:`combined_interval` -- what a trial records: the run-to-run part (pooled noise, t)
  and the within-run part (the request-level bootstrap) added in quadrature on the log scale;
  the two-level bootstrap for a metric that can be <= 0.

Example:
    >>> import numpy as np
    >>> reps = [run_replicates(np.arange(100.0), "p90", seed=i) for i in range(3)]
    >>> lo, hi = repeat_interval(reps, 0.95)
    >>> bool(80 < lo <= 89.1 <= hi < 98)
    True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from tuner.core import Measurement
from tuner.objectives._metrics import DISTRIBUTIONS, MetricRef
from tuner.objectives._stats import parse_percentile

#: Bootstrap replicates per run (and of the median across runs).
DEFAULT_RESAMPLES = 400
#: At most this many resampled values are held in memory at once.
_CHUNK = 2_000_000

Interval = tuple[float, float]


def median_of(values: Sequence[float]) -> float:
    """The aggregate of a metric's repeats: the median of the finite ones (NaN if none).

    Example:
        >>> median_of([3.0, 1.0, float("nan"), 2.0])
        2.0
    """
    v = [x for x in values if not math.isnan(x)]
    return float(statistics.median(v)) if v else math.nan


def metric_samples(m: Measurement, metric: str) -> npt.NDArray[np.float64] | None:
    """One run's per-request samples of a per-request metric (``ttft.p99``: every request's
    TTFT, failed ones left out), or None for a run-level metric (throughput, step figures, the
    ITL samples pooled over requests, goodput): those are bootstrapped over runs only."""
    ref = MetricRef.parse(metric)
    if ref.stat is None or ref.name == "itl" or ref.name not in DISTRIBUTIONS:
        return None
    values, _ = DISTRIBUTIONS[ref.name].samples(m)
    v: npt.NDArray[np.float64] = np.asarray(values, dtype=np.float64)
    kept: npt.NDArray[np.float64] = v[~np.isnan(v)]
    return kept


def _row_stat(mat: npt.NDArray[np.float64], stat: str) -> npt.NDArray[np.float64]:
    """``stat`` of each row (the definitions of :func:`tuner.objectives.statistic`)."""
    if stat == "mean":
        out = mat.mean(axis=1)
    elif stat == "min":
        out = mat.min(axis=1)
    elif stat == "max":
        out = mat.max(axis=1)
    elif stat == "std":
        out = mat.std(axis=1)
    else:
        q = 50.0 if stat == "median" else parse_percentile(stat)
        out = np.percentile(mat, q, axis=1)
    return np.asarray(out, dtype=np.float64)


def run_replicates(
    samples: npt.ArrayLike, stat: str, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> npt.NDArray[np.float64]:
    """``resamples`` bootstrap replicates of ``stat`` over one run's requests (drawn with
    replacement); NaN samples are left out. All NaN when there is no sample.

    Example:
        >>> run_replicates([5.0, 5.0, 5.0], "p99", resamples=4).tolist()
        [5.0, 5.0, 5.0, 5.0]
    """
    x = np.asarray(samples, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return np.full(resamples, np.nan)
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    rows = max(1, _CHUNK // len(x))
    for start in range(0, resamples, rows):
        k = min(rows, resamples - start)
        out[start : start + k] = _row_stat(x[rng.integers(0, len(x), size=(k, len(x)))], stat)
    return out


def constant_replicates(
    value: float, resamples: int = DEFAULT_RESAMPLES
) -> npt.NDArray[np.float64]:
    """The replicates of a run-level figure: the run's value itself (no within-run spread)."""
    return np.full(resamples, float(value))


def repeat_interval(
    replicates: Sequence[npt.ArrayLike], confidence: float = 0.95, seed: int = 0
) -> Interval:
    """The percentile interval of the median across runs.

    Each bootstrap draw takes ``R`` runs with replacement (``R`` = the number of runs) and, for
    each drawn run, one of its request-level replicates; the draw's value is their median.
    ``(NaN, NaN)`` when no run has a finite value.

    Example:
        >>> repeat_interval([[1.0] * 50, [3.0] * 50], 0.9)
        (1.0, 3.0)
    """
    reps = [np.asarray(r, dtype=np.float64) for r in replicates]
    reps = [r for r in reps if len(r) and not np.isnan(r).all()]
    if not reps:
        return (math.nan, math.nan)
    b = min(len(r) for r in reps)
    table = np.stack([np.nan_to_num(r[:b], nan=float(np.nanmedian(r))) for r in reps])
    n_runs = len(reps)
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, n_runs, size=(b, n_runs))
    cols = rng.integers(0, b, size=(b, n_runs))
    draws = np.median(table[runs, cols], axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def pooled_log_sd(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """The run-to-run noise of a metric pooled over configurations: the standard deviation of
    ``log(value)`` within each configuration's repeats, pooled (sum of squares over degrees of
    freedom), and its degrees of freedom ``sum(R_i - 1)``. Groups with fewer than two positive
    finite values add nothing. ``(0.0, 0)`` without any.

    Example:
        >>> s, df = pooled_log_sd([[100.0, 100.0], [10.0, 10.0, 10.0]])
        >>> s, df
        (0.0, 3)
    """
    ss, df = 0.0, 0
    for g in groups:
        logs = [math.log(v) for v in g if math.isfinite(v) and v > 0]
        if len(logs) < 2:
            continue
        mean = sum(logs) / len(logs)
        ss += sum((x - mean) ** 2 for x in logs)
        df += len(logs) - 1
    return (math.sqrt(ss / df) if df else 0.0, df)


def t_quantile(confidence: float, df: int) -> float:
    """Two-sided Student's t quantile: ``P(|T| <= t) = confidence`` with ``df`` degrees of
    freedom (exact finite series for integer df, Abramowitz & Stegun 26.7.3-4; the normal
    quantile beyond 300).

    Example:
        >>> round(t_quantile(0.95, 4), 3), round(t_quantile(0.95, 10_000), 3)
        (2.776, 1.96)
    """
    if df < 1:
        return math.inf
    if df > 300:
        return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < confidence:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if _t_two_sided(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _t_two_sided(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df``."""
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):
            if k > 1:
                term *= c * c * (2 * k - 2) / (2 * k - 1)
            total += term
        return (2.0 / math.pi) * (theta + (s * total if df > 1 else 0.0))
    total, term = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c * c * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def noise_interval(
    values: Sequence[float], log_sd: float, df: int, confidence: float = 0.95
) -> Interval:
    """The interval the pooled run-to-run noise gives the median of ``values``:
    ``median * exp(+-t * log_sd / sqrt(R))``. The median itself (zero width) when the values
    are not all positive (a count that can be 0: no relative noise) or ``log_sd`` is 0; the
    whole line when nothing is known of the noise (``df`` = 0 and a single run).

    Example:
        >>> lo, hi = noise_interval([100.0], 0.1, 10_000, 0.95)
        >>> round(lo, 1), round(hi, 1)
        (82.2, 121.7)
    """
    finite = [v for v in values if math.isfinite(v)]
    m = median_of(finite)
    if not finite or any(v <= 0 for v in finite):
        return (m, m)
    if df < 1:
        return (-math.inf, math.inf) if len(finite) < 2 else (m, m)
    h = t_quantile(confidence, df) * log_sd / math.sqrt(len(finite))
    return (m * math.exp(-h), m * math.exp(h))


def within_run_spread(
    values: Sequence[float], replicates: Sequence[npt.ArrayLike], confidence: float = 0.95
) -> tuple[float, float]:
    """The within-run part of a metric's uncertainty, on the log scale: how far below and
    above each run's value its request-level bootstrap interval reaches, averaged over the
    runs. Every repeat replays the same requests, so this part does not shrink with more
    runs. ``(0, 0)`` for a run-level metric (constant replicates) or non-positive values.

    Example:
        >>> within_run_spread([10.0], [[10.0, 10.0]])
        (0.0, 0.0)
    """
    alpha = (1.0 - confidence) / 2.0
    lows, highs = [], []
    for v, rep in zip(values, replicates, strict=True):
        r = np.asarray(rep, dtype=np.float64)
        r = r[~np.isnan(r)]
        if not len(r) or not v > 0:
            continue
        lo, hi = np.quantile(r, [alpha, 1.0 - alpha])
        if lo <= 0:
            continue
        lows.append(max(0.0, math.log(v / lo)))
        highs.append(max(0.0, math.log(hi / v)))
    if not lows:
        return (0.0, 0.0)
    return (sum(lows) / len(lows), sum(highs) / len(highs))


def combined_interval(
    values: Sequence[float],
    replicates: Sequence[npt.ArrayLike],
    log_sd: float,
    df: int,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The confidence interval of the median of a metric's runs.

    On the log scale, around the median: the run-to-run part ``t * log_sd / sqrt(R)`` (Student's
    t with the pooled noise's ``df``; none while ``df`` is 0) and the within-run part
    (:func:`within_run_spread`, the request-level bootstrap) add in quadrature -- two
    independent sources, the second common to every run. A metric with a value <= 0 (a count
    that can be 0) has no relative scale: it gets the two-level bootstrap
    (:func:`repeat_interval`) instead. ``(NaN, NaN)`` without a finite value.

    Example:
        >>> lo, hi = combined_interval([100.0], [[100.0]], 0.1, 10_000)
        >>> round(lo, 1), round(hi, 1)
        (82.2, 121.7)
    """
    pairs = [(v, r) for v, r in zip(values, replicates, strict=True) if math.isfinite(v)]
    if not pairs:
        return (math.nan, math.nan)
    vals = [v for v, _ in pairs]
    if any(v <= 0 for v in vals):
        return repeat_interval([r for _, r in pairs], confidence, seed)
    m = median_of(vals)
    noise = t_quantile(confidence, df) * log_sd / math.sqrt(len(vals)) if df >= 1 else 0.0
    low, high = within_run_spread(vals, [r for _, r in pairs], confidence)
    return (m * math.exp(-math.hypot(noise, low)), m * math.exp(math.hypot(noise, high)))


def hull(*intervals: Interval) -> Interval:
    """The smallest interval holding every given one (NaN ends are ignored).

    Example:
        >>> hull((1.0, 2.0), (0.5, 1.5), (float("nan"), float("nan")))
        (0.5, 2.0)
    """
    lows = [a for a, _ in intervals if not math.isnan(a)]
    highs = [b for _, b in intervals if not math.isnan(b)]
    return (min(lows, default=math.nan), max(highs, default=math.nan))
