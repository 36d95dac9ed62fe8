"""The live tier: a real ``vllm serve``, loaded with the workload's exact schedule over HTTP.

:class:`VLLMServerBackend` starts a server per configuration (``_server``, on the process
lifecycle of ``_process``), loads it with the open-loop client (``_load``) and reads the
engine's step log (``_steplog``). :func:`build_tiny_model` makes a tiny random Llama to serve on
any machine.
"""

from tuner.backends.live._load import LoadResult, RequestRecord
from tuner.backends.live._server import LiveTrial, VLLMServerBackend
from tuner.backends.live._steplog import StepLog, StepRecord
from tuner.backends.live._tiny_model import build_tiny_model

__all__ = [
    "LiveTrial",
    "LoadResult",
    "RequestRecord",
    "StepLog",
    "StepRecord",
    "VLLMServerBackend",
    "build_tiny_model",
]
