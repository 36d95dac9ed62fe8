"""vLLM 0.32's KV cache sizing: weights, profiling peak, graphs, overhead -> KV blocks, tokens.

The arithmetic follows ``Worker.determine_available_memory`` (``vllm/v1/worker/gpu_worker.py``),
``memory_profiling`` (``vllm/utils/mem_utils.py``) and ``get_kv_cache_configs`` /
``get_max_concurrency_for_kv_cache_config`` (``vllm/v1/core/kv_cache_utils.py``):

    requested   = ceil(total_memory x gpu_memory_utilization)
    available   = requested - (weights + non-torch) - activation peak - CUDA graph estimate
    num_blocks  = available // bytes_per_block        (one block of every layer of a KV group)
    tokens      = int(num_blocks / blocks_per_request x max_model_len)   ("GPU KV cache size")

What vLLM measures on the device (activation peak, non-torch memory, graph pools) is estimated
from the constants in ``tuner/hardware/_estimates.py``; see :func:`memory_breakdown` for each
assumption.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tuner.core import ConfigError
from tuner.hardware._defaults import UsageContext, vllm_default_scheduler_limits
from tuner.hardware._estimates import (
    CUDA_GRAPH_BYTES_PER_LAYER,
    NON_TORCH_BYTES_TP1,
    NON_TORCH_BYTES_TP_EXTRA,
    NON_TORCH_BYTES_TP_NVLINK,
    QUANT_BYTES_PER_WEIGHT,
    SAMPLER_BYTES_PER_LOGIT,
)
from tuner.hardware._gpu import GPU, GiB
from tuner.hardware._model_spec import DTYPE_BYTES, ModelSpec

VLLM_DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
"""``CacheConfig.gpu_memory_utilization`` default in vLLM 0.32 (``vllm/config/cache.py``);
older releases used 0.9."""


KVCacheDtype = Literal["auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2"]
Quantization = Literal["fp8", "awq", "gptq", "bitsandbytes", "mxfp4"]


@dataclass(frozen=True)
class MemoryBreakdown:
    """Every term of vLLM's KV cache sizing for one GPU (bytes unless stated).

    Attributes:
        total_memory: Runtime-reported total memory of one GPU.
        requested_memory: ``ceil(total_memory x gpu_memory_utilization)``.
        weights: Weights held by one GPU (TP shard), vLLM's "Model loading took".
        activation_peak: Transient peak of the profiling run (forward or dummy sampler).
        cuda_graph: CUDA graph pool estimate (0 with ``enforce_eager``).
        non_torch: Memory outside PyTorch's allocator (workspaces, NCCL).
        available_kv: What is left for the KV cache: vLLM's "Available KV cache memory".
        bytes_per_block: One block of every layer of one KV cache group.
        num_blocks: ``available_kv // bytes_per_block`` (vLLM's num_gpu_blocks; 0 when refused).
        blocks_per_request: Blocks one ``max_model_len`` request needs over all groups.
        kv_cache_tokens: vLLM's "GPU KV cache size: N tokens".
        max_concurrency: vLLM's "Maximum concurrency for max_model_len tokens per request".
        max_model_len: The length the capacity is stated for.
        max_num_batched_tokens: Token budget the profiling run used.
        max_num_seqs: Sequences the dummy sampler run used.
        block_size: Tokens per block.
        kv_bytes_per_token: KV bytes per token per GPU, every layer (sliding ones included).
    """

    total_memory: int
    requested_memory: int
    weights: int
    activation_peak: int
    cuda_graph: int
    non_torch: int
    available_kv: int
    bytes_per_block: int
    num_blocks: int
    blocks_per_request: int
    kv_cache_tokens: int
    max_concurrency: float
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    block_size: int
    kv_bytes_per_token: int

    def describe(self) -> str:
        """One line per term, in GiB."""

        def g(b: int) -> str:
            return f"{b / GiB:.2f} GiB"

        return "\n".join(
            [
                f"requested   {g(self.requested_memory)} of {g(self.total_memory)}",
                f"weights     {g(self.weights)}",
                f"activations {g(self.activation_peak)}",
                f"cuda graphs {g(self.cuda_graph)}",
                f"non-torch   {g(self.non_torch)}",
                f"KV cache    {g(self.available_kv)} = {self.num_blocks} blocks "
                f"x {self.bytes_per_block} B = {self.kv_cache_tokens:,} tokens",
            ]
        )


def check_tensor_parallel(model: ModelSpec, tensor_parallel_size: int) -> None:
    """vLLM's ``ModelConfig.verify_with_parallel_config`` head check (its wording)."""
    if tensor_parallel_size < 1:
        raise ConfigError(f"tensor_parallel_size = {tensor_parallel_size}: must be >= 1")
    if model.num_attention_heads % tensor_parallel_size:
        raise ConfigError(
            f"Total number of attention heads ({model.num_attention_heads}) must be divisible "
            f"by tensor parallel size ({tensor_parallel_size})."
        )


