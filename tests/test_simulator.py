"""The simulator pins the seed lab's lessons, vLLM 0.32's step semantics, and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.strategies import configs, workloads
from tuner import ConfigError, ConfigRefused, Request, ServingConfig, Workload
from tuner.backends import CostModel, SimulatorBackend

SIM = SimulatorBackend()


def cfg(**kw: object) -> ServingConfig:
    return ServingConfig(**{"max_num_seqs": 8, **kw})  # type: ignore[arg-type]


def seed_workload() -> Workload:
    """The seed's shape: a 24-token decode stream, then two 64-token prompts at once."""
    return Workload(
        [
            Request(arrival=0, prompt_tokens=8, output_tokens=24),
            Request(arrival=2, prompt_tokens=64, output_tokens=2),
            Request(arrival=2, prompt_tokens=64, output_tokens=2),
        ]
    )


# --- the seed lab's lessons -------------------------------------------------------------------
def test_throughput_more_budget_never_more_steps() -> None:
    w = seed_workload()
    for thr in (0, 16, 32):
        steps = [
            SIM.evaluate(
                cfg(max_num_batched_tokens=b, long_prefill_token_threshold=thr), w
            ).total_steps
            for b in (8, 16, 32, 40, 64, 128, 512)
        ]
        assert steps == sorted(steps, reverse=True), (thr, steps)


def test_spike_threshold_is_per_request_budget_is_global() -> None:
    w = seed_workload()
    capped = SIM.evaluate(cfg(max_num_batched_tokens=512, long_prefill_token_threshold=32), w)
    # Two 32-token chunks plus the stream's decode stack in one step: 65 > the threshold.
    assert capped.max_step_tokens == 65
    assert 65 in capped.step_tokens.tolist()
    # Only the budget caps the step.
    budgeted = SIM.evaluate(cfg(max_num_batched_tokens=40, long_prefill_token_threshold=32), w)
    assert budgeted.max_step_tokens == 40


def test_decode_stream_hides_the_chunks_at_zero_step_cost() -> None:
    w = seed_workload()
    whole = SIM.evaluate(cfg(max_num_batched_tokens=512), w)
    chunked = SIM.evaluate(cfg(max_num_batched_tokens=512, long_prefill_token_threshold=32), w)
    assert whole.max_step_tokens == 129  # both prompts and a decode in one step
    assert chunked.total_steps == whole.total_steps == 24  # the stream's 24 steps hide them


def test_lonely_fat_prompt_split_by_the_budget_pays_for_every_chunk() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=96, output_tokens=4)])
    whole = SIM.evaluate(cfg(max_num_batched_tokens=128), w)
    split = SIM.evaluate(cfg(max_num_batched_tokens=32), w)
    assert whole.total_steps == 4
    assert split.total_steps == 4 + 2  # 3 chunks instead of 1
    assert split.step_tokens.tolist() == [32, 32, 32, 1, 1, 1]


def test_lone_request_is_never_capped_by_the_threshold_vllm_032() -> None:
    # The seed capped every prefill; vLLM 0.32 skips the threshold when one request is eligible.
    w = Workload([Request(arrival=0, prompt_tokens=96, output_tokens=2)])
    m = SIM.evaluate(cfg(max_num_batched_tokens=512, long_prefill_token_threshold=16), w)
    assert m.step_tokens.tolist() == [96, 1]


def test_queueing_shows_up_in_ttft() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=16, output_tokens=8) for _ in range(3)])
    free = SIM.evaluate(cfg(max_num_seqs=4, max_num_batched_tokens=512), w)
    queued = SIM.evaluate(cfg(max_num_seqs=1, max_num_batched_tokens=512), w)
    assert free.ttft_steps.tolist() == [0, 0, 0]
    assert queued.ttft_steps.tolist() == [0, 8, 16]  # each waits for the one before to finish
    assert queued.ttft.tolist() == [1.0, 9.0, 17.0]


