"""Plots written to PNG files (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tuner.core import ConfigError, ServingConfig


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is a dependency
        raise ConfigError(f"plotting needs matplotlib: pip install matplotlib ({e})") from e
    return plt


def legend_label(knobs: str) -> str:
    """A legend entry of at most about 64 characters: whole knobs, never a name cut in two (a
    longer one leaves no room for the axes)."""
    if len(knobs) <= 64:
        return knobs
    cut = knobs.rfind(", ", 0, 60)
    return knobs[: cut if cut > 0 else 60] + ", ..."


def plot_load_curves(
    curves: Mapping[ServingConfig, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    metric: str,
    base: ServingConfig | None = None,
    limit: float | None = None,
    unit: str = "s",
    rate_unit: str = "req/s",
) -> Path:
    """A latency metric against offered load, one line per configuration (the hockey stick);
    ``limit`` draws the SLO as a horizontal line. Returns the PNG's path."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for cfg, pts in curves.items():
        xs, ys = zip(*pts, strict=True) if pts else ((), ())
        label = cfg.describe(base).removeprefix("ServingConfig(").removesuffix(")") or "base"
        ax.plot(xs, ys, marker="o", markersize=3, label=legend_label(label))
    if limit is not None:
        ax.axhline(
            limit, color="crimson", linestyle="--", linewidth=1, label=f"SLO {limit:g}{unit}"
        )
    ax.set_xlabel(f"offered load ({rate_unit})")
    ax.set_ylabel(f"{metric} ({unit})")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{metric} vs offered load")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
