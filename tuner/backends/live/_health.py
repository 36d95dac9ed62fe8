"""The load client's health: how late it sent and read, summarised for a trial's record.

A run whose client fell behind by more than ``max_send_lag`` is flagged (its latencies hold
some of the client's own delay); :class:`~tuner.core.ClientHealth` carries the summary on the
:class:`~tuner.core.Measurement`, so that the Loop's repeat policy can refuse to trust it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.backends.live._load import LoadResult
from tuner.core import ClientHealth


@dataclass(frozen=True)
class Lag:
    """A summary of the client's lateness (seconds): median, 99th percentile, maximum."""

    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, values: Any) -> Lag:
        a = np.asarray(values, dtype=np.float64)
        if a.size == 0:
            return cls()
        p50, p99 = np.percentile(a, [50, 99])
        return cls(float(p50), float(p99), float(a.max()))


def client_lag(load: LoadResult, max_lag: float) -> tuple[Lag, Lag, str | None]:
    """The send-lag and read-lag summaries of a load, and why it lagged (None if it did not).

    Example:
        >>> from tuner.backends.live._load import LoadResult, RequestRecord
        >>> r = RequestRecord(0, scheduled=1.0, sent=1.2, token_times=(1.3,), requested_tokens=1)
        >>> client_lag(LoadResult((r,), origin_unix=0.0), 0.05)[2]
        'client lagged: request 0 was sent 0.2 s late (max_send_lag=0.05 s)'
    """
    send = Lag.of(load.send_lag)
    read = Lag.of(load.read_lag)
    if send.max > max_lag:
        worst = max(load.requests, key=lambda r: r.send_lag)
        return (
            send,
            read,
            (
                f"client lagged: request {worst.request_id} was sent {worst.send_lag:.3g} s late "
                f"(max_send_lag={max_lag:g} s)"
            ),
        )
    if read.max > max_lag:
        return (
            send,
            read,
            (
                f"client lagged: its event loop woke up to {read.max:.3g} s late, so tokens may "
                f"have been stamped that late (max_send_lag={max_lag:g} s)"
            ),
        )
    return send, read, None


def client_health(send: Lag, read: Lag, lagged: str | None, cpus: str | None) -> ClientHealth:
    """The Measurement's summary of the client's lag (and how the cores were split)."""
    return ClientHealth(
        send_lag_p50=max(send.p50, 0.0),
        send_lag_p99=max(send.p99, 0.0),
        send_lag_max=max(send.max, 0.0),
        read_lag_p99=read.p99,
        read_lag_max=read.max,
        lagged=lagged,
        cpus=cpus,
    )
