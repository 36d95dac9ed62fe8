"""Backends: turn a configuration and a workload into a Measurement."""

from tuner.backends._base import Backend
from tuner.backends._cost import CostModel
from tuner.backends._replay import SchedulerReplayBackend
from tuner.backends._simulator import SimulatorBackend
from tuner.backends._timeline import Timeline

__all__ = ["Backend", "CostModel", "SchedulerReplayBackend", "SimulatorBackend", "Timeline"]
