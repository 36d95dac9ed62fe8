"""Backends: turn a configuration and a workload into a Measurement.

Three tiers of cost and fidelity behind one interface: the step simulator, vLLM's own scheduler
replayed without a model, and a live ``vllm serve``.
"""

from tuner.backends._base import Backend
from tuner.backends._cost import CostModel
from tuner.backends._replay import SchedulerReplayBackend
from tuner.backends._server import LiveTrial, VLLMServerBackend
from tuner.backends._simulator import SimulatorBackend
from tuner.backends._timeline import Timeline
from tuner.backends._tiny_model import build_tiny_model

__all__ = [
    "Backend",
    "CostModel",
    "LiveTrial",
    "SchedulerReplayBackend",
    "SimulatorBackend",
    "Timeline",
    "VLLMServerBackend",
    "build_tiny_model",
]
