"""tuner.hardware: the memory formula term by term, cited vLLM logs, specs, defaults, roofline."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner.core import ConfigError
from tuner.hardware import (
    GPU,
    ModelSpec,
    RooflineModel,
    kv_cache_tokens,
    memory_breakdown,
    vllm_default_scheduler_limits,
)

GiB = 1 << 30
MiB = 1 << 20
LLAMA8 = ModelSpec.named("meta-llama/Llama-3.1-8B-Instruct")
H100 = GPU.named("NVIDIA H100 80GB HBM3")


@functools.cache
def _bench() -> Any:
    path = Path(__file__).parent.parent / "benchmarks" / "bench_memory_model.py"
    spec = importlib.util.spec_from_file_location("bench_memory_model", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_llama_8b_on_h100_term_by_term() -> None:
    b = memory_breakdown(LLAMA8, H100, gpu_memory_utilization=0.9)
    total = int(79.19 * GiB)
    assert b.total_memory == total
    assert b.requested_memory == math.ceil(total * 0.9)
    # Weights: 32 layers x (q 4096x4096 + k,v 4096x1024 each + o 4096x4096 + MLP 3x4096x14336
    # + 2 norms) + embedding and LM head 128256x4096 each + final norm, in bf16.
    per_layer = 4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336 + 2 * 4096
    params = 32 * per_layer + 2 * 128256 * 4096 + 4096
    assert params == 8_030_261_248
    assert b.weights == params * 2
    # Activations (H100, openai server: 8192 tokens, 1024 seqs): the sampler's 1024 x 128256
    # logits x 14 B (bf16 logits, their fp32 copy, fp32 probs, fp32 noise) beat the forward's
    # 8192 x 2 B x (3 x 14336 + 3 x 4096).
    assert b.max_num_batched_tokens == 8192 and b.max_num_seqs == 1024
    forward = 8192 * 2 * (3 * 14336 + 3 * 4096)
    sampler = 1024 * 128256 * (2 + 4 + 4 + 4)
    assert b.activation_peak == max(forward, sampler) == sampler
    assert b.cuda_graph == 32 * 22 * MiB
    assert b.non_torch == int(0.35 * GiB)
    assert b.available_kv == b.requested_memory - b.weights - sampler - 32 * 22 * MiB - b.non_torch
    # KV: 32 layers x 8 heads x 128 dims x (K and V) x 2 B = 128 KiB per token; 16-token blocks.
    assert b.kv_bytes_per_token == 32 * 8 * 128 * 2 * 2 == 131072
    assert b.bytes_per_block == 16 * 131072
    assert b.num_blocks == b.available_kv // (16 * 131072)
    # One 131072-token request needs 8192 blocks; "GPU KV cache size" = blocks / 8192 x 131072.
    assert b.blocks_per_request == 8192
    assert b.kv_cache_tokens == int(b.num_blocks / 8192 * 131072) == b.num_blocks * 16
    assert b.kv_cache_tokens == kv_cache_tokens(LLAMA8, H100, gpu_memory_utilization=0.9)


@pytest.mark.parametrize(
    "point", [p for p in _bench().points() if p.comparable], ids=lambda p: p.label
)
def test_cited_vllm_log_points_within_ten_percent(point: Any) -> None:
    text, value = _bench().predict(point)
    if point.printed == "refused":
        if point.url.endswith("23278"):
            assert value is None, text
        return  # 27508 is a known miss, shown in docs/hardware.md
    assert value is not None, text
    assert abs(value / point.value - 1) <= 0.10, (point.label, value, point.value)


def test_validation_bar_ten_points_within_ten_percent_on_three_gpus() -> None:
    """Issue #18's bar: >= 10 cited points within 10 %, on >= 3 GPU kinds, V0 and V1 logs."""
    bench = _bench()
    hits = []
    for p in bench.points():
        _, value = bench.predict(p)
        comparable = p.comparable and p.printed != "refused" and value is not None
        if comparable and abs(value / p.value - 1) <= 0.10:
            hits.append(p)
    assert len(hits) >= 10
    assert len({p.gpu for p in hits}) >= 3
    assert sum("(v0.19)" in p.label for p in hits) >= 10  # V1 engine logs
    assert any(p.kwargs.get("async_scheduling") is False for p in hits)  # and V0-era ones


