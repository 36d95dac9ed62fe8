"""The composition layer: the Loop that joins a backend, a search and the objectives, the one
record of what a run measured, and the trial log that makes a run resumable."""

from tuner.tuning._budget import Budget
from tuner.tuning._capacity import WorkloadAt, capacity_trial, gpus_of, offered_load
from tuner.tuning._log import TrialLog, fingerprint
from tuner.tuning._loop import HEADLINE_METRICS, Loop
from tuner.tuning._record import TrialRecord
from tuner.tuning._repeats import NoisePool, Repeats
from tuner.tuning._result import Exploration, TuningResult

__all__ = [
    "HEADLINE_METRICS",
    "Budget",
    "Exploration",
    "Loop",
    "NoisePool",
    "Repeats",
    "TrialLog",
    "TrialRecord",
    "TuningResult",
    "WorkloadAt",
    "capacity_trial",
    "fingerprint",
    "gpus_of",
    "offered_load",
]