def test_ttft_is_measured_from_arrival() -> None:
    w = Workload(
        [
            Request(arrival=0, prompt_tokens=8, output_tokens=2),
            Request(arrival=10, prompt_tokens=8, output_tokens=3),
        ]
    )
    m = SIM.evaluate(cfg(), w)
    assert m.ttft_steps.tolist() == [0, 0]  # an idle engine serves in the arrival step
    assert m.ttft.tolist() == [1.0, 1.0]  # the first-token step ends one step after arrival
    assert m.first_token_step.tolist() == [0, 2]  # indices of executed steps (idle skipped)
    assert m.step_start.tolist() == [0.0, 1.0, 10.0, 11.0, 12.0]


def test_request_arriving_mid_step_is_seen_by_the_next_step() -> None:
    cm = CostModel(fixed=1.0, time_unit="s")
    w = Workload(
        [
            Request(arrival=0, prompt_tokens=8, output_tokens=4),
            Request(arrival=1.5, prompt_tokens=8, output_tokens=1),
        ]
    )
    m = SimulatorBackend(cm).evaluate(cfg(), w)
    # Steps start at 0, 1, 2, 3: the second request is first seen by the step starting at 2.
    assert m.first_token_step.tolist() == [0, 2]
    assert m.ttft_steps.tolist() == [0, 0]
    assert m.ttft[1] == pytest.approx(3.0 - 1.5)


# --- vLLM 0.32 step semantics -------------------------------------------------------------------
def test_first_token_comes_from_the_last_prefill_chunk() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=100, output_tokens=3)])
    m = SIM.evaluate(cfg(max_num_batched_tokens=64), w)
    assert m.step_tokens.tolist() == [64, 36, 1, 1]
    assert m.step_prefill_tokens.tolist() == [64, 36, 0, 0]
    assert m.first_token_step.tolist() == [1]
    assert m.finish_step.tolist() == [3]


def test_running_are_served_before_waiting_and_the_budget_runs_out() -> None:
    w = Workload(
        [
            Request(arrival=0, prompt_tokens=4, output_tokens=6),
            Request(arrival=0, prompt_tokens=4, output_tokens=6),
            Request(arrival=1, prompt_tokens=50, output_tokens=1),
        ]
    )
    m = SIM.evaluate(cfg(max_num_batched_tokens=10), w)
    # step 0: both 4-token prompts (8); step 1: 2 decodes + 8 of the new prompt (budget 10).
    assert m.step_tokens.tolist()[:2] == [8, 10]
    assert m.max_step_tokens == 10


def test_max_num_seqs_is_checked_only_at_admission() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=4, output_tokens=3) for _ in range(3)])
    m = SIM.evaluate(cfg(max_num_seqs=2, max_num_batched_tokens=64), w)
    assert m.step_tokens.tolist() == [8, 2, 2, 4, 1, 1]


def test_chunked_prefill_off_blocks_admission_head_of_line() -> None:
    w = Workload(
        [
            Request(arrival=0, prompt_tokens=60, output_tokens=3),
            Request(arrival=0, prompt_tokens=60, output_tokens=3),
            Request(arrival=0, prompt_tokens=2, output_tokens=3),
        ]
    )
    base = dict(max_num_batched_tokens=100, max_model_len=100)
    off = SIM.evaluate(cfg(**base, enable_chunked_prefill=False), w)
    on = SIM.evaluate(cfg(**base), w)
    # Off: the second 60-token prompt does not fit the remaining 40 and blocks the 2-token one.
    assert off.step_tokens.tolist()[:2] == [60, 1 + 60 + 2]
    # On: the second prompt is chunked (40) and nothing is blocked behind it... but the budget
    # is then spent, so the 2-token prompt waits one step.
    assert on.step_tokens.tolist()[:2] == [100, 1 + 20 + 2]


def test_kv_pressure_preempts_the_most_recent_request_and_every_request_still_finishes() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=30, output_tokens=40) for _ in range(3)])
    c = cfg(max_num_batched_tokens=128, block_size=16, num_kv_blocks=9, max_model_len=128)
    m = SIM.evaluate(c, w)
    assert m.preemptions > 0
    assert m.preemptions_per_request is not None
    assert m.preemptions_per_request[0] == 0  # the oldest admission is never the victim
    assert m.output_tokens.tolist() == [40, 40, 40]


