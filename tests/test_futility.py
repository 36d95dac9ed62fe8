"""The adaptive stopping rule's futility: a question more runs (up to ``Repeats.max``) could not
settle is settled now; one they could settle stays open. Pure arithmetic first, then
``open_question`` on hand-built runs, then the Loop on a noisy backend."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tuner import Loop, Objective, Repeats, SearchSpace, ServingConfig, Trial, TrialStatus, Workload
from tuner.objectives import SLO, constant_replicates
from tuner.search import GridSearch
from tuner.tuning._futility import (
    abort_margin,
    outlook,
    pass_reachable,
    reversible,
    separation_reachable,
    tie_against,
    tie_reversible,
)
from tuner.tuning._open import open_question
from tuner.tuning._repeats import NoisePool, Repeater, Runs

LIMIT = SLO.parse("tpot.p90 <= 10ms")
THROUGHPUT = Objective.maximize("output_throughput", tie_break="ttft.p99")


# --- the arithmetic ------------------------------------------------------------------------------
def test_the_prediction_interval_shrinks_to_the_median_and_the_reach_is_the_max_interval() -> None:
    wide, reach = outlook([100.0], [[100.0]], 0.1, 10_000, 0.95, 5)
    narrow, _ = outlook([100.0] * 4, [[100.0]] * 4, 0.1, 10_000, 0.95, 5)
    done, reach5 = outlook([100.0] * 5, [[100.0]] * 5, 0.1, 10_000, 0.95, 5)
    assert wide[0] < narrow[0] < 100.0 < narrow[1] < wide[1]
    assert done == (100.0, 100.0)  # nothing is left to move the median
    # the reach is the run-to-run half-width of a 95 % interval after 5 runs
    assert reach == reach5 == pytest.approx((1.96 * 0.1 / math.sqrt(5),) * 2, rel=1e-3)
    # a one-sided bound: the 5 % tail each way (1.645), not the 2.5 % one (1.96)
    assert math.log(100.0 / wide[0]) == pytest.approx(1.645 * 0.1 * math.sqrt(4 / 5), rel=1e-3)


@pytest.mark.parametrize(
    ("median_range", "expected"),
    [((0.0085, 0.0125), True), ((0.0095, 0.0125), False), ((0.0091, 0.011), False)],
)
def test_a_pass_is_reachable_only_if_the_best_median_ahead_fits_under_the_limit(
    median_range: tuple[float, float], expected: bool
) -> None:
    # after max runs the interval reaches 10 % above the median: 9.1 ms * e^0.1 = 10.06 ms
    assert pass_reachable(LIMIT, median_range, (0.1, 0.1)) is expected


def test_the_median_rule_is_reversible_only_while_the_median_can_cross_the_limit() -> None:
    assert reversible(LIMIT, (0.009, 0.0105), (0.1, 0.1), "median")
    assert not reversible(LIMIT, (0.0101, 0.0125), (0.1, 0.1), "median")  # stays over
    assert not reversible(LIMIT, (0.0101, 0.0125), (0.1, 0.1), "confident")


def test_separation_needs_the_interval_after_max_runs_to_clear_the_other_one() -> None:
    other = (90.0, 110.0)
    assert separation_reachable((95.0, 105.0), (0.05, 0.05), other) == (False, False)
    assert separation_reachable((95.0, 130.0), (0.05, 0.05), other) == (True, False)
    assert separation_reachable((70.0, 105.0), (0.05, 0.05), other) == (False, True)


def trial(values: dict[str, float], intervals: dict[str, tuple[float, float]], **kw: Any) -> Trial:
    return Trial(
        number=kw.pop("number", 0),
        config=kw.pop("config", ServingConfig()),
        status=TrialStatus.COMPLETE,
        values=values,
        intervals=intervals,
        **kw,
    )


INCUMBENT = trial(
    {"output_throughput": 100.0, "ttft.p99": 10.0},
    {"output_throughput": (90.0, 111.0), "ttft.p99": (9.0, 11.0)},
    config=ServingConfig(max_num_seqs=64),
)


@pytest.mark.parametrize(
    ("ttft", "expected"),
    [((11.5, 14.0), "lose"), ((7.0, 8.5), "win"), ((9.5, 12.0), "open")],
)
def test_a_tie_is_lost_only_on_a_confidently_worse_tie_break(
    ttft: tuple[float, float], expected: str
) -> None:
    me = trial(
        {"output_throughput": 100.0, "ttft.p99": sum(ttft) / 2},
        {"output_throughput": (90.0, 111.0), "ttft.p99": ttft},
    )
    assert tie_against(me, THROUGHPUT, INCUMBENT, None) == expected


def test_without_a_tie_break_a_tie_goes_to_fewer_knobs_changed_then_to_the_incumbent() -> None:
    plain = Objective.maximize("output_throughput")
    me = trial({"output_throughput": 100.0}, {"output_throughput": (90.0, 111.0)})
    assert tie_against(me, plain, INCUMBENT, ServingConfig()) == "win"  # 0 knobs < 1
    assert tie_against(me, plain, INCUMBENT, ServingConfig(max_num_seqs=32)) == "lose"  # 1 = 1


def test_a_would_be_tie_winner_is_confirmed_while_max_runs_could_reverse_its_win() -> None:
    me = trial({"output_throughput": 100.0, "ttft.p99": 9.0}, {})
    assert tie_reversible(((7.5, 10.5), (0.1, 0.1)), me, THROUGHPUT, INCUMBENT)
    assert not tie_reversible(((7.5, 9.5), (0.1, 0.1)), me, THROUGHPUT, INCUMBENT)
    loser = trial({"output_throughput": 100.0, "ttft.p99": 10.5}, {})
    assert not tie_reversible(((8.5, 12.5), (0.1, 0.1)), loser, THROUGHPUT, INCUMBENT)


# --- open_question on hand-built runs ------------------------------------------------------------
def pool(metrics: list[str], log_sd: float = 0.1, groups: int = 200) -> NoisePool:
    """A pool that knows each metric's run-to-run noise: ``log_sd`` with many degrees of freedom."""
    p = NoisePool()
    d = log_sd * math.sqrt(2) / 2  # two runs at +-d have a log-sd of log_sd
    for _ in range(groups):
        p.add({k: (math.exp(d), math.exp(-d)) for k in metrics})
    return p


