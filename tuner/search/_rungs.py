"""Successive-halving rung arithmetic: pure functions of a few integers and floats.

A *rung* is one round of successive halving: every candidate in it runs at the rung's fidelity
(the fraction of the workload), then the top ``1 / eta`` move up to the next rung. The last rung
always runs at fidelity 1.0, so a search built on these rungs ends with full-workload trials.

Example:
    >>> rung_fidelities(0.1, 3)
    (0.1111111111111111, 0.3333333333333333, 1.0)
    >>> rung_sizes(27, 3, 3)
    (27, 9, 3)
    >>> rung_cost(rung_sizes(27, 3, 3), rung_fidelities(0.1, 3))
    9.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tuner.core import SearchError

#: Slack for float round-off when checking ``eta ** k * min_fidelity <= 1``.
_EPS = 1e-9


def check_eta(eta: object) -> int:
    """``eta`` as an int >= 2, or :class:`SearchError` naming the value."""
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise SearchError(f"eta = {eta!r}: must be an integer >= 2 (the reduction factor)")
    return eta


def check_min_fidelity(min_fidelity: object) -> float:
    """``min_fidelity`` as a float in (0, 1], or :class:`SearchError` naming the value."""
    if (
        isinstance(min_fidelity, bool)
        or not isinstance(min_fidelity, (int, float))
        or not 0 < min_fidelity <= 1
    ):
        raise SearchError(
            f"min_fidelity = {min_fidelity!r}: must be a number in (0, 1] "
            "(the fraction of the workload the first rung runs)"
        )
    return float(min_fidelity)


def n_rungs(min_fidelity: float, eta: int) -> int:
    """How many rungs fit between ``min_fidelity`` and 1: the largest ``r`` with
    ``min_fidelity * eta ** (r - 1) <= 1``.

    Example:
        >>> n_rungs(1.0, 3), n_rungs(0.5, 3), n_rungs(1 / 9, 3), n_rungs(0.1, 3)
        (1, 1, 3, 3)
    """
    min_fidelity = check_min_fidelity(min_fidelity)
    eta = check_eta(eta)
    r = 1
    while min_fidelity * eta**r <= 1 + _EPS:
        r += 1
    return r


def rung_fidelities(min_fidelity: float, eta: int) -> tuple[float, ...]:
    """The fidelity of each rung: ``eta ** -(R - 1 - i)`` for rung ``i`` of ``R``.

    Increasing by a factor ``eta``, the first one >= ``min_fidelity`` (within round-off), the
    last one exactly 1.0.

    Example:
        >>> rung_fidelities(0.25, 2)
        (0.25, 0.5, 1.0)
    """
    r = n_rungs(min_fidelity, eta)
    return tuple(1.0 / eta ** (r - 1 - i) for i in range(r))


def n_promoted(n: int, eta: int, min_promote: int = 1) -> int:
    """How many of the ``n`` candidates of a rung move up: ``n // eta``, but at least
    ``min_promote`` and at most ``n``.

    Example:
        >>> n_promoted(27, 3), n_promoted(2, 3), n_promoted(2, 3, min_promote=5), n_promoted(0, 3)
        (9, 1, 2, 0)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SearchError(f"n = {n!r}: must be an integer >= 0 (candidates in the rung)")
    eta = check_eta(eta)
    check_min_promote(min_promote)
    return min(n, max(min_promote, n // eta))


def check_min_promote(min_promote: object) -> int:
    """``min_promote`` as an int >= 1, or :class:`SearchError` naming the value."""
    if isinstance(min_promote, bool) or not isinstance(min_promote, int) or min_promote < 1:
        raise SearchError(
            f"min_promote = {min_promote!r}: must be an integer >= 1 "
            "(the fewest candidates promoted from a rung)"
        )
    return min_promote


def rung_sizes(n_configs: int, rungs: int, eta: int, min_promote: int = 1) -> tuple[int, ...]:
    """How many candidates each of ``rungs`` rungs holds when ``n_configs`` start in the first.

    Example:
        >>> rung_sizes(10, 3, 3), rung_sizes(10, 3, 3, min_promote=2)
        ((10, 3, 1), (10, 3, 2))
    """
    if isinstance(rungs, bool) or not isinstance(rungs, int) or rungs < 1:
        raise SearchError(f"rungs = {rungs!r}: must be an integer >= 1")
    sizes = [n_configs]
    for _ in range(rungs - 1):
        sizes.append(n_promoted(sizes[-1], eta, min_promote))
    return tuple(sizes)


def rung_cost(sizes: Sequence[int], fidelities: Sequence[float]) -> float:
    """Total evaluated cost in full-workload units: ``sum(size * fidelity)`` over the rungs.

    Example:
        >>> rung_cost((9, 3, 1), (1 / 9, 1 / 3, 1.0))
        3.0
    """
    if len(sizes) != len(fidelities):
        raise SearchError(
            f"rung_cost: {len(sizes)} sizes but {len(fidelities)} fidelities; need one each"
        )
    return math.fsum(s * f for s, f in zip(sizes, fidelities, strict=True))
