"""Validate tuner.hardware against numbers vLLM printed in public logs, and the roofline prior
against published step times. Prints the markdown tables kept in docs/hardware.md.

    python benchmarks/bench_memory_model.py

Each point states the vLLM version's settings that differ from 0.32: releases up to 0.19
captured CUDA graphs after sizing the KV cache (``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS``
was off, so graphs did not shrink it: enforce_eager here), and V0 releases (<= 0.7) profiled
with max_num_batched_tokens = max_model_len when chunked prefill was off.

The vLLM 0.19 H100 points are the raw start-up logs of llm-d-planner's accuracy sweep
(llm-d-incubation/llm-d-planner#205): vLLM 0.19.0, H100 80GB HBM3 (79.19 GiB), --max-model-len
8192, --gpu-memory-utilization 0.95, prefix caching off, vLLM's other defaults (8192-token
budget, 1024 sequences, async scheduling); their parsed values are in results_raw.csv there.
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
    ref: str = ""  # link text (default: the URL's last part)


_FORK = "https://github.com/jgchn/llm-d-planner/blob/6417620b546c621155b3f2814b994f7abd6d18e8"
_UPSTREAM = "https://github.com/llm-d-incubation/llm-d-planner/blob/d3121e059da88662db39a926a3ead964be97359b"


def _v019(
    label: str,
    model: str,
    tp: int,
    tokens: int,
    log: str,
    upstream: bool = False,
    note: str = "",
    **kwargs: Any,
) -> LogPoint:
    """One start-up of llm-d-planner's vLLM 0.19.0 sweep on an H100 SXM (see the module doc)."""
    url = f"{_UPSTREAM if upstream else _FORK}/accuracy/results/v0.19.0/logs/{log}"
    settings = dict(gpu_memory_utilization=0.95, max_model_len=8192, enforce_eager=True)
    return LogPoint(
        f"{label}, H100, TP{tp}, 0.95, len 8192 (v0.19)",
        url,
        ModelSpec.named(model),
        "h100",
        "tokens",
        tokens,
        dict(tensor_parallel_size=tp, **settings, **kwargs),
        note=note,
        ref="llm-d-planner#205 log",
    )