def runs_of(values: dict[str, list[float]], repeater: Repeater) -> Runs:
    """Runs with these per-run values (run-level metrics: no within-run spread)."""
    n = len(next(iter(values.values())))
    runs = Runs(measurements=[None] * n)  # type: ignore[list-item]  # only the count is read
    runs.values = [{k: v[i] for k, v in values.items()} for i in range(n)]
    runs.repeat_values = {k: tuple(v) for k, v in values.items()}
    runs.medians = {k: float(np.median(v)) for k, v in values.items()}
    runs.replicates = {k: [constant_replicates(x) for x in v] for k, v in values.items()}
    runs.intervals = {k: repeater._interval(runs, k) for k in values}
    return runs


def repeater(slos: list[SLO], rule: str = "confident", metrics: tuple[str, ...] = ()) -> Repeater:
    names = [s.metric for s in slos] + list(metrics)
    return Repeater(Repeats(max=5, rule=rule), False, lambda m: {}, slos, pool(names))


def test_an_slo_that_max_runs_cannot_show_met_stops_and_fails() -> None:
    rep = repeater([LIMIT])
    # run-to-run noise 10 %. After one run at 9.6 ms the best median ahead is 9.6 * e^-0.147
    # = 8.3 ms, and 8.3 ms * e^0.088 (the reach at 5 runs) fits under 10 ms: still open
    assert open_question(runs_of({"tpot.p90": [0.0096]}, rep), rep, [LIMIT], None, None)
    # after four the median can hardly move: 9.6 ms * e^(-0.037 + 0.088) = 10.1 ms > 10 ms
    four = runs_of({"tpot.p90": [0.0096] * 4}, rep)
    lo, hi = four.intervals["tpot.p90"]
    assert lo < 0.010 < hi  # the limit is still inside the interval...
    assert open_question(four, rep, [LIMIT], None, None) is None  # ...but it is settled


def test_an_slo_that_max_runs_could_show_met_stays_open() -> None:
    rep = repeater([LIMIT])
    two = runs_of({"tpot.p90": [0.009] * 2}, rep)  # 9.0 ms * e^(-0.090 + 0.088) fits
    assert two.intervals["tpot.p90"][1] > 0.010  # 9.0 ms * e^0.139: not met yet
    assert open_question(two, rep, [LIMIT], None, None) is not None


def test_the_median_rule_stops_once_the_median_cannot_cross_the_limit() -> None:
    rep = repeater([LIMIT], rule="median")
    near = runs_of({"tpot.p90": [0.0098] * 2}, rep)  # 9.8 ms * e^0.090 > 10 ms
    far = runs_of({"tpot.p90": [0.0089] * 2}, rep)  # 8.9 ms * e^0.090 = 9.7 ms
    assert open_question(near, rep, [LIMIT], None, None) is not None
    assert far.intervals["tpot.p90"][1] > 0.010  # the limit inside the interval
    assert open_question(far, rep, [LIMIT], None, None) is None  # the median stays under it


def test_a_tie_that_cannot_separate_and_loses_the_tie_break_stops() -> None:
    rep = repeater([], metrics=("output_throughput", "ttft.p99"))
    inc = trial(
        {"output_throughput": 100.0, "ttft.p99": 10.0},
        {"output_throughput": (92.0, 108.0), "ttft.p99": (9.0, 11.0)},
    )
    # 5 % below the incumbent (outside the 3 % tolerance), intervals overlapping whatever
    # more runs show; its TTFT is confidently worse, so it cannot be chosen over the incumbent
    slow = runs_of({"output_throughput": [95.0] * 2, "ttft.p99": [14.0] * 2}, rep)
    obj = Objective.maximize("output_throughput", tie_break="ttft.p99", tie_tolerance=0.03)
    assert open_question(slow, rep, [], obj, inc) is None
    # the same throughput with a better TTFT within noise would win the tie: confirmed
    fast = runs_of({"output_throughput": [95.0] * 2, "ttft.p99": [9.6] * 2}, rep)
    reason = open_question(fast, rep, [], obj, inc)
    assert reason is not None and "would win the tie" in reason


