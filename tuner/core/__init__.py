"""Core: data models, the search space, trials, the Loop and the error tree."""

from tuner.core._arrivals import Empirical, Fixed, LengthDistribution, LogNormal, Uniform
from tuner.core._config import KNOBS, VLLM_VERSION, ServingConfig
from tuner.core._errors import (
    BackendError,
    ConfigError,
    InfeasibleError,
    SearchError,
    ServerStartError,
    SLOError,
    SLOShortfall,
    TrialTimeout,
    TunerError,
    WorkloadError,
)
from tuner.core._loop import Loop
from tuner.core._measurement import Measurement
from tuner.core._space import SearchSpace
from tuner.core._trial import SLOResult, Trial, TrialStatus, TuningResult
from tuner.core._workload import Request, Workload

__all__ = [
    "KNOBS",
    "VLLM_VERSION",
    "BackendError",
    "ConfigError",
    "Empirical",
    "Fixed",
    "InfeasibleError",
    "LengthDistribution",
    "LogNormal",
    "Loop",
    "Measurement",
    "Request",
    "SLOError",
    "SLOResult",
    "SLOShortfall",
    "SearchError",
    "SearchSpace",
    "ServerStartError",
    "ServingConfig",
    "Trial",
    "TrialStatus",
    "TrialTimeout",
    "TunerError",
    "TuningResult",
    "Uniform",
    "Workload",
    "WorkloadError",
]