def test_admission_needs_room_for_the_whole_sequence() -> None:
    # 8 usable blocks of 4 tokens = 32 tokens; a 20-token prompt holds 5; the next 20-token
    # prompt needs 5 whole blocks to be admitted even though only its first chunk would run.
    w = Workload([Request(arrival=0, prompt_tokens=20, output_tokens=2) for _ in range(2)])
    c = cfg(max_num_batched_tokens=8, block_size=4, num_kv_blocks=9, max_model_len=32)
    m = SIM.evaluate(c, w)
    assert m.first_token_step.tolist()[1] > m.finish_step.tolist()[0] - 1
    assert m.preemptions == 0


def test_request_longer_than_max_model_len_is_refused() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=500, output_tokens=30)])
    with pytest.raises(ConfigRefused, match="max_model_len"):
        SIM.evaluate(cfg(max_model_len=512), w)


def test_async_scheduling_frees_a_finished_slot_one_step_later() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=4, output_tokens=2) for _ in range(2)])
    sync = SIM.evaluate(cfg(max_num_seqs=1, max_num_batched_tokens=64), w)
    lagged = SIM.evaluate(cfg(max_num_seqs=1, max_num_batched_tokens=64, async_scheduling=True), w)
    assert sync.first_token_step.tolist() == [0, 2]
    assert lagged.first_token_step.tolist() == [0, 2]  # an empty step is not executed...
    assert lagged.step_start.tolist() == sync.step_start.tolist()
    # ...but with other work running the admission lags a step:
    w3 = Workload(
        [
            Request(arrival=0, prompt_tokens=4, output_tokens=2),
            Request(arrival=0, prompt_tokens=4, output_tokens=10),
            Request(arrival=0, prompt_tokens=4, output_tokens=1),
        ]
    )
    s3 = SIM.evaluate(cfg(max_num_seqs=2, max_num_batched_tokens=64), w3)
    a3 = SIM.evaluate(cfg(max_num_seqs=2, max_num_batched_tokens=64, async_scheduling=True), w3)
    assert a3.first_token_step[2] == s3.first_token_step[2] + 1


def _reqs(*rs: tuple[float, int, int]) -> Workload:
    return Workload([Request(arrival=a, prompt_tokens=p, output_tokens=o) for a, p, o in rs])


# What vLLM's AsyncScheduler does on each (tests/test_replay.py checks the same numbers on it):
# (config, workload, sync step tokens, async step tokens, async preemptions per request).
ASYNC_CASES = {
    # the second request, admitted last, has its only token in flight when the first needs a
    # block: it is preempted (it finishes anyway), not the first
    "preempts_a_finishing_request": (
        ServingConfig(
            max_num_batched_tokens=64,
            max_num_seqs=4,
            num_kv_blocks=5,
            block_size=4,
            max_model_len=16,
        ),
        _reqs((0, 4, 12), (0, 12, 1)),
        [16] + [1] * 11,
        [16] + [1] * 11,
        [0, 1],
    ),
    # a preempted request finds fewer of its own blocks: the block its first token completed
    # is cached only once that token's output is applied
    "caches_sampled_blocks_a_step_later": (
        ServingConfig(
            max_num_batched_tokens=64,
            max_num_seqs=4,
            num_kv_blocks=6,
            block_size=4,
            max_model_len=20,
        ),
        _reqs((0, 8, 3), (0, 7, 5)),
        [15, 2, 1, 1, 1, 1],
        [15, 2, 1, 5, 1, 1],
        [0, 1],
    ),
    # closed loop: a user's next request comes after the step scheduled with the finish unknown
    "closed_loop_successor_a_step_later": (
        ServingConfig(max_num_batched_tokens=64, max_num_seqs=4, max_model_len=64),
        Workload.from_arrays([0, 0, 0], [4, 4, 4], [2, 6, 2], user=[0, 1, 0], think_time=[0] * 3),
        [8, 2, 5, 2, 1, 1],
        [8, 2, 1, 5, 2, 1],
        [0, 0, 0],
    ),
}