def test_non_torch_memory_with_tp_depends_on_the_link() -> None:
    nvlink = memory_breakdown(LLAMA8, H100, tensor_parallel_size=2, check=False)
    pcie = memory_breakdown(LLAMA8, GPU.named("rtx4090"), tensor_parallel_size=2, check=False)
    single = memory_breakdown(LLAMA8, H100, check=False)
    assert single.non_torch == int(0.35 * GiB)
    assert nvlink.non_torch == int(0.35 * GiB) + int(1.8 * GiB)  # NCCL buffers, measured on H100
    assert pcie.non_torch == int(0.35 * GiB) + int(0.5 * GiB)


def test_kv_heads_are_replicated_when_tp_exceeds_them() -> None:
    qwen = ModelSpec.named("Qwen2.5-7B")  # 4 KV heads, 28 query heads
    b4 = memory_breakdown(qwen, H100, tensor_parallel_size=4, gpu_memory_utilization=0.9)
    assert b4.kv_bytes_per_token == 28 * 1 * 128 * 2 * 2
    with pytest.raises(
        ConfigError,
        match=r"Total number of attention heads \(28\) must be "
        r"divisible by tensor parallel size \(8\)\.",
    ):
        memory_breakdown(qwen, H100, tensor_parallel_size=8)


@pytest.mark.parametrize("util", [0.0, -0.1, 1.01, 2])
def test_gpu_memory_utilization_outside_zero_one_is_named(util: float) -> None:
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        kv_cache_tokens(LLAMA8, H100, gpu_memory_utilization=util)


def test_gpu_memory_utilization_one_is_allowed() -> None:
    assert kv_cache_tokens(LLAMA8, H100, gpu_memory_utilization=1.0) > 0


def test_weights_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"weights need .* GiB per GPU"):
        kv_cache_tokens(ModelSpec.named("llama-3.3-70b"), GPU.named("h100"))


def test_no_memory_left_uses_vllm_wording() -> None:
    with pytest.raises(ConfigError, match="No available memory for the cache blocks"):
        kv_cache_tokens(LLAMA8, GPU.named("l4"), gpu_memory_utilization=0.5)


def test_one_full_length_request_must_fit_with_vllm_wording() -> None:
    with pytest.raises(
        ConfigError,
        match=r"To serve at least one request with the model's max "
        r"seq len \(131072\).*estimated maximum model length is \d+",
    ):
        kv_cache_tokens(LLAMA8, GPU.named("l4"), gpu_memory_utilization=0.95)


def test_max_model_len_above_the_model_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"User-specified max_model_len \(200000\)"):
        kv_cache_tokens(LLAMA8, H100, max_model_len=200000)


def test_fp8_kv_cache_doubles_tokens() -> None:
    auto = memory_breakdown(LLAMA8, H100)
    fp8 = memory_breakdown(LLAMA8, H100, kv_cache_dtype="fp8")
    assert fp8.kv_bytes_per_token * 2 == auto.kv_bytes_per_token
    assert fp8.num_blocks in (2 * auto.num_blocks, 2 * auto.num_blocks + 1)


def test_quantized_weights_shrink_and_enforce_eager_drops_graphs() -> None:
    bf16 = memory_breakdown(LLAMA8, H100)
    assert memory_breakdown(LLAMA8, H100, quantization="fp8").weights < 0.6 * bf16.weights
    assert memory_breakdown(LLAMA8, H100, quantization="awq").weights < 0.4 * bf16.weights
    eager = memory_breakdown(LLAMA8, H100, enforce_eager=True)
    assert eager.cuda_graph == 0 and eager.available_kv == bf16.available_kv + bf16.cuda_graph


def test_sliding_window_layers_hold_at_most_the_window() -> None:
    gemma = ModelSpec.named("gemma-3-12b")
    assert len(gemma.sliding_layers) == 40 and gemma.full_attention_layers == 8
    b = memory_breakdown(gemma, H100, max_model_len=131072)
    # 8 full layers per group: 1 full group + 5 sliding groups; a sliding group needs
    # ceil((1024 - 1 + 2 x 8192) / 16) + 1 blocks, a full one 131072 / 16.
    assert b.blocks_per_request == 8192 + 5 * (math.ceil((1023 + 16384) / 16) + 1)
    assert b.kv_cache_tokens > b.num_blocks * 16 / 6  # far more than if all layers were full


def test_mla_stores_one_latent_per_layer() -> None:
    cfg = {
        "num_hidden_layers": 4,
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "intermediate_size": 2048,
        "vocab_size": 1000,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
    }
    m = ModelSpec.from_hf_config(cfg)
    b = memory_breakdown(m, H100, tensor_parallel_size=4, max_model_len=4096)
    assert b.kv_bytes_per_token == 4 * (512 + 64) * 2


