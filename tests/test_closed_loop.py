"""Closed-loop workloads: users that wait for their previous response, on the simulator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import closed_loop_workloads, configs
from tuner import Request, ServingConfig, Workload, WorkloadError
from tuner.backends import CostModel, SimulatorBackend
from tuner.backends._timeline import Timeline
from tuner.backends.simulator._engine import Engine
from tuner.backends.simulator._prefix_engine import PrefixEngine
from tuner.core import Measurement

SIM = SimulatorBackend()
COSTS = [
    CostModel(),
    CostModel(fixed=1.0, per_decode_token=0.01, time_unit="s"),
    CostModel(fixed=0.37, per_prefill_token=0.001, time_unit="s"),
]


def finish_times(m: Measurement) -> np.ndarray:
    assert m.step_end is not None and m.finish_step is not None
    return m.step_end[m.finish_step]  # type: ignore[no-any-return]


def assert_same(a: Measurement, b: Measurement, *skip: str) -> None:
    """Equal to the bit, inter-token gaps however they are stored (runs or one by one)."""
    x, y = (m.model_dump(exclude={"itl_values", "itl_counts", *skip}) for m in (a, b))
    assert x == y
    gaps = [np.sort(np.repeat(m.itl_values, m.itl_counts)).tolist() for m in (a, b)]
    assert gaps[0] == gaps[1]


def successors(w: Workload) -> list[tuple[int, int]]:
    """(request, the same user's next request) pairs."""
    assert w.user is not None
    out = []
    for u in np.unique(w.user):
        ids = np.flatnonzero(w.user == u).tolist()
        out += list(itertools.pairwise(ids))
    return out


# --- the workload ------------------------------------------------------------------------------
def test_closed_loop_spreads_requests_round_robin_and_keeps_poisson_lengths() -> None:
    w = Workload.closed_loop(3, 7, prompt_len=64, output_len=8, think_time=2.0, seed=4)
    assert w.users == 3 and w.is_closed_loop
    assert w.user.tolist() == [0, 1, 2, 0, 1, 2, 0]  # type: ignore[union-attr]
    assert w.arrival.tolist() == [0, 0, 0, 2, 2, 2, 4]  # the earliest possible send times
    p = Workload.poisson(1.0, 7, 64, 8, seed=4)
    assert w.prompt_tokens.tolist() == p.prompt_tokens.tolist()
    assert Workload.closed_loop(4, 8, 16, 2, ramp=2.0).arrival.tolist()[:4] == [0, 0.5, 1, 1.5]


def test_at_concurrency_spreads_the_same_requests_over_other_users() -> None:
    w = Workload.closed_loop(2, 6, prompt_len=64, output_len=8, think_time=1.0)
    more = w.at_concurrency(3)
    assert more.users == 3 and more.user.tolist() == [0, 1, 2, 0, 1, 2]  # type: ignore[union-attr]
    assert more.prompt_tokens.tolist() == w.prompt_tokens.tolist()
    assert more.think_time.tolist() == w.think_time.tolist()  # type: ignore[union-attr]
    assert Workload.poisson(2.0, 4, 8, 2).at_concurrency(1).think_time.tolist() == [0] * 4  # type: ignore[union-attr]
    assert w.at_concurrency(2) == w and w.at_concurrency(3) != w


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Workload.closed_loop(0, 4, 8, 2), r"users=0.*integer >= 1"),
        (lambda: Workload.closed_loop(True, 4, 8, 2), r"users=True"),
        (lambda: Workload.closed_loop(2, 0, 8, 2), r"requests=0"),
        (lambda: Workload.closed_loop(2, 4, 8, 2, think_time=-1), r"think_time=-1"),
        (lambda: Workload.closed_loop(2, 4, 8, 2, think_time=float("nan")), r"think_time=nan"),
        (lambda: Workload.closed_loop(2, 4, 8, 2, ramp=-2), r"ramp=-2"),
        (lambda: Workload.closed_loop(2, 4, 0, 2), r"prompt_len"),
        (lambda: Workload.closed_loop(2, 4, 8, 2).at_concurrency(0), r"at_concurrency\(users=0"),
        (lambda: Workload.closed_loop(2, 4, 8, 2).at_rate(2.0), r"closed-loop.*at_concurrency"),
        (lambda: Workload.from_arrays([0, 0], [8, 8], [2, 2], user=[0]), r"workload.user"),
        (lambda: Workload.from_arrays([0, 0], [8, 8], [2, 2], user=[0, -1]), r"user = -1"),
        (lambda: Workload.from_arrays([0], [8], [2], user=[0.5]), r"integer user ids"),
        (
            lambda: Workload.from_arrays([0, 0], [8, 8], [2, 2], user=[0, 1], think_time=[0, -3]),
            r"requests\[1\].think_time = -3",
        ),
        (lambda: Workload.from_arrays([0], [8], [2], think_time=1.0), r"without user"),
    ],
)
def test_bad_closed_loop_input_is_a_named_workload_error(call: object, match: str) -> None:
    with pytest.raises(WorkloadError, match=match):
        call()  # type: ignore[operator]


