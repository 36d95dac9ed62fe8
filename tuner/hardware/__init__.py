"""Hardware: model and GPU specs, vLLM 0.32's KV cache sizing, a roofline step-time prior, and
vLLM's per-device scheduler defaults.

Imports only :mod:`tuner.core`.

Example:
    >>> from tuner.hardware import GPU, ModelSpec, kv_cache_tokens
    >>> kv_cache_tokens(ModelSpec.named("llama-3.1-8b"), GPU.named("h100")) > 0
    True
"""

from tuner.hardware._defaults import SchedulerDefaults, UsageContext, vllm_default_scheduler_limits
from tuner.hardware._gpu import GPU
from tuner.hardware._memory import (
    VLLM_DEFAULT_GPU_MEMORY_UTILIZATION,
    MemoryBreakdown,
    activation_peak_bytes,
    kv_bytes_per_token_per_layer,
    kv_cache_tokens,
    memory_breakdown,
    weight_bytes_per_gpu,
)
from tuner.hardware._model_spec import ModelSpec
from tuner.hardware._roofline import LinearStepCoefficients, RooflineModel, roofline_step_time
from tuner.hardware._target import ASSUMED_GPU, Target

__all__ = [
    "ASSUMED_GPU",
    "GPU",
    "VLLM_DEFAULT_GPU_MEMORY_UTILIZATION",
    "LinearStepCoefficients",
    "MemoryBreakdown",
    "ModelSpec",
    "RooflineModel",
    "SchedulerDefaults",
    "Target",
    "UsageContext",
    "activation_peak_bytes",
    "kv_bytes_per_token_per_layer",
    "kv_cache_tokens",
    "memory_breakdown",
    "roofline_step_time",
    "vllm_default_scheduler_limits",
    "weight_bytes_per_gpu",
]
