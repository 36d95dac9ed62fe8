"""The Loop: SLOs are hard constraints, every trial is recorded, failures do not stop it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner import (
    BackendError,
    InfeasibleError,
    Loop,
    Measurement,
    Objective,
    Request,
    SearchSpace,
    ServingConfig,
    SLOError,
    Workload,
)
from tuner.backends import Backend, SimulatorBackend
from tuner.search import GridSearch

SEED = Workload(
    [
        Request(arrival=0, prompt_tokens=8, output_tokens=24),
        Request(arrival=2, prompt_tokens=64, output_tokens=2),
        Request(arrival=2, prompt_tokens=64, output_tokens=2),
    ]
)
SPACE = SearchSpace(
    {"max_num_batched_tokens": [40, 64, 512], "long_prefill_token_threshold": [0, 32]},
    base=ServingConfig(max_num_seqs=8),
)
SEED_OBJECTIVE = Objective.minimize("total_steps", tie_break="ttft_steps.max")


class FlakyBackend(Backend):
    """The simulator, except that some budgets fail (a refused config, a crash)."""

    def __init__(self, fail: dict[int, Exception]) -> None:
        self.sim = SimulatorBackend()
        self.fail = fail
        self.closed = 0

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        if config.max_num_batched_tokens in self.fail:
            raise self.fail[config.max_num_batched_tokens]
        return self.sim.evaluate(config, workload)

    def close(self) -> None:
        self.closed += 1


def test_grid_search_respects_the_slo() -> None:
    unconstrained = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE).run(SPACE, SEED)
    assert unconstrained.best.values["max_step_tokens"] > 64  # the fastest config spikes
    result = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"]).run(
        SPACE, SEED
    )
    assert result.best.values["max_step_tokens"] <= 64
    assert result.best.config.max_num_batched_tokens == 64  # ties broken by lower worst TTFT
    assert len(result.trials) == len(SPACE)  # every trial recorded, feasible or not
    assert {t.feasible for t in result.trials} == {True, False}


def test_ties_break_toward_lower_worst_ttft() -> None:
    result = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE).run(SPACE, SEED)
    best_steps = result.best.values["total_steps"]
    tied = [t for t in result.trials if t.values["total_steps"] == best_steps]
    assert len(tied) > 1
    assert result.best.values["ttft_steps.max"] == min(t.values["ttft_steps.max"] for t in tied)


def test_unsatisfiable_slo_is_loud() -> None:
    loop = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE,
                ["max_step_tokens <= 16", "ttft_steps.max <= 5"])  # fmt: skip
    with pytest.raises(InfeasibleError) as e:
        loop.run(SPACE, SEED)
    err = e.value
    spike, ttft = err.shortfalls
    assert spike.best_value == 40 and spike.limit == 16 and spike.satisfied_by == 0
    assert spike.closest_config.max_num_batched_tokens == 40
    assert ttft.satisfied_by == len(SPACE)
    assert len(err.trials) == len(SPACE)
    assert "max_step_tokens <= 16: best reached 40 (limit 16" in str(err)
    assert "refusing to return a violating config" in str(err)


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on() -> None:
    backend = FlakyBackend({40: BackendError("server refused"), 512: RuntimeError("segfault")})
    result = Loop(backend, GridSearch(), SEED_OBJECTIVE).run(SPACE, SEED)
    assert len(result.trials) == len(SPACE)
    failed = result.failed
    assert len(failed) == 4
    assert {t.error for t in failed} == {"BackendError: server refused", "RuntimeError: segfault"}
    assert result.best.config.max_num_batched_tokens == 64
    assert backend.closed == 1  # the Loop closes its backend


def test_all_trials_failing_is_infeasible_not_a_silent_answer() -> None:
    backend = FlakyBackend({b: BackendError("down") for b in (40, 64, 512)})
    with pytest.raises(InfeasibleError, match="0 measured successfully"):
        Loop(backend, GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"]).run(SPACE, SEED)
    assert backend.closed == 1


def test_every_trial_is_written_as_it_finishes(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    seen_lines = []
    def count_lines(_: object) -> None:
        seen_lines.append(len(log.read_text().splitlines()))

    loop = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"],
                trial_log=log, on_trial=count_lines)  # fmt: skip
    loop.run(SPACE, SEED)
    assert seen_lines == list(range(1, len(SPACE) + 1))  # written before the next trial starts
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["number"] for r in rows] == list(range(len(SPACE)))
    assert rows[0]["config"]["max_num_batched_tokens"] == 40
    assert {r["feasible"] for r in rows} == {True, False}
    assert all("measurement" not in r for r in rows)


def test_max_trials_stops_the_run_and_says_why() -> None:
    result = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, max_trials=2).run(SPACE, SEED)
    assert len(result.trials) == 2
    assert result.stop_reason == "max_trials (2) reached"


def test_a_time_slo_on_the_step_clock_stops_the_run_with_a_clear_error() -> None:
    backend = FlakyBackend({})
    with pytest.raises(SLOError, match="unit step clock"):
        Loop(backend, GridSearch(), SEED_OBJECTIVE, ["ttft.p99 <= 200ms"]).run(SPACE, SEED)
    assert backend.closed == 1


@settings(max_examples=40, deadline=None)
@given(
    spike=st.integers(30, 140),
    ttft=st.integers(0, 4),
    objective=st.sampled_from(
        [SEED_OBJECTIVE, Objective.maximize("output_throughput"), Objective.minimize("ttft.p99")]
    ),
)
def test_the_loop_never_returns_an_infeasible_trial(
    spike: int, ttft: int, objective: Objective
) -> None:
    slos = [f"max_step_tokens <= {spike}", f"ttft_steps.max <= {ttft}"]
    try:
        result = Loop(SimulatorBackend(), GridSearch(), objective, slos).run(SPACE, SEED)
    except InfeasibleError as e:
        assert all(not t.feasible for t in e.trials)
        return
    best = result.best
    assert best.values["max_step_tokens"] <= spike and best.values["ttft_steps.max"] <= ttft
    feasible_scores = [objective.score(t.values) for t in result.feasible]
    assert objective.score(best.values) == min(feasible_scores)
