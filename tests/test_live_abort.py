"""Early abort, stalls and the client's health on the live tier: on the fake vLLM of
``test_load.py`` (seconds, no vLLM), then an early abort on the real CPU vLLM (marked ``vllm``;
one server start)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_load import NEVER_TOKENS, STALLED_BUDGET, fake_vllm
from tests.test_server import CONFIG, SMALL, assert_no_server_left, fake_backend, fake_exe
from tuner import Loop, Measurement, Repeats, SearchSpace, ServingConfig, TrialStatus, Workload
from tuner.backends import (
    AttachedServerBackend,
    Backend,
    CostModel,
    SimulatorBackend,
    VLLMServerBackend,
)
from tuner.backends.live._affinity import split
from tuner.backends.live._load import replay
from tuner.backends.live._stream import Progress
from tuner.backends.live._watch import Watch
from tuner.core import ClientHealth
from tuner.objectives import AbortRule
from tuner.search import GridSearch

__all__ = ["fake_exe"]  # the fixture, used by name

# 40 requests 0.1 s apart that never get a first token: ttft.max <= 0.2s is lost within ~0.5 s.
STUCK = Workload.from_arrays([0.1 * i for i in range(40)], [8] * 40, [NEVER_TOKENS] * 40)


# --- the partial run the client shows the rule -------------------------------------------------
def test_the_partial_run_times_each_request_from_its_send_and_unsent_ones_from_now() -> None:
    clock = [0.0]
    progress = [Progress() for _ in range(3)]
    watch = Watch(progress, lambda: clock[0], [0.0, 1.0, 1.5], [4, 4, 4])
    watch.started(0)
    progress[0].times.extend([0.2, 0.3])
    clock[0] = 1.6  # request 1 is sent 0.6 s late; request 2 is due but not sent yet
    watch.started(1)
    run = watch.partial(2.0)
    assert run._get("arrival").tolist() == [0.0, 1.6, 2.0]
    assert run._get("first")[0] == 0.2 and np.isnan(run._get("first")[1:]).all()
    assert run._get("tokens").tolist() == [2, 0, 0]
    # ttft.max <= 0.5s: request 1 has waited 0.4 s since its send (1.0 s since its schedule,
    # but the client's lateness is not the server's), request 2 none at all
    assert AbortRule(["ttft.max <= 0.5s"]).lost(run) is None
    assert AbortRule(["ttft.max <= 0.3s"]).lost(run) is not None


def test_the_cores_are_split_only_where_there_are_enough_unless_asked() -> None:
    assert split("auto", range(8)) == ([7], [0, 1, 2, 3, 4, 5, 6])
    assert split("auto", [0, 1]) is None and split("off", range(8)) is None
    assert split("on", [0, 1]) == ([1], [0]) and split("on", [0]) is None


# --- the load client ---------------------------------------------------------------------------
def test_a_load_whose_slo_is_lost_stops_sending_and_cancels_what_is_in_flight() -> None:
    rule = AbortRule(["ttft.max <= 0.2s"])
    with fake_vllm() as fake:
        t0 = time.monotonic()
        result = replay(fake.url, fake.model, STUCK, abort=rule, stall_timeout=60)
        took = time.monotonic() - t0
        sent = len(fake.bodies)
    assert took < 2.5  # not the 4 s schedule, nor the 60 s stall timeout
    assert result.stalled is None and result.aborted is not None
    assert result.aborted_at is not None and 0.2 < result.aborted_at < 1.5
    assert result.aborted.startswith(f"aborted at {result.aborted_at:.1f} s: ttft.max <= 0.2s lost")
    assert "without a first token" in result.aborted
    assert sent < 20 and all(r.cut and not r.ok for r in result.requests)
    unsent = [r for r in result.requests if r.error and r.error.startswith("never sent")]
    assert len(unsent) == 40 - sent
    assert all("(aborted at" in (r.error or "") for r in result.requests)


def test_a_load_that_meets_its_slos_is_never_aborted() -> None:
    rule = AbortRule(["ttft.p99 <= 10s", "e2e.max <= 10s"])
    with fake_vllm() as fake:
        result = replay(fake.url, fake.model, SMALL, abort=rule)
    assert result.aborted is None and not result.failed
    assert not any(r.cut for r in result.requests)


# --- the backends ------------------------------------------------------------------------------
def test_an_aborted_load_is_a_partial_measurement_and_the_server_serves_the_next_one(
    fake_exe: str, tmp_path: Path
) -> None:
    rule = AbortRule(["ttft.max <= 0.2s"])
    with fake_backend(fake_exe, tmp_path) as backend:
        assert backend.supports_abort
        with backend.session(CONFIG, abort=rule) as measure:
            cut = measure(STUCK)
            trial = backend.last_trial
            after = measure(SMALL)  # the same server, still serving
    assert cut.aborted is not None and cut.aborted.startswith("aborted at ")
    assert trial is not None and trial.aborted == cut.aborted
    assert cut.failed_requests == 0 and np.isnan(cut.ttft).all()  # cut, not failed
    assert 0.2 < cut.duration < 2.0
    assert cut.client is not None and cut.client.cpus is not None
    assert after.aborted is None and after.failed_requests == 0
    assert len(backend.log_paths) == 1  # one server for both loads
    assert_no_server_left(backend.log_paths)


def test_the_loop_records_an_aborted_trial_as_infeasible_with_the_reason_and_saving(
    fake_exe: str, tmp_path: Path
) -> None:
    space = SearchSpace({"max_num_seqs": [8]}, base=CONFIG)
    with fake_backend(fake_exe, tmp_path) as backend:
        loop = Loop(backend, GridSearch(), slos=["ttft.max <= 0.2s"], repeats=Repeats(max=3))
        result = loop.explore(space, STUCK)
    (trial,) = result.trials
    assert trial.ok and not trial.feasible and trial.repeats == 1  # an abort is not repeated
    assert trial.abort_reason is not None
    assert trial.abort_reason.startswith("aborted at ") and "ttft.max <= 0.2s lost (" in (
        trial.abort_reason
    )
    assert trial.verdict().startswith("no (aborted at ")
    assert trial.abort_saved is not None and trial.abort_saved > 2.0  # of a 3.9 s schedule
    assert [r.ok for r in trial.slo_results] == [False]


def test_an_attached_server_aborts_a_lost_load_too() -> None:
    rule = AbortRule(["ttft.max <= 0.2s"])
    with fake_vllm() as fake:
        backend = AttachedServerBackend(fake.url, warmup=False)
        with backend.session(CONFIG, abort=rule) as measure:
            m = measure(STUCK)
    assert m.aborted is not None and "ttft.max <= 0.2s lost" in m.aborted


def test_a_stalled_trial_fails_with_the_reason_and_the_next_trial_gets_a_fresh_server(
    fake_exe: str, tmp_path: Path
) -> None:
    # a server that answers /health but, after the warm-up, streams nothing
    space = SearchSpace({"max_num_batched_tokens": [STALLED_BUDGET, 256]}, base=CONFIG)
    with fake_backend(fake_exe, tmp_path, stall_timeout=1.0, request_timeout=120) as backend:
        t0 = time.monotonic()
        result = Loop(backend, GridSearch(), repeats=Repeats(max=1)).explore(space, SMALL)
        took = time.monotonic() - t0
        logs = list(backend.log_paths)
    stalled, fine = result.trials
    assert stalled.status is TrialStatus.FAILED and stalled.error is not None
    assert stalled.error.splitlines()[0] == (
        "TrialTimeout: stalled: no token for 1 s with 5 requests outstanding during the load"
    )
    assert fine.ok and fine.measurement is not None and fine.measurement.failed_requests == 0
    assert len(logs) == 2 and took < 60  # two servers; not the 120 s request timeout
    assert_no_server_left(logs)


def test_a_measurement_says_how_well_the_client_kept_to_its_schedule(
    fake_exe: str, tmp_path: Path
) -> None:
    with fake_backend(fake_exe, tmp_path, max_send_lag=1e-9) as backend:
        m = backend.evaluate(CONFIG, SMALL)
    assert m.client is not None and not m.client.trusted
    assert m.client.lagged is not None and m.client.lagged.startswith("client lagged: ")
    assert m.client.send_lag_p50 <= m.client.send_lag_p99 <= m.client.send_lag_max
    assert m.client.cpus is not None and m.client.cpus.startswith(("client on", "not pinned"))
    with fake_backend(fake_exe, tmp_path / "pinned", cpu_pinning="on") as backend:
        m = backend.evaluate(CONFIG, SMALL)
    assert m.client is not None and m.client.cpus is not None
    if len(os.sched_getaffinity(0)) >= 2:
        assert m.client.cpus.startswith("client on cpu ")


# --- the real thing ----------------------------------------------------------------------------
@pytest.mark.vllm
def test_a_trial_whose_slo_is_lost_is_stopped_early_on_a_real_vllm(
    tiny_model: Path, tmp_path: Path
) -> None:
    # 600 prompts of 512 tokens at 40 req/s against a 64-token budget: far more prefill than
    # the CPU serves, so TTFT climbs from the start; the schedule alone lasts 15 s.
    work = Workload.poisson(rate=40, n=600, prompt_len=512, output_len=8, seed=3)
    config = ServingConfig(
        max_num_batched_tokens=64, max_num_seqs=8, block_size=128, max_model_len=1024
    )
    backend = VLLMServerBackend(
        tiny_model,
        server_args=["--enforce-eager", "--dtype", "bfloat16"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
        workdir=tmp_path / "study",
        startup_timeout=300,
        request_timeout=120,
    )
    space = SearchSpace({"max_num_batched_tokens": [64]}, base=config)
    loop = Loop(backend, GridSearch(), slos=["ttft.p99 <= 100ms"], repeats=Repeats(max=3))
    with backend:
        result = loop.explore(space, work)
        trial = backend.last_trial
    (t,) = result.trials
    assert t.ok and not t.feasible and t.repeats == 1, t.error
    assert t.abort_reason is not None and t.abort_reason.startswith("aborted at ")
    assert "ttft.p99 <= 100ms lost (" in t.abort_reason
    at = float(t.abort_reason.split()[2])
    assert at < 7.5  # well before the 15 s schedule ends
    assert t.abort_saved is not None and t.abort_saved > 7.5
    assert trial is not None and trial.aborted == t.abort_reason
    assert not any("still had" in n for n in trial.notes)  # vLLM dropped the cancelled requests
    print(f"\nreal vLLM early abort: {t.abort_reason}; schedule saved {t.abort_saved:.1f} s")


# --- measurement hygiene under Repeats ---------------------------------------------------------
class _Lagging(Backend):
    """Measures like the simulator, but the client of its first ``lagged`` runs lagged."""

    def __init__(self, lagged: int) -> None:
        self.inner = SimulatorBackend(CostModel(fixed=0.01, time_unit="s"))
        self.lagged = lagged
        self.calls = 0

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        self.calls += 1
        m = self.inner.evaluate(config, workload)
        why = "client lagged: request 0 was sent 0.2 s late" if self.calls <= self.lagged else None
        return m.model_copy(update={"client": ClientHealth(send_lag_max=0.2, lagged=why)})


def test_a_run_whose_client_lagged_is_measured_again_and_not_used_for_the_decision() -> None:
    space = SearchSpace({"max_num_seqs": [8]}, base=CONFIG)
    backend = _Lagging(lagged=1)
    loop = Loop(backend, GridSearch(), slos=["ttft.p99 <= 10s"], repeats=Repeats(max=1))
    (trial,) = loop.explore(space, SMALL).trials
    assert backend.calls == 2 and trial.repeats == 1
    assert trial.measurement is not None and trial.measurement.client is not None
    assert trial.measurement.client.trusted
    always = _Lagging(lagged=100)  # never trusted: after max more runs the last is used, flagged
    (trial,) = Loop(always, GridSearch(), repeats=Repeats(max=1)).explore(space, SMALL).trials
    assert always.calls == 2 and trial.measurement is not None
    assert trial.measurement.client is not None and not trial.measurement.client.trusted
