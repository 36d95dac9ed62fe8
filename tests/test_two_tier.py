"""Two-tier tuning and calibration: the answer comes only from the expensive tier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner import (
    BackendError,
    InfeasibleError,
    Loop,
    Measurement,
    Objective,
    SearchSpace,
    ServingConfig,
    Trial,
    Uniform,
    Workload,
)
from tuner.backends import Backend, CostModel, SimulatorBackend
from tuner.backends.simulator._calibration import (
    Calibration,
    fit_cost_model,
    nonnegative_least_squares,
)
from tuner.search import GridSearch, ListSearch
from tuner.studies import shortlist, two_tier

TRUE = CostModel(
    fixed=0.005, per_prefill_token=2e-5, per_decode_token=1e-4, per_sequence=3e-5, time_unit="s"
)
GUESS = CostModel(fixed=0.01, per_prefill_token=1e-5, per_decode_token=5e-5, time_unit="s")
W = Workload.poisson(15, 240, Uniform(400, 0.5), Uniform(60, 0.5), seed=1)
SPACE = SearchSpace({"max_num_batched_tokens": [128, 256, 512, 1024], "max_num_seqs": [8, 16, 32]})
SLOS = ["ttft.p99 <= 300ms"]


class Recording(SimulatorBackend):
    """The 'live' tier stand-in: a simulator with the true cost model that logs what it ran."""

    def __init__(self) -> None:
        super().__init__(TRUE)
        self.ran: list[ServingConfig] = []

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        self.ran.append(config)
        return super().evaluate(config, workload)


def test_the_answer_comes_only_from_the_expensive_tier() -> None:
    live = Recording()
    r = two_tier(
        SimulatorBackend(GUESS),
        live,
        GridSearch(),
        SPACE,
        W,
        Objective.maximize("output_throughput"),
        SLOS,
        top_k=2,
    )
    assert r.best in r.expensive and r.best.feasible
    assert set(live.ran) == set(r.shortlist)  # only the shortlist was measured for real
    assert len(live.ran) < len(SPACE) and len(r.cheap) == len(SPACE)
    truth = {t.config: t for t in r.expensive}
    assert r.best.values == truth[r.best.config].values


def test_shortlist_takes_the_top_feasible_and_the_near_misses() -> None:
    trials = _all_trials(SimulatorBackend(GUESS), SPACE, W, ["ttft.p99 <= 60ms"])
    obj = Objective.maximize("output_throughput")
    picks = shortlist(trials, obj, top_k=2, margin=0.5)
    feasible = sorted((t for t in trials if t.feasible), key=lambda t: obj.score(t.values))
    assert picks[:2] == [t.config for t in feasible[:2]]
    near = [t for t in trials if t.config in picks[2:]]
    assert near and all(not t.feasible for t in near)
    assert all(r.value <= 0.06 * 1.5 for t in near for r in t.slo_results)


def _all_trials(backend: Backend, space: SearchSpace, w: Workload, slos: list[str]) -> list[Trial]:
    try:
        return list(
            Loop(backend, GridSearch(), Objective.maximize("output_throughput"), slos)
            .run(space, w)
            .trials
        )
    except InfeasibleError as e:
        return list(e.trials)


def test_calibration_recovers_the_true_cost_model_and_removes_the_error() -> None:
    r = two_tier(
        SimulatorBackend(GUESS),
        SimulatorBackend(TRUE),
        GridSearch(),
        SPACE,
        W,
        Objective.maximize("output_throughput"),
        SLOS,
    )
    assert r.calibration is not None
    fitted = r.calibration.cost_model
    for term in ("fixed", "per_prefill_token", "per_decode_token", "per_sequence"):
        assert getattr(fitted, term) == pytest.approx(getattr(TRUE, term), rel=1e-6, abs=1e-12)
    before, after = r.mean_abs_error(), r.mean_abs_error(calibrated=True)
    assert before["ttft.p99"] > 0.05  # the guessed cost model was off...
    assert after["ttft.p99"] < 1e-9  # ...and the calibrated simulator predicts the "live" tier
    assert len(r.comparisons) >= len(r.shortlist)


def test_nothing_feasible_when_measured_for_real_is_infeasible() -> None:
    optimistic = CostModel(fixed=0.0001, per_prefill_token=1e-7, time_unit="s")
    with pytest.raises(InfeasibleError, match=r"none of the .* shortlisted .* expensive backend"):
        two_tier(
            SimulatorBackend(optimistic),
            SimulatorBackend(TRUE),
            GridSearch(),
            SPACE,
            W,
            Objective.maximize("output_throughput"),
            ["ttft.p99 <= 20ms"],
        )


def test_calibration_saves_and_loads(tmp_path: Path) -> None:
    m = SimulatorBackend(TRUE).evaluate(ServingConfig(max_num_seqs=16), W)
    cal = fit_cost_model([m], source="test")
    again = Calibration.load(cal.save(tmp_path / "cal.json"))
    assert again == cal and again.r2 == pytest.approx(1.0)


def test_calibration_knows_the_widest_batch_it_was_fitted_on() -> None:
    narrow = fit_cost_model([SimulatorBackend(TRUE).evaluate(ServingConfig(max_num_seqs=2), W)])
    assert narrow.max_seqs == 2  # W keeps two sequences busy at once
    assert narrow.extrapolates(16) and not narrow.extrapolates(2)
    legacy = Calibration(**narrow.model_dump(exclude={"max_seqs"}))  # a file from before
    assert legacy.max_seqs is None and not legacy.extrapolates(1024)


def test_calibration_needs_step_times() -> None:
    m = SimulatorBackend(TRUE).evaluate(ServingConfig(max_num_seqs=16), W)
    bare = m.model_copy(update={"step_start": None})
    with pytest.raises(BackendError, match="per-step times"):
        fit_cost_model([bare])


@settings(max_examples=40, deadline=None)
@given(
    coef=st.lists(st.floats(0, 5), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_nonnegative_least_squares_finds_exact_fits(coef: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(30), rng.uniform(0, 10, (30, 2))])
    y = x @ np.array(coef)
    got, res = nonnegative_least_squares(x, y)
    assert (got >= 0).all()
    assert res == pytest.approx(0, abs=1e-6)
    np.testing.assert_allclose(x @ got, y, atol=1e-6)


def test_list_search_proposes_its_configs_once_in_order() -> None:
    a, b = ServingConfig(max_num_seqs=8), ServingConfig(max_num_seqs=16)
    s = ListSearch([a, b, a])
    s.start(SPACE)
    first, second, third = s.ask(), s.ask(), s.ask()
    assert first is not None and second is not None
    assert (first.config, second.config, third) == (a, b, None)


def test_calibration_adds_the_overhead_between_logged_steps() -> None:
    from tuner.backends.simulator._calibration import step_overhead

    m = SimulatorBackend(TRUE).evaluate(ServingConfig(max_num_seqs=16), W)
    # A live log: each step's model time is 1 ms shorter than the period between steps.
    live = m.model_copy(update={"step_end": m.step_end - 0.001})
    assert step_overhead(live.step_start, live.step_end) == pytest.approx(0.001)
    fitted = fit_cost_model([live]).cost_model
    assert fitted.fixed == pytest.approx(TRUE.fixed, rel=1e-6)  # the full period again
    assert step_overhead([0.0, 1.0, 5.0], [0.5, 1.5, 5.5]) == pytest.approx(2.0)  # median gap
    assert step_overhead([0.0], [1.0]) == 0.0
