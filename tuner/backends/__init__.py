"""Backends: turn a configuration and a workload into a Measurement.

Three tiers of cost and fidelity behind one interface (:class:`Backend`), one subpackage each:
``simulator`` (the step simulator and its calibration), ``replay`` (vLLM's own scheduler
replayed without a model) and ``live`` (a real ``vllm serve``, started per configuration or
attached). What the tiers share sits here: the interface (``_base``), the :class:`CostModel`
(``_cost``) and the step ``Timeline`` of the simulator and the replay (``_timeline``).

Only the public backends are exported here; the rest (``Timeline``, ``LiveTrial``,
``build_tiny_model``, ...) is imported from its subpackage.
"""

from tuner.backends._base import Backend
from tuner.backends._cost import CostModel
from tuner.backends.live import AttachedServerBackend, VLLMServerBackend
from tuner.backends.replay import SchedulerReplayBackend
from tuner.backends.simulator import Calibration, SimulatorBackend

__all__ = [
    "AttachedServerBackend",
    "Backend",
    "Calibration",
    "CostModel",
    "SchedulerReplayBackend",
    "SimulatorBackend",
    "VLLMServerBackend",
]
