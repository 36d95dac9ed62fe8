"""Hypothesis strategies shared by the tests: small random workloads and configurations."""

from __future__ import annotations

from hypothesis import strategies as st

from tuner import Request, ServingConfig, Workload


@st.composite
def workloads(
    draw: st.DrawFn, max_requests: int = 12, max_prompt: int = 300, max_output: int = 40
) -> Workload:
    n = draw(st.integers(1, max_requests))
    integer_arrivals = draw(st.booleans())
    reqs = []
    for _ in range(n):
        if integer_arrivals:
            arrival: float = draw(st.integers(0, 60))
        else:
            arrival = draw(st.floats(0, 60, allow_nan=False, allow_infinity=False))
        reqs.append(
            Request(
                arrival=arrival,
                prompt_tokens=draw(st.integers(1, max_prompt)),
                output_tokens=draw(st.integers(1, max_output)),
            )
        )
    return Workload(reqs)


@st.composite
def configs(draw: st.DrawFn, max_model_len: int = 512, kv: bool = True) -> ServingConfig:
    chunked = draw(st.booleans())
    seqs = draw(st.integers(1, 16))
    if chunked:
        budget = draw(st.integers(max(seqs, 1), 600))
    else:
        budget = draw(st.integers(max_model_len, max_model_len + 300))
    block_size = draw(st.sampled_from([1, 4, 16, 32]))
    min_blocks = -(-max_model_len // block_size) + 1
    num_kv_blocks = (
        draw(st.one_of(st.none(), st.integers(min_blocks, min_blocks * 4))) if kv else None
    )
    return ServingConfig(
        max_num_batched_tokens=budget,
        max_num_seqs=seqs,
        long_prefill_token_threshold=draw(st.sampled_from([0, 0, 1, 8, 32, 100])),
        enable_chunked_prefill=chunked,
        num_kv_blocks=num_kv_blocks,
        block_size=block_size,
        max_model_len=max_model_len,
        async_scheduling=draw(st.booleans()),
    )


@st.composite
def closed_loop_workloads(
    draw: st.DrawFn, max_requests: int = 12, max_prompt: int = 300, max_output: int = 40
) -> Workload:
    """Closed loop: 1-5 users (any assignment of requests to users), starts and think times
    on the unit clock's integers or anywhere."""
    n = draw(st.integers(1, max_requests))
    users = draw(st.integers(1, 5))
    integer = draw(st.booleans())
    time = st.integers(0, 20) if integer else st.floats(0, 20, allow_nan=False)
    return Workload.from_arrays(
        [draw(time) for _ in range(n)],
        [draw(st.integers(1, max_prompt)) for _ in range(n)],
        [draw(st.integers(1, max_output)) for _ in range(n)],
        user=[draw(st.integers(0, users - 1)) for _ in range(n)],
        think_time=[
            draw(st.sampled_from([0, 0, 1, 3])) if integer else draw(time) for _ in range(n)
        ],
    )