def test_from_hf_config_reads_a_dict_a_file_and_a_folder(tmp_path: Path) -> None:
    cfg = {
        "model_type": "gemma3",
        "torch_dtype": "bfloat16",
        "text_config": {
            "model_type": "gemma3_text",
            "num_hidden_layers": 12,
            "hidden_size": 256,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "intermediate_size": 512,
            "vocab_size": 1000,
            "sliding_window": 512,
            "sliding_window_pattern": 6,
            "max_position_embeddings": 8192,
        },
    }
    from_dict = ModelSpec.from_hf_config(cfg, name="tiny")
    assert from_dict.num_layers == 12 and from_dict.num_kv_heads == 2
    assert from_dict.sliding_layers == (0, 1, 2, 3, 4, 6, 7, 8, 9, 10)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert ModelSpec.from_hf_config(tmp_path / "config.json", name="tiny") == from_dict
    assert ModelSpec.from_hf_config(tmp_path, name="tiny") == from_dict


def test_from_hf_config_derives_head_dim_and_params() -> None:
    m = ModelSpec.from_hf_config(
        {
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "vocab_size": 100,
        }
    )
    assert m.head_dim == 16 and m.num_kv_heads == 4
    assert m.total_params == 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 2 * 100 * 64 + 64


def test_unreadable_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ModelSpec.from_hf_config(tmp_path / "missing.json")


@pytest.mark.parametrize("name", ModelSpec.known_names())
def test_every_shipped_model_loads_and_fits_somewhere(name: str) -> None:
    m = ModelSpec.named(name)
    assert m.total_params >= m.active_params > 0
    b200 = GPU.named("b200")
    tp = next(
        t
        for t in (1, 2, 4, 8)
        if m.num_attention_heads % t == 0
        and (memory_breakdown(m, b200, tensor_parallel_size=t, check=False).available_kv > 8 * GiB)
    )
    assert memory_breakdown(m, b200, tensor_parallel_size=tp, check=False).kv_cache_tokens > 0


@pytest.mark.parametrize(
    ("alias", "hf_id"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
        ("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct"),
        ("LLAMA-3.3-70B-INSTRUCT", "meta-llama/Llama-3.3-70B-Instruct"),
        ("qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct"),
        ("gemma-3-27b", "google/gemma-3-27b-it"),
        ("gpt-oss-20b", "openai/gpt-oss-20b"),
        ("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct"),
    ],
)
def test_model_names_are_case_and_org_insensitive(alias: str, hf_id: str) -> None:
    assert ModelSpec.named(alias).name == hf_id


def test_unknown_model_lists_closest_names() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown model 'llama-3.1-9b'; closest known: .*Llama-3.1-8B"
    ):
        ModelSpec.named("llama-3.1-9b")


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA H100 80GB HBM3",
        "NVIDIA A100-SXM4-40GB",
        "NVIDIA L4",
        "NVIDIA H200",
        "NVIDIA A10G",
        "NVIDIA GeForce RTX 4090",
        "NVIDIA L40S",
        "NVIDIA B200",
        "NVIDIA H100 PCIe",
        "NVIDIA A100-SXM4-80GB",
        "NVIDIA A100 80GB PCIe",
        "AMD Instinct MI300X",
        "h100",
        "a100-40gb",
    ],
)
def test_every_nvidia_smi_name_loads(name: str) -> None:
    gpu = GPU.named(name)
    assert gpu.usable_memory_bytes <= gpu.memory_bytes * 1.08
    assert gpu.hbm_bandwidth > 0 and gpu.bf16_flops > 0


def test_unknown_gpu_lists_closest_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown GPU 'h1000'; closest known: .*h100"):
        GPU.named("h1000")


@pytest.mark.parametrize(
    ("gpu", "server", "offline"),
    [
        ("b200", (16384, 1024), (16384, 1024)),  # >= 160 GiB
        ("mi300x", (16384, 1024), (16384, 1024)),  # >= 160 GiB
        ("h100", (8192, 1024), (16384, 1024)),  # >= 70 GiB, not an A100
        ("h200", (8192, 1024), (16384, 1024)),
        ("a100-80gb", (2048, 256), (8192, 256)),  # 80 GB but excluded by name
        ("l40s", (2048, 256), (8192, 256)),  # the rest
        ("l4", (2048, 256), (8192, 256)),
    ],
)
def test_vllm_defaults_per_memory_class(
    gpu: str, server: tuple[int, int], offline: tuple[int, int]
) -> None:
    s = vllm_default_scheduler_limits(GPU.named(gpu), "openai_server")
    o = vllm_default_scheduler_limits(GPU.named(gpu), "llm_class")
    assert (s.max_num_batched_tokens, s.max_num_seqs) == server
    assert (o.max_num_batched_tokens, o.max_num_seqs) == offline
    assert s.async_scheduling and s.block_size == 16


