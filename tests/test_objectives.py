"""Metrics, SLOs and objectives."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuner import SLO, Measurement, Objective, SLOError
from tuner.objectives import metric_value, percentile_of_runs, statistic


def meas(**kw: object) -> Measurement:
    base: dict[str, object] = dict(
        source="test",
        time_unit="s",
        arrival=[0.0, 1.0, 2.0],
        prompt_tokens=[10, 10, 10],
        output_tokens=[5, 1, 3],
        ttft=[0.1, 0.2, 0.4],
        e2e=[0.5, 0.2, 1.0],
        itl_values=[0.1, 0.3],
        itl_counts=[4, 2],
        step_tokens=[30, 3, 2],
        duration=3.0,
        step_start=[0, 1, 2],
        step_end=[1, 2, 3],
        ttft_steps=[0, 1, 2],
    )
    base.update(kw)
    return Measurement(**base)  # type: ignore[arg-type]


@given(
    st.lists(st.tuples(st.floats(-1e6, 1e6), st.integers(0, 5)), min_size=1, max_size=30),
    st.floats(0, 100),
)
def test_percentile_of_runs_equals_numpy_on_the_expanded_samples(
    runs: list[tuple[float, int]], q: float
) -> None:
    values = [v for v, _ in runs]
    counts = [c for _, c in runs]
    expanded = np.repeat(values, counts)
    got = percentile_of_runs(values, counts, q)
    if len(expanded) == 0:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(float(np.percentile(expanded, q)), rel=1e-9, abs=1e-6)


def test_statistics_match_vllm_bench_definitions() -> None:
    x = [1.0, 2.0, 3.0, 4.0, float("nan")]  # NaN (1-token TPOT, failed request) is left out
    assert statistic(x, "mean") == 2.5
    assert statistic(x, "median") == 2.5
    assert statistic(x, "p99") == pytest.approx(np.percentile([1, 2, 3, 4], 99))
    assert statistic(x, "max") == 4.0
    assert statistic(x, "std") == pytest.approx(np.std([1, 2, 3, 4]))
    assert math.isnan(statistic([float("nan")], "mean"))


def test_metrics_from_a_measurement() -> None:
    m = meas()
    assert metric_value(m, "ttft.max") == 0.4
    assert metric_value(m, "max_step_tokens") == 30
    assert metric_value(m, "total_steps") == 3
    assert metric_value(m, "itl.median") == pytest.approx(0.1)
    assert metric_value(m, "itl.max") == pytest.approx(0.3)
    assert metric_value(m, "tpot.max") == pytest.approx(0.3)  # (1.0-0.4)/2; 1-token left out
    assert metric_value(m, "output_throughput") == pytest.approx(9 / 3.0)
    assert metric_value(m, "ttft_steps.max") == 2


def test_slo_parses_units_into_seconds() -> None:
    assert SLO.parse("ttft.p99 <= 200ms").limit == pytest.approx(0.2)
    assert SLO.parse("tpot.p90<=50ms").limit == pytest.approx(0.05)
    assert SLO.parse("e2e.p99 <= 5s").limit == 5.0
    assert SLO.parse("max_step_tokens <= 64").limit == 64
    assert SLO.parse("ttft.p99 <= 200ms").text == "ttft.p99 <= 200ms"
    assert SLO.parse("output_throughput >= 10").op == ">="


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("ttfb.p99 <= 1", r"unknown metric 'ttfb'.*allowed: ttft\.<stat>"),
        ("ttft.p999x <= 1", "unknown statistic 'p999x'.*allowed: mean, median"),
        ("ttft.p99 == 1", "unknown operator '=='"),
        ("ttft.p99 <= 1h", "unknown unit 'h'.*allowed: us, ms, s"),
        ("max_step_tokens <= 64ms", "not a time metric"),
        ("ttft <= 1", "is a distribution; add a statistic"),
        ("max_step_tokens.p99 <= 1", "single figure"),
        ("ttft.p99 below 1", "expected '<metric> <op> <number>"),
    ],
)
def test_bad_slo_text_lists_what_is_allowed(text: str, match: str) -> None:
    with pytest.raises(SLOError, match=match):
        SLO.parse(text)


def test_slo_verdict_and_margin() -> None:
    slo = SLO.parse("ttft.max <= 300ms")
    assert not slo.satisfied_by(0.4) and slo.margin(0.4) == pytest.approx(-0.1)
    assert slo.satisfied_by(0.3) and slo.margin(0.3) == pytest.approx(0.0)
    assert not slo.satisfied_by(float("nan"))
    floor = SLO.parse("output_throughput >= 10")
    assert floor.satisfied_by(11) and floor.margin(11) == 1


def test_time_unit_slo_on_the_step_clock_is_a_clear_error() -> None:
    with pytest.raises(SLOError, match="unit step clock"):
        SLO.parse("ttft.p99 <= 200ms").check_applicable(meas(time_unit="step"))


def test_objective_directions_and_tie_break() -> None:
    obj = Objective.minimize("total_steps", tie_break="ttft_steps.max")
    a = {"total_steps": 10.0, "ttft_steps.max": 3.0}
    b = {"total_steps": 10.0, "ttft_steps.max": 1.0}
    assert obj.score(a) == obj.score(b) and obj.tie_score(b) < obj.tie_score(a)
    up = Objective.maximize("output_throughput")
    assert up.score({"output_throughput": 5.0}) < up.score({"output_throughput": 4.0})
    assert up.score({"output_throughput": float("nan")}) == math.inf
    with pytest.raises(SLOError, match="unknown metric"):
        Objective.maximize("throughput")


def test_goodput_counts_requests_meeting_every_limit_per_second_like_vllm_bench() -> None:
    # Request 0: ttft 0.1, tpot (0.5-0.1)/4 = 0.1, e2e 0.5.
    # Request 1: ttft 0.2, one output token: tpot counts as 0 (vllm bench), e2e 0.2.
    # Request 2: ttft 0.4, tpot (1.0-0.4)/2 = 0.3, e2e 1.0.
    # Request 3: failed (NaN): never good.
    m = meas(
        arrival=[0.0, 1.0, 2.0, 3.0],
        prompt_tokens=[10] * 4,
        output_tokens=[5, 1, 3, 2],
        ttft=[0.1, 0.2, 0.4, float("nan")],
        e2e=[0.5, 0.2, 1.0, float("nan")],
        ttft_steps=[0, 1, 2, 3],
        duration=4.0,
        failed_requests=1,
    )
    assert metric_value(m, "goodput(ttft:300ms)") == pytest.approx(2 / 4.0)
    assert metric_value(m, "goodput(tpot:100ms)") == pytest.approx(2 / 4.0)
    assert metric_value(m, "goodput(tpot:0.05)") == pytest.approx(1 / 4.0)  # only 1-token one
    assert metric_value(m, "goodput(e2el:1s)") == pytest.approx(3 / 4.0)  # vllm's name works
    assert metric_value(m, "goodput(ttft:300ms,tpot:100ms,e2e:400ms)") == pytest.approx(1 / 4.0)
    floor = SLO.parse("goodput(ttft:300ms) >= 0.5")
    assert floor.satisfied_by(metric_value(m, floor.metric))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("goodput", "write goodput with its per-request limits"),
        ("goodput(itl:1s)", "allowed criteria: ttft, tpot, e2e"),
        ("goodput(ttft:1h)", "expected a number with an optional unit"),
        ("goodput(ttft:1s,ttft:2s)", "limited twice"),
    ],
)
def test_bad_goodput_references_are_clear(text: str, match: str) -> None:
    with pytest.raises(SLOError, match=match):
        SLO.parse(f"{text} >= 1")


def test_goodput_in_ms_on_the_step_clock_is_refused() -> None:
    with pytest.raises(SLOError, match="unit step clock"):
        SLO.parse("goodput(ttft:200ms) >= 1").check_applicable(meas(time_unit="step"))
