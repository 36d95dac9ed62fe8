"""Context-aware step cost: attention terms priced identically by every step-level engine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import configs, workloads
from tuner import Request, ServingConfig, Workload
from tuner.backends import CostModel, SimulatorBackend
from tuner.backends._cost import prefill_pairs

CONTEXT = CostModel(
    fixed=0.01,
    per_prefill_token=1e-4,
    per_decode_token=2e-4,
    per_sequence=1e-4,
    per_decode_context_token=1e-5,
    per_prefill_context_pair=1e-7,
    time_unit="s",
)


def test_attention_terms_default_to_zero_and_leave_step_times_unchanged() -> None:
    plain = CostModel(fixed=0.01, per_prefill_token=1e-4, time_unit="s")
    assert not plain.uses_context
    assert plain.step_time(10, 2, 3) == plain.step_time(10, 2, 3, 1000, 10**6)
    assert CostModel().is_unit_clock
    assert not CostModel(per_decode_context_token=1e-3).is_unit_clock


def test_prefill_pairs_count_causal_attention() -> None:
    assert prefill_pairs(0, 1) == 1
    assert prefill_pairs(0, 4) == 1 + 2 + 3 + 4
    assert prefill_pairs(4, 2) == 5 + 6


def test_decode_step_pays_for_the_context_it_reads() -> None:
    # One request, prompt 8 (one chunk), then 2 decode steps at contexts 9 and 10.
    cm = CostModel(fixed=1.0, per_decode_context_token=0.5, per_prefill_context_pair=0.01)
    w = Workload([Request(arrival=0, prompt_tokens=8, output_tokens=3)])
    m = SimulatorBackend(cm, fast_forward=False).evaluate(ServingConfig(max_num_seqs=4), w)
    durations = (m.step_end - m.step_start).tolist()
    assert durations == pytest.approx([1.0 + 0.01 * 36, 1.0 + 0.5 * 9, 1.0 + 0.5 * 10])


def test_chunk_pays_for_the_prompt_before_it() -> None:
    cm = CostModel(fixed=1.0, per_prefill_context_pair=0.001)
    w = Workload([Request(arrival=0, prompt_tokens=100, output_tokens=1)])
    m = SimulatorBackend(cm, fast_forward=False).evaluate(
        ServingConfig(max_num_batched_tokens=64, max_num_seqs=4), w
    )
    expected = [1.0 + 0.001 * prefill_pairs(0, 64), 1.0 + 0.001 * prefill_pairs(64, 36)]
    assert (m.step_end - m.step_start).tolist() == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(
    w=workloads(max_output=200),
    c=configs(),
    cm=st.sampled_from(
        [
            CONTEXT,
            CostModel(fixed=1.0, per_decode_context_token=0.01),  # step units
            CostModel(fixed=0.37, per_prefill_context_pair=1e-5, time_unit="s"),
        ]
    ),
)
def test_fast_engine_prices_context_to_the_bit_like_step_by_step(
    w: Workload, c: ServingConfig, cm: CostModel
) -> None:
    fast = SimulatorBackend(cm).evaluate(c, w)
    slow = SimulatorBackend(cm, fast_forward=False).evaluate(c, w)
    assert fast.step_tokens.tolist() == slow.step_tokens.tolist()
    assert fast.step_start.tolist() == slow.step_start.tolist()
    assert fast.step_end.tolist() == slow.step_end.tolist()
    assert fast.ttft.tolist() == slow.ttft.tolist()
    assert fast.e2e.tolist() == slow.e2e.tolist()
    gaps = [np.sort(np.repeat(m.itl_values, m.itl_counts)) for m in (fast, slow)]
    np.testing.assert_array_equal(*gaps)


@pytest.mark.vllm
def test_replay_prices_context_like_the_simulator() -> None:
    from tuner.backends import SchedulerReplayBackend

    rng = np.random.default_rng(3)
    w = Workload.from_arrays(
        np.cumsum(rng.exponential(0.5, 30)), rng.integers(20, 200, 30), rng.integers(2, 40, 30)
    )
    c = ServingConfig(max_num_batched_tokens=128, max_num_seqs=8)
    with SchedulerReplayBackend(cost_model=CONTEXT) as replay:
        r = replay.evaluate(c, w)
    s = SimulatorBackend(CONTEXT).evaluate(c, w)
    assert r.step_tokens.tolist() == s.step_tokens.tolist()
    np.testing.assert_allclose(r.step_end, s.step_end, rtol=1e-12)
