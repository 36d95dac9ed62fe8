"""The simulator tier: vLLM's v1 scheduler modelled step by step, no GPU and no model.

:class:`SimulatorBackend` runs the reference or the fast engine (``_engine``, ``_fast_engine``)
and prices each step with a :class:`~tuner.backends.CostModel`; :class:`Calibration` fits that
cost model (terms chosen by held-out error) and the :class:`RequestPath` to a
live server's step log and client times, and :func:`calibrate` checks it on held-out runs;
a :class:`Deployment` (a model on a GPU) sizes each configuration's KV cache as vLLM would and
gives a roofline step-time prior.
:class:`Timeline` (shared with the replay tier) turns the recorded steps into a Measurement.

The engines are pure Python; ``make native`` compiles them with mypyc (same source, same bits,
faster), and :mod:`._native` picks the compiled copies only while they match the sources.
"""

from tuner.backends._request_path import RequestPath
from tuner.backends._timeline import Timeline
from tuner.backends.simulator import _native  # noqa: F401  (first: decides which engines load)
from tuner.backends.simulator._attribution import fit_request_path
from tuner.backends.simulator._calibration import Calibration, fit_cost_model
from tuner.backends.simulator._deployment import Deployment
from tuner.backends.simulator._held_out import HeldOut
from tuner.backends.simulator._simulator import SimulatorBackend
from tuner.backends.simulator._validation import (
    CalibrationRun,
    calibrate,
    calibrated_backend,
    check_held_out,
)

__all__ = [
    "Calibration",
    "CalibrationRun",
    "Deployment",
    "HeldOut",
    "RequestPath",
    "SimulatorBackend",
    "Timeline",
    "calibrate",
    "calibrated_backend",
    "check_held_out",
    "fit_cost_model",
    "fit_request_path",
]
