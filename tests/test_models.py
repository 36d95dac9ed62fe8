"""Core models: validation that names the field, the value and what is allowed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tuner import (
    ConfigError,
    Request,
    SearchSpace,
    ServingConfig,
    TunerError,
    Workload,
    WorkloadError,
)


def test_serving_config_has_vllm_names_and_defaults() -> None:
    c = ServingConfig()
    assert (c.max_num_batched_tokens, c.max_num_seqs, c.long_prefill_token_threshold) == (
        2048,
        128,
        0,
    )
    assert c.enable_chunked_prefill is True and c.async_scheduling is False
    assert c.num_kv_blocks is None and c.block_size == 16


def test_serving_config_is_frozen_and_forbids_unknown_fields() -> None:
    c = ServingConfig()
    with pytest.raises(Exception, match="frozen"):
        c.max_num_seqs = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="max_num_batch_tokens"):
        ServingConfig(max_num_batch_tokens=64)  # type: ignore[call-arg]


def test_bad_value_error_names_field_value_and_bound() -> None:
    with pytest.raises(ConfigError) as e:
        ServingConfig(max_num_seqs=0)
    assert "max_num_seqs = 0" in str(e.value) and "greater than or equal to 1" in str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, TunerError)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (
            {"enable_chunked_prefill": False, "max_num_batched_tokens": 512, "max_model_len": 1024},
            "enable_chunked_prefill=False needs max_num_batched_tokens",
        ),
        ({"max_num_batched_tokens": 32, "max_num_seqs": 64}, r"must be >= max_num_seqs \(64\)"),
        (
            {"long_prefill_token_threshold": 5000, "max_model_len": 4096},
            "long_prefill_token_threshold",
        ),
        ({"num_kv_blocks": 4, "block_size": 16, "max_model_len": 1024}, "one full-length request"),
    ],
)
def test_combinations_vllm_refuses_are_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ServingConfig(**kw)  # type: ignore[arg-type]


def test_to_vllm_args_gives_the_serve_flags() -> None:
    c = ServingConfig(
        max_num_batched_tokens=512,
        max_num_seqs=16,
        long_prefill_token_threshold=64,
        enable_chunked_prefill=True,
        num_kv_blocks=1000,
        block_size=32,
        max_model_len=4096,
    )
    args = c.to_vllm_args()
    pairs = dict(itertools.pairwise(args))
    assert pairs["--max-num-batched-tokens"] == "512"
    assert pairs["--max-num-seqs"] == "16"
    assert pairs["--long-prefill-token-threshold"] == "64"
    assert pairs["--num-gpu-blocks-override"] == "1000"
    assert pairs["--block-size"] == "32"
    assert "--enable-chunked-prefill" in args and "--no-async-scheduling" in args
    off = ServingConfig(enable_chunked_prefill=False, max_num_batched_tokens=8192)
    assert "--no-enable-chunked-prefill" in off.to_vllm_args()


def test_request_validation_errors_are_workload_errors() -> None:
    with pytest.raises(WorkloadError, match="prompt_tokens = 0"):
        Request(arrival=0, prompt_tokens=0, output_tokens=1)
    with pytest.raises(WorkloadError, match="arrival"):
        Request(arrival=float("nan"), prompt_tokens=1, output_tokens=1)


def test_workload_keeps_ids_in_given_order_and_schedules_by_arrival() -> None:
    w = Workload(
        [
            Request(arrival=3, prompt_tokens=1, output_tokens=1),
            Request(arrival=1, prompt_tokens=2, output_tokens=1),
            Request(arrival=1, prompt_tokens=3, output_tokens=1),
        ]
    )
    assert w.prompt_tokens.tolist() == [1, 2, 3]
    assert w.schedule_order.tolist() == [1, 2, 0]  # stable for equal arrivals
    assert w[0].arrival == 3
    with pytest.raises(ValueError):
        w.arrival[0] = 5  # read-only


def test_workload_from_arrays_rejects_bad_rows_with_their_index() -> None:
    with pytest.raises(WorkloadError, match=r"requests\[1\]\.prompt_tokens = 0"):
        Workload.from_arrays([0, 1], [5, 0], [1, 1])
    with pytest.raises(WorkloadError, match="equal length"):
        Workload.from_arrays([0, 1], [5], [1, 1])
    with pytest.raises(WorkloadError, match="at least one request"):
        Workload([])


def test_head_takes_the_earliest_arrivals_keeping_order() -> None:
    w = Workload.from_arrays([4, 0, 2, 1], [1, 2, 3, 4], [1, 1, 1, 1])
    h = w.head(0.5)
    assert h.arrival.tolist() == [0.0, 1.0]
    assert h.prompt_tokens.tolist() == [2, 4]
    assert len(w.head(0.01)) == 1
    with pytest.raises(WorkloadError, match="fraction"):
        w.head(0)


def test_search_space_enumerates_the_grid_in_order() -> None:
    space = SearchSpace(
        {"max_num_batched_tokens": [32, 64, 512], "long_prefill_token_threshold": [0, 32]},
        base=ServingConfig(max_num_seqs=8),
    )
    got = [(c.max_num_batched_tokens, c.long_prefill_token_threshold) for c in space]
    assert got == [(32, 0), (32, 32), (64, 0), (64, 32), (512, 0), (512, 32)]
    assert all(c.max_num_seqs == 8 for c in space)


def test_search_space_rejects_invalid_combinations_clearly() -> None:
    dims = {"max_num_batched_tokens": [256, 8192], "enable_chunked_prefill": [True, False]}
    with pytest.raises(ConfigError, match=r"(?s)1 of 4 combinations.*skip_invalid=True"):
        SearchSpace(dims, base=ServingConfig(max_model_len=8192))
    space = SearchSpace(dims, base=ServingConfig(max_model_len=8192), skip_invalid=True)
    assert len(space) == 3
    assert space.excluded[0][0] == {"max_num_batched_tokens": 256, "enable_chunked_prefill": False}


@pytest.mark.parametrize(
    ("dims", "match"),
    [
        ({"max_num_batch_tokens": [1]}, "unknown knob 'max_num_batch_tokens'"),
        ({"max_num_seqs": []}, "at least one value"),
        ({"max_num_seqs": 4}, "must be a list"),
        ({"max_num_seqs": [0, 4]}, r"value 0 is not allowed"),
        ({"max_num_seqs": [4, 4]}, "repeat"),
    ],
)
def test_search_space_bad_input(dims: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SearchSpace(dims)  # type: ignore[arg-type]


def test_measurement_arrays_are_read_only_and_shapes_checked() -> None:
    from tuner import BackendError, Measurement

    m = Measurement(
        source="t",
        arrival=[0.0],
        prompt_tokens=[1],
        output_tokens=[2],
        ttft=[1.0],
        e2e=[2.0],
        duration=2.0,
    )
    with pytest.raises(ValueError):
        m.ttft[0] = 3
    assert np.isclose(m.tpot[0], 1.0)
    with pytest.raises(BackendError, match="one per request"):
        Measurement(
            source="t",
            arrival=[0.0, 1.0],
            prompt_tokens=[1],
            output_tokens=[2],
            ttft=[1.0],
            e2e=[2.0],
            duration=2.0,
        )
    with pytest.raises(BackendError, match="did not record the engine's steps"):
        _ = m.max_step_tokens


def test_deployment_knobs_have_vllms_names_defaults_and_flags() -> None:
    c = ServingConfig()
    assert (c.gpu_memory_utilization, c.tensor_parallel_size, c.kv_cache_dtype) == (0.92, 1, "auto")
    assert (c.quantization, c.enforce_eager) == (None, False)
    d = ServingConfig(
        gpu_memory_utilization=0.95,
        tensor_parallel_size=4,
        kv_cache_dtype="fp8",
        quantization="fp8",
        enforce_eager=True,
    )
    names = ["gpu_memory_utilization", "tensor_parallel_size", "kv_cache_dtype"]
    assert d.to_vllm_args([*names, "quantization", "enforce_eager"]) == [
        "--gpu-memory-utilization",
        "0.95",
        "--tensor-parallel-size",
        "4",
        "--kv-cache-dtype",
        "fp8",
        "--quantization",
        "fp8",
        "--enforce-eager",
    ]
    assert d.to_vllm_config(names) == {
        "gpu-memory-utilization": 0.95,
        "tensor-parallel-size": 4,
        "kv-cache-dtype": "fp8",
    }
    assert c.to_vllm_args(["quantization"]) == []  # None: the checkpoint's own


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"gpu_memory_utilization": 0}, "greater than 0"),
        ({"gpu_memory_utilization": 1.2}, "less than or equal to 1"),
        ({"tensor_parallel_size": 0}, "greater than or equal to 1"),
        ({"kv_cache_dtype": "int8"}, "'auto', 'fp8', 'fp8_e4m3' or 'fp8_e5m2'"),
        ({"quantization": "int3"}, "'fp8', 'awq'"),
    ],
)
def test_deployment_knobs_are_bounded(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ServingConfig(**kw)  # type: ignore[arg-type]
