"""What vLLM's start-up profile measures on the device and the memory model estimates instead.

Non-torch memory, the CUDA graph pool, the dummy sampler's peak and quantized bytes per weight:
each constant says where its value comes from (vLLM 0.32's code where it can be derived, a
printed vLLM log where it is measured). :mod:`tuner.hardware._memory` adds them up.
"""

from __future__ import annotations

from tuner.hardware._gpu import GiB

MiB = 1 << 20

NON_TORCH_BYTES_TP1 = int(0.35 * GiB)
"""Memory the process holds outside PyTorch's allocator after profiling, one GPU: cuBLAS/cuDNN
workspaces, attention-backend buffers. 0.35 GiB is what vLLM printed as ``non_torch_memory``
for Llama-3.1-8B on one GPU (vllm-project/vllm#10517)."""

NON_TORCH_BYTES_TP_EXTRA = int(0.5 * GiB)
"""Added per GPU when TP > 1 over PCIe: NCCL communicators and custom all-reduce buffers (an
estimate; vLLM printed 0.25 GiB non-torch in all for TP=2 on RTX 4090s, vllm-project/vllm#13061)."""

NON_TORCH_BYTES_TP_NVLINK = int(1.8 * GiB)
"""Added per GPU when TP > 1 over NVLink instead: NCCL allocates its channel buffers lazily at the
first all-reduce of the profiling run, after vLLM's start-up snapshot (``init_snapshot`` is taken
after ``init_worker_distributed_environment`` in ``gpu_worker.py``), so they count as non-torch
increase. Measured, not derived: vLLM 0.19 on H100 SXM printed "non-torch forward increase
memory: 2.07GiB" for Llama-3.1-8B at TP=2 against 0.25 GiB at TP=1 (llm-d-planner#205 logs);
the other TP=2/4 logs there (2.06-2.21 GiB) are held out as checks."""

CUDA_GRAPH_BYTES_PER_LAYER = 22 * MiB
"""CUDA graph pool estimate per decoder layer with vLLM's default capture sizes (FULL and
PIECEWISE graphs for 51 batch sizes up to 512). vLLM 0.32 profiles it before sizing the KV
cache (``profile_cudagraph_memory``, subtracted since ``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1``
is the default). 22 MiB is the median per layer of the "Estimated CUDA graph memory: X GiB total"
that vLLM 0.19 printed for 12 dense models at TP=1 on H100 (17-27 MiB; llm-d-planner#205 logs)."""

SAMPLER_BYTES_PER_LOGIT = 14
"""Profiling's dummy sampler run (``_dummy_sampler_run``, ``vllm/v1/worker/gpu_model_runner.py``)
holds, per (sequence, vocab entry): the logits in the model dtype (2 B), their float32 copy
(``Sampler.forward``, 4 B), and in the PyTorch-native warm-up call (``forward_native``, run with a
generator after the FlashInfer one) the float32 probabilities (4 B) and the float32 exponential
noise ``random_sample`` divides them by in place (4 B). vLLM 0.19 printed a torch peak of
1.89 GiB for Llama-3.1-8B's 1024 x 128256 logits, 15.4 B each (llm-d-planner#205)."""

# Bytes per weight of the quantized linear layers (embeddings, LM head and norms stay in the
# model dtype, as vLLM keeps them).
QUANT_BYTES_PER_WEIGHT: dict[str, float] = {
    "fp8": 1.0 + 4 / 4096,  # e4m3 weights, one fp32 scale per output channel (~4096 inputs)
    "awq": 0.5 + (2 + 0.5) / 128,  # int4, an fp16 scale and a 4-bit zero per group of 128
    "gptq": 0.5 + (2 + 0.5) / 128,  # same layout as AWQ (group size 128)
    "bitsandbytes": 0.5 + 1 / 64 + 4 / (64 * 256),  # nf4, 8-bit absmax per 64, fp32 per 256 blocks
    "mxfp4": 0.5 + 2 / 32,  # e2m1 experts, one scale per 32 (vLLM keeps it as 2 B, Marlin layout)
}
