"""Studies built on the Loop and the backends: capacity and two-tier tuning."""

from tuner.studies._capacity import (
    CapacityResult,
    LoadPoint,
    find_capacity,
    load_sweep,
)
from tuner.studies._plots import plot_load_curves
from tuner.studies._two_tier import Comparison, TwoTierResult, shortlist, two_tier

__all__ = [
    "CapacityResult",
    "Comparison",
    "LoadPoint",
    "TwoTierResult",
    "find_capacity",
    "load_sweep",
    "plot_load_curves",
    "shortlist",
    "two_tier",
]