def test_an_overlap_that_max_runs_could_separate_stays_open() -> None:
    rep = repeater([], metrics=("output_throughput", "ttft.p99"))
    inc = trial(
        {"output_throughput": 100.0, "ttft.p99": 10.0},
        {"output_throughput": (95.0, 105.0), "ttft.p99": (9.0, 11.0)},
    )
    obj = Objective.maximize("output_throughput", tie_break="ttft.p99", tie_tolerance=0.03)
    better = runs_of({"output_throughput": [112.0], "ttft.p99": [14.0]}, rep)
    lo, hi = better.intervals["output_throughput"]
    assert lo < 105.0 < hi  # overlaps the incumbent now, and could clear it after 5 runs
    assert open_question(better, rep, [], obj, inc) is not None


@pytest.mark.parametrize("rule", ["median", "confident"])
@pytest.mark.parametrize("slo", ["ttft.p99 <= 2s", "output_throughput >= 500"])
def test_a_run_past_the_abort_margin_cannot_be_brought_back_and_one_inside_it_can(
    rule: Any, slo: str
) -> None:
    """The margin is the futility rule's own boundary: one run just past ``limit * m`` is a
    verdict ``max`` runs cannot reverse (by the arithmetic ``open_question`` uses); one just
    inside it is not, so stopping it early could throw a configuration away."""
    s = SLO.parse(slo)
    m = abort_margin(s, 0.15, 20, 0.95, 5, rule, prior=(0.0, 0))
    assert m > 1.0
    upper = s.op == "<="
    for factor, settled in ((1.001, True), (0.999, False)):
        value = s.limit * (m if upper else 1 / m) * (factor if upper else 1 / factor)
        ahead, reach = outlook([value], [[value]], 0.15, 20, 0.95, 5)
        if rule == "confident":
            assert pass_reachable(s, ahead, reach) is not settled
        else:
            assert s.satisfied_by(ahead[0] if upper else ahead[1]) is not settled


def test_the_abort_margin_grows_with_the_noise_and_its_uncertainty_and_shrinks_without_runs() -> (
    None
):
    s = SLO.parse("ttft.p99 <= 2s")
    none = (0.0, 0)
    assert abort_margin(s, 0.1, 20, 0.95, 5, "median", none) < abort_margin(
        s, 0.3, 20, 0.95, 5, "median", none
    )
    assert abort_margin(s, 0.15, 2, 0.95, 5, "median", none) > abort_margin(
        s, 0.15, 200, 0.95, 5, "median", none
    )  # a noise known from few repeats is known loosely: a wider margin
    assert abort_margin(s, 0.15, 20, 0.95, 5, "confident", none) < abort_margin(
        s, 0.15, 20, 0.95, 5, "median", none
    )  # the confident rule needs the interval under the limit, not only the median
    assert abort_margin(s, 0.15, 20, 0.95, 1, "median") == 1.0  # no repeat to wait for
    assert abort_margin(s, 0.15, 20, 0.95, 5, "single") == 1.0
    assert abort_margin(s, 0.0, 20, 0.95, 5, "median", none) == 1.0  # exact runs
    assert abort_margin(s, 0.0, 0, 0.95, 5, "median", none) == math.inf  # nothing known
    # the prior weighs as its degrees of freedom: soon outweighed by the study's own repeats
    few, many = (abort_margin(s, 0.05, df, 0.95, 5, "median") for df in (2, 200))
    alone = abort_margin(s, 0.05, 200, 0.95, 5, "median", none)
    assert few > many > alone and many == pytest.approx(alone, rel=0.02)


# --- the Loop ------------------------------------------------------------------------------------
def test_true_ties_stop_before_max_once_more_runs_cannot_separate_them() -> None:
    from tests.test_repeats import Recording  # the noisy simulator the other tests use

    # max_num_seqs beyond the requests in flight: the same configuration in effect
    space = SearchSpace({"max_num_seqs": [512, 1024, 768]}, base=ServingConfig(max_model_len=2048))
    work = Workload.poisson(rate=40, n=80, prompt_len=300, output_len=32, seed=0)
    obj = Objective.maximize("output_throughput", tie_tolerance=0.0)
    loop = Loop(Recording(seed=2), GridSearch(), obj, repeats=Repeats(min=1, max=5))
    trials = loop.explore(space, work).trials
    # without a tie-break a later tie with as many knobs changed cannot win: it stops as soon
    # as it cannot come to lie wholly above the incumbent
    assert all(t.repeats < 5 for t in trials[1:])
