"""Contract test suites every implementation of an interface must pass.

Subclass ``BackendContract`` / ``SearchContract`` and provide the factory; pytest collects the
inherited tests for each implementation (Optuna's habit for its samplers).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pytest

from tuner import (
    InfeasibleError,
    Loop,
    Measurement,
    Objective,
    Request,
    SearchError,
    SearchSpace,
    ServingConfig,
    TunerError,
    Workload,
)
from tuner.backends import Backend, SimulatorBackend
from tuner.search import Search

SMALL = Workload(
    [
        Request(arrival=0, prompt_tokens=40, output_tokens=5),
        Request(arrival=0, prompt_tokens=7, output_tokens=1),
        Request(arrival=3, prompt_tokens=90, output_tokens=12),
        Request(arrival=3.5, prompt_tokens=12, output_tokens=4),
    ]
)
CONFIG = ServingConfig(
    max_num_batched_tokens=64,
    max_num_seqs=4,
    max_model_len=256,
    long_prefill_token_threshold=16,
    num_kv_blocks=40,
    block_size=16,
)


class BackendContract:
    """What every Backend promises."""

    def make_backend(self) -> Backend:
        raise NotImplementedError

    def test_measurement_is_in_workload_order_with_every_output_token(self) -> None:
        with self.make_backend() as b:
            m = b.evaluate(CONFIG, SMALL)
        assert m.num_requests == len(SMALL)
        assert m.arrival.tolist() == SMALL.arrival.tolist()
        assert m.output_tokens.tolist() == SMALL.output_tokens.tolist()
        assert m.prompt_tokens.tolist() == SMALL.prompt_tokens.tolist()
        assert (m.ttft > 0).all() and (m.e2e >= m.ttft).all()
        assert m.duration > 0

    def test_step_record_is_consistent(self) -> None:
        with self.make_backend() as b:
            m = b.evaluate(CONFIG, SMALL)
        if not m.has_steps:
            pytest.skip("this backend does not see the engine's steps")
        assert m.step_tokens.max() <= CONFIG.max_num_batched_tokens
        scheduled = SMALL.total_prompt_tokens + SMALL.total_output_tokens - len(SMALL)
        assert m.step_tokens.sum() >= scheduled
        assert m.total_steps == len(m.step_tokens)
        assert (np.diff(m.step_start) > 0).all()

    def test_a_request_longer_than_max_model_len_is_a_tuner_error(self) -> None:
        too_long = Workload([Request(arrival=0, prompt_tokens=250, output_tokens=10)])
        with self.make_backend() as b, pytest.raises(TunerError, match="max_model_len"):
            b.evaluate(CONFIG, too_long)

    def test_close_is_idempotent(self) -> None:
        b = self.make_backend()
        b.close()
        b.close()


class SearchContract:
    """What every Search promises."""

    def make_search(self) -> Search:
        raise NotImplementedError

    space = SearchSpace(
        {"max_num_batched_tokens": [16, 32, 64, 128], "long_prefill_token_threshold": [0, 8]},
        base=ServingConfig(max_num_seqs=4, max_model_len=256),
    )

    def test_ask_before_start_is_a_clear_error(self) -> None:
        with pytest.raises(SearchError, match="start"):
            self.make_search().ask()

    def test_proposals_come_from_the_space(self) -> None:
        s = self.make_search()
        s.start(self.space)
        seen = 0
        loop = Loop(SimulatorBackend(), s, Objective.minimize("total_steps"))
        result = loop.run(self.space, SMALL)
        for t in result.trials:
            assert t.config in self.space
            assert 0 < t.fidelity <= 1
            seen += 1
        assert seen >= 1

    def test_the_loop_never_returns_an_infeasible_trial(self) -> None:
        slo = "ttft_steps.max <= 2"
        loop = Loop(
            SimulatorBackend(), self.make_search(), Objective.minimize("total_steps"), [slo]
        )
        try:
            result = loop.run(self.space, SMALL)
        except InfeasibleError:
            return
        assert result.best.feasible
        assert result.best.values["ttft_steps.max"] <= 2
        assert all(t.feasible for t in result.feasible)

    def test_a_rerun_on_the_trial_log_evaluates_nothing_twice(self, tmp_path: Path) -> None:
        log = tmp_path / "trials.jsonl"
        first, second = _Counting(), _Counting()
        objective = Objective.minimize("total_steps")
        with contextlib.suppress(InfeasibleError):  # e.g. only low-fidelity trials so far
            Loop(first, self.make_search(), objective, max_trials=3, trial_log=log).run(
                self.space, SMALL
            )
        result = Loop(second, self.make_search(), objective, trial_log=log).run(self.space, SMALL)
        assert len(first.evaluated) == 3
        assert not set(first.evaluated) & set(second.evaluated)  # finished work is kept
        assert len(set(second.evaluated)) == len(second.evaluated)
        assert len(result.trials) == 3 + len(second.evaluated)

    def test_the_search_terminates_on_a_finite_space(self) -> None:
        loop = Loop(SimulatorBackend(), self.make_search(), Objective.minimize("total_steps"))
        result = loop.run(self.space, SMALL)
        assert 1 <= len(result.trials) <= 10 * len(self.space)
        assert not math.isnan(result.best.values["total_steps"])


class _Counting(SimulatorBackend):
    """The simulator, noting every (configuration, workload size) it evaluates."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluated: list[tuple[ServingConfig, int]] = []

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        self.evaluated.append((config, len(workload)))
        return super().evaluate(config, workload)
