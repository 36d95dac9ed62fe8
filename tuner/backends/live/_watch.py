"""What the load client watches while it replays: its own lateness, the server's progress (a
stall) and the SLOs (an early abort).

:class:`Watch` is the replay's shared state: the requests outstanding, when each was sent, the
last sign of progress. Its :meth:`Watch.monitor` task samples every 5 ms how late the event
loop woke up (the client's read lag), cuts the load when the server sends no token for
``stall_timeout`` seconds with requests outstanding, and every 0.25 s -- and when a request
ends, at most every 20 ms -- asks the Loop's :class:`~tuner.objectives.AbortRule` whether an SLO
is already provably lost (:meth:`Watch.partial` is what it is shown). Either way the load is
cut: no more sends, what is in flight cancelled (the server aborts a request whose client hung
up), and :attr:`Watch.cut` says why.

The partial run is sound for latencies timed from each request's send (as the client times
them): a sent request's clock starts at its send, and one not sent yet is shown as arriving no
earlier than ``now``, so that a client running late never makes a request look slower than the
server made it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import numpy as np

from tuner.backends.live._stream import Progress
from tuner.objectives import AbortRule, PartialRun

TICK = 0.005  # the event-loop monitor's period (seconds)
ABORT_EVERY = 0.25  # how often the abort rule is asked (seconds)
ABORT_MIN_GAP = 0.02  # the least time between two checks prompted by ended requests


class Watch:
    """The replay's shared state and its watchdog.

    Args:
        progress: Each request's stream so far (workload order).
        now: The replay's clock (seconds since its origin, the first scheduled send).
        scheduled: When each request is due (open loop: its arrival less the first).
        output_tokens: How many tokens each request asks for.
        abort: The rule that says when an SLO is lost (None: never abort).
    """

    def __init__(
        self,
        progress: list[Progress],
        now: Callable[[], float],
        scheduled: Sequence[float] = (),
        output_tokens: Sequence[int] = (),
        abort: AbortRule | None = None,
    ) -> None:
        self.progress = progress
        self.now = now
        self.outstanding: set[int] = set()
        self.last_activity = 0.0
        self.read_lag: list[float] = []
        self.scheduled = np.asarray(scheduled, dtype=np.float64)
        self.output_tokens = np.asarray(output_tokens, dtype=np.float64)
        self.sent = np.full(len(self.scheduled), np.nan)
        self.failed = np.zeros(len(self.scheduled))
        self.abort = abort if abort is not None and abort.can_abort else None
        #: Why the server counted as stalled (None: it did not).
        self.stalled: str | None = None
        #: The SLO lost, as ``"aborted at 41.2 s: ttft.p99 <= 2s lost (...)"`` (None: not).
        self.aborted: str | None = None
        #: When the abort was decided (seconds on the replay's clock).
        self.aborted_at: float | None = None
        self._stop: Callable[[], None] = lambda: None
        self._last_check = -math.inf

    @property
    def cut(self) -> str | None:
        """Why the load was cut short (a stall or an abort; None while it was not)."""
        return self.stalled or self.aborted

    def started(self, i: int) -> None:
        t = self.now()
        if not self.outstanding:
            self.last_activity = t
        self.outstanding.add(i)
        if i < len(self.sent):
            self.sent[i] = t

    def ended(self, i: int, failed: bool = False) -> None:
        self.outstanding.discard(i)
        self.last_activity = self.now()
        if i < len(self.failed) and failed:
            self.failed[i] = 1.0
        if self.abort is not None and self.last_activity - self._last_check >= ABORT_MIN_GAP:
            self.check_abort()

    def last_progress(self) -> float:
        last = [self.progress[i].times[-1] for i in self.outstanding if self.progress[i].times]
        return max([self.last_activity, *last])

    def partial(self, now: float) -> PartialRun:
        """What has been observed by ``now`` (seconds on the replay's clock), on a clock where
        every request arrives when it was sent (one not sent yet: at its schedule, or ``now``
        if that has passed)."""
        arrival = np.where(np.isnan(self.sent), np.maximum(self.scheduled, now), self.sent)
        n = len(arrival)
        first, last, tokens = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n)
        for i, p in enumerate(self.progress):
            times = p.times
            if times:
                first[i], last[i], tokens[i] = times[0], times[-1], len(times)
        return PartialRun(
            now=now,
            arrival=arrival,
            output_tokens=self.output_tokens,
            first_token=first,
            last_token=last,
            tokens=tokens,
            failed=self.failed,
        )

    def check_abort(self) -> str | None:
        """Ask the abort rule about the run so far; once it says lost, cut the load."""
        if self.abort is None or self.cut is not None:
            return self.aborted
        t = self.now()
        self._last_check = t
        lost = self.abort.lost(self.partial(t))
        if lost is not None:
            self.aborted, self.aborted_at = f"aborted at {t:.1f} s: {lost}", t
            self._stop()
        return self.aborted

    async def monitor(self, stall_timeout: float | None, stop: Callable[[], None]) -> None:
        """Sample the loop's lateness; on a stall or a lost SLO, record why and call ``stop``."""
        self._stop = stop
        expected = self.now() + TICK
        next_check = self.now() + ABORT_EVERY
        while True:
            await asyncio.sleep(TICK)
            t = self.now()
            self.read_lag.append(max(0.0, t - expected))
            expected = t + TICK
            if self.cut is not None:
                continue
            if self.abort is not None and t >= next_check:
                next_check = t + ABORT_EVERY
                if self.check_abort() is not None:
                    continue
            if stall_timeout is None or not self.outstanding:
                continue
            if t - self.last_progress() >= stall_timeout:
                self.stalled = (
                    f"stalled: no token for {stall_timeout:g} s with "
                    f"{len(self.outstanding)} requests outstanding"
                )
                stop()
