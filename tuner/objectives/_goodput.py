"""Goodput as ``vllm bench serve --goodput`` defines it: requests that met every per-request
latency limit, per unit of time."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tuner.core import Measurement

CRITERIA = ("ttft", "tpot", "e2e")
"""The per-request latencies goodput can limit (vllm bench's ``ttft``, ``tpot``, ``e2el``)."""


def good_requests(
    ttft: npt.ArrayLike,
    e2e: npt.ArrayLike,
    output_tokens: npt.ArrayLike,
    *,
    ttft_max: float | None = None,
    tpot_max: float | None = None,
    e2e_max: float | None = None,
) -> npt.NDArray[np.bool_]:
    """Which requests meet every given limit (``value <= limit``).

    As in vllm bench, a request with one output token has a TPOT of 0 for this purpose, and a
    failed request (NaN latency) is never good.

    Example:
        >>> good_requests([0.1, 0.3], [1.0, 1.0], [10, 10], ttft_max=0.2).tolist()
        [True, False]
    """
    t = np.asarray(ttft, dtype=np.float64)
    e = np.asarray(e2e, dtype=np.float64)
    out = np.asarray(output_tokens, dtype=np.float64)
    good: npt.NDArray[np.bool_] = np.isfinite(t) & np.isfinite(e)
    if ttft_max is not None:
        good &= t <= ttft_max
    if tpot_max is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out > 1, (e - t) / np.maximum(out - 1, 1), 0.0)
        good &= tpot <= tpot_max
    if e2e_max is not None:
        good &= e <= e2e_max
    return good


def request_goodput(
    m: Measurement,
    *,
    ttft_max: float | None = None,
    tpot_max: float | None = None,
    e2e_max: float | None = None,
) -> float:
    """Good requests per time unit over the run (vllm bench's ``request_goodput``)."""
    good = good_requests(
        m.ttft, m.e2e, m.output_tokens, ttft_max=ttft_max, tpot_max=tpot_max, e2e_max=e2e_max
    )
    return float(good.sum()) / m.duration if m.duration > 0 else float("inf")
