"""When requests reach the engine: the one arrival rule of every step-level backend (the
simulator and the scheduler replay), open and closed loop."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable

from tuner.core import BackendError, Workload

__all__ = ["Arrivals"]


class Arrivals:
    """When requests reach the scheduler: open loop, at their arrival times; closed loop, a
    user's first request at its arrival and each next one ``think_time`` after the previous
    one's last token (the simulator's rule, :mod:`tuner.backends.simulator._engine`). Due
    requests come in order of arrival, then request id."""

    def __init__(self, workload: Workload) -> None:
        arrival = workload.arrival.tolist()
        self.successor: list[int] = []
        self.think: list[float] = []
        if workload.think_time is not None:
            self.successor = [-1] * len(arrival)
            seqs = workload.user_sequences
            for ids in seqs:
                for a, b in itertools.pairwise(ids):
                    self.successor[a] = b
            firsts = [ids[0] for ids in seqs]
            self.think = workload.think_time.tolist()
        else:
            firsts = list(range(len(arrival)))
        self.heap = [(arrival[i], i) for i in firsts]
        heapq.heapify(self.heap)
        self.left = len(arrival)

    @property
    def exhausted(self) -> bool:
        """Whether every request has arrived."""
        return self.left == 0

    def next_time(self) -> float | None:
        """When the next request is due; None when none is (closed loop: every user left waits
        for a request of its own in flight)."""
        return float(self.heap[0][0]) if self.heap else None

    def first_time(self) -> float:
        """When the first request is due (an idle engine waits for the next one likewise)."""
        t = self.next_time()
        if t is None:
            raise BackendError("no request is due while the engine is idle (a lost user)")
        return t

    def pop_until(self, now: float) -> list[tuple[int, float]]:
        """The requests due by ``now`` and their arrival times, in order."""
        out = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            t, i = heapq.heappop(heap)
            out.append((i, t))
        self.left -= len(out)
        return out

    def finished(self, ids: Iterable[int], end: float) -> None:
        """``ids`` got their last token at ``end``: their users' next requests are due a think
        time later."""
        for i in ids:
            j = self.successor[i] if self.successor else -1
            if j >= 0:
                heapq.heappush(self.heap, (end + self.think[j], j))
