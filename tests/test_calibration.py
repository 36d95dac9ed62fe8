"""Calibration: attention terms chosen by held-out error, the request path attributed from the
client's times, and the check on runs the fit never saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tuner import Measurement, Request, ServingConfig, Workload
from tuner.backends import CostModel, SimulatorBackend
from tuner.backends.simulator import (
    Calibration,
    CalibrationRun,
    HeldOut,
    RequestPath,
    calibrate,
    fit_cost_model,
    fit_request_path,
)
from tuner.backends.simulator._calibration import TERMS
from tuner.backends.simulator._held_out import kendall_tau, ranking_tau

COUNTS = CostModel(
    fixed=0.004, per_prefill_token=2e-5, per_decode_token=1e-4, per_sequence=2e-4, time_unit="s"
)
ATTENTION = COUNTS.replace(per_decode_context_token=4e-6)
PATH = RequestPath(arrival_fixed=0.003, arrival_per_prompt_token=2e-6, delivery=0.0015)


def workload(rate: float, n: int = 120, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload.from_arrays(
        np.cumsum(rng.exponential(1 / rate, n)),
        rng.integers(32, 600, n),
        rng.integers(8, 200, n),
    )


def run(cost: CostModel, config: ServingConfig, w: Workload, path: RequestPath | None = None):
    m = SimulatorBackend(cost, request_path=path).evaluate(config, w)
    return CalibrationRun(config, w, m)


CONFIGS = [
    ServingConfig(max_num_batched_tokens=b, max_num_seqs=s) for b in (128, 512) for s in (4, 16)
]


def test_counts_only_steps_keep_the_four_terms() -> None:
    cal = fit_cost_model([run(COUNTS, c, workload(4.0)).measurement for c in CONFIGS])
    assert cal.terms == TERMS
    assert cal.cost_model.fixed == pytest.approx(COUNTS.fixed, rel=1e-6)
    assert set(cal.candidate_errors) == {
        "counts",
        "per_decode_context_token",
        "per_prefill_context_pair",
        "per_decode_context_token+per_prefill_context_pair",
    }
    assert cal.request_path.is_zero  # a simulator's tokens leave with their step


def test_decode_attention_is_chosen_when_it_predicts_held_out_steps_better() -> None:
    runs = [run(ATTENTION, c, workload(4.0, seed=i)) for i, c in enumerate(CONFIGS)]
    cal = fit_cost_model([r.measurement for r in runs])
    assert "per_decode_context_token" in cal.terms
    assert cal.held_out_step_error is not None
    assert cal.held_out_step_error < cal.candidate_errors["counts"] / 2
    assert cal.cost_model.per_decode_context_token == pytest.approx(4e-6, rel=0.2)


def test_request_path_is_attributed_from_client_and_step_times() -> None:
    ms = [run(COUNTS, c, workload(1.0), PATH).measurement for c in CONFIGS]
    got = fit_request_path(ms)
    assert got.delivery == pytest.approx(PATH.delivery, rel=1e-6)
    assert got.arrival_fixed == pytest.approx(PATH.arrival_fixed, rel=0.05, abs=2e-4)
    assert got.arrival_per_prompt_token == pytest.approx(PATH.arrival_per_prompt_token, rel=0.1)


def test_simulator_adds_the_request_path_to_latencies_not_to_gaps() -> None:
    w = Workload([Request(arrival=1.0, prompt_tokens=100, output_tokens=4)])
    c = ServingConfig(max_num_seqs=4)
    bare = SimulatorBackend(COUNTS).evaluate(c, w)
    path = SimulatorBackend(COUNTS, request_path=PATH).evaluate(c, w)
    shift = PATH.arrival_fixed + PATH.arrival_per_prompt_token * 100 + PATH.delivery
    assert path.ttft[0] == pytest.approx(bare.ttft[0] + shift)
    assert path.e2e[0] == pytest.approx(bare.e2e[0] + shift)
    np.testing.assert_allclose(path.itl_values, bare.itl_values)
    assert path.arrival.tolist() == [1.0]


def test_a_burst_queues_in_the_api_server_one_request_at_a_time() -> None:
    w = Workload.from_arrays([0.0, 0.0, 0.0, 1.0], [10] * 4, [2] * 4)
    path = RequestPath(arrival_fixed=0.001, server_time=0.01)
    assert path.inbound(w).tolist() == pytest.approx([0.001, 0.011, 0.021, 0.001])
    m = SimulatorBackend(COUNTS, request_path=path).evaluate(ServingConfig(max_num_seqs=4), w)
    bare = SimulatorBackend(COUNTS).evaluate(ServingConfig(max_num_seqs=4), w)
    assert (m.ttft > bare.ttft).all() and m.arrival.tolist() == w.arrival.tolist()


def test_calibrate_checks_each_configuration_on_a_fit_of_the_others() -> None:
    runs = [run(ATTENTION, c, workload(r, n=60, seed=1), PATH) for c in CONFIGS for r in (2, 8)]
    cal = calibrate(runs)
    assert cal.held_out is not None and cal.held_out.runs == len(runs)
    assert cal.usable
    assert cal.held_out.after["e2e.p50"] < 0.05
    for metric in ("ttft.p50", "e2e.p50"):  # the request path is what the baseline lacks
        assert cal.held_out.after[metric] < cal.held_out.before[metric]
    assert cal.held_out.tau_after["ttft.p99"] >= 0.6


def test_calibration_worse_than_uncalibrated_is_not_usable() -> None:
    runs = [run(COUNTS, c, workload(4.0)) for c in CONFIGS]
    # Fit on the light configurations only, judged against the true model: it cannot win.
    cal = calibrate(runs[:1], runs[1:], baseline=COUNTS)
    assert cal.held_out is not None
    assert cal.held_out.baseline == repr(COUNTS)
    bad = HeldOut(runs=2, baseline="x", before={"ttft.p99": 0.1}, after={"ttft.p99": 0.3})
    assert bad.worse and not cal.replace(held_out=bad).usable
    good = HeldOut(runs=2, baseline="x", before={"ttft.p99": 0.3}, after={"ttft.p99": 0.1})
    assert not good.worse and cal.replace(held_out=good).usable


def test_calibration_round_trips_with_its_request_path_and_check(tmp_path: Path) -> None:
    runs = [run(ATTENTION, c, workload(4.0), PATH) for c in CONFIGS]
    cal = calibrate(runs)
    again = Calibration.load(cal.save(tmp_path / "cal.json"))
    assert again == cal
    legacy = Calibration(
        **cal.model_dump(include={"cost_model", "steps", "r2", "mean_abs_rel_error"})
    )
    assert legacy.terms == TERMS and legacy.request_path.is_zero and legacy.usable


def test_kendall_tau_counts_agreeing_pairs() -> None:
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert ranking_tau(["a", "a", "b"], [1.0, 2.0, 5.0], [1.0, 2.0, 0.0]) == 1.0
    assert ranking_tau(["a", "b"], [1.0, 2.0], [1.0, 2.0]) is None


class MisleadingLog(SimulatorBackend):
    """A 'live' tier whose latencies are the true model's but whose step log lies: every step
    logged 4x too long, so a fit of the log overestimates every latency."""

    def __init__(self) -> None:
        super().__init__(COUNTS)

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        m = super().evaluate(config, workload)
        assert m.step_start is not None and m.step_end is not None
        return m.model_copy(update={"step_end": m.step_start + 4 * (m.step_end - m.step_start)})


def test_two_tier_does_not_apply_a_calibration_worse_than_its_cheap_tier() -> None:
    from tuner import Objective, SearchSpace
    from tuner.report._calibration import calibration_blocks
    from tuner.search import GridSearch
    from tuner.studies import two_tier

    space = SearchSpace({"max_num_batched_tokens": [128, 512], "max_num_seqs": [4, 16]})
    r = two_tier(
        SimulatorBackend(COUNTS),
        MisleadingLog(),
        GridSearch(),
        space,
        workload(4.0),
        Objective.maximize("output_throughput"),
        top_k=4,
    )
    assert r.calibration is not None and r.calibration.held_out is not None
    assert r.calibration.held_out.worse and not r.calibration.usable
    assert r.calibrated_cheap == ()  # reported, not applied
    text = " ".join(getattr(b, "text", "") for b in calibration_blocks(r.calibration))
    assert "worse than the uncalibrated model" in text and "not applied" in text


def test_report_shows_held_out_errors_before_and_after() -> None:
    from tuner.report._calibration import calibration_blocks
    from tuner.report._document import Table

    runs = [run(ATTENTION, c, workload(4.0), PATH) for c in CONFIGS]
    blocks = calibration_blocks(calibrate(runs, baseline=COUNTS))
    table = next(b for b in blocks if isinstance(b, Table))
    assert list(table.headers) == ["metric", "uncalibrated", "calibrated"]
    assert [row[0] for row in table.rows][:2] == ["ttft.p50", "ttft.p99"]
    assert any(row[0] == "Kendall tau, ttft.p99" for row in table.rows)
    assert calibration_blocks(None) == []
