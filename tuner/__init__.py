"""tuner: find the best vLLM serving configuration for a workload under hard latency SLOs.

Example:
    >>> from tuner import Loop, Objective, Request, SearchSpace, ServingConfig, Workload
    >>> from tuner.backends import SimulatorBackend
    >>> from tuner.search import GridSearch
"""

from importlib import metadata as _metadata

from tuner.core import (
    BackendError,
    ConfigError,
    ConfigRefused,
    Empirical,
    Fixed,
    InfeasibleError,
    LengthDistribution,
    LogNormal,
    Measurement,
    Request,
    SearchError,
    SearchSpace,
    ServerStartError,
    ServingConfig,
    SLOError,
    Trial,
    TrialStatus,
    TrialTimeout,
    TunerError,
    Uniform,
    Workload,
    WorkloadError,
)
from tuner.objectives import SLO, Objective
from tuner.tuning import Exploration, Loop, Repeats, TuningResult

__all__ = [
    "SLO",
    "BackendError",
    "ConfigError",
    "ConfigRefused",
    "Empirical",
    "Exploration",
    "Fixed",
    "InfeasibleError",
    "LengthDistribution",
    "LogNormal",
    "Loop",
    "Measurement",
    "Objective",
    "Repeats",
    "Request",
    "SLOError",
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
try:
    __version__ = _metadata.version("vllm-slo-tuner")
except _metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
    __version__ = "0.0.0+source"
