"""SchedulerReplayBackend: vLLM's real scheduler, driven step by step with no model."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from tuner.backends import CostModel
from tuner.backends._timeline import Timeline
from tuner.backends.replay import _replay
from tuner.backends.replay._drive import Driver
from tuner.backends.replay._replay import SchedulerReplayBackend, unlimited_kv_blocks
from tuner.core import BackendError, ConfigRefused, Request, ServingConfig, Workload


def workload(*requests: tuple[float, int, int]) -> Workload:
    """Requests given as (arrival, prompt_tokens, output_tokens)."""
    return Workload([Request(arrival=a, prompt_tokens=p, output_tokens=o) for a, p, o in requests])


@pytest.fixture(scope="module")
def backend() -> Iterator[SchedulerReplayBackend]:
    with SchedulerReplayBackend() as b:  # importing vLLM takes seconds: once per module
        yield b


@pytest.mark.vllm
def test_single_request_on_idle_engine_prefills_then_decodes_one_token_per_step(
    backend: SchedulerReplayBackend,
) -> None:
    m = backend.evaluate(
        ServingConfig(max_num_batched_tokens=64, max_num_seqs=8), workload((0, 40, 5))
    )
    assert m.step_tokens.tolist() == [40, 1, 1, 1, 1]
    assert m.ttft_steps.tolist() == [0]
    assert m.finish_step.tolist() == [4]
    assert m.ttft.tolist() == [1.0] and m.e2e.tolist() == [5.0]  # unit step clock
    assert m.output_tokens.tolist() == [5]
    assert m.source.startswith("scheduler-replay(vllm ")


@pytest.mark.vllm
def test_prompt_longer_than_budget_is_chunked_and_first_token_comes_with_last_chunk(
    backend: SchedulerReplayBackend,
) -> None:
    budget, prompt = 128, 300
    m = backend.evaluate(ServingConfig(max_num_batched_tokens=budget), workload((0, prompt, 3)))
    chunks = math.ceil(prompt / budget)
    assert m.step_tokens.tolist() == [128, 128, 44, 1, 1]
    assert m.first_token_step.tolist() == [chunks - 1]
    assert m.ttft_steps.tolist() == [chunks - 1]


@pytest.mark.vllm
def test_long_prefill_threshold_caps_chunks_only_when_two_requests_are_eligible(
    backend: SchedulerReplayBackend,
) -> None:
    cfg = ServingConfig(max_num_batched_tokens=512, long_prefill_token_threshold=100)
    alone = backend.evaluate(cfg, workload((0, 300, 2)))
    assert alone.step_tokens.tolist() == [300, 1]  # vLLM 0.32: a lone request is never capped
    pair = backend.evaluate(cfg, workload((0, 300, 2), (0, 300, 2)))
    assert pair.step_tokens.tolist() == [200, 200, 200, 2]  # 100 each per step
    assert pair.first_token_step.tolist() == [2, 2]


@pytest.mark.vllm
def test_max_num_seqs_one_queues_the_second_request(backend: SchedulerReplayBackend) -> None:
    m = backend.evaluate(
        ServingConfig(max_num_batched_tokens=512, max_num_seqs=1),
        workload((0, 10, 3), (0, 10, 3)),
    )
    assert m.step_tokens.tolist() == [10, 1, 1, 10, 1, 1]
    assert m.ttft_steps.tolist() == [0, 3]


@pytest.mark.vllm
def test_chunked_prefill_off_blocks_admission_head_of_line(
    backend: SchedulerReplayBackend,
) -> None:
    reqs = workload((0, 300, 2), (0, 300, 2), (0, 10, 2))
    cfg = ServingConfig(max_num_batched_tokens=512, max_model_len=512)
    off = backend.evaluate(cfg.replace(enable_chunked_prefill=False), reqs)
    # The second prompt does not fit the 212 tokens left, and the small third one waits behind it.
    assert off.step_tokens.tolist() == [300, 311, 2]
    assert off.ttft_steps.tolist() == [0, 1, 1]
    on = backend.evaluate(cfg, reqs)
    assert on.step_tokens.tolist()[0] == 512  # chunked: the budget is filled at once


@pytest.mark.vllm
def test_kv_pressure_preempts_and_every_request_still_gets_its_output(
    backend: SchedulerReplayBackend,
) -> None:
    reqs = workload(*[(0, 40, 40)] * 6)
    cfg = ServingConfig(max_num_batched_tokens=256, block_size=16, max_model_len=128)
    tight = backend.evaluate(cfg.replace(num_kv_blocks=9), reqs)  # 8 usable blocks = 128 tokens
    assert tight.preemptions > 0
    assert tight.preemptions == int(tight.preemptions_per_request.sum())
    assert tight.output_tokens.tolist() == reqs.output_tokens.tolist()
    roomy = backend.evaluate(cfg, reqs)  # num_kv_blocks=None: never short of blocks
    assert roomy.preemptions == 0
    assert roomy.total_steps < tight.total_steps


@pytest.mark.vllm
def test_every_step_respects_the_budget_and_all_tokens_are_computed_once(
    backend: SchedulerReplayBackend,
) -> None:
    rng = np.random.default_rng(7)
    n = 30
    reqs = Workload.from_arrays(
        np.sort(rng.uniform(0, 40, n)), rng.integers(1, 300, n), rng.integers(1, 40, n)
    )
    cfg = ServingConfig(max_num_batched_tokens=96, max_num_seqs=8, long_prefill_token_threshold=48)
    m = backend.evaluate(cfg, reqs)
    assert m.max_step_tokens <= cfg.max_num_batched_tokens
    assert m.output_tokens.tolist() == reqs.output_tokens.tolist()
    # Without preemption each token is computed once; the last sampled one never is.
    assert m.preemptions == 0
    assert int(m.step_tokens.sum()) == reqs.total_prompt_tokens + reqs.total_output_tokens - n


@pytest.mark.vllm
def test_request_arriving_during_a_step_is_seen_by_the_next_one(
    backend: SchedulerReplayBackend,
) -> None:
    m = backend.evaluate(ServingConfig(), workload((0, 10, 3), (0.5, 10, 2), (10, 5, 1)))
    # The third arrives after the engine went idle (t=3): its step starts at its arrival.
    assert m.step_tokens.tolist() == [10, 11, 2, 5]
    assert m.step_start.tolist() == [0, 1, 2, 10]
    assert m.ttft_steps.tolist() == [0, 0, 0]
    assert m.ttft.tolist() == [1.0, 1.5, 1.0]


@pytest.mark.vllm
def test_cost_model_sets_step_durations() -> None:
    cost = CostModel(fixed=0.5, per_prefill_token=0.01, per_decode_token=0.1, time_unit="s")
    with SchedulerReplayBackend(cost_model=cost) as b:
        m = b.evaluate(ServingConfig(), workload((0, 100, 2)))
    assert m.time_unit == "s"
    assert m.ttft.tolist() == pytest.approx([1.5])
    assert m.e2e.tolist() == pytest.approx([1.5 + 0.6])


@pytest.mark.vllm
def test_evaluate_is_repeatable_and_quiet(
    backend: SchedulerReplayBackend, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = ServingConfig(
        max_num_batched_tokens=64, max_num_seqs=4, num_kv_blocks=10, max_model_len=128
    )
    reqs = workload(*[(i / 2, 30 + 7 * i, 20) for i in range(6)])
    with caplog.at_level(logging.INFO):
        first = backend.evaluate(cfg, reqs)
        second = backend.evaluate(cfg, reqs)  # a fresh scheduler each time
    assert first.step_tokens.tolist() == second.step_tokens.tolist()
    assert first.preemptions_per_request.tolist() == second.preemptions_per_request.tolist()
    assert not [r for r in caplog.records if r.name.startswith("vllm")]
    assert logging.getLogger("vllm").level == logging.NOTSET  # restored after evaluate


@pytest.mark.vllm
def test_request_filling_max_model_len_exactly_completes(
    backend: SchedulerReplayBackend,
) -> None:
    m = backend.evaluate(ServingConfig(max_model_len=16), workload((0, 10, 6)))
    assert m.output_tokens.tolist() == [6]
    assert m.step_tokens.tolist() == [10, 1, 1, 1, 1, 1]


@pytest.mark.vllm
def test_request_longer_than_max_model_len_is_refused(backend: SchedulerReplayBackend) -> None:
    with pytest.raises(ConfigRefused, match=r"request 1: .* exceeds max_model_len \(64\)"):
        backend.evaluate(ServingConfig(max_model_len=64), workload((0, 10, 2), (0, 60, 5)))


# --- async scheduling: vLLM's AsyncScheduler with a batch queue of 2 ---------------------------
# tests/test_simulator.py pins the simulator to the same numbers.
@pytest.mark.vllm
def test_async_schedules_each_batch_before_the_previous_output_is_applied(
    backend: SchedulerReplayBackend,
) -> None:
    # The first request gets its last token in step 1; step 2 is scheduled before that output
    # is applied, so it still holds one of the two slots and the third request waits a step.
    reqs = workload((0, 4, 2), (0, 4, 10), (0, 4, 1))
    cfg = ServingConfig(max_num_seqs=2, max_num_batched_tokens=64)
    assert backend.evaluate(cfg, reqs).step_tokens.tolist() == [8, 2, 5, 1, 1, 1, 1, 1, 1, 1]
    lagged = backend.evaluate(cfg.replace(async_scheduling=True), reqs)
    assert lagged.step_tokens.tolist() == [8, 2, 1, 5, 1, 1, 1, 1, 1, 1]
    assert lagged.first_token_step.tolist() == [0, 0, 3]
    assert lagged.output_tokens.tolist() == [2, 10, 1]
    # With nothing else to run the schedule() call finds no token, which costs no time.
    one = ServingConfig(max_num_seqs=1, max_num_batched_tokens=64, async_scheduling=True)
    m = backend.evaluate(one, workload((0, 4, 2), (0, 4, 2)))
    assert m.step_tokens.tolist() == [4, 1, 4, 1]
    assert m.step_start.tolist() == [0, 1, 2, 3]


@pytest.mark.vllm
def test_async_preempts_a_request_whose_last_token_is_in_flight(
    backend: SchedulerReplayBackend,
) -> None:
    # Step 1: the first request needs a fifth block. The second, admitted last, got its only
    # token in step 0 but is still in the running queue until that output is applied: vLLM
    # preempts it (freeing its blocks) and delivers its token anyway.
    reqs = workload((0, 4, 12), (0, 12, 1))
    cfg = ServingConfig(
        max_num_batched_tokens=64, max_num_seqs=4, num_kv_blocks=5, block_size=4, max_model_len=16
    )
    assert backend.evaluate(cfg, reqs).preemptions_per_request.tolist() == [0, 0]
    m = backend.evaluate(cfg.replace(async_scheduling=True), reqs)
    assert m.preemptions_per_request.tolist() == [0, 1]
    assert m.step_tokens.tolist() == [16] + [1] * 11
    assert m.output_tokens.tolist() == [12, 1]


@pytest.mark.vllm
def test_async_caches_a_sampled_tokens_block_once_its_output_is_applied(
    backend: SchedulerReplayBackend,
) -> None:
    # The second request's first token completes its second block. It is preempted in step 2
    # and finds its own blocks again when readmitted: two under sync scheduling (one token to
    # recompute), one under async, where that block was not cached yet (five to recompute).
    reqs = workload((0, 8, 3), (0, 7, 5))
    cfg = ServingConfig(
        max_num_batched_tokens=64, max_num_seqs=4, num_kv_blocks=6, block_size=4, max_model_len=20
    )
    sync = backend.evaluate(cfg, reqs)
    assert sync.step_tokens.tolist() == [15, 2, 1, 1, 1, 1]
    lagged = backend.evaluate(cfg.replace(async_scheduling=True), reqs)
    assert lagged.step_tokens.tolist() == [15, 2, 1, 5, 1, 1]
    assert sync.preemptions_per_request.tolist() == lagged.preemptions_per_request.tolist()
    assert lagged.preemptions_per_request.tolist() == [0, 1]


@pytest.mark.vllm
def test_async_sends_a_closed_loop_users_next_request_once_the_output_is_applied(
    backend: SchedulerReplayBackend,
) -> None:
    # User 0's first request finishes in step 1 (at t=2) while user 1's keeps running: its next
    # request is due at t=2, but step 2 was scheduled before the finish was known.
    reqs = Workload.from_arrays([0, 0, 0], [4, 4, 4], [2, 6, 2], user=[0, 1, 0], think_time=[0] * 3)
    cfg = ServingConfig(max_num_batched_tokens=64, max_num_seqs=4, max_model_len=64)
    sync = backend.evaluate(cfg, reqs)
    assert sync.step_tokens.tolist() == [8, 2, 5, 2, 1, 1]
    lagged = backend.evaluate(cfg.replace(async_scheduling=True), reqs)
    assert lagged.step_tokens.tolist() == [8, 2, 1, 5, 2, 1]
    assert lagged.arrival.tolist() == sync.arrival.tolist() == [0, 0, 2]
    assert lagged.ttft.tolist() == [1, 1, 2]


def test_unlimited_kv_cache_holds_the_largest_running_batch() -> None:
    reqs = workload((0, 10, 6), (0, 40, 9), (0, 100, 1))  # 1, 4 and 7 blocks of 16
    assert unlimited_kv_blocks(ServingConfig(max_num_seqs=2), reqs) == 4 + 7 + 1
    assert unlimited_kv_blocks(ServingConfig(max_num_seqs=8), reqs) == 1 + 4 + 7 + 1


def test_missing_vllm_raises_backend_error_with_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(BackendError, match=r"pip install vllm .*install-vllm-cpu\.sh"):
        SchedulerReplayBackend()


def test_other_vllm_version_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_replay, "_import_vllm", lambda: SimpleNamespace(version="0.31.2"))
    with pytest.warns(UserWarning, match=r"vLLM 0\.31\.2 .* semantics may differ"):
        backend = SchedulerReplayBackend()
    assert backend.vllm_version == "0.31.2"


class _StuckScheduler:
    """A scheduler that takes requests and never schedules a token."""

    def __init__(self) -> None:
        self.requests: dict[str, object] = {}

    def add_request(self, request: dict[str, object]) -> None:
        self.requests[str(request["request_id"])] = request

    def has_requests(self) -> bool:
        return True

    def get_request_counts(self) -> tuple[int, int]:
        return 0, len(self.requests)

    def schedule(self) -> SimpleNamespace:
        return SimpleNamespace(
            scheduled_new_reqs=[],
            total_num_scheduled_tokens=0,
            num_scheduled_tokens={},
            preempted_req_ids=set(),
        )


@pytest.mark.parametrize("mode", ["run_sync", "run_async"])
def test_a_scheduler_that_schedules_nothing_is_reported_not_looped_on(mode: str) -> None:
    fake_vllm = SimpleNamespace(Request=lambda **kw: kw, SamplingParams=lambda **kw: kw)
    reqs = workload((2, 10, 2))
    driver = Driver(fake_vllm, _StuckScheduler(), reqs, Timeline(reqs, CostModel(), "t"), None)
    with pytest.raises(BackendError, match=r"stalled at t=2: .* 0 running and 1 waiting"):
        getattr(driver, mode)()