def v019_points() -> list[LogPoint]:
    """vLLM 0.19.0 on H100 80GB: 'GPU KV cache size: N tokens' from each start-up log."""
    llama, qwen = "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct"
    base = "h100-80gb--tp{}pp1dp1--8192"
    return [
        _v019("Llama-3.1-8B", llama, 1, 476016, f"meta-llama-llama-3-1-8b---{base.format(1)}.log"),
        _v019("Llama-3.1-8B", llama, 2, 1044688, f"meta-llama-llama-3-1-8b---{base.format(2)}.log"),
        _v019("Llama-3.1-8B", llama, 4, 2209792, f"meta-llama-llama-3-1-8b---{base.format(4)}.log"),
        _v019(
            "Llama-3.1-8B, fp8 KV cache",
            llama,
            1,
            952032,
            f"meta-llama---{base.format(1)}-dtbf16-kvfp8.log",
            kv_cache_dtype="fp8",
        ),
        _v019(
            "Llama-3.1-8B, --quantization fp8",
            llama,
            1,
            529248,
            f"meta-llama-llama-3---{base.format(1)}-qfp8.log",
            upstream=True,
            quantization="fp8",
        ),
        _v019("Qwen2.5-7B", qwen, 1, 1096000, f"qwen-qwen2-5-7b-instruct--{base.format(1)}.log"),
        _v019("Qwen2.5-7B", qwen, 2, 2390592, f"qwen-qwen2-5-7b-instruct--{base.format(2)}.log"),
        _v019("Qwen2.5-7B", qwen, 4, 5043280, f"qwen-qwen2-5-7b-instruct--{base.format(4)}.log"),
        _v019("Qwen3-8B", "Qwen/Qwen3-8B", 1, 418688, f"qwen-qwen3-8b--{base.format(1)}.log"),
        _v019(
            "Qwen2.5-72B",
            "Qwen/Qwen2.5-72B-Instruct",
            2,
            19920,
            f"qwen-qwen2-5-72b-instruc--{base.format(2)}.log",
        ),
        _v019(
            "gemma-2-2b",
            "google/gemma-2-2b-it",
            1,
            670160,
            f"google-gemma-2-2b-it--{base.format(1)}.log",
            upstream=True,
        ),
        _v019(
            "gemma-2-9b",
            "google/gemma-2-9b-it",
            1,
            168880,
            f"google-gemma-2-9b-it--{base.format(1)}.log",
            upstream=True,
        ),
        _v019(
            "gemma-2-27b",
            "google/gemma-2-27b-it",
            1,
            58672,
            f"google-gemma-2-27b-it--{base.format(1)}.log",
            upstream=True,
        ),
        _v019(
            "gemma-3-4b",
            "google/gemma-3-4b-it",
            1,
            468144,
            f"google-gemma-3-4b-it--{base.format(1)}.log",
            upstream=True,
        ),
        _v019(
            "gemma-3-12b",
            "google/gemma-3-12b-it",
            1,
            130304,
            f"google-gemma-3-12b-it--{base.format(1)}.log",
            upstream=True,
        ),
        _v019(
            "gemma-3-27b",
            "google/gemma-3-27b-it",
            1,
            36560,
            f"google-gemma-3-27b-it--{base.format(1)}.log",
            upstream=True,
        ),
        _v019("phi-4", "microsoft/phi-4", 1, 241568, f"microsoft-phi-4--{base.format(1)}.log"),
        _v019(
            "Mixtral-8x7B",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            2,
            465936,
            f"mistralai-mixtral-8x7b-i--{base.format(2)}.log",
        ),
        _v019(
            "Llama-3.3-70B FP8-dynamic",
            "meta-llama/Llama-3.3-70B-Instruct",
            2,
            244304,
            f"fp8dyn-llama-3-3-70b--{base.format(2)}.log",
            upstream=True,
            quantization="fp8",
        ),
        _v019(
            "Llama-3.3-70B FP8-dynamic",
            "meta-llama/Llama-3.3-70B-Instruct",
            4,
            708992,
            f"fp8dyn-llama-3-3-70b--{base.format(4)}.log",
            upstream=True,
            quantization="fp8",
        ),
        _v019(
            "gpt-oss-20b",
            "openai/gpt-oss-20b",
            1,
            1277184,
            f"openai-gpt-oss-20b--{base.format(1)}.FAILED.log",
            upstream=True,
            note="the engine failed to start after sizing the KV cache (log marked FAILED)",
        ),
    ]


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
            dict(gpu_memory_utilization=0.65, max_model_len=131072, enforce_eager=True),
            note="log prints 'Available KV cache memory: 36.56 GiB'",
        ),
        LogPoint(
            "gpt-oss-120b, H100, TP1, 0.90 (v0.10)",
            "https://github.com/vllm-project/vllm/issues/23278",
            ModelSpec.named("openai/gpt-oss-120b"),
            "h100",
            "refused",
            -2.14,
            dict(gpu_memory_utilization=0.9, enforce_eager=True),
            note="vLLM: 'Available KV cache memory: -2.14 GiB', refused",
        ),
        LogPoint(
            "gpt-oss-120b, H100, TP1, 0.95, budget 1024 (v0.11)",
            "https://github.com/vllm-project/vllm/issues/27508",
            ModelSpec.named("openai/gpt-oss-120b"),
            "h100",
            "refused",
            1.71,
            dict(gpu_memory_utilization=0.95, max_num_batched_tokens=1024, enforce_eager=True),
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
        *v019_points(),
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


def _link(url: str, ref: str = "") -> str:
    return f"[{ref or url.rstrip('/').split('/')[-1]}]({url})"


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
        rows.append(f"| {p.label} | {printed} | {text} | {err} | {_link(p.url, p.ref)}{note} |")
    return "\n".join(rows)


def memory_summary() -> str:
    """The bar of issue #18: how many comparable printed sizes are within 10 %, on which GPUs."""
    sized = [p for p in points() if p.comparable and p.printed != "refused"]
    errors = {p.label: (predict(p)[1] or 0) / p.value - 1 for p in sized}
    hits = [p for p in sized if abs(errors[p.label]) <= 0.10]
    worst = max(abs(e) for e in errors.values())
    gpus = sorted({p.gpu for p in hits})
    return (
        f"{len(hits)} of {len(sized)} comparable printed KV sizes within 10 % "
        f"(worst {worst:.1%}), on {len(gpus)} GPU kinds ({', '.join(gpus)}); "
        f"refusals: {sum(p.printed == 'refused' for p in points())} cited, "
        f"{sum(p.printed == 'refused' and predict(p)[1] is None for p in points())} reproduced"
    )


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
    llama8 = ModelSpec.named("meta-llama/Llama-3.1-8B-Instruct")
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
        StepPoint(
            "Llama-3.1-8B, A100 40GB, TP1 (v0.23): decode step, batch 1, 1024-1152 context",
            "https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on",
            llama8,
            "a100-40gb",
            1,
            1 / 75,
            dict(decode_tokens=1, num_seqs=1, decode_context_tokens=1088),
            note="'decode at one request per time runs at about 75 tokens/sec' (1024 in, 128 out)",
        ),
        StepPoint(
            "Llama-3.1-8B, H100, TP1 (v0.21): decode step, batch 1, short chat prompt",
            "https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/",
            llama8,
            "h100",
            1,
            6.48e-3,
            dict(decode_tokens=1, num_seqs=1, decode_context_tokens=256),
            note="tpot_p50 6.48 ms at conc 1; prompt length not stated (TTFT 14 ms): 256 assumed",
        ),
        StepPoint(
            "Llama-3.1-8B, H100, TP1 (v0.21): decode step, batch 4, short chat prompts",
            "https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/",
            llama8,
            "h100",
            1,
            6.59e-3,
            dict(decode_tokens=4, num_seqs=4, decode_context_tokens=4 * 256),
            note="tpot_p50 6.59 ms at conc 4; 256 tokens each assumed, as above",
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
    print(f"\n{memory_summary()}")
    print("\n## Step time: published measurement vs roofline prior\n")
    print(step_table())
