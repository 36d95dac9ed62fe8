"""Validate tuner.hardware against numbers vLLM printed in public logs, and the roofline prior
against published step times. Prints the markdown tables kept in docs/hardware.md.

    python benchmarks/bench_memory_model.py

Each point states the vLLM version's settings that differ from 0.32: V0 releases (<= 0.7)
captured CUDA graphs after sizing the KV cache (so graphs did not shrink it: enforce_eager
here) and profiled with max_num_batched_tokens = max_model_len when chunked prefill was off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuner.core import ConfigError
from tuner.hardware import GPU, ModelSpec, RooflineModel, memory_breakdown

GiB = 1 << 30

QWEN15_7B = {
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "torch_dtype": "bfloat16",
}  # Qwen/Qwen1.5-7B-Chat
R1_QWEN_14B = {
    "num_hidden_layers": 48,
    "hidden_size": 5120,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "intermediate_size": 13824,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16",
    "model_type": "qwen2",
}  # deepseek-ai/DeepSeek-R1-Distill-Qwen-14B


@dataclass
class LogPoint:
    """One vLLM start-up whose printed KV size (or refusal) is public."""

    label: str
    url: str
    model: ModelSpec
    gpu: str
    printed: str  # "tokens", "blocks", "available_gib" or "refused"
    value: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    comparable: bool = True  # False: the run had something this model does not (stated in note)
    note: str = ""


def points() -> list[LogPoint]:
    """The public log points (tests/test_hardware.py checks the comparable ones within 10 %)."""
    llama8 = ModelSpec.named("meta-llama/Llama-3.1-8B-Instruct")
    v0 = dict(enforce_eager=True, async_scheduling=False, max_num_seqs=256)
    return [
        LogPoint(
            "Llama-3.1-8B, RTX 3090, TP1, 0.90, len 20000 (v0.6)",
            "https://github.com/vllm-project/vllm/issues/10517",
            llama8,
            "rtx3090",
            "blocks",
            1952,
            dict(
                gpu_memory_utilization=0.9, max_model_len=20000, max_num_batched_tokens=20000, **v0
            ),
        ),
        LogPoint(
            "Llama-3.1-8B, RTX 3090, TP1, 0.90, len 29000 (v0.6)",
            "https://github.com/vllm-project/vllm/issues/10517",
            llama8,
            "rtx3090",
            "blocks",
            1478,
            dict(
                gpu_memory_utilization=0.9,
                max_model_len=29000,
                max_num_batched_tokens=29000,
                check=False,
                **v0,
            ),
            note="vLLM then refused: 23,648 tokens < 29,000",
        ),
        LogPoint(
            "DeepSeek-R1-Distill-Qwen-14B, 2x RTX 4090, TP2, 0.98 (v0.7)",
            "https://github.com/vllm-project/vllm/issues/13061",
            ModelSpec.from_hf_config(R1_QWEN_14B, "DeepSeek-R1-Distill-Qwen-14B"),
            "rtx4090",
            "tokens",
            81536,
            dict(
                tensor_parallel_size=2,
                gpu_memory_utilization=0.98,
                max_num_batched_tokens=2048,
                check=False,
                **v0,
            ),
            note="vLLM then refused: 81,536 tokens < 131,072",
        ),
        LogPoint(
            "Qwen1.5-7B-Chat GPTQ-Int4, RTX 3090, TP1, 0.90 (v0.3)",
            "https://github.com/QwenLM/Qwen3/issues/16",
            ModelSpec.from_hf_config(QWEN15_7B, "Qwen1.5-7B-Chat"),
            "rtx3090",
            "tokens",
            24320,
            dict(
                quantization="gptq",
                gpu_memory_utilization=0.9,
                max_num_batched_tokens=32768,
                check=False,
                **v0,
            ),
            note="vLLM then refused: 24,320 tokens < 32,768",
        ),
        LogPoint(
            "gpt-oss-20b, A100 80GB, TP1, 0.65, len 131072 (v0.19)",
            "https://myoceane.fr/index.php/ai-vllm-a100-gemma-4/",
            ModelSpec.named("openai/gpt-oss-20b"),
            "a100-80gb",
            "available_gib",
            36.56,
            dict(gpu_memory_utilization=0.65, max_model_len=131072),
            note="log prints 'Available KV cache memory: 36.56 GiB'",
        ),
        LogPoint(
            "gpt-oss-120b, H100, TP1, 0.90 (v0.10)",
            "https://github.com/vllm-project/vllm/issues/23278",
            ModelSpec.named("openai/gpt-oss-120b"),
            "h100",
            "refused",
            -2.14,
            dict(gpu_memory_utilization=0.9),
            note="vLLM: 'Available KV cache memory: -2.14 GiB', refused",
        ),
        LogPoint(
            "gpt-oss-120b, H100, TP1, 0.95, budget 1024 (v0.11)",
            "https://github.com/vllm-project/vllm/issues/27508",
            ModelSpec.named("openai/gpt-oss-120b"),
            "h100",
            "refused",
            1.71,
            dict(gpu_memory_utilization=0.95, max_num_batched_tokens=1024),
            note="vLLM: 'Available KV cache memory: 1.71 GiB', too small for 131,072",
        ),
        LogPoint(
            "Qwen3-235B-A22B-FP8, 4x H100, TP4, 0.90 (v0.9, LMCache)",
            "https://github.com/vllm-project/vllm/issues/21348",
            ModelSpec.named("Qwen/Qwen3-235B-A22B"),
            "h100",
            "tokens",
            178880,
            dict(
                tensor_parallel_size=4,
                gpu_memory_utilization=0.9,
                quantization="fp8",
                max_model_len=40960,
                enforce_eager=True,
                check=False,
            ),
            comparable=False,
            note="LMCache KV connector on; it holds GPU buffers this model does not count",
        ),
    ]


def predict(p: LogPoint) -> tuple[str, float | None]:
    """(the prediction as text, its value in the printed unit; None for a refusal)."""
    try:
        b = memory_breakdown(p.model, GPU.named(p.gpu), **p.kwargs)
    except ConfigError as e:
        return f"refused ({str(e)[:40]}...)", None
    value = {
        "tokens": b.kv_cache_tokens,
        "blocks": b.num_blocks,
        "available_gib": b.available_kv / GiB,
        "refused": b.available_kv / GiB,
    }[p.printed]
    return (
        f"{value:,.2f} GiB" if p.printed in ("available_gib", "refused") else f"{value:,.0f}"
    ), value


def _link(url: str) -> str:
    return f"[{url.rstrip('/').split('/')[-1]}]({url})"


def memory_table() -> str:
    rows = ["| point | printed by vLLM | predicted | error | source |", "|---|---|---|---|---|"]
    for p in points():
        text, value = predict(p)
        unit = {"tokens": " tokens", "blocks": " blocks", "available_gib": " GiB available"}
        printed = (
            f"{p.value:,.2f} GiB, refused"
            if p.printed == "refused"
            else (
                f"{p.value:,.0f}{unit[p.printed]}"
                if p.printed != "available_gib"
                else f"{p.value:.2f}{unit[p.printed]}"
            )
        )
        if p.printed == "refused":
            err = "refusal matches" if value is None else "MISSED refusal"
        else:
            err = f"{(value or 0) / p.value - 1:+.1%}" if value is not None else "refused (wrong)"
        if not p.comparable:
            err += " (not comparable)"
        note = f" {p.note}" if p.note else ""
        rows.append(f"| {p.label} | {printed} | {text} | {err} | {_link(p.url)}{note} |")
    return "\n".join(rows)


@dataclass
class StepPoint:
    """A published per-step time: TPOT at concurrency 1 is one decode step."""

    label: str
    url: str
    model: ModelSpec
    gpu: str
    tp: int
    measured_s: float
    shape: dict[str, int]
    quantization: Any = None
    note: str = ""


def step_points() -> list[StepPoint]:
    qwen72 = ModelSpec.named("Qwen/Qwen2.5-72B-Instruct")
    return [
        StepPoint(
            "Qwen2.5-72B, 2x H100, TP2: decode step, batch 1, ~190 context (TPOT)",
            "https://github.com/tenstorrent/tt-inference-server/issues/143",
            qwen72,
            "h100",
            2,
            30.9e-3,
            dict(decode_tokens=1, num_seqs=1, decode_context_tokens=192),
        ),
        StepPoint(
            "Qwen2.5-72B, 2x H100, TP2: 2048-token prefill (TTFT)",
            "https://github.com/tenstorrent/tt-inference-server/issues/143",
            qwen72,
            "h100",
            2,
            149.5e-3,
            dict(prefill_tokens=2048, num_seqs=1, prefill_context_pairs=2048 * 1024),
            note="TTFT includes one HTTP round trip and tokenisation",
        ),
        StepPoint(
            "Qwen3-14B-AWQ, A100 80GB, TP1, eager: decode step, batch 1, ~16,100 context",
            "https://github.com/vllm-project/vllm/issues/20469",
            ModelSpec.named("Qwen/Qwen3-14B"),
            "a100-80gb",
            1,
            20.63e-3,
            dict(decode_tokens=1, num_seqs=1, decode_context_tokens=16100),
            "awq",
            note="--enforce-eager: no CUDA graphs, so per-kernel launch overhead dominates",
        ),
    ]


def step_table() -> str:
    rows = ["| step | measured | roofline prior | error | source |", "|---|---|---|---|---|"]
    for s in step_points():
        r = RooflineModel(
            model=s.model,
            gpu=GPU.named(s.gpu),
            tensor_parallel_size=s.tp,
            quantization=s.quantization,
        )
        t = r.step_time(**s.shape)
        note = f" {s.note}" if s.note else ""
        rows.append(
            f"| {s.label} | {s.measured_s * 1e3:.1f} ms | {t * 1e3:.1f} ms | "
            f"{t / s.measured_s - 1:+.0%} | {_link(s.url)}{note} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print("## KV cache size: vLLM's printed number vs tuner.hardware\n")
    print(memory_table())
    print("\n## Step time: published measurement vs roofline prior\n")
    print(step_table())
