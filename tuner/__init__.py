"""tuner: find the best vLLM serving configuration for a workload under hard latency SLOs."""

from tuner.core import (
    InfeasibleError,
    Measurement,
    Request,
    SearchSpace,
    ServingConfig,
    TunerError,
    Workload,
)

__all__ = [
    "InfeasibleError",
    "Measurement",
    "Request",
    "SearchSpace",
    "ServingConfig",
    "TunerError",
    "Workload",
]
__version__ = "0.1.0"
