"""The pure statistics of repeated runs (bootstrap intervals, pooled noise, Student's t) and the
early-abort rule, checked as invariants with hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner import Measurement, SLOError
from tuner.objectives import (
    SLO,
    AbortRule,
    PartialRun,
    combined_interval,
    constant_replicates,
    pooled_log_sd,
    repeat_interval,
    run_replicates,
    statistic,
    t_quantile,
)

samples = st.lists(
    st.floats(min_value=0.001, max_value=1e3, allow_nan=False), min_size=1, max_size=60
)
stats = st.sampled_from(["p50", "p90", "p99", "max", "min", "mean", "median"])


@given(samples, stats, st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_bootstrap_replicates_are_seeded_and_stay_within_the_data(
    x: list[float], stat: str, seed: int
) -> None:
    a = run_replicates(x, stat, resamples=50, seed=seed)
    b = run_replicates(x, stat, resamples=50, seed=seed)
    assert np.array_equal(a, b)
    assert a.min() >= min(x) - 1e-9 and a.max() <= max(x) + 1e-9


@given(st.lists(samples, min_size=1, max_size=4), stats, st.floats(0.5, 0.99))
@settings(max_examples=40, deadline=None)
def test_the_interval_over_runs_is_ordered_and_scales_with_the_data(
    runs: list[list[float]], stat: str, confidence: float
) -> None:
    reps = [run_replicates(r, stat, resamples=60, seed=i) for i, r in enumerate(runs)]
    lo, hi = repeat_interval(reps, confidence, seed=1)
    assert lo <= hi
    assert min(min(r) for r in runs) - 1e-9 <= lo and hi <= max(max(r) for r in runs) + 1e-9
    scaled = [
        run_replicates([3 * v for v in r], stat, resamples=60, seed=i) for i, r in enumerate(runs)
    ]
    lo3, hi3 = repeat_interval(scaled, confidence, seed=1)
    assert math.isclose(lo3, 3 * lo, rel_tol=1e-9) and math.isclose(hi3, 3 * hi, rel_tol=1e-9)


@given(
    st.lists(st.lists(st.floats(0.01, 1e4), min_size=1, max_size=5), min_size=1, max_size=6),
    st.floats(0.01, 100),
)
def test_pooled_noise_is_relative(groups: list[list[float]], c: float) -> None:
    s, df = pooled_log_sd(groups)
    s2, df2 = pooled_log_sd([[c * v for v in g] for g in groups])
    assert df == df2 == sum(len(g) - 1 for g in groups)
    assert math.isclose(s, s2, rel_tol=1e-6, abs_tol=1e-9)


def test_student_t_quantiles_match_the_tables() -> None:
    table = {(0.95, 1): 12.706, (0.95, 2): 4.303, (0.95, 10): 2.228, (0.9, 5): 2.015}
    for (conf, df), t in table.items():
        assert math.isclose(t_quantile(conf, df), t, abs_tol=1e-3)
    assert t_quantile(0.95, 0) == math.inf
    assert [t_quantile(0.95, d) for d in (1, 3, 30, 1000)] == sorted(
        [t_quantile(0.95, d) for d in (1, 3, 30, 1000)], reverse=True
    )


@given(st.lists(st.floats(1, 100), min_size=1, max_size=5), st.floats(0.0, 0.5), st.integers(0, 50))
def test_the_recorded_interval_holds_the_median_and_grows_with_noise(
    values: list[float], s: float, df: int
) -> None:
    reps = [constant_replicates(v, 10) for v in values]
    lo, hi = combined_interval(values, reps, s, df)
    med = float(np.median(values))
    assert lo <= med * (1 + 1e-12) and hi >= med * (1 - 1e-12)
    lo2, hi2 = combined_interval(values, reps, s + 0.1, max(df, 1))
    assert lo2 <= lo * (1 + 1e-12) or df == 0
    assert hi2 >= hi * (1 - 1e-12) or df == 0


# --- the abort rule never calls a met SLO lost ---------------------------------------------------
@st.composite
def runs_and_slos(draw: st.DrawFn) -> tuple[Measurement, PartialRun, SLO]:
    n = draw(st.integers(1, 30))
    arrival = np.sort(np.array(draw(st.lists(st.floats(0, 10), min_size=n, max_size=n))))
    ttft = np.array(draw(st.lists(st.floats(0, 5), min_size=n, max_size=n)))
    out = np.array(draw(st.lists(st.integers(1, 6), min_size=n, max_size=n)))
    decode = np.array(draw(st.lists(st.floats(0, 5), min_size=n, max_size=n)))
    e2e = ttft + np.where(out > 1, decode, 0.0)
    steps = np.array(draw(st.lists(st.integers(1, 300), min_size=1, max_size=40)))
    m = Measurement(
        source="test",
        arrival=arrival,
        prompt_tokens=np.full(n, 16),
        output_tokens=out,
        ttft=ttft,
        e2e=e2e,
        step_tokens=steps,
        duration=float(np.max(arrival + e2e) - arrival.min()) or 1e-9,
    )
    now = draw(st.floats(0, 20))
    first = arrival + ttft
    seen = first <= now
    done = arrival + e2e <= now
    partial = PartialRun(
        now=now,
        arrival=arrival,
        output_tokens=out,
        first_token=np.where(seen, first, np.nan),
        last_token=np.where(done, arrival + e2e, np.where(seen, first, np.nan)),
        tokens=np.where(done, out, np.where(seen, np.minimum(1, out - 1), 0)),
        step_tokens=steps[: draw(st.integers(0, len(steps)))],
    )
    kind = draw(st.sampled_from(["latency", "engine"]))
    if kind == "latency":
        metric = draw(st.sampled_from(["ttft", "e2e", "tpot"])) + "." + draw(stats)
        op = draw(st.sampled_from(["<=", "<"]))
        limit = draw(st.floats(0.001, 8))
    else:
        metric, op = draw(
            st.sampled_from(
                [
                    ("max_step_tokens", "<="),
                    ("total_steps", "<"),
                    ("duration", "<="),
                    ("output_throughput", ">="),
                    ("request_throughput", ">"),
                ]
            )
        )
        limit = draw(st.floats(0.001, 400))
    return m, partial, SLO(metric=metric, op=op, limit=limit)


@given(runs_and_slos())
@settings(max_examples=400, deadline=None)
def test_the_abort_rule_never_calls_lost_an_slo_the_completed_run_meets(
    case: tuple[Measurement, PartialRun, SLO],
) -> None:
    m, partial, slo = case
    reason = AbortRule([slo]).lost(partial)
    if reason is not None:
        assert not slo.satisfied_by(slo.value(m)), reason


def three_requests() -> PartialRun:
    """At 3 s: two first tokens came (0.1 s, 0.2 s), one has waited 3 s; a 700-token step ran."""
    return PartialRun(
        now=3.0,
        arrival=np.zeros(3),
        output_tokens=np.full(3, 2),
        first_token=np.array([0.1, 0.2, np.nan]),
        step_tokens=[100, 700],
    )


@given(runs_and_slos(), st.floats(1.0, 4.0))
@settings(max_examples=300, deadline=None)
def test_with_a_noise_margin_the_rule_calls_lost_only_a_run_past_the_widened_limit(
    case: tuple[Measurement, PartialRun, SLO], margin: float
) -> None:
    m, partial, slo = case
    reason = AbortRule([slo], margins={slo.text: margin}).lost(partial)
    if reason is None:
        return
    value = slo.value(m)
    if slo.ref.name in ("max_step_tokens", "total_steps", "failed_requests"):
        assert not slo.satisfied_by(value), reason  # counts are exact: no margin
    else:
        widened = slo.limit * margin if slo.op in ("<=", "<") else slo.limit / margin
        assert not slo.model_copy(update={"limit": widened}).satisfied_by(value), reason
        assert reason.startswith(f"{slo.text} lost (") and (margin == 1 or "noise margin" in reason)


def test_a_noise_margin_names_an_slo_of_the_rule_and_is_at_least_one() -> None:
    with pytest.raises(SLOError, match=r"margins\['ttft.p50 <= 1s'\]: not one of the rule's SLOs"):
        AbortRule(["ttft.p99 <= 2s"], margins={"ttft.p50 <= 1s": 1.5})
    with pytest.raises(SLOError, match=r"= 0.5: must be a number >= 1"):
        AbortRule(["ttft.p99 <= 2s"], margins={"ttft.p99 <= 2s": 0.5})
    run = three_requests()
    never = AbortRule(["ttft.max <= 2s"], margins={"ttft.max <= 2s": math.inf})
    assert never.lost(run) is None  # 3 s waited, but no margin is known to be enough
    exact = AbortRule(["max_step_tokens <= 512"]).widened({"max_step_tokens <= 512": 2.0})
    assert "a step scheduled 700 tokens" in (exact.lost(run) or "")  # a count takes none
    wide = AbortRule(["ttft.max <= 2s"]).widened({"ttft.max <= 2s": 1.4})
    assert wide.lost(run) == (
        "ttft.max <= 2s lost (1 of 3 requests already over 2.8s, 1 still without a first "
        "token; max allows at most 0; noise margin x1.4)"
    )


def test_a_percentile_is_lost_once_more_than_its_share_is_certain_to_exceed() -> None:
    rule = AbortRule(["ttft.p99 <= 2s"])
    n = 1000

    def waiting(k: int) -> PartialRun:
        return PartialRun(
            now=5.0,
            arrival=np.zeros(n),
            output_tokens=np.full(n, 8),
            first_token=np.r_[np.full(n - k, 0.1), np.full(k, np.nan)],
        )

    assert rule.lost(waiting(10)) is None  # 10 of 1000 over: p99 may still hold
    reason = rule.lost(waiting(13))
    assert reason is not None and reason.startswith("ttft.p99 <= 2s lost (13 of 1000")
    ttft = np.r_[np.full(n - 11, 0.1), np.full(11, 5.0)]
    assert statistic(ttft, "p99") > 2  # 11 over is already enough, as the rule says
    assert rule.lost(waiting(11)) is not None


def test_a_max_is_lost_at_the_first_request_over_and_max_step_tokens_at_the_first_step() -> None:
    run = three_requests()
    assert (AbortRule(["ttft.max <= 2s"]).lost(run) or "").startswith("ttft.max <= 2s lost (1 of 3")
    assert "a step scheduled 700 tokens" in (AbortRule(["max_step_tokens <= 512"]).lost(run) or "")
    assert AbortRule(["itl.p99 <= 1ms"]).lost(run) is None  # not a bound the rule can prove
    assert not AbortRule(["itl.p99 <= 1ms"]).can_abort
