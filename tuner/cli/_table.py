"""Plain-text tables for the terminal (no dependency)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tuner.core import SearchSpace, Trial
from tuner.report import with_unit


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned text, right-aligned numbers, one header rule."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    numeric = [
        all(isinstance(row[i], (int, float)) for row in rows) if rows else False
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)


def trial_table(
    trials: Sequence[Trial], space: SearchSpace, metrics: Sequence[str], time_unit: str = "s"
) -> str:
    """One row per trial: the knobs that vary, the chosen metrics (each header with its unit:
    ``ttft.p99 (s)``), feasibility or failure."""
    knobs = list(space.dimensions)
    headers = ["#", *knobs, *(with_unit(m, time_unit) for m in metrics), "feasible"]
    rows: list[list[object]] = []
    for t in trials:
        point = space.point(t.config)
        rows.append(
            [
                t.number,
                *(point[k] for k in knobs),
                *(t.values.get(m, math.nan) for m in metrics),
                t.verdict(60),
            ]
        )
    return format_table(headers, rows)