def kv_heads_per_gpu(model: ModelSpec, tensor_parallel_size: int) -> int:
    """``max(1, kv_heads // tp)``: KV heads are replicated when TP exceeds them (vLLM); MLA: 1."""
    if model.attention == "mla":
        return 1
    return max(1, model.num_kv_heads // tensor_parallel_size)


def kv_bytes_per_token_per_layer(
    model: ModelSpec, tensor_parallel_size: int = 1, kv_cache_dtype: KVCacheDtype = "auto"
) -> int:
    """K and V of one token in one layer on one GPU (MLA: one latent + RoPE key, unsharded)."""
    size = _kv_dtype_bytes(model, kv_cache_dtype)
    if model.attention == "mla":
        return int(((model.kv_lora_rank or 0) + (model.qk_rope_head_dim or 0)) * size)
    return int(kv_heads_per_gpu(model, tensor_parallel_size) * model.head_dim * 2 * size)


def weight_bytes_per_gpu(
    model: ModelSpec, tensor_parallel_size: int = 1, quantization: Quantization | None = None
) -> int:
    """Weights one TP rank loads.

    Attention and MLP/expert matrices are split over TP (K/V projections replicated when TP
    exceeds the KV heads); the vocab-parallel embedding and LM head are split too (rows padded
    to 64, vLLM's ``DEFAULT_VOCAB_PADDING_SIZE``); norms and the vision tower are replicated.
    Quantized layers are the linear layers (experts only for mxfp4, as in gpt-oss).
    """
    tp = tensor_parallel_size
    quant = quantization or model.quantization
    native = DTYPE_BYTES[model.dtype]
    qbytes = QUANT_BYTES_PER_WEIGHT.get(quant, native) if quant else native
    h, hd = model.hidden_size, model.head_dim
    if model.attention == "mla":
        attn = model.attention_params_per_layer / tp
    else:
        kv_rank = kv_heads_per_gpu(model, tp)
        attn = (
            h * (model.num_attention_heads // tp + 2 * kv_rank) * hd
            + model.num_attention_heads // tp * hd * h
        )
    mlp = model.mlp_params_per_layer / tp
    attn_bytes = attn * (native if quant == "mxfp4" else qbytes)
    layers = model.num_layers * (attn_bytes + mlp * qbytes + 2 * h * native)
    vocab = math.ceil(model.vocab_size / 64) * 64
    tables = (1 if model.tie_word_embeddings else 2) * math.ceil(vocab / tp) * h * native
    return int(layers + tables + h * native + model.extra_params * native)


def memory_breakdown(
    model: ModelSpec,
    gpu: GPU,
    *,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = VLLM_DEFAULT_GPU_MEMORY_UTILIZATION,
    kv_cache_dtype: KVCacheDtype = "auto",
    quantization: Quantization | None = None,
    max_model_len: int | None = None,
    enforce_eager: bool = False,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
    block_size: int | None = None,
    async_scheduling: bool | None = None,
    usage_context: UsageContext = "openai_server",
    check: bool = True,
) -> MemoryBreakdown:
    """Each term of vLLM 0.32's KV cache sizing on one GPU of a TP group.

    Assumptions (what vLLM measures and this models):

    - Activation peak: the profiling run pushes ``max_num_batched_tokens`` (T) tokens through the
      model, then a dummy sampler over ``min(max_num_seqs, T)`` sequences. Forward peak =
      T x 2 B x (3 x MLP width per GPU [gate+up output and the activated half]; for MoE the
      width is experts_per_token x expert width) + 3 residual-stream copies (T x hidden x 2 B).
      Sampler peak = sequences x vocab x :data:`SAMPLER_BYTES_PER_LOGIT`. The larger one counts.
    - CUDA graphs: :data:`CUDA_GRAPH_BYTES_PER_LAYER` per layer, 0 with ``enforce_eager``.
    - Non-torch memory: :data:`NON_TORCH_BYTES_TP1`, plus, when TP > 1,
      :data:`NON_TORCH_BYTES_TP_NVLINK` on NVLink GPUs or :data:`NON_TORCH_BYTES_TP_EXTRA`
      otherwise. Nothing else runs on the GPU.
    - Scheduler knobs left None take vLLM's defaults for this GPU
      (:func:`vllm_default_scheduler_limits`).

    With ``check`` (default) vLLM's start-up refusals raise :class:`ConfigError` in vLLM's words.

    Example:
        >>> b = memory_breakdown(ModelSpec.named("llama-3.1-8b"), GPU.named("h100"))
        >>> round(b.weights / 2**30, 2)
        14.96
    """
    if not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(
            f"gpu_memory_utilization = {gpu_memory_utilization}: must be in (0, 1], the fraction "
            "of GPU memory vLLM may use (vLLM's default is 0.92)"
        )
    tp = tensor_parallel_size
    check_tensor_parallel(model, tp)
    mml = model.max_position_embeddings if max_model_len is None else max_model_len
    if mml < 1:
        raise ConfigError(f"max_model_len = {mml}: must be >= 1")
    if check and mml > model.max_position_embeddings:
        raise ConfigError(
            f"User-specified max_model_len ({mml}) is greater than the derived max_model_len "
            f"(max_position_embeddings={model.max_position_embeddings} or model_max_length=None "
            "in model's config.json). Lower max_model_len (or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)."
        )
    defaults = vllm_default_scheduler_limits(gpu, usage_context, world_size=tp, max_model_len=mml)
    mbt = max_num_batched_tokens or defaults.max_num_batched_tokens
    seqs = max_num_seqs or defaults.max_num_seqs
    bs = block_size or defaults.block_size
    async_on = defaults.async_scheduling if async_scheduling is None else async_scheduling

    total = gpu.usable_memory_bytes
    requested = math.ceil(total * gpu_memory_utilization)
    weights = weight_bytes_per_gpu(model, tp, quantization)
    act = activation_peak_bytes(model, tp, mbt, seqs)
    graphs = 0 if enforce_eager else model.num_layers * CUDA_GRAPH_BYTES_PER_LAYER
    tp_extra = (
        NON_TORCH_BYTES_TP_NVLINK if gpu.interconnect == "nvlink" else NON_TORCH_BYTES_TP_EXTRA
    )
    non_torch = NON_TORCH_BYTES_TP1 + (tp_extra if tp > 1 else 0)
    available = requested - weights - non_torch - act - graphs

    per_layer_page = bs * kv_bytes_per_token_per_layer(model, tp, kv_cache_dtype)
    group_size, n_full_groups, n_sliding_groups = _kv_groups(model)
    bytes_per_block = group_size * per_layer_page
    in_flight = (2 if async_on else 1) * mbt  # VllmConfig.max_in_flight_tokens
    blocks_per_request = _blocks_per_request(
        model, mml, bs, in_flight, n_full_groups, n_sliding_groups
    )

    if check:
        if weights > total:
            raise ConfigError(
                f"{model.name} weights need {weights / GiB:.2f} GiB per GPU with "
                f"tensor_parallel_size={tp}, more than the {total / GiB:.2f} GiB of one {gpu.name} "
                "(vLLM fails with CUDA out of memory while loading). Raise tensor_parallel_size "
                "or quantize."
            )
        if available <= 0:
            raise ConfigError(
                f"No available memory for the cache blocks ({available / GiB:.2f} GiB left after "
                f"{weights / GiB:.2f} GiB weights, {act / GiB:.2f} GiB activations, "
                f"{graphs / GiB:.2f} GiB CUDA graphs, {non_torch / GiB:.2f} GiB non-torch, out of "
                f"{requested / GiB:.2f} GiB requested). Try increasing `gpu_memory_utilization` "
                "when initializing the engine."
            )
        check_memory = available - bytes_per_block  # the null block BlockPool holds back
        needed = bytes_per_block * blocks_per_request
        if needed > check_memory:
            est = _estimate_max_model_len(
                model,
                mml,
                bs,
                in_flight,
                n_full_groups,
                n_sliding_groups,
                check_memory // bytes_per_block,
            )
            est_msg = (
                f"Based on the available memory, the estimated maximum model length is {est}. "
                if est > 0
                else ""
            )
            raise ConfigError(
                f"To serve at least one request with the model's max seq len ({mml}), "
                f"({needed / GiB:.2f} GiB KV cache is needed, which is larger than the available "
                f"KV cache memory ({check_memory / GiB:.2f} GiB). {est_msg}Try increasing "
                "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the "
                "engine."
            )
    num_blocks = max(0, available) // bytes_per_block
    concurrency = num_blocks / blocks_per_request
    return MemoryBreakdown(
        total_memory=total,
        requested_memory=requested,
        weights=weights,
        activation_peak=act,
        cuda_graph=graphs,
        non_torch=non_torch,
        available_kv=available,
        bytes_per_block=bytes_per_block,
        num_blocks=num_blocks,
        blocks_per_request=blocks_per_request,
        kv_cache_tokens=int(concurrency * mml),
        max_concurrency=concurrency,
        max_model_len=mml,
        max_num_batched_tokens=mbt,
        max_num_seqs=seqs,
        block_size=bs,
        kv_bytes_per_token=model.num_layers * per_layer_page // bs,
    )


def kv_cache_tokens(
    model: ModelSpec,
    gpu: GPU,
    *,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float = VLLM_DEFAULT_GPU_MEMORY_UTILIZATION,
    kv_cache_dtype: KVCacheDtype = "auto",
    quantization: Quantization | None = None,
    max_model_len: int | None = None,
    enforce_eager: bool = False,
) -> int:
    """vLLM 0.32's "GPU KV cache size: N tokens" for this model on ``gpu`` (per TP group).

    Raises :class:`ConfigError` where vLLM refuses to start (see :func:`memory_breakdown`).

    Example:
        >>> kv_cache_tokens(ModelSpec.named("llama-3.1-8b"), GPU.named("h100"),
        ...                 gpu_memory_utilization=0.9) > 400_000
        True
    """
    return memory_breakdown(
        model,
        gpu,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        kv_cache_dtype=kv_cache_dtype,
        quantization=quantization,
        max_model_len=max_model_len,
        enforce_eager=enforce_eager,
    ).kv_cache_tokens


def activation_peak_bytes(
    model: ModelSpec, tensor_parallel_size: int, max_num_batched_tokens: int, max_num_seqs: int
) -> int:
    """Transient peak of vLLM's profiling run (see :func:`memory_breakdown` for the model)."""
    act = DTYPE_BYTES[model.dtype]
    width = (
        model.experts_per_token * model.expert_width
        if model.num_experts
        else model.intermediate_size
    )
    forward = (
        max_num_batched_tokens * act * (3 * width / tensor_parallel_size + 3 * model.hidden_size)
    )
    sampler = min(max_num_seqs, max_num_batched_tokens) * model.vocab_size * SAMPLER_BYTES_PER_LOGIT
    return int(max(forward, sampler))


def _kv_dtype_bytes(model: ModelSpec, kv_cache_dtype: str) -> float:
    if kv_cache_dtype == "auto":
        return DTYPE_BYTES[model.dtype]
    if kv_cache_dtype.startswith("fp8"):
        return 1
    if kv_cache_dtype in DTYPE_BYTES:
        return DTYPE_BYTES[kv_cache_dtype]
    raise ConfigError(
        f"kv_cache_dtype = {kv_cache_dtype!r}: expected auto, bfloat16, float16, fp8, "
        "fp8_e4m3 or fp8_e5m2"
    )


def _kv_groups(model: ModelSpec) -> tuple[int, int, int]:
    """(layers per group, full-attention groups, sliding groups), as
    ``_get_kv_cache_groups_uniform_page_size`` splits a hybrid model (one group if uniform)."""
    n_sliding, n_full = len(model.sliding_layers), model.full_attention_layers
    if n_sliding == 0:
        return model.num_layers, 1, 0
    if n_full == 0:
        return model.num_layers, 0, 1
    small, large = min(n_sliding, n_full), max(n_sliding, n_full)
    size = large if large < small * 1.5 else small
    return size, math.ceil(n_full / size), math.ceil(n_sliding / size)


def _blocks_per_request(
    model: ModelSpec, mml: int, bs: int, in_flight: int, n_full: int, n_sliding: int
) -> int:
    full = math.ceil(mml / bs)
    if not n_sliding:
        return n_full * full
    window = model.sliding_window or 0
    # SlidingWindowSpec.max_admission_blocks_per_request: the window, the in-flight tokens, +1.
    sliding = math.ceil(min(window - 1 + in_flight, mml) / bs) + 1
    return n_full * full + n_sliding * sliding


def _estimate_max_model_len(
    model: ModelSpec, mml: int, bs: int, in_flight: int, n_full: int, n_sliding: int, blocks: int
) -> int:
    """The largest length whose request fits ``blocks`` (vLLM's binary search)."""
    lo, hi, best = 1, mml, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if _blocks_per_request(model, mid, bs, in_flight, n_full, n_sliding) <= blocks:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best
