"""A roofline prior for one vLLM step's time: max(compute, memory) + TP all-reduce + overhead."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ConfigDict, Field

from tuner.core import FrozenModel
from tuner.hardware._gpu import GPU
from tuner.hardware._memory import (
    KVCacheDtype,
    Quantization,
    check_tensor_parallel,
    kv_bytes_per_token_per_layer,
    weight_bytes_per_gpu,
)
from tuner.hardware._model_spec import DTYPE_BYTES, ModelSpec


@dataclass(frozen=True)
class LinearStepCoefficients:
    """Seconds per unit of a step, for a linear cost model (sum of terms, no max).

    Attributes:
        fixed: Per-step time: reading every weight once, plus overheads and all-reduce latency.
        per_prefill_token: Compute time of one prefill token (matmuls and all-reduce bytes).
        per_decode_token: Compute time of one decode token (the same matmuls).
        per_context_token: Reading one cached token's K/V in every layer (decode attention).
    """

    fixed: float
    per_prefill_token: float
    per_decode_token: float
    per_context_token: float


class RooflineModel(FrozenModel):
    """Step time of one TP group running ``model`` on ``gpu``, from datasheet peaks.

    Per step: ``max(compute, memory) + all_reduce + fixed_overhead_s`` where

    - compute = (2 x matmul parameters per token x tokens + attention FLOPs) / (TP x peak x
      ``compute_efficiency``); attention FLOPs = 4 x layers x query heads x head dim per
      (query token, context token) pair: each decode token attends to its context, a prefill
      chunk of c tokens at offset p to about c x (p + c/2) pairs (causal);
    - memory = (this GPU's weight shard, read once per step + K/V of every context token of
      every sequence, read once) / (bandwidth x ``memory_efficiency``); activations are ignored;
    - all_reduce = 2 per layer (attention out, MLP out) of tokens x hidden x 2 B, ring
      all-reduce moving 2 (TP-1)/TP of it over the interconnect, plus a latency each (TP > 1).

    Assumptions: dense GEMM peak (FP8 peak when weights are FP8 and the GPU has it; otherwise
    BF16); an MoE step reads every expert's weights (true once the batch is large; an
    overestimate for tiny decode batches); sampling and the scheduler are in the fixed overhead.
    Efficiency defaults: 0.6 of peak FLOP/s (large GEMMs reach 60-75 %), 0.8 of peak bandwidth
    (well-tuned decode kernels reach 80-90 %), 0.7 of link bandwidth (NCCL bus bandwidth).

    Example:
        >>> r = RooflineModel(model=ModelSpec.named("llama-3.1-8b"), gpu=GPU.named("h100"))
        >>> 0.003 < r.step_time(decode_tokens=1, num_seqs=1, decode_context_tokens=1000) < 0.01
        True
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    model: ModelSpec
    """The model served."""
    gpu: GPU
    """One GPU of the tensor-parallel group."""
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    """GPUs the model is split over."""
    quantization: Quantization | None = None
    """Weight quantization (None = the checkpoint's own)."""
    kv_cache_dtype: KVCacheDtype = "auto"
    """KV cache dtype (``auto`` = the model dtype)."""
    compute_efficiency: float = Field(default=0.6, gt=0, le=1)
    """Fraction of peak dense FLOP/s reached."""
    memory_efficiency: float = Field(default=0.8, gt=0, le=1)
    """Fraction of peak memory bandwidth reached."""
    interconnect_efficiency: float = Field(default=0.7, gt=0, le=1)
    """Fraction of link bandwidth an all-reduce reaches."""
    all_reduce_latency_s: float = Field(default=10e-6, ge=0)
    """Fixed cost of one all-reduce (launch + synchronisation), TP > 1 only."""
    fixed_overhead_s: float = Field(default=1.5e-3, ge=0)
    """Per-step time outside the model: scheduling, input preparation, sampling, detokenising
    hand-off (vLLM with CUDA graphs and async scheduling: ~1-2 ms)."""

    def model_post_init(self, __context: object) -> None:
        check_tensor_parallel(self.model, self.tensor_parallel_size)

    @property
    def _flops(self) -> float:
        quant = self.quantization or self.model.quantization
        fp8 = quant == "fp8" and self.gpu.fp8_flops is not None
        peak = self.gpu.fp8_flops if fp8 and self.gpu.fp8_flops else self.gpu.bf16_flops
        return peak * self.compute_efficiency

    @property
    def _bandwidth(self) -> float:
        return self.gpu.hbm_bandwidth * self.memory_efficiency

    @property
    def _kv_bytes_per_context_token(self) -> float:
        per_layer = kv_bytes_per_token_per_layer(
            self.model, self.tensor_parallel_size, self.kv_cache_dtype
        )
        return float(self.model.num_layers * per_layer)

    def _attention_flops_per_pair(self) -> float:
        m = self.model
        return 4.0 * m.num_layers * m.num_attention_heads * m.head_dim / self.tensor_parallel_size

    def _all_reduce_time(self, tokens: int) -> float:
        tp = self.tensor_parallel_size
        if tp == 1 or tokens == 0:
            return 0.0
        m = self.model
        nbytes = tokens * m.hidden_size * DTYPE_BYTES[m.dtype]
        per_call = (
            2
            * (tp - 1)
            / tp
            * nbytes
            / (self.gpu.interconnect_bandwidth * self.interconnect_efficiency)
        )
        return 2 * m.num_layers * (per_call + self.all_reduce_latency_s)

    def step_time(
        self,
        *,
        prefill_tokens: int = 0,
        decode_tokens: int = 0,
        num_seqs: int = 0,
        decode_context_tokens: int = 0,
        prefill_context_pairs: int = 0,
    ) -> float:
        """Seconds for one step.

        Args:
            prefill_tokens: Prompt tokens computed this step (all chunks).
            decode_tokens: Decode tokens (one per decoding sequence).
            num_seqs: Sequences in the step (not used by the roofline beyond the tokens; kept so
                callers pass the step's shape once).
            decode_context_tokens: Sum of the decoding sequences' context lengths.
            prefill_context_pairs: Sum over prefill chunks of chunk x (offset + chunk / 2): the
                (query, key) pairs causal attention computes.
        """
        del num_seqs
        tokens = prefill_tokens + decode_tokens
        if tokens == 0:
            return 0.0
        pairs = decode_context_tokens + prefill_context_pairs
        flops = (
            2.0 * self.model.matmul_params_per_token * tokens / self.tensor_parallel_size
            + self._attention_flops_per_pair() * pairs
        )
        compute = flops / self._flops
        weights = weight_bytes_per_gpu(self.model, self.tensor_parallel_size, self.quantization)
        kv_read = self._kv_bytes_per_context_token * decode_context_tokens
        memory = (weights + kv_read) / self._bandwidth
        return max(compute, memory) + self._all_reduce_time(tokens) + self.fixed_overhead_s

    def linear_coefficients(self) -> LinearStepCoefficients:
        """Coefficients of a linear step-time model bounding the roofline from above.

        ``fixed + per_prefill_token x P + per_decode_token x D + per_context_token x C``
        sums what the roofline maxes, so it is exact when one side dominates (small decode
        batches: memory; large prefills: compute) and at most ~2x high where they balance.
        """
        tp = self.tensor_parallel_size
        latency = 2 * self.model.num_layers * self.all_reduce_latency_s if tp > 1 else 0.0
        matmul = 2.0 * self.model.matmul_params_per_token / tp / self._flops
        per_token = matmul + max(0.0, self._all_reduce_time(1) - latency)
        weights = weight_bytes_per_gpu(self.model, tp, self.quantization)
        fixed = weights / self._bandwidth + self.fixed_overhead_s + latency
        per_context = (
            self._kv_bytes_per_context_token / self._bandwidth
            + self._attention_flops_per_pair() / self._flops
        )
        return LinearStepCoefficients(fixed, per_token, per_token, per_context)


def roofline_step_time(
    model: ModelSpec,
    gpu: GPU,
    *,
    tensor_parallel_size: int = 1,
    prefill_tokens: int = 0,
    decode_tokens: int = 0,
    num_seqs: int = 0,
    decode_context_tokens: int = 0,
    prefill_context_pairs: int = 0,
) -> float:
    """:meth:`RooflineModel.step_time` with the default efficiencies."""
    return RooflineModel(model=model, gpu=gpu, tensor_parallel_size=tensor_parallel_size).step_time(
        prefill_tokens=prefill_tokens,
        decode_tokens=decode_tokens,
        num_seqs=num_seqs,
        decode_context_tokens=decode_context_tokens,
        prefill_context_pairs=prefill_context_pairs,
    )
