"""Pareto fronts of two figures (pure)."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(
    points: Sequence[tuple[float, float]], *, maximize_y: bool = True, minimize_x: bool = True
) -> list[int]:
    """Indices of the points no other point beats on both axes (ties do not dominate).

    Example:
        >>> pareto_front([(1, 1), (2, 3), (3, 2), (2, 2)])  # x: latency (min), y: throughput
        [0, 1]
    """
    sx = 1.0 if minimize_x else -1.0
    sy = -1.0 if maximize_y else 1.0
    norm = [(sx * x, sy * y) for x, y in points]  # both smaller-is-better now
    front = []
    for i, (x, y) in enumerate(norm):
        dominated = any(
            (ox <= x and oy <= y) and (ox < x or oy < y)
            for j, (ox, oy) in enumerate(norm)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front
