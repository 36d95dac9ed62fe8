"""Studies: a whole tuning study from a validated spec (the one composition root every CLI
command runs through), capacity and two-tier tuning."""

from tuner.studies._capacity import CapacityResult, find_capacity, load_sweep
from tuner.studies._deployment import build_deployment
from tuner.studies._measurements import SavedRun, load_measurements, save_measurement
from tuner.studies._outcome import StudyOutcome
from tuner.studies._run import (
    build_backend,
    build_space,
    build_workload,
    planned_trials,
    run_study,
)
from tuner.studies._spec import StudySpec, build_spec, load_study
from tuner.studies._two_tier import Comparison, TwoTierResult, shortlist, two_tier
from tuner.studies._workload_spec import Arrivals, ClosedLoop

__all__ = [
    "Arrivals",
    "CapacityResult",
    "ClosedLoop",
    "Comparison",
    "SavedRun",
    "StudyOutcome",
    "StudySpec",
    "TwoTierResult",
    "build_backend",
    "build_deployment",
    "build_space",
    "build_spec",
    "build_workload",
    "find_capacity",
    "load_measurements",
    "load_study",
    "load_sweep",
    "planned_trials",
    "run_study",
    "save_measurement",
    "shortlist",
    "two_tier",
]