def test_vllm_defaults_on_cpu_scale_with_world_size() -> None:
    one = vllm_default_scheduler_limits("cpu")
    two = vllm_default_scheduler_limits("cpu", "llm_class", world_size=2)
    assert (one.max_num_batched_tokens, one.max_num_seqs, one.async_scheduling, one.block_size) == (
        2048,
        128,
        False,
        128,
    )
    assert (two.max_num_batched_tokens, two.max_num_seqs) == (8192, 512)


def test_vllm_defaults_are_capped_by_max_model_len() -> None:
    d = vllm_default_scheduler_limits(H100, max_model_len=4)
    assert d.max_num_batched_tokens == 1024 * 4 and d.max_num_seqs == 1024
    d = vllm_default_scheduler_limits(
        GPU.named("l4"), max_model_len=4096, enable_chunked_prefill=False
    )
    assert d.max_num_batched_tokens == 4096


def test_roofline_grows_with_tokens_and_context() -> None:
    r = RooflineModel(model=LLAMA8, gpu=H100)
    times = [
        r.step_time(decode_tokens=n, num_seqs=n, decode_context_tokens=n * 1000)
        for n in (1, 8, 64, 512)
    ]
    assert times == sorted(times)
    ctx = [
        r.step_time(decode_tokens=16, num_seqs=16, decode_context_tokens=c)
        for c in (0, 10_000, 1_000_000)
    ]
    assert ctx == sorted(ctx) and ctx[0] < ctx[-1]
    prefill = [
        r.step_time(prefill_tokens=p, num_seqs=1, prefill_context_pairs=p * p // 2)
        for p in (16, 512, 8192)
    ]
    assert prefill == sorted(prefill)
    assert r.step_time() == 0.0


def test_roofline_linear_coefficients_bound_it_from_above() -> None:
    r = RooflineModel(model=LLAMA8, gpu=H100, tensor_parallel_size=2)
    c = r.linear_coefficients()
    for d, ctx in ((1, 100), (64, 64_000), (256, 1_000_000)):
        linear = c.fixed + c.per_decode_token * d + c.per_context_token * ctx
        exact = r.step_time(decode_tokens=d, num_seqs=d, decode_context_tokens=ctx)
        assert exact <= linear * 1.0001 <= 2.2 * exact


def test_roofline_rejects_indivisible_tp() -> None:
    with pytest.raises(ConfigError, match="must be divisible by tensor parallel size"):
        RooflineModel(model=ModelSpec.named("qwen2.5-7b"), gpu=H100, tensor_parallel_size=3)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.5, 1.0), st.floats(0.0, 0.4))
def test_more_memory_never_fewer_kv_tokens(util: float, extra: float) -> None:
    small = memory_breakdown(LLAMA8, H100, gpu_memory_utilization=util, check=False)
    more = min(1.0, util + extra)
    large = memory_breakdown(LLAMA8, H100, gpu_memory_utilization=more, check=False)
    assert large.kv_cache_tokens >= small.kv_cache_tokens


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["qwen2.5-32b", "llama-3.1-70b", "qwen3-14b", "gemma-2-27b"]),
    st.sampled_from([1, 2, 4]),
    st.floats(0.8, 0.95),
)
def test_larger_tp_never_fewer_kv_tokens_per_gpu(name: str, tp: int, util: float) -> None:
    m = ModelSpec.named(name)
    gpu = GPU.named("h200")
    small = memory_breakdown(
        m,
        gpu,
        tensor_parallel_size=tp,
        gpu_memory_utilization=util,
        max_model_len=4096,
        check=False,
    )
    if small.available_kv <= 0:
        return
    large = memory_breakdown(
        m,
        gpu,
        tensor_parallel_size=2 * tp,
        gpu_memory_utilization=util,
        max_model_len=4096,
        check=False,
    )
    assert large.kv_cache_tokens >= small.kv_cache_tokens
