"""Studies built on the Loop and the backends: capacity (and, later, two-tier tuning)."""

from tuner.studies._capacity import (
    CapacityResult,
    LoadPoint,
    find_capacity,
    load_sweep,
)
from tuner.studies._plots import plot_load_curves

__all__ = ["CapacityResult", "LoadPoint", "find_capacity", "load_sweep", "plot_load_curves"]
