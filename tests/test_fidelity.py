"""Fidelity: the simulator schedules exactly like vLLM 0.32's own Scheduler (and, for the
async kinds, its AsyncScheduler driven as EngineCore.step_with_batch_queue drives it).

The vLLM-marked tests run in CI against the installed vLLM CPU build (a skip is a failure
there). Any difference is a simulator bug to fix, not a tolerance to widen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tuner import Request, ServingConfig, Workload
from tuner.backends import Backend, SimulatorBackend
from tuner.core import ConfigError
from tuner.fidelity import (
    ASYNC_CASE_KINDS,
    CACHE_CASE_KINDS,
    CASE_KINDS,
    CLOSED_CASE_KINDS,
    cases,
    random_case,
    run_fidelity,
    schedule_differences,
)

N_CASES = 60 * len(CASE_KINDS)  # hundreds of random cases, every kind equally (60 each)


@pytest.fixture(scope="module")
def replay() -> Iterator[Backend]:
    from tuner.backends import SchedulerReplayBackend

    with SchedulerReplayBackend() as backend:
        yield backend


@pytest.mark.vllm
@pytest.mark.parametrize("kind", CASE_KINDS)
def test_simulator_matches_vllm_scheduler_token_for_token(kind: str, replay: Backend) -> None:
    case_list = [c for c in cases(N_CASES, seed=0) if c.kind == kind]
    report = run_fidelity(replay, SimulatorBackend(), case_list)
    problems = [f"{c.describe()}\n    " + "\n    ".join(d) for c, d in report.disagreements]
    assert not problems, f"{len(problems)} of {report.total} cases differ:\n" + "\n".join(
        problems[:5]
    )


def test_closed_loop_cases_really_wait_for_completions() -> None:
    sim = SimulatorBackend()
    for kind in CLOSED_CASE_KINDS:
        case_list = [c for c in cases(N_CASES, seed=0) if c.kind == kind]
        assert all(c.workload.is_closed_loop for c in case_list)
        ms = [sim.evaluate(c.config, c.workload) for c in case_list]
        # Most cases send some request later than its earliest time (it waited for a response).
        late = sum(
            (m.arrival > c.workload.arrival).any() for c, m in zip(case_list, ms, strict=True)
        )
        assert late >= len(case_list) // 2, kind
        if kind == "closed_pressure":  # about a third preempt (11 of these 60)
            assert sum(m.preemptions > 0 for m in ms) >= len(case_list) // 6
        if kind == "closed_prefix":
            assert sum(m.cached_tokens.sum() > 0 for m in ms) >= len(case_list) // 2


def test_async_cases_schedule_unlike_sync_and_preempt_under_pressure() -> None:
    # The async kinds must check something the sync kinds do not: the same case under sync
    # scheduling gives another schedule often, and the pressure kinds preempt. (The simulator
    # stands in for vLLM here: the vLLM-marked test above holds it to vLLM on these cases.)
    sim = SimulatorBackend()
    for kind in ASYNC_CASE_KINDS:
        case_list = [c for c in cases(N_CASES, seed=0) if c.kind == kind]
        assert case_list and all(c.config.async_scheduling for c in case_list)
        sync = [c.config.replace(async_scheduling=False) for c in case_list]
        ms = [sim.evaluate(c.config, c.workload) for c in case_list]
        differ = sum(
            bool(schedule_differences(m, sim.evaluate(s, c.workload)))
            for c, s, m in zip(case_list, sync, ms, strict=True)
        )
        assert differ >= len(case_list) // 4, kind
        if kind in ("async_pressure", "async_closed", "async_prefix"):
            assert sum(m.preemptions > 0 for m in ms) >= len(case_list) // 6, kind


@pytest.mark.vllm
def test_replay_sends_a_users_next_request_when_its_previous_one_finished(
    replay: Backend,
) -> None:
    w = Workload.closed_loop(1, 3, prompt_len=30, output_len=3, think_time=1.5)
    m = replay.evaluate(ServingConfig(max_num_seqs=4, max_model_len=512), w)
    assert m.arrival.tolist() == [0.0, 4.5, 9.0]  # 3 steps, then 1.5 of thinking
    assert m.step_tokens.tolist() == [30, 1, 1] * 3
    assert m.ttft.tolist() == [1.0] * 3


@pytest.mark.vllm
def test_kv_pressure_cases_really_preempt(replay: Backend) -> None:
    case_list = [c for c in cases(N_CASES, seed=0) if c.kind == "kv_pressure"]
    preempting = sum(replay.evaluate(c.config, c.workload).preemptions > 0 for c in case_list)
    assert preempting >= len(case_list) // 4  # the suite exercises preemption, not just admission


@pytest.mark.vllm
@pytest.mark.parametrize("kind", CACHE_CASE_KINDS)
def test_prefix_cases_really_hit_the_cache(kind: str, replay: Backend) -> None:
    case_list = [c for c in cases(N_CASES, seed=0) if c.kind == kind]
    hitting = [c for c in case_list if replay.evaluate(c.config, c.workload).cached_tokens.sum()]
    assert len(hitting) >= len(case_list) // 2


@pytest.mark.vllm
def test_prefix_pressure_cases_preempt_and_evict(replay: Backend) -> None:
    case_list = [c for c in cases(N_CASES, seed=0) if c.kind == "prefix_pressure"]
    preempting = sum(replay.evaluate(c.config, c.workload).preemptions > 0 for c in case_list)
    assert preempting >= len(case_list) // 4
    # Eviction: the same workload hits less in a small cache than in an unlimited one.
    evicting = 0
    for c in case_list:
        small = replay.evaluate(c.config, c.workload).cached_tokens.sum()
        big = replay.evaluate(c.config.replace(num_kv_blocks=None), c.workload).cached_tokens.sum()
        evicting += small < big
    assert evicting >= len(case_list) // 4


@pytest.mark.vllm
def test_prefix_caching_off_matches_vllm_on_shared_prompts(replay: Backend) -> None:
    for c in [c for c in cases(N_CASES, seed=1) if c.kind in CACHE_CASE_KINDS][:20]:
        cfg = c.config.replace(enable_prefix_caching=False)
        got, ref = SimulatorBackend().evaluate(cfg, c.workload), replay.evaluate(cfg, c.workload)
        assert schedule_differences(got, ref) == [], c.describe()
        assert ref.cached_tokens.sum() == got.cached_tokens.sum() == 0


@pytest.mark.vllm
def test_fast_forward_on_long_decodes_matches_vllm(replay: Backend) -> None:
    rng = np.random.default_rng(7)
    n = 30
    w = Workload.from_arrays(
        np.sort(rng.uniform(0, 200, n)), rng.integers(1, 200, n), rng.integers(100, 300, n)
    )
    cfg = ServingConfig(
        max_num_batched_tokens=256,
        max_num_seqs=12,
        max_model_len=512,
        long_prefill_token_threshold=32,
        num_kv_blocks=200,
        block_size=16,
    )
    assert schedule_differences(SimulatorBackend().evaluate(cfg, w), replay.evaluate(cfg, w)) == []


def test_cases_are_reproducible_valid_and_cover_every_kind() -> None:
    a, b = cases(24, seed=3), cases(24, seed=3)
    assert [c.describe() for c in a] == [c.describe() for c in b]
    assert {c.kind for c in a} == set(CASE_KINDS)
    assert [c.describe() for c in cases(24, seed=4)] != [c.describe() for c in a]
    for c in a:  # every case is a configuration vLLM accepts, with requests that fit
        assert (c.workload.prompt_tokens + c.workload.output_tokens <= c.config.max_model_len).all()
        assert c.config.enable_chunked_prefill == (c.kind != "no_chunking")
    with pytest.raises(ConfigError, match="allowed"):
        random_case("nonsense", 0)


def test_schedule_differences_names_the_first_difference() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=100, output_tokens=3)])
    a = SimulatorBackend().evaluate(ServingConfig(max_num_batched_tokens=64, max_num_seqs=4), w)
    b = SimulatorBackend().evaluate(ServingConfig(max_num_batched_tokens=128, max_num_seqs=4), w)
    diffs = schedule_differences(a, b)
    assert any(d.startswith("step_tokens: 4 entries vs 3") for d in diffs)
    assert any("first_token_step" in d for d in diffs)
    assert schedule_differences(a, a) == []
    tampered = a.model_copy(update={"step_tokens": np.array([64, 35, 2, 1])})
    assert schedule_differences(tampered, a) == [
        "step_tokens: 2 differ; first at [1]: 35 (simulator(vllm 0.32)) vs 36 "
        "(simulator(vllm 0.32))"
    ]
