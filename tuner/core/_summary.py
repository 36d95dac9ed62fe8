"""A workload at a glance: requests, duration, mean and peak rate, burstiness, lengths -- what a
person checks first to catch a trace read in the wrong time unit or at the wrong rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class WorkloadSummary:
    """Figures of a workload (times in its own unit: seconds, or steps on the unit clock).

    Attributes:
        requests: How many requests.
        duration: First to last arrival.
        mean_rate: ``requests / duration`` (``inf`` when all arrive at once).
        peak_rate: The highest rate over any window of a tenth of the duration (at least 1).
        burstiness: Coefficient of variation of the gaps between arrivals (1 for Poisson,
            larger is burstier, 0 for evenly spaced).
        prompt_p50, prompt_p99, output_p50, output_p99: Length percentiles, in tokens.
    """

    requests: int
    duration: float
    mean_rate: float
    peak_rate: float
    burstiness: float
    prompt_p50: float
    prompt_p99: float
    output_p50: float
    output_p99: float

    def text(self, unit: str = "s") -> str:
        """One line: ``2000 requests over 166 s (mean 12.0 req/s, peak 15.3), burstiness
        (CV of gaps) 1.02, prompt p50/p99 768/1149 tokens, output p50/p99 192/286``."""
        per = "req/s" if unit == "s" else "req/step"
        return (
            f"{self.requests} requests over {self.duration:.4g} {unit} (mean "
            f"{self.mean_rate:.4g} {per}, peak {self.peak_rate:.4g}), burstiness (CV of gaps) "
            f"{self.burstiness:.3g}, prompt p50/p99 {self.prompt_p50:.0f}/{self.prompt_p99:.0f} "
            f"tokens, output p50/p99 {self.output_p50:.0f}/{self.output_p99:.0f}"
        )


def summarize(
    arrival: npt.NDArray[np.float64],
    prompt: npt.NDArray[np.int64],
    output: npt.NDArray[np.int64],
) -> WorkloadSummary:
    """The :class:`WorkloadSummary` of per-request arrivals and lengths.

    Example:
        >>> import numpy as np
        >>> s = summarize(np.array([0.0, 1.0, 2.0, 3.0]), np.array([8] * 4), np.array([2] * 4))
        >>> s.mean_rate, s.burstiness
        (1.3333333333333333, 0.0)
    """
    times = np.sort(np.asarray(arrival, dtype=np.float64))
    n = len(times)
    duration = float(times[-1] - times[0]) if n else 0.0
    mean = n / duration if duration > 0 else math.inf
    gaps = np.diff(times)
    cv = float(gaps.std() / gaps.mean()) if len(gaps) and gaps.mean() > 0 else 0.0
    peak = mean
    if duration > 0:
        window = duration / 10
        ends = np.searchsorted(times, times + window, side="right")
        peak = float((ends - np.arange(n)).max()) / window
    return WorkloadSummary(
        requests=n,
        duration=duration,
        mean_rate=mean,
        peak_rate=peak,
        burstiness=cv,
        prompt_p50=float(np.percentile(prompt, 50)),
        prompt_p99=float(np.percentile(prompt, 99)),
        output_p50=float(np.percentile(output, 50)),
        output_p99=float(np.percentile(output, 99)),
    )
