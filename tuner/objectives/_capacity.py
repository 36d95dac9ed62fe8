"""Capacity: the most load a configuration sustains under the SLOs, and what it costs.

The pure half of a capacity search: its settings, the probe plan (bracket by doubling or
halving from a start, then bisect to ``rel_tol``; pure functions of the outcomes so far) and
the cost figures at the capacity point. The composition layer runs the probes on a backend.

Assumes what queues make true: if the SLOs hold at a rate, they hold at every lower rate.
Rate-independent SLOs (``max_step_tokens``) hold or fail at every rate alike, which the plan
handles: all probes fail (infeasible) or all hold (capacity bounded by ``high``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from tuner.core import Settings, SLOError

#: Figures a capacity search produces (the objective may be any of them).
CAPACITY_METRICS = ("capacity", "throughput_per_gpu", "cost_per_million_tokens")

#: The direction each capacity figure is better in.
CAPACITY_DIRECTIONS = {
    "capacity": "maximize",
    "throughput_per_gpu": "maximize",
    "cost_per_million_tokens": "minimize",
}

CapacityMode = Literal["rate", "concurrency"]


class CapacitySettings(Settings):
    """How a capacity objective searches for each configuration's highest sustainable load.

    Example:
        >>> CapacitySettings(low=1, high=64).rel_tol
        0.02
    """

    _owner = "Objective.capacity"
    _error_class = SLOError

    low: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """The lowest rate to try (requests per second, per step on the unit clock); below it a
    configuration is infeasible. None: halve from the start until the SLOs hold (at most
    ``max_probes``)."""
    high: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """The highest rate to try; a configuration that holds there is reported as ``>= high``
    (flagged, never extrapolated). None: double until an SLO fails."""
    start: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """The first rate probed (default: the workload's own rate, clipped to [low, high])."""
    rel_tol: float = Field(default=0.02, gt=0, lt=1)
    """Bisect until the highest holding and lowest failing rates are this close (relative)."""
    mode: CapacityMode = "rate"
    """``rate``: open-loop arrivals at a mean rate (requests per time unit). ``concurrency``:
    closed loop, the most concurrent users (each sends its next request when its previous one
    finishes)."""
    max_probes: int = Field(default=24, ge=2, le=200)
    """Most probes per configuration (bracketing included)."""
    shortcut: bool = True
    """Probe a configuration first at the best capacity found so far; if it fails there it
    cannot win and stops after that one probe."""
    gpu_hour_price: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Price of one GPU for one hour (for ``cost_per_million_tokens``), in your currency."""

    @model_validator(mode="after")
    def _bounds(self) -> CapacitySettings:
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.mode == "concurrency":
            for name in ("low", "high", "start"):
                v = getattr(self, name)
                if v is not None and (v < 1 or v != int(v)):
                    raise ValueError(
                        f"{name} = {v:g}: in mode 'concurrency' loads are numbers of users, "
                        "whole numbers >= 1"
                    )
        return self

    @property
    def unit(self) -> str:
        """What a load counts: ``"users"`` (concurrency) or ``"req"`` (per time unit)."""
        return "users" if self.mode == "concurrency" else "req"

    def first_rate(self, own_rate: float) -> float:
        """Where the bracket starts: ``start``, else the workload's own rate, within bounds."""
        r = self.start if self.start is not None else own_rate
        if not math.isfinite(r) or r <= 0:
            r = self.low or self.high or 1.0
        if self.low is not None:
            r = max(r, self.low)
        if self.high is not None:
            r = min(r, self.high)
        return r


class RateLattice:
    """The loads a capacity search may probe: ``start * (1 + rel_tol) ** k`` for integers ``k``
    within ``[low, high]``.

    Every configuration of a study is probed on the same lattice, so its capacity -- the
    highest lattice load at which the SLOs hold -- does not depend on the order the search
    visits configurations in, nor on the incumbent it was first probed at (grid, random and
    TPE agree on the same space). Adjacent loads differ by ``rel_tol``: the resolution.

    Example:
        >>> lat = RateLattice(CapacitySettings(rel_tol=0.1), 10.0)
        >>> lat.rate(0), round(lat.rate(2), 6), lat.index(12.1)
        (10.0, 12.1, 2)
    """

    def __init__(self, settings: CapacitySettings, start: float) -> None:
        self.settings = settings
        self.start = start
        self.ratio = 1.0 + settings.rel_tol
        #: Index steps that double (or halve) the load while bracketing.
        self.octave = max(1, round(math.log(2.0) / math.log(self.ratio)))
        self.k_min = math.ceil(self._exact(settings.low) - 1e-9) if settings.low else None
        self.k_max = math.floor(self._exact(settings.high) + 1e-9) if settings.high else None

    def _exact(self, rate: float) -> float:
        return math.log(rate / self.start) / math.log(self.ratio)

    def rate(self, k: int) -> float:
        """The load at index ``k``."""
        return self.start * self.ratio**k

    def index(self, rate: float) -> int:
        """The index of the lattice load nearest ``rate``."""
        return round(self._exact(rate))

    def adjacent(self, low: float, high: float) -> bool:
        """Whether no lattice load lies strictly between the loads ``low`` and ``high`` (the
        boundary is found to the lattice's resolution)."""
        return self.index(high) - self.index(low) <= 1

    def next_index(self, probes: Sequence[tuple[int, bool]]) -> int | None:
        """The next index to probe given the ``(index, held)`` outcomes so far, or None when
        the boundary is found (adjacent indices), a bound is reached or ``max_probes`` spent.

        Bracketing doubles up from the highest holding load (or halves down from the lowest
        failing one), then bisects the index interval.

        Example:
            >>> lat = RateLattice(CapacitySettings(rel_tol=0.1), 10.0)
            >>> lat.octave, lat.next_index([]), lat.next_index([(0, True)])
            (7, 0, 7)
            >>> lat.next_index([(0, True), (7, False)]), lat.next_index([(0, False)])
            (3, -7)
        """
        if not probes:
            return 0 if self.k_max is None or self.k_max >= 0 else self.k_max
        if len(probes) >= self.settings.max_probes:
            return None
        held = [k for k, ok in probes if ok]
        lo = max(held) if held else None
        failed = [k for k, ok in probes if not ok and (lo is None or k > lo)]
        hi = min(failed) if failed else None
        if lo is None:  # nothing holds yet: halve, down to low
            top = hi if hi is not None else 0
            if self.k_min is not None and top <= self.k_min:
                return None
            k = top - self.octave
            return max(k, self.k_min) if self.k_min is not None else k
        if hi is None:  # everything holds so far: double, up to high
            if self.k_max is not None and lo >= self.k_max:
                return None
            k = lo + self.octave
            return min(k, self.k_max) if self.k_max is not None else k
        if hi - lo <= 1:
            return None
        return (lo + hi) // 2


class UserLattice(RateLattice):
    """The loads of a capacity search in users (``mode="concurrency"``): the rate lattice
    rounded to whole users and deduplicated, ``max(1, round(start * (1 + rel_tol) ** k))``.
    Every number of users up to about ``1 / rel_tol`` is on it, and above that one every
    ``rel_tol`` step. An index *is* a number of users; bracketing doubles (or halves) it,
    bisection takes the middle lattice point, until the holding and failing loads are adjacent
    on the lattice. Shared by every configuration like :class:`RateLattice`, so grid, random
    and TPE find the same capacities.

    Example:
        >>> lat = UserLattice(CapacitySettings(mode="concurrency", rel_tol=0.2), 1)
        >>> lat.points(1, 12)
        [1, 2, 3, 4, 5, 6, 7, 9, 11]
        >>> lat.next_index([]), lat.next_index([(1, True)]), lat.next_index([(1, True), (2, True)])
        (1, 2, 4)
        >>> lat.next_index([(4, True), (13, False)]), lat.next_index([(9, True), (11, False)])
        (7, None)
    """

    def __init__(self, settings: CapacitySettings, start: float) -> None:
        super().__init__(settings, float(max(1, round(start))))
        low = max(1.0, settings.low or 1.0)
        self.floor = self._snap_up(low)
        self.ceiling = None if settings.high is None else self._snap_down(settings.high)

    def points(self, a: float, b: float) -> list[int]:
        """The lattice's numbers of users in ``[a, b]``, ascending."""
        if b < max(a, 1):
            return []
        lo = math.floor(self._exact(max(a, 0.5))) - 2
        hi = math.ceil(self._exact(b + 0.5)) + 2
        got = {max(1, round(self.start * self.ratio**k)) for k in range(lo, hi + 1)}
        if a <= 1:
            got.add(1)
        return sorted(u for u in got if a <= u <= b)

    def rate(self, k: int) -> float:
        """The load at index ``k``: ``k`` users."""
        return float(k)

    def _snap_up(self, x: float) -> int:
        """The smallest lattice point >= ``x``."""
        span = max(x * 2 * self.ratio, x + 2)
        while True:
            pts = self.points(x, span)
            if pts:
                return pts[0]
            span *= 2

    def _snap_down(self, x: float) -> int | None:
        """The largest lattice point <= ``x`` (None below 1)."""
        pts = self.points(max(1.0, x / (2 * self.ratio) - 1), x)
        return pts[-1] if pts else None

    def index(self, rate: float) -> int:
        """The lattice point nearest ``rate`` users (an incumbent's capacity is one)."""
        below, above = self._snap_down(rate), self._snap_up(max(rate, 1.0))
        if below is None:
            return above
        return below if rate - below <= above - rate else above

    def adjacent(self, low: float, high: float) -> bool:
        return not self.points(math.floor(low) + 1, math.ceil(high) - 1)

    def next_index(self, probes: Sequence[tuple[int, bool]]) -> int | None:
        """The next number of users to probe given the ``(users, held)`` outcomes so far (see
        :meth:`RateLattice.next_index`)."""
        ceiling = self.ceiling
        if not probes:
            s = max(int(self.start), self.floor)
            return s if ceiling is None else min(s, ceiling)
        if len(probes) >= self.settings.max_probes:
            return None
        held = [k for k, ok in probes if ok]
        lo = max(held) if held else None
        failed = [k for k, ok in probes if not ok and (lo is None or k > lo)]
        hi = min(failed) if failed else None
        if lo is None:  # nothing holds yet: halve, down to low
            top = hi if hi is not None else int(self.start)
            if top <= self.floor:
                return None
            down = self._snap_down(top / 2)
            if down is None or down >= top:
                down = self.points(1, top - 1)[-1]
            return max(down, self.floor)
        if hi is None:  # everything holds so far: double, up to high
            if ceiling is not None and lo >= ceiling:
                return None
            up = self._snap_up(2 * lo)
            return up if ceiling is None else min(up, ceiling)
        inside = self.points(lo + 1, hi - 1)
        return inside[len(inside) // 2] if inside else None


def load_lattice(settings: CapacitySettings, start: float) -> RateLattice:
    """The lattice of a capacity search: rates, or users in mode ``concurrency``."""
    return (
        UserLattice(settings, start)
        if settings.mode == "concurrency"
        else RateLattice(settings, start)
    )


def throughput_per_gpu(output_throughput: float, gpus: int) -> float:
    """Output tokens per time unit per GPU at the capacity point."""
    return output_throughput / gpus


def cost_per_million_tokens(output_throughput: float, gpus: int, gpu_hour_price: float) -> float:
    """What a million output tokens cost at this throughput (tokens per second) on ``gpus``
    GPUs at ``gpu_hour_price`` each.

    Example:
        >>> round(cost_per_million_tokens(1000.0, 1, 3.6), 6)  # 3.6e6 tokens an hour for 3.6
        1.0
    """
    if output_throughput <= 0:
        return math.inf
    return gpu_hour_price * gpus / 3600.0 / output_throughput * 1e6
