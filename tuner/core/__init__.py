"""Core: the data models (configuration, space, workload, measurement, trial) and the error
tree. The ground floor: it imports nothing else of tuner."""

from tuner.core._arrivals import (
    Empirical,
    Fixed,
    LengthDistribution,
    LengthSpec,
    LogNormal,
    Uniform,
    parse_length,
)
from tuner.core._config import HARDWARE_KNOBS, KNOB_FLAGS, KNOBS, VLLM_VERSION, ServingConfig
from tuner.core._errors import (
    BackendError,
    ConfigError,
    ConfigRefused,
    InfeasibleError,
    SearchError,
    ServerStartError,
    SLOError,
    SLOShortfall,
    TrialTimeout,
    TunerError,
    WorkloadError,
)
from tuner.core._measurement import ClientHealth, Measurement
from tuner.core._model import FrozenModel
from tuner.core._request import Request
from tuner.core._settings import Settings, unknown_key_message
from tuner.core._space import SearchSpace
from tuner.core._summary import WorkloadSummary, summarize
from tuner.core._trial import LoadPoint, SLOResult, Trial, TrialStatus
from tuner.core._workload import Workload

__all__ = [
    "HARDWARE_KNOBS",
    "KNOBS",
    "KNOB_FLAGS",
    "VLLM_VERSION",
    "BackendError",
    "ClientHealth",
    "ConfigError",
    "ConfigRefused",
    "Empirical",
    "Fixed",
    "FrozenModel",
    "InfeasibleError",
    "LengthDistribution",
    "LengthSpec",
    "LoadPoint",
    "LogNormal",
    "Measurement",
    "Request",
    "SLOError",
    "SLOResult",
    "SLOShortfall",
    "SearchError",
    "SearchSpace",
    "ServerStartError",
    "ServingConfig",
    "Settings",
    "Trial",
    "TrialStatus",
    "TrialTimeout",
    "TunerError",
    "Uniform",
    "Workload",
    "WorkloadError",
    "WorkloadSummary",
    "parse_length",
    "summarize",
    "unknown_key_message",
]