@pytest.mark.parametrize("name", sorted(ASYNC_CASES))
@pytest.mark.parametrize("fast_forward", [True, False])
def test_async_scheduling_follows_vllms_async_scheduler(name: str, fast_forward: bool) -> None:
    config, w, sync_steps, async_steps, preempted = ASYNC_CASES[name]
    sim = SimulatorBackend(fast_forward=fast_forward)
    assert sim.evaluate(config, w).step_tokens.tolist() == sync_steps
    m = sim.evaluate(config.replace(async_scheduling=True), w)
    assert m.step_tokens.tolist() == async_steps
    assert m.preemptions_per_request.tolist() == preempted
    assert m.output_tokens.tolist() == w.output_tokens.tolist()


def test_cost_model_turns_steps_into_seconds() -> None:
    cm = CostModel(fixed=0.01, per_prefill_token=0.001, per_decode_token=0.002, time_unit="s")
    w = Workload([Request(arrival=0.5, prompt_tokens=10, output_tokens=3)])
    m = SimulatorBackend(cm).evaluate(cfg(), w)
    prefill = 0.01 + 10 * 0.001
    decode = 0.01 + 0.002
    assert m.time_unit == "s"
    assert m.ttft[0] == pytest.approx(prefill)
    assert m.e2e[0] == pytest.approx(prefill + 2 * decode)
    assert m.step_start.tolist() == pytest.approx([0.5, 0.5 + prefill, 0.5 + prefill + decode])


# --- invariants ---------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(w=workloads(), c=configs())
def test_invariants_hold_on_random_workloads(w: Workload, c: ServingConfig) -> None:
    m = SIM.evaluate(c, w)
    assert m.step_tokens.max() <= c.max_num_batched_tokens  # every step within budget
    assert (m.step_tokens > 0).all()  # only executed steps are counted
    assert m.output_tokens.tolist() == w.output_tokens.tolist()  # exactly its output tokens
    # Every token is scheduled exactly once, plus recomputation after preemption.
    assert m.step_tokens.sum() >= w.total_prompt_tokens + w.total_output_tokens - len(w)
    if m.preemptions == 0:
        assert m.step_tokens.sum() == w.total_prompt_tokens + w.total_output_tokens - len(w)
    assert (m.ttft_steps >= 0).all()
    assert (m.first_token_step <= m.finish_step).all()
    assert (m.finish_step - m.first_token_step >= w.output_tokens - 1).all()
    assert (m.ttft > 0).all() and (m.e2e >= m.ttft).all()


@settings(max_examples=100, deadline=None)
@given(w=workloads(), c=configs())
def test_never_more_than_max_num_seqs_running(w: Workload, c: ServingConfig) -> None:
    m = SIM.evaluate(c, w)
    assert m.step_seqs is not None
    assert m.step_seqs.max() <= c.max_num_seqs
    if m.preemptions == 0:
        # A request holds a slot at least from its first token to its last; count them.
        steps = np.arange(m.total_steps)[:, None]
        holding = (m.first_token_step[None, :] <= steps) & (steps <= m.finish_step[None, :])
        assert holding.sum(axis=1).max() <= c.max_num_seqs


