"""vLLM 0.32's per-device scheduler defaults: batch budget, sequences, async, block size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tuner.core import ConfigError
from tuner.hardware._gpu import GPU, GiB

UsageContext = Literal["openai_server", "llm_class"]


@dataclass(frozen=True)
class SchedulerDefaults:
    """What vLLM picks when the user sets none of these knobs.

    Attributes:
        max_num_batched_tokens: Token budget of one step.
        max_num_seqs: Most requests running at once.
        async_scheduling: Whether scheduling overlaps the model step.
        block_size: Tokens per KV cache block.
    """

    max_num_batched_tokens: int
    max_num_seqs: int
    async_scheduling: bool
    block_size: int


def vllm_default_scheduler_limits(
    device: GPU | Literal["cpu"],
    usage_context: UsageContext = "openai_server",
    *,
    world_size: int = 1,
    max_model_len: int | None = None,
    enable_chunked_prefill: bool = True,
) -> SchedulerDefaults:
    """vLLM 0.32's defaults, from ``EngineArgs.get_batch_defaults`` and
    ``_set_default_max_num_seqs_and_batched_tokens_args`` (``vllm/engine/arg_utils.py``).

    Memory classes (the device's total memory; A100s are excluded from the middle class by name,
    vLLM PR #17885): >= 160 GiB (B200, MI300X): 16384 tokens, 1024 seqs for both contexts;
    >= 70 GiB and not an A100 (H100, H200): 16384 (LLM class) / 8192 (server) tokens, 1024 seqs;
    otherwise (A100, L40S, L4, A10G, RTX): 8192 / 2048 tokens, 256 seqs. The CPU platform:
    4096 / 2048 tokens and 256 / 128 seqs, each times ``world_size`` (TP x PP).
    Then: without chunked prefill the budget is at least ``max_model_len``; the budget is at most
    ``max_num_seqs x max_model_len``; ``max_num_seqs`` is at most the budget.

    Async scheduling defaults on for a GPU (no incompatible option is modelled); the CPU platform
    turns it off. Block size: ``CacheConfig.DEFAULT_BLOCK_SIZE`` = 16 on GPUs (FlashAttention
    accepts it; FA4 head-dim-256 kernels on Blackwell and some FP8-KV kernels raise it); 128 on CPU.

    Example:
        >>> vllm_default_scheduler_limits(GPU.named("h100")).max_num_batched_tokens
        8192
    """
    if usage_context not in ("openai_server", "llm_class"):
        raise ConfigError(
            f"usage_context = {usage_context!r}: expected 'openai_server' or 'llm_class'"
        )
    if world_size < 1:
        raise ConfigError(f"world_size = {world_size}: must be >= 1")
    server = usage_context == "openai_server"
    if device == "cpu":
        tokens, seqs = (
            (2048 if server else 4096) * world_size,
            (128 if server else 256) * world_size,
        )
        async_scheduling, block_size = False, 128
    else:
        memory = device.memory_bytes
        if memory >= 160 * GiB:
            tokens, seqs = 16384, 1024
        elif memory >= 70 * GiB and "a100" not in device.name.lower():
            tokens, seqs = (8192 if server else 16384), 1024
        else:
            tokens, seqs = (2048 if server else 8192), 256
        async_scheduling, block_size = True, 16
    if max_model_len is not None:
        if not enable_chunked_prefill:
            tokens = max(max_model_len, tokens)
        tokens = min(seqs * max_model_len, tokens)
    seqs = min(seqs, tokens)
    return SchedulerDefaults(tokens, seqs, async_scheduling, block_size)
