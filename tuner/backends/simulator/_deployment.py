"""A named model on a named GPU, as the simulator sees it: vLLM 0.32's memory profiling gives
each configuration its KV cache (``num_kv_blocks``), the roofline gives its step cost.

Both come from :mod:`tuner.hardware` and both are estimates, not measurements: the KV cache
size is vLLM's arithmetic over modelled terms (activation peak, CUDA graphs, non-torch memory;
within ~10 % of the sizes vLLM printed in public logs, see ``docs/hardware.md``), and the step
time is a datasheet roofline (decode steps within 16 % on four published points with CUDA
graphs, a large prefill up to ~2x off). A :class:`~tuner.backends.simulator.Calibration`
fitted on a live server replaces the step-time prior; nothing replaces the KV sizing but
``num_kv_blocks`` set by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner.backends._cost import CostModel
from tuner.core import ConfigError, ConfigRefused, ServingConfig, Workload
from tuner.hardware import (
    GPU,
    MemoryBreakdown,
    ModelSpec,
    RooflineModel,
    UsageContext,
    memory_breakdown,
)

EAGER_OVERHEAD_PER_LAYER_S = 0.28e-3
"""Extra time per decoder layer per step with ``enforce_eager`` (no CUDA graphs: every kernel
is launched from Python). Fitted on one public point (vllm-project/vllm#20469: Qwen3-14B-AWQ on
an A100, eager, batch 1: 20.6 ms measured against the 9.2 ms graph-mode prior, 40 layers); an
estimate, so that the memory eager frees is not free."""


@dataclass(frozen=True)
class Deployment:
    """The model and GPU a simulated configuration runs on (one TP group per replica).

    Example:
        >>> from tuner.hardware import GPU, ModelSpec
        >>> d = Deployment(ModelSpec.named("llama-3.1-8b"), GPU.named("h100"))
        >>> d.sized(ServingConfig(max_num_batched_tokens=8192, max_num_seqs=256)).num_kv_blocks
        28776
    """

    model: ModelSpec
    gpu: GPU
    usage_context: UsageContext = "openai_server"

    def describe(self) -> str:
        """``"meta-llama/Llama-3.1-8B-Instruct on H100-SXM-80GB"``."""
        return f"{self.model.name} on {self.gpu.name}"

    def memory(self, config: ServingConfig) -> MemoryBreakdown:
        """vLLM 0.32's KV cache sizing for ``config`` on one GPU of its TP group.

        Raises:
            ConfigRefused: where vLLM refuses to start (weights do not fit, no memory left for
                the cache, one ``max_model_len`` request does not fit, TP does not divide the
                heads), in vLLM's words: the trial fails and the search goes on.
        """
        try:
            return memory_breakdown(
                self.model,
                self.gpu,
                tensor_parallel_size=config.tensor_parallel_size,
                gpu_memory_utilization=config.gpu_memory_utilization,
                kv_cache_dtype=config.kv_cache_dtype,
                quantization=config.quantization,
                max_model_len=config.max_model_len,
                enforce_eager=config.enforce_eager,
                max_num_batched_tokens=config.max_num_batched_tokens,
                max_num_seqs=config.max_num_seqs,
                block_size=config.block_size,
                async_scheduling=config.async_scheduling,
                usage_context=self.usage_context,
            )
        except ConfigError as e:
            raise ConfigRefused(f"{e} (vLLM would not start; {self.describe()})") from None

    def sized(self, config: ServingConfig) -> ServingConfig:
        """``config`` with the KV cache vLLM would allocate: ``num_kv_blocks`` = "GPU KV cache
        size" // ``block_size`` (for full attention exactly vLLM's ``num_gpu_blocks``, null
        block included; for a hybrid model the full-attention equivalent). A config that sets
        ``num_kv_blocks`` keeps it (``--num-gpu-blocks-override``)."""
        if config.num_kv_blocks is not None:
            self.roofline(config)  # TP must still divide the heads
            return config
        blocks = self.memory(config).kv_cache_tokens // config.block_size
        try:
            return config.replace(num_kv_blocks=blocks)
        except ConfigError as e:  # pragma: no cover - memory() checks one request fits
            raise ConfigRefused(f"{self.describe()}: {e}") from None

    def roofline(self, config: ServingConfig) -> RooflineModel:
        """The roofline step-time model of ``config``'s TP group."""
        try:
            return RooflineModel(
                model=self.model,
                gpu=self.gpu,
                tensor_parallel_size=config.tensor_parallel_size,
                quantization=config.quantization,
                kv_cache_dtype=config.kv_cache_dtype,
            )
        except ConfigError as e:
            raise ConfigRefused(f"{e} (vLLM would not start; {self.describe()})") from None

    def cost_model(self, config: ServingConfig, workload: Workload) -> CostModel:
        """The roofline prior as a linear :class:`CostModel` in seconds.

        ``RooflineModel.linear_coefficients`` sums what the roofline maxes (exact where memory or
        compute dominates, up to ~2x high where they balance). Its context term (reading every
        cached token's K/V in decode attention) is folded into ``per_decode_token`` at the
        workload's mean decode context, ``sum((o - 1) x (p + o / 2)) / sum(o - 1)`` over
        requests of prompt ``p`` and output ``o``: the engines count tokens per step, not the
        context they read, so a step of long requests costs what a step of average ones does.
        Prefill attention's quadratic FLOPs are left out (a few per cent of the matmuls below
        ~10k-token prompts). With ``enforce_eager`` every step pays
        :data:`EAGER_OVERHEAD_PER_LAYER_S` per layer.
        """
        c = self.roofline(config).linear_coefficients()
        eager = self.model.num_layers * EAGER_OVERHEAD_PER_LAYER_S if config.enforce_eager else 0
        return CostModel(
            fixed=c.fixed + eager,
            per_prefill_token=c.per_prefill_token,
            per_decode_token=c.per_decode_token
            + c.per_context_token * mean_decode_context(workload),
            time_unit="s",
        )


def mean_decode_context(workload: Workload) -> float:
    """Mean context length (prompt + tokens generated so far) of a decode step's token: decode
    token ``j`` (2..o) of a request reads ``p + j - 1`` tokens, ``p + o / 2`` on average.

    Example:
        >>> from tuner.core import Request
        >>> mean_decode_context(Workload([Request(arrival=0, prompt_tokens=100, output_tokens=3)]))
        101.5
    """
    p = workload.prompt_tokens.astype(np.float64)
    o = workload.output_tokens.astype(np.float64)
    weight = o - 1
    total = float(weight.sum())
    if total <= 0:
        return 0.0
    return float((weight * (p + o / 2)).sum() / total)
