"""The report's figures, written as PNG files."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuner.core import Measurement, SLOResult, Trial
from tuner.objectives import SLO, Objective
from tuner.report._pareto import pareto_front
from tuner.report._plots import pyplot
from tuner.report._units import unit_of, with_unit


def tradeoff(
    trials: Sequence[Trial],
    objective: Objective,
    slo: SLO,
    path: Path,
    best: Trial | None,
    time_unit: str = "s",
) -> Path | None:
    """Objective against the binding SLO's metric: feasible, infeasible and Pareto points."""
    pts = [
        (t, t.values.get(slo.metric, math.nan), t.values.get(objective.metric, math.nan))
        for t in trials
        if t.ok and t.fidelity == 1.0
    ]
    pts = [(t, x, y) for t, x, y in pts if math.isfinite(x) and math.isfinite(y)]
    if len({(x, y) for _, x, y in pts}) < 2:
        return None  # one point shows no trade-off
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    feas = [(x, y) for t, x, y in pts if t.feasible]
    infeas = [(x, y) for t, x, y in pts if not t.feasible]
    if infeas:
        ax.scatter(*zip(*infeas, strict=True), c="#bbbbbb", s=18, label="infeasible")
    if feas:
        ax.scatter(*zip(*feas, strict=True), c="#2a7ab9", s=22, label="feasible", zorder=4)
    if feas:  # the trade-off among configurations that keep every promise
        idx = pareto_front(
            feas, maximize_y=objective.direction == "maximize", minimize_x=slo.op in ("<=", "<")
        )
        fp = sorted(feas[i] for i in idx)
        ax.plot(
            *zip(*fp, strict=True),
            c="#e08a1e",
            lw=1.2,
            marker="D",
            ms=7,
            mfc="none",
            label="Pareto (feasible)",
            zorder=3,
        )
    if best is not None and slo.metric in best.values and objective.metric in best.values:
        ax.scatter(
            [best.values[slo.metric]],
            [best.values[objective.metric]],
            marker="*",
            s=220,
            c="#d62728",
            zorder=5,
            label="chosen",
        )
    ax.axvline(slo.limit, color="crimson", ls="--", lw=1, label=f"SLO {slo.text}")
    ax.set_xlabel(with_unit(slo.metric, time_unit))
    ax.set_ylabel(with_unit(objective.metric, time_unit))
    if unit_of(slo.metric, time_unit) == "s":
        from matplotlib import ticker

        ax.xaxis.set_major_formatter(ticker.FuncFormatter(_seconds))
        ax.set_xlabel(slo.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{objective.metric} vs {slo.metric} (binding SLO)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def step_timeline(
    timelines: Mapping[str, Measurement], path: Path, window: int = 400
) -> Path | None:
    """Tokens per step for the winner and vLLM's defaults, over the same stretch of the run
    (``window`` steps from the middle, where load is steady): spikes are ITL stalls."""
    usable = {k: m for k, m in timelines.items() if m.step_tokens is not None}
    if not usable:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(
        len(usable),
        1,
        figsize=(8, 2.2 * len(usable) + 0.6),
        dpi=120,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    first = next(iter(usable.values()))
    unit = "steps" if first.time_unit == "step" else "s"
    t_mid = float(np.median(first.step_start)) if first.step_start is not None else 0.0
    for ax, (label, m) in zip(axes[:, 0], usable.items(), strict=True):
        tokens = np.asarray(m.step_tokens)
        start = m.step_start if m.step_start is not None else np.arange(m.total_steps, dtype=float)
        i0 = int(np.searchsorted(start, t_mid))
        lo, hi = max(0, i0 - window // 2), min(m.total_steps, i0 + window // 2)
        ax.step(start[lo:hi], tokens[lo:hi], where="post", lw=0.8, c="#2a7ab9")
        ax.set_ylabel("tokens/step")
        ax.set_title(
            f"{label}: max {m.max_step_tokens} tokens in a step over the run, "
            f"{m.total_steps} steps",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(f"time ({unit}), {window} steps around the middle of the run")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def hockey_stick(curves: Mapping[str, Trial], rate_unit: str, path: Path) -> Path | None:
    """The hockey stick: how close each configuration's SLOs are to their limits as the offered
    load grows, from its capacity probes. At each load the y value is the binding SLO's
    ``value / limit`` (the largest over the SLOs; above 1 an SLO is missed), so configurations
    bound by different SLOs share one picture."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.4), dpi=120)
    drawn = 0
    for label, t in curves.items():
        pts = sorted((p.rate, _worst_ratio(p.slo_results)) for p in t.load_points)
        pts = [(x, y) for x, y in pts if math.isfinite(y) and y > 0]
        if not pts:
            continue
        drawn += 1
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1.2, label=label)
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(1.0, color="crimson", ls="--", lw=1, label="SLO limit")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax.xaxis)
    _plain_ticks(ax.yaxis)
    ax.set_xlabel(f"offered load ({rate_unit})")
    ax.set_ylabel("binding SLO: value / limit")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("Latency against offered load (the hockey stick)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _worst_ratio(results: Sequence[SLOResult]) -> float:
    """The largest ``value / limit`` over upper-bound SLOs (``limit / value`` for lower ones)."""
    ratios = []
    for r in results:
        upper = r.margin == r.limit - r.value if math.isfinite(r.value) else True
        if not math.isfinite(r.value) or r.limit == 0:
            continue
        ratios.append(r.value / r.limit if upper else r.limit / max(r.value, 1e-300))
    return max(ratios, default=math.nan)


def latency_cdfs(
    panels: Sequence[tuple[str, Sequence[SLO], Mapping[str, tuple[np.ndarray, np.ndarray | None]]]],
    unit: str,
    path: Path,
) -> Path | None:
    """One panel per distribution an SLO is on (``ttft``, ``itl``, ...): the empirical CDF of
    each configuration's samples (``(values, counts)``: counts are multiplicities, ITL's runs),
    and the SLO limits as dashed lines. A log axis when every sample is positive."""
    drawn = [p for p in panels if any(len(_finite(v, c)[0]) for v, c in p[2].values())]
    if not drawn:
        return None
    plt = pyplot()
    from matplotlib import ticker

    fig, axes = plt.subplots(
        1, len(drawn), figsize=(4.2 * len(drawn) + 0.6, 3.6), dpi=110, squeeze=False
    )
    colours = ("#2a7ab9", "#d62728", "#7f7f7f")
    for ax, (name, slos, curves) in zip(axes[0], drawn, strict=True):
        positive = True
        for (label, (values, counts)), colour in zip(curves.items(), colours, strict=False):
            v, c = _finite(values, counts)
            if not len(v):
                continue
            order = np.argsort(v, kind="stable")
            v, c = v[order], c[order]
            positive &= bool(v[0] > 0)
            ax.step(v, np.cumsum(c) / c.sum(), where="post", lw=1.4, c=colour, label=label)
        for slo in slos:
            ax.axvline(slo.limit, color="#444444", ls="--", lw=0.9, label=f"SLO {slo.text}")
            q = _quantile(slo.metric)
            if q is not None:
                ax.axhline(q, color="#999999", ls=":", lw=0.9)
        if positive:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if unit == "s":
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(_seconds))
        ax.set_xlabel(name if unit == "s" else f"{name} ({unit})")
        ax.set_ylabel("fraction of samples at or below")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"{name}: distribution", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _finite(values: np.ndarray, counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    c = np.ones(len(v), dtype=np.int64) if counts is None else np.asarray(counts, np.int64)
    keep = np.isfinite(v) & (c > 0)
    return v[keep], c[keep]


def _quantile(metric: str) -> float | None:
    """``ttft.p99`` -> 0.99 (where the SLO's percentile sits on a CDF); None for others."""
    stat = metric.partition(".")[2]
    if stat == "median":
        return 0.5
    try:
        return float(stat[1:]) / 100 if stat.startswith("p") else None
    except ValueError:
        return None


def _seconds(v: float, _pos: int | None = None) -> str:
    """An axis tick in seconds, read as a person would: ``20 ms``, ``1.5 s``."""
    if v == 0:
        return "0"
    return f"{v * 1e3:.3g} ms" if abs(v) < 1 else f"{v:.3g} s"


def _plain_ticks(axis: Any) -> None:
    """Ticks on a log axis at 1, 2, 3, 5 and 7 of each decade, written as plain numbers (``20``,
    ``0.5``), not as powers of ten."""
    from matplotlib import ticker

    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())
