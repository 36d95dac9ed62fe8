"""The simulator tier: vLLM's v1 scheduler modelled step by step, no GPU and no model.

:class:`SimulatorBackend` runs the reference or the fast engine (``_engine``, ``_fast_engine``)
and prices each step with a :class:`~tuner.backends.CostModel`; :class:`Calibration` fits that
cost model to step times measured on a live server; a :class:`Deployment` (a model on a GPU)
sizes each configuration's KV cache as vLLM would and gives a roofline step-time prior.
:class:`Timeline` (shared with the replay tier) turns the recorded steps into a Measurement.

The engines are pure Python; ``make native`` compiles them with mypyc (same source, same bits,
faster), and :mod:`._native` picks the compiled copies only while they match the sources.
"""

from tuner.backends._timeline import Timeline
from tuner.backends.simulator import _native  # noqa: F401  (first: decides which engines load)
from tuner.backends.simulator._calibration import Calibration, fit_cost_model
from tuner.backends.simulator._deployment import Deployment
from tuner.backends.simulator._simulator import SimulatorBackend

__all__ = ["Calibration", "Deployment", "SimulatorBackend", "Timeline", "fit_cost_model"]
