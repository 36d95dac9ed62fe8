"""SuccessiveHalving and its rung arithmetic."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_search_tpe import OBJECTIVE, SPACE, WORKLOAD
from tuner import (
    InfeasibleError,
    Loop,
    SearchError,
    SearchSpace,
    ServingConfig,
    Trial,
    TrialStatus,
    TuningResult,
)
from tuner.backends import SimulatorBackend
from tuner.core._trial import SLOResult
from tuner.objectives import rank, rank_key, relative_shortfall
from tuner.search import GridSearch
from tuner.search._base import Proposal
from tuner.search._halving import SuccessiveHalving
from tuner.search._rungs import n_promoted, n_rungs, rung_cost, rung_fidelities, rung_sizes
from tuner.search._tpe import TPESearch

# -- rung arithmetic ------------------------------------------------------------------------

min_fidelities = st.floats(1e-4, 1.0, allow_nan=False, exclude_min=False)
etas = st.integers(2, 10)


@given(min_fidelity=min_fidelities, eta=etas)
def test_rung_fidelities_grow_by_eta_from_min_fidelity_to_exactly_one(
    min_fidelity: float, eta: int
) -> None:
    fids = rung_fidelities(min_fidelity, eta)
    assert len(fids) == n_rungs(min_fidelity, eta) >= 1
    assert fids[-1] == 1.0
    assert fids[0] >= min_fidelity * (1 - 1e-9)
    assert fids[0] / eta < min_fidelity  # no room for one more rung below
    for lo, hi in itertools.pairwise(fids):
        assert lo < hi
        assert math.isclose(hi / lo, eta)


@given(n=st.integers(0, 10_000), eta=etas, min_promote=st.integers(1, 20))
def test_n_promoted_is_a_1_over_eta_share_with_a_floor(n: int, eta: int, min_promote: int) -> None:
    k = n_promoted(n, eta, min_promote)
    assert 0 <= k <= n
    assert k == n or k >= min_promote
    assert k >= n // eta
    if n // eta >= min_promote:
        assert k == n // eta


@given(n_configs=st.integers(1, 5_000), min_fidelity=min_fidelities, eta=etas)
def test_rung_sizes_shrink_and_cost_far_less_than_full_fidelity(
    n_configs: int, min_fidelity: float, eta: int
) -> None:
    fids = rung_fidelities(min_fidelity, eta)
    sizes = rung_sizes(n_configs, len(fids), eta)
    assert sizes[0] == n_configs and all(s >= 1 for s in sizes)
    assert all(a >= b for a, b in itertools.pairwise(sizes))
    if n_configs >= eta ** (len(fids) - 1):
        # every rung costs at most n_configs / eta**(R-1) full-workload evaluations
        bound = len(fids) * n_configs / eta ** (len(fids) - 1)
        assert rung_cost(sizes, fids) <= bound * (1 + 1e-9)


def test_rung_examples() -> None:
    assert rung_fidelities(1 / 9, 3) == (1 / 9, 1 / 3, 1.0)
    assert rung_fidelities(1.0, 3) == (1.0,)
    assert rung_sizes(27, 3, 3) == (27, 9, 3)
    assert rung_cost((27, 9, 3), (1 / 9, 1 / 3, 1.0)) == pytest.approx(9.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: n_rungs(0.0, 3), r"min_fidelity = 0\.0: must be a number in \(0, 1\]"),
        (lambda: n_rungs(1.5, 3), r"min_fidelity = 1\.5"),
        (lambda: n_rungs(0.5, 1), r"eta = 1: must be an integer >= 2"),
        (lambda: n_rungs(0.5, 2.0), r"eta = 2\.0"),  # type: ignore[arg-type]
        (lambda: n_promoted(-1, 3), r"n = -1"),
        (lambda: n_promoted(5, 3, 0), r"min_promote = 0"),
        (lambda: rung_sizes(5, 0, 3), r"rungs = 0"),
        (lambda: rung_cost((1, 2), (1.0,)), r"2 sizes but 1 fidelities"),
    ],
)
def test_rung_arithmetic_rejects_bad_input(call: Callable[[], object], match: str) -> None:
    with pytest.raises(SearchError, match=match):
        call()


# -- ranking --------------------------------------------------------------------------------

BASE = ServingConfig(max_num_batched_tokens=64, max_num_seqs=1, max_model_len=256)


def trial(
    number: int,
    steps: float,
    margin: float | None = None,
    *,
    ok: bool = True,
    seqs: int = 1,
    fidelity: float = 1.0,
    limit: float = 100.0,
) -> Trial:
    config = BASE.replace(max_num_seqs=seqs)
    if not ok:
        return Trial(
            number=number, config=config, fidelity=fidelity, status=TrialStatus.FAILED, error="boom"
        )
    results: tuple[SLOResult, ...] = ()
    if margin is not None:
        results = (
            SLOResult(
                slo=f"ttft_steps.max <= {limit:g}",
                value=limit - margin,
                limit=limit,
                ok=margin >= 0,
                margin=margin,
            ),
        )
    return Trial(
        number=number,
        config=config,
        fidelity=fidelity,
        status=TrialStatus.COMPLETE,
        values={"total_steps": steps, "ttft_steps.max": 0.0},
        slo_results=results,
    )


def test_promotion_ranks_feasible_first_then_by_violation_failed_last() -> None:
    trials = [
        trial(0, 10, margin=-50),  # best score, far from feasible
        trial(1, 90, margin=-1),  # near miss
        trial(2, 50, margin=5),  # feasible, worse score
        trial(3, 40, margin=0),  # feasible, better score
        trial(4, 0, ok=False),
        trial(5, float("nan"), margin=1),  # feasible but the objective is unknown
    ]
    ranked = [t.number for t in rank(trials, OBJECTIVE)]
    assert ranked == [3, 2, 5, 1, 0, 4]


def test_promote_margin_demands_slack_below_full_fidelity() -> None:
    barely, comfy = trial(0, 10, margin=2), trial(1, 20, margin=30)
    assert [t.number for t in rank([barely, comfy], OBJECTIVE)] == [0, 1]
    ranked = rank([barely, comfy], OBJECTIVE, required_margin=0.1)
    assert [t.number for t in ranked] == [1, 0]
    group, shortfall, *_ = rank_key(barely, OBJECTIVE, 0.1)
    assert group == 1 and shortfall == pytest.approx(0.08)


def test_slo_shortfall_is_relative_to_each_limit() -> None:
    a = SLOResult(slo="a <= 10", value=12, limit=10, ok=False, margin=-2)
    b = SLOResult(slo="b <= 1000", value=1200, limit=1000, ok=False, margin=-200)
    assert relative_shortfall([a, b]) == pytest.approx(0.4)
    nan = SLOResult(slo="c <= 1", value=float("nan"), limit=1, ok=False, margin=-math.inf)
    assert relative_shortfall([nan]) == math.inf


# -- the search, scripted -------------------------------------------------------------------

NINE = SearchSpace({"max_num_seqs": list(range(1, 10))}, base=BASE)


def drive(search: SuccessiveHalving, judge: Callable[[int, Proposal], Trial]) -> list[Trial]:
    """Play the Loop with a scripted judge instead of a backend."""
    search.start(NINE, OBJECTIVE)
    trials: list[Trial] = []
    while (p := search.ask()) is not None:
        t = judge(len(trials), p)
        trials.append(t)
        search.tell(t)
    return trials


def easy_at_low_fidelity(number: int, p: Proposal) -> Trial:
    """More seqs = fewer steps; at full fidelity only max_num_seqs <= 5 meets the SLO."""
    seqs = p.config.max_num_seqs
    margin = 10.0 if p.fidelity < 1 or seqs <= 5 else -10.0
    return trial(number, 100 - seqs, margin, seqs=seqs, fidelity=p.fidelity)


def test_backfill_confirms_more_candidates_when_the_last_rung_is_all_infeasible() -> None:
    sh = SuccessiveHalving(GridSearch(), n_configs=9, min_fidelity=1 / 3, eta=3)
    trials = drive(sh, easy_at_low_fidelity)
    assert [len(r) for r in sh.rung_trials] == [9, 6]
    assert [c.max_num_seqs for c in sh.promotions[0]] == [9, 8, 7, 6, 5, 4]
    full = [t for t in trials if t.fidelity == 1.0]
    assert [t.feasible for t in full] == [False, False, False, False, True, True]


def test_without_backfill_an_infeasible_last_rung_ends_the_search() -> None:
    sh = SuccessiveHalving(GridSearch(), n_configs=9, min_fidelity=1 / 3, eta=3, backfill=False)
    trials = drive(sh, easy_at_low_fidelity)
    assert len(trials) == 12
    assert not any(t.feasible for t in trials if t.fidelity == 1.0)


def test_min_promote_keeps_more_candidates_alive() -> None:
    sh = SuccessiveHalving(GridSearch(), n_configs=9, min_fidelity=1 / 3, eta=3, min_promote=5)
    drive(sh, easy_at_low_fidelity)
    assert [c.max_num_seqs for c in sh.promotions[0]] == [9, 8, 7, 6, 5]


def test_tell_must_match_an_open_proposal_and_ask_waits_for_it() -> None:
    sh = SuccessiveHalving(GridSearch(), n_configs=3, min_fidelity=1 / 3, eta=3)
    sh.start(NINE, OBJECTIVE)
    p = sh.ask()
    assert p is not None and p.fidelity == pytest.approx(1 / 3)
    with pytest.raises(SearchError, match="not an open proposal"):
        sh.tell(trial(0, 1, seqs=p.config.max_num_seqs, fidelity=1.0))
    sh._drawn = sh.n_configs  # pretend the first rung is drawn: the next ask must wait
    with pytest.raises(SearchError, match="not told yet"):
        sh.ask()


# -- the search, through the Loop -----------------------------------------------------------


def run(sh: SuccessiveHalving, slo: str = "ttft_steps.max <= 30") -> TuningResult:
    return Loop(SimulatorBackend(), sh, OBJECTIVE, [slo]).run(SPACE, WORKLOAD)


def test_rungs_grow_in_fidelity_and_the_answer_is_full_fidelity() -> None:
    sh = SuccessiveHalving(n_configs=27, min_fidelity=1 / 9, eta=3, seed=0)
    result = run(sh)
    fidelities = [t.fidelity for t in result.trials]
    assert fidelities == sorted(fidelities)
    assert sorted(set(fidelities)) == list(sh.fidelities) == [1 / 9, 1 / 3, 1.0]
    assert [len(r) for r in sh.rung_trials] == [27, 9, 3]
    assert result.best.fidelity == 1.0 and result.best.feasible
    assert result.best in sh.rung_trials[-1]


def test_promotions_are_feasible_first() -> None:
    sh = SuccessiveHalving(n_configs=27, min_fidelity=1 / 9, eta=3, seed=2)
    run(sh)
    for rung, promoted in zip(sh.rung_trials, sh.promotions, strict=False):
        kept = [t for t in rung if t.config in promoted]
        left = [t for t in rung if t.config not in promoted]
        assert any(not t.feasible for t in rung), "the scenario should mix feasibility"
        worst_kept = max(rank_key(t, OBJECTIVE) for t in kept)
        assert all(worst_kept < rank_key(t, OBJECTIVE) for t in left)
        if any(not t.feasible for t in kept):
            assert not any(t.feasible for t in left)


def test_halving_costs_far_less_than_every_candidate_at_full_fidelity() -> None:
    sh = SuccessiveHalving(n_configs=27, min_fidelity=1 / 9, eta=3, seed=1)
    result = run(sh)
    cost = sum(t.fidelity for t in result.trials)
    assert cost == pytest.approx(9.0)
    assert cost <= 27 / 2


def test_a_low_fidelity_illusion_is_refused_not_returned() -> None:
    # ttft_steps.max <= 22 holds on heads of the workload but nowhere on all of it.
    sh = SuccessiveHalving(n_configs=27, min_fidelity=1 / 9, eta=3, seed=0)
    with pytest.raises(InfeasibleError):
        run(sh, "ttft_steps.max <= 22")
    assert any(t.feasible for t in sh.rung_trials[0])
    assert len(sh.rung_trials[-1]) > 3  # it backfilled before giving up


def test_an_inner_tpe_is_told_each_first_rung_trial() -> None:
    inner = TPESearch(seed=0, n_trials=9, n_startup_trials=4)
    sh = SuccessiveHalving(inner, n_configs=9, min_fidelity=1 / 9, eta=3)
    result = run(sh, "ttft_steps.max <= 200")
    assert result.best.fidelity == 1.0
    told = [t for t in inner.study.trials if "tuner_fidelity" in t.user_attrs]
    assert len(told) == 9
    assert {t.user_attrs["tuner_fidelity"] for t in told} == {1 / 9}


def test_an_exhausted_inner_search_ends_the_first_rung_early() -> None:
    sh = SuccessiveHalving(GridSearch(), n_configs=50, min_fidelity=1 / 3, eta=3)
    trials = drive(sh, easy_at_low_fidelity)
    assert [len(r) for r in sh.rung_trials] == [9, 6]  # 3 promoted, then 3 backfilled
    assert len(trials) == 15


@settings(max_examples=15, deadline=None)
@given(n_configs=st.integers(1, 12), eta=st.integers(2, 4), seed=st.integers(0, 100))
def test_every_rung_proposes_configs_of_the_space_once(n_configs: int, eta: int, seed: int) -> None:
    sh = SuccessiveHalving(n_configs=n_configs, min_fidelity=1 / eta**2, eta=eta, seed=seed)
    drive(sh, easy_at_low_fidelity)
    for rung in sh.rung_trials:
        configs = [t.config for t in rung]
        assert len(configs) == len(set(configs)) and all(c in NINE for c in configs)
    assert len(sh.rung_trials[0]) == min(n_configs, len(NINE))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"inner": "random"}, r"SuccessiveHalving\.inner = 'random': must be a Search or None"),
        ({"n_configs": 0}, r"SuccessiveHalving\.n_configs = 0"),
        ({"min_fidelity": 0}, r"SuccessiveHalving\.min_fidelity = 0: Input should be greater"),
        ({"eta": 1}, r"SuccessiveHalving\.eta = 1: Input should be greater than or equal to 2"),
        ({"seed": -3}, r"SuccessiveHalving\.seed = -3"),
        ({"min_promote": 0}, r"SuccessiveHalving\.min_promote = 0"),
        ({"promote_margin": -0.1}, r"SuccessiveHalving\.promote_margin = -0\.1"),
        ({"promote_margin": math.inf}, r"SuccessiveHalving\.promote_margin = inf"),
        ({"backfill": 1}, r"SuccessiveHalving\.backfill = 1"),
    ],
)
def test_halving_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SearchError, match=match):
        SuccessiveHalving(**kwargs)  # type: ignore[arg-type]


def test_more_brackets_draw_fresh_candidates_until_the_budget_stops_the_run() -> None:
    from tuner import Loop, Objective, Request, SearchSpace, ServingConfig, Workload
    from tuner.backends import SimulatorBackend
    from tuner.search._halving import SuccessiveHalving

    space = SearchSpace(
        {"max_num_batched_tokens": [32, 64, 96, 128, 192, 256], "max_num_seqs": [1, 2, 4, 8]},
        base=ServingConfig(max_model_len=512),
    )
    w = Workload([Request(arrival=i, prompt_tokens=100, output_tokens=10) for i in range(9)])
    obj = Objective.minimize("total_steps")
    one = Loop(SimulatorBackend(), SuccessiveHalving(n_configs=4, min_fidelity=1 / 3), obj).run(
        space, w
    )
    sh = SuccessiveHalving(n_configs=4, min_fidelity=1 / 3, brackets=None)
    many = Loop(SimulatorBackend(), sh, obj, max_trials=30).run(space, w)
    first_rungs = {t.config for t in many.trials if t.fidelity < 1}
    assert len(one.trials) < len(many.trials) == 30  # one bracket ends early; many use budget
    assert many.stop_reason == "max_trials (30) reached" and sh.bracket >= 3
    assert len(first_rungs) > 4  # each bracket drew fresh candidates
    with pytest.raises(SearchError, match="brackets = 0"):
        SuccessiveHalving(brackets=0)
