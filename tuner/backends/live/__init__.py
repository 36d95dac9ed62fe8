"""The live tier: a real ``vllm serve``, loaded with the workload's exact schedule over HTTP.

:class:`VLLMServerBackend` starts a server per configuration (``_server``, on the process
lifecycle of ``_process``); :class:`AttachedServerBackend` measures one already running
(``_attached``). Both measure alike (``_measure``): the open-loop load client (``_load``, its
prompts from ``_prompts``, each request streamed over aiohttp by ``_stream``, its watchdog for
stalls and early abort in ``_watch``, its lag summary in ``_health``, its CPU pinning in
``_affinity``), the server's answers and counters (``_queries``) and the engine's step log
(``_steplog``). ``_errors`` is the
one place the tier's foreign errors become tuner errors; ``_secrets`` keeps API keys and tokens
out of everything tuner writes; ``_bench_result`` reads a run measured by ``vllm bench
serve``. :func:`build_tiny_model` makes a tiny random Llama to serve on any machine.
"""

from tuner.backends.live._attached import AttachedServerBackend
from tuner.backends.live._bench_result import BenchRun, load_bench_run
from tuner.backends.live._load import LoadResult, RequestRecord
from tuner.backends.live._measure import LiveTrial
from tuner.backends.live._server import VLLMServerBackend
from tuner.backends.live._settings import AttachedSettings, LoadSettings, ServerSettings
from tuner.backends.live._steplog import StepLog, StepRecord
from tuner.backends.live._tiny_model import build_tiny_model

__all__ = [
    "AttachedServerBackend",
    "AttachedSettings",
    "BenchRun",
    "LiveTrial",
    "LoadResult",
    "LoadSettings",
    "RequestRecord",
    "ServerSettings",
    "StepLog",
    "StepRecord",
    "VLLMServerBackend",
    "build_tiny_model",
    "load_bench_run",
]
