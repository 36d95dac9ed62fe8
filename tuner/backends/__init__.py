"""Backends: turn a configuration and a workload into a Measurement.

Three tiers of cost and fidelity behind one interface (:class:`Backend`), one subpackage each:
``simulator`` (the step simulator and its calibration), ``replay`` (vLLM's own scheduler
replayed without a model) and ``live`` (a real ``vllm serve``). What the tiers share sits here:
the interface (``_base``), the :class:`CostModel` (``_cost``) and the step ``Timeline`` of the
simulator and the replay (``_timeline``).
"""

from tuner.backends._base import Backend
from tuner.backends._cost import CostModel
from tuner.backends._timeline import Timeline
from tuner.backends.live import LiveTrial, VLLMServerBackend, build_tiny_model
from tuner.backends.replay import SchedulerReplayBackend
from tuner.backends.simulator import SimulatorBackend

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