@settings(max_examples=60, deadline=None)
@given(
    w=workloads(max_output=200),
    c=configs(),
    cm=st.sampled_from(
        [
            CostModel(),  # unit clock: integer arrivals land exactly on step starts
            CostModel(fixed=1.0, per_decode_token=0.01, time_unit="s"),
            CostModel(fixed=0.37, per_prefill_token=0.001, time_unit="s"),
        ]
    ),
)
def test_fast_forward_gives_the_same_schedule_as_step_by_step(
    w: Workload, c: ServingConfig, cm: CostModel
) -> None:
    fast = SimulatorBackend(cm).evaluate(c, w)
    slow = SimulatorBackend(cm, fast_forward=False).evaluate(c, w)
    assert fast.step_tokens.tolist() == slow.step_tokens.tolist()
    assert fast.step_prefill_tokens.tolist() == slow.step_prefill_tokens.tolist()
    assert fast.first_token_step.tolist() == slow.first_token_step.tolist()
    assert fast.finish_step.tolist() == slow.finish_step.tolist()
    assert fast.step_start.tolist() == slow.step_start.tolist()
    np.testing.assert_allclose(fast.e2e, slow.e2e)
    gaps = [np.sort(np.repeat(m.itl_values, m.itl_counts)) for m in (fast, slow)]
    np.testing.assert_allclose(*gaps)  # the same inter-token gaps, however they are stored
    for m in (fast, slow):  # a token comes at the end of its step, to the bit
        assert m.step_end is not None
        assert (m.step_end[m.first_token_step] - m.arrival).tolist() == m.ttft.tolist()
        assert (m.step_end[m.finish_step] - m.arrival).tolist() == m.e2e.tolist()
        busy = m.step_start[1:] < m.step_end[:-1] + 1e-12  # back to back, not idle in between
        assert (m.step_start[1:][busy] == m.step_end[:-1][busy]).all()


@settings(max_examples=30, deadline=None)
@given(w=workloads(), c=configs())
def test_results_are_deterministic(w: Workload, c: ServingConfig) -> None:
    a, b = SIM.evaluate(c, w), SIM.evaluate(c, w)
    assert a.model_dump() == b.model_dump()


def test_results_are_reported_in_workload_order_not_arrival_order() -> None:
    w = Workload(
        [
            Request(arrival=5, prompt_tokens=8, output_tokens=1),
            Request(arrival=0, prompt_tokens=8, output_tokens=1),
        ]
    )
    m = SIM.evaluate(cfg(), w)
    assert m.first_token_step.tolist() == [1, 0]
    assert m.arrival.tolist() == [5.0, 0.0]


def test_unknown_vllm_version_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"0\.32"):
        SimulatorBackend(vllm_version="0.20")


def test_fast_engine_does_not_revive_a_request_preempted_in_a_step_that_scheduled_nothing() -> None:
    # Found by the closed-loop equivalence check: a step that only released async-finished
    # slots (nothing scheduled) left the previous step's token receivers behind, and the fast
    # engine put a request that had since been preempted back into its decoding pool.
    c = ServingConfig(
        max_num_batched_tokens=512,
        max_num_seqs=3,
        long_prefill_token_threshold=100,
        enable_chunked_prefill=False,
        num_kv_blocks=19,
        block_size=32,
        max_model_len=512,
        async_scheduling=True,
        enable_prefix_caching=False,
    )
    w = Workload.from_arrays(
        [0.0, 1.0, 170.0, 0.0, 1.0, 1.0, 87.0, 171.0],
        [1, 256, 1, 1, 45, 1, 225, 1],
        [1, 164, 1, 1, 85, 160, 1, 1],
    )
    fast = SimulatorBackend().evaluate(c, w)
    slow = SimulatorBackend(fast_forward=False).evaluate(c, w)
    assert fast.preemptions == slow.preemptions == 2  # as vLLM's AsyncScheduler (replay)
    assert fast.step_tokens.tolist() == slow.step_tokens.tolist()


@settings(max_examples=300, deadline=None)
@given(
    now=st.one_of(st.integers(0, 10_000).map(float), st.floats(0, 1e7)),
    dur=st.one_of(st.sampled_from([1.0, 0.1, 0.0, 1e-9]), st.floats(1e-6, 5.0)),
    k=st.integers(1, 80),
    ahead=st.one_of(st.none(), st.floats(1e-9, 100.0), st.integers(1, 80)),
)
def test_stretch_bounds_add_up_like_a_step_by_step_run(
    now: float, dur: float, k: int, ahead: float | None
) -> None:
    from tuner.backends.simulator._fast_engine import step_bounds

    t = None if ahead is None else now + ahead * max(dur, 1e-9)
    assume(t is None or t > now)  # the engine asks only for arrivals still ahead
    starts, x = [], now  # step by step: a step runs if it starts before t
    for _ in range(k):
        if t is not None and x >= t:
            break
        starts.append(x)
        x += dur
    assert step_bounds(now, dur, k, t) == ([*starts, x] if starts else [now])