def test_a_closed_loop_workload_refuses_to_be_written_as_a_trace(tmp_path: object) -> None:
    w = Workload.closed_loop(2, 4, 8, 2)
    with pytest.raises(WorkloadError, match="no fixed send times"):
        w.to_jsonl(f"{tmp_path}/t.jsonl")


# --- the simulator -----------------------------------------------------------------------------
def test_one_user_sends_each_request_when_the_previous_one_finished() -> None:
    w = Workload.closed_loop(1, 4, prompt_len=30, output_len=3)
    m = SIM.evaluate(ServingConfig(max_num_seqs=8), w)
    # Each request: 1 prefill step (its first token), 2 decodes; the next one seen right after.
    assert m.step_tokens.tolist() == [30, 1, 1] * 4
    assert m.arrival.tolist() == [0, 3, 6, 9]  # the actual send times
    assert m.ttft_steps.tolist() == [0] * 4 and m.ttft.tolist() == [1.0] * 4
    assert m.e2e.tolist() == [3.0] * 4


def test_think_time_is_added_after_the_last_token() -> None:
    w = Workload.closed_loop(1, 2, prompt_len=30, output_len=3, think_time=2.5)
    m = SIM.evaluate(ServingConfig(max_num_seqs=8), w)
    assert m.arrival.tolist() == [0, 5.5]  # finished at 3, thought 2.5
    assert m.step_start.tolist() == [0, 1, 2, 5.5, 6.5, 7.5]  # the idle engine jumps to 5.5


@settings(max_examples=80, deadline=None)
@given(w=closed_loop_workloads(), c=configs(), cm=st.sampled_from(COSTS))
def test_closed_loop_invariants(w: Workload, c: ServingConfig, cm: CostModel) -> None:
    m = SimulatorBackend(cm).evaluate(c, w)
    assert w.think_time is not None
    done = finish_times(m)
    for i, j in successors(w):
        # The user's next request arrives exactly a think time after the previous one's last
        # token, so no user ever has two requests in flight.
        assert m.arrival[j] == done[i] + w.think_time[j]
        assert m.first_token_step[j] > m.finish_step[i]
    firsts = [np.flatnonzero(w.user == u)[0] for u in np.unique(w.user)]  # type: ignore[operator]
    assert m.arrival[firsts].tolist() == w.arrival[firsts].tolist()
    assert (m.arrival >= w.arrival - 1e-9).all()  # Workload.arrival: the earliest times
    assert (m.ttft > 0).all() and (m.e2e >= m.ttft).all() and (m.ttft_steps >= 0).all()
    assert m.output_tokens.tolist() == w.output_tokens.tolist()


@settings(max_examples=80, deadline=None)
@given(w=closed_loop_workloads(max_output=200), c=configs(), cm=st.sampled_from(COSTS))
def test_fast_engine_equals_the_reference_in_closed_loop(
    w: Workload, c: ServingConfig, cm: CostModel
) -> None:
    fast = SimulatorBackend(cm).evaluate(c, w)
    slow = SimulatorBackend(cm, fast_forward=False).evaluate(c, w)
    assert_same(fast, slow)


@settings(max_examples=40, deadline=None)
@given(w=closed_loop_workloads(), c=configs(kv=False), cm=st.sampled_from(COSTS))
def test_prefix_engine_equals_the_reference_in_closed_loop(
    w: Workload, c: ServingConfig, cm: CostModel
) -> None:
    # Distinct prompts and no KV pressure: the prefix cache cannot change the schedule.
    a, b = Timeline(w, cm, "a"), Timeline(w, cm, "a")
    Engine(c, w, a).run()
    PrefixEngine(c, w, b).run()
    assert_same(a.build(), b.build(), "cached_tokens")


def test_the_same_step_finishes_release_users_in_request_id_order() -> None:
    # Three users finish in the same step; their next requests arrive together and are queued
    # by request id (as open-loop ties): with one slot, user 2's next waits for the others.
    w = Workload.from_arrays([0] * 6, [4] * 6, [1] * 6, user=[2, 0, 1, 2, 0, 1])
    m = SIM.evaluate(ServingConfig(max_num_seqs=3), w)
    assert m.arrival.tolist() == [0, 0, 0, 1, 1, 1]
    assert m.first_token_step.tolist() == [0, 0, 0, 1, 1, 1]
    one_slot = SIM.evaluate(ServingConfig(max_num_seqs=1), w)
    assert one_slot.first_token_step.tolist()[:3] == [0, 1, 2]


def test_open_loop_requests_are_unchanged_by_the_closed_loop_support() -> None:
    w = Workload([Request(arrival=0, prompt_tokens=8, output_tokens=2)] * 2)
    assert not w.is_closed_loop and w.users is None and w.user is None
    m = SIM.evaluate(ServingConfig(), w)
    assert m.arrival.tolist() == [0, 0]
