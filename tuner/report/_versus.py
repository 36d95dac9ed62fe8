"""The report's section on the winner against vLLM's defaults: the SLO metrics' distributions
side by side (p50/p90/p99/max, the SLO's own figure, whether it holds) and their CDFs, from
the two measurements of :attr:`StudyOutcome.versus_defaults` -- or why the study has none."""

from __future__ import annotations

import numpy as np

from tuner.core import Measurement
from tuner.objectives import SLO, MetricRef
from tuner.report import _figures
from tuner.report._document import Block, Heading, Image, Para, Table
from tuner.report._units import quantity, unit_of
from tuner.studies import StudyOutcome

#: The statistics shown for each SLO metric's distribution.
STATS = ("p50", "p90", "p99", "max")
#: The section's heading (tests and the browser check look for it).
HEADING = "The winner against vLLM's defaults"
WINNER, DEFAULTS = "winner", "vLLM's defaults"


def samples(m: Measurement, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A distribution's samples on a measurement: ``(values, counts)`` (counts: ITL's runs)."""
    if name == "itl":
        return np.asarray(m.itl_values), np.asarray(m.itl_counts)
    if name == "ttft_steps":
        steps = m.ttft_steps
        return np.asarray(steps if steps is not None else [], dtype=np.float64), None
    return np.asarray(getattr(m, name), dtype=np.float64), None


def versus_blocks(o: StudyOutcome) -> list[Block]:
    """The section (nothing without a winner, e.g. infeasible or interrupted)."""
    vs = o.versus_defaults
    if vs is None:
        return []
    out: list[Block] = [Heading(HEADING)]
    if vs.same:
        return [*out, Para("The winner is vLLM's defaults on this target: nothing to compare.")]
    if vs.winner is None or vs.defaults is None:
        why = vs.missing or "this study did not measure vLLM's defaults"
        return [*out, Para(why[0].upper() + why[1:] + ".", strong=True)]
    pair = {WINNER: vs.winner, DEFAULTS: vs.defaults}
    defaults = o.baseline_config()
    knobs = ", ".join(f"{k} {getattr(defaults, k)}" for k in o.space.dimensions)
    out.append(
        Para(
            f"vLLM's defaults on {o.target.describe()} for the searched knobs ({knobs}); "
            f"{vs.how}. Each SLO metric's distribution, per request (ITL: per token gap):"
        )
    )
    if not o.slos:
        return [*out, Para("The study has no SLOs: there are no SLO metrics to compare.")]
    out.append(Para(_verdict(o.slos, pair, o.time_unit), strong=True))
    out.append(_table(o.slos, pair, o.time_unit))
    panels = []
    for name in dict.fromkeys(s.ref.name for s in o.slos if s.ref.stat is not None):
        on = [s for s in o.slos if s.ref.name == name]
        panels.append((name, on, {k: samples(m, name) for k, m in pair.items()}))
    unit = unit_of(f"{panels[0][0]}.max", o.time_unit) if panels else ""
    png = _figures.latency_cdfs(panels, unit, o.folder / "versus_defaults.png") if panels else None
    if png is not None:
        out.append(Image(png, "latency distributions: winner against vLLM's defaults"))
    return out


def _table(slos: tuple[SLO, ...], pair: dict[str, Measurement], time_unit: str) -> Table:
    rows = []
    for slo in slos:
        ref, unit = slo.ref, unit_of(slo.metric, time_unit)
        for i, (who, m) in enumerate(pair.items()):
            value = slo.value(m)
            stats = (
                [quantity(MetricRef(ref.name, s).value(m), unit) for s in STATS]
                if ref.stat is not None
                else ["-"] * len(STATS)
            )
            rows.append(
                [
                    slo.text if i == 0 else "",
                    who,
                    *stats,
                    quantity(value, unit),
                    "yes" if slo.satisfied_by(value) else "**no**",
                ]
            )
    return Table(["SLO", "configuration", *STATS, "SLO figure", "holds"], rows)


def _verdict(slos: tuple[SLO, ...], pair: dict[str, Measurement], time_unit: str) -> str:
    """One sentence: which SLOs each side misses on this workload."""
    parts = []
    for who, m in pair.items():
        keep, miss = ("keeps", "misses") if who == WINNER else ("keep", "miss")
        bad = [s for s in slos if not s.satisfied_by(s.value(m))]
        shown = ", ".join(
            f"{s.text} ({quantity(s.value(m), unit_of(s.metric, time_unit))})" for s in bad
        )
        parts.append(f"{who} {miss} {shown}" if bad else f"{who} {keep} every SLO")
    return "On this workload the " + "; ".join(parts) + "."
