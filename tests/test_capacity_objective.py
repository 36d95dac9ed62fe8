"""Capacity as the objective: the lattice search, its bounds, the shortcut, every search agrees."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner import ConfigError, Loop, Objective, SearchSpace, ServingConfig, SLOError, Workload
from tuner.backends import CostModel, SimulatorBackend
from tuner.cli import main
from tuner.objectives import CapacitySettings, RateLattice
from tuner.search import GridSearch, RandomSearch, SuccessiveHalving, TPESearch

COST = CostModel(fixed=0.006, per_prefill_token=3e-5, per_decode_token=1e-4, time_unit="s")
SIM = SimulatorBackend(COST)
WORKLOAD = Workload.poisson(8, 300, 512, 64, seed=0)
SPACE = SearchSpace(
    {"max_num_batched_tokens": [256, 512, 1024, 2048], "max_num_seqs": [8, 32, 128]},
    base=ServingConfig(max_model_len=2048),
)
SLOS = ["ttft.p99 <= 1s", "tpot.p99 <= 100ms"]
CAPACITY = Objective.capacity(rel_tol=0.02)


def explore(search: object, objective: Objective = CAPACITY, **kw: object):  # type: ignore[no-untyped-def]
    return Loop(SIM, search, objective, SLOS, **kw).explore(SPACE, WORKLOAD)  # type: ignore[arg-type]


# -- the lattice (pure) ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    boundary=st.integers(-60, 60),
    tol=st.sampled_from([0.01, 0.02, 0.05, 0.1]),
    first=st.one_of(st.none(), st.integers(-60, 60)),
)
def test_the_lattice_search_finds_the_boundary_whatever_it_starts_from(
    boundary: int, tol: float, first: int | None
) -> None:
    lat = RateLattice(CapacitySettings(rel_tol=tol, max_probes=200), 10.0)
    probes: list[tuple[int, bool]] = []
    if first is not None:  # the incumbent shortcut's first probe, when it holds
        probes.append((first, first <= boundary))
        if first > boundary:
            return
    while (k := lat.next_index(probes)) is not None:
        assert all(k != j for j, _ in probes)
        probes.append((k, k <= boundary))
    held = [k for k, ok in probes if ok]
    assert max(held) == boundary
    assert (boundary + 1, False) in probes  # the next lattice load was measured to fail


def test_the_lattice_respects_low_and_high() -> None:
    lat = RateLattice(CapacitySettings(low=2, high=40, rel_tol=0.1), 10.0)
    assert lat.rate(lat.k_max) <= 40 < lat.rate(lat.k_max + 1)  # type: ignore[operator]
    assert lat.rate(lat.k_min) >= 2 > lat.rate(lat.k_min - 1)  # type: ignore[operator]
    probes = [(0, True)]
    while (k := lat.next_index(probes)) is not None:
        probes.append((k, True))
    assert max(k for k, _ in probes) == lat.k_max  # holding everywhere stops at high


# -- the objective ---------------------------------------------------------------------------


def test_each_trial_records_its_capacity_and_every_load_point() -> None:
    run = explore(GridSearch(), Objective.capacity(rel_tol=0.02, shortcut=False))
    for t in run.trials:
        assert t.load_points, "every probe is kept"
        cap = t.values["capacity"]
        if math.isfinite(cap):
            assert t.feasible
            held = [p.rate for p in t.load_points if p.feasible]
            assert cap == max(held)
            failing = [p.rate for p in t.load_points if not p.feasible and p.rate > cap]
            assert failing and min(failing) == pytest.approx(cap * 1.02)
            assert t.cost == pytest.approx(sum(p.cost for p in t.load_points))
    assert run.best is not None
    assert run.best.values["capacity"] == max(
        t.values["capacity"] for t in run.trials if math.isfinite(t.values["capacity"])
    )


def test_grid_random_tpe_and_halving_agree_on_the_best_capacity() -> None:
    grid = explore(GridSearch())
    assert grid.best is not None
    best = grid.best.values["capacity"]
    assert explore(RandomSearch(seed=3)).best.values["capacity"] == best  # type: ignore[union-attr]
    tpe = explore(TPESearch(seed=0, n_trials=len(SPACE), n_startup_trials=4))
    assert tpe.best is not None and tpe.best.values["capacity"] == best
    halving = explore(SuccessiveHalving(n_configs=len(SPACE), min_fidelity=1 / 3, eta=3))
    assert halving.best is not None and halving.best.values["capacity"] == best


def test_the_incumbent_shortcut_saves_probes_without_changing_the_answer() -> None:
    full = explore(GridSearch(), Objective.capacity(shortcut=False))
    short = explore(GridSearch())
    assert short.best is not None and full.best is not None
    assert short.best.values["capacity"] == full.best.values["capacity"]
    assert short.best.config == full.best.config
    probes = lambda r: sum(len(t.load_points) for t in r.trials)  # noqa: E731
    assert probes(short) < probes(full)
    stopped = [t for t in short.trials if (t.capacity_note or "").startswith("below the incumbent")]
    assert stopped and all(len(t.load_points) == 1 and not t.feasible for t in stopped)


def test_holding_at_high_is_a_flagged_bound() -> None:
    run = explore(GridSearch(), Objective.capacity(high=2.0))
    bounded = [t for t in run.trials if t.feasible]
    assert bounded and all(t.values["capacity"] <= 2.0 for t in bounded)
    assert all((t.capacity_note or "").startswith(">= ") for t in bounded)


def test_failing_even_at_low_is_infeasible_with_the_usual_shortfall() -> None:
    loop = Loop(SIM, GridSearch(), Objective.capacity(low=50.0, high=80.0), SLOS)
    run = loop.explore(SPACE, WORKLOAD)
    assert run.best is None and run.infeasible is not None
    assert "ttft.p99 <= 1s: best reached" in str(run.infeasible)
    assert all(min(p.rate for p in t.load_points) >= 50.0 - 1e-9 for t in run.trials)


def test_a_rate_independent_slo_holds_or_fails_at_every_load() -> None:
    loop = Loop(SIM, GridSearch(), Objective.capacity(high=64), ["max_step_tokens <= 512"])
    run = loop.explore(SPACE, WORKLOAD)
    for t in run.trials:
        if t.config.max_num_batched_tokens > 512:  # every step can exceed 512: never holds
            assert not t.feasible
        else:  # a budget of 512 caps every step: holds up to high
            assert t.feasible and (t.capacity_note or "").startswith(">= ")


def test_cost_per_million_tokens_is_the_price_of_the_capacity_point() -> None:
    run = explore(GridSearch(), Objective.minimize("cost_per_million_tokens", gpu_hour_price=3.6))
    best = run.best
    assert best is not None and best.measurement is not None
    tput = best.measurement.output_throughput
    assert best.values["cost_per_million_tokens"] == pytest.approx(3.6 / 3600 / tput * 1e6)
    assert best.values["throughput_per_gpu"] == pytest.approx(tput)
    cap = explore(GridSearch()).best
    assert cap is not None and cap.config == best.config  # cheapest = most output per GPU here


def test_a_capacity_objective_is_resumed_from_its_trial_log(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    first = Loop(SIM, GridSearch(), CAPACITY, SLOS, trial_log=log).explore(SPACE, WORKLOAD)
    again = Loop(SIM, GridSearch(), CAPACITY, SLOS, trial_log=log).explore(SPACE, WORKLOAD)
    assert [t.model_dump_json() for t in again.trials] == [
        t.model_dump_json() for t in first.trials
    ]
    assert again.trials[0].load_points == first.trials[0].load_points


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Objective.capacity(low=8, high=2), SLOError, "low .* must be below high"),
        (lambda: Objective.capacity(rel_tol=0), SLOError, "rel_tol"),
        (lambda: Objective.capacity(rel_tol=1), SLOError, "rel_tol"),
        (lambda: Objective.capacity(low=-1), SLOError, "low = -1"),
        (lambda: Objective.capacity(high=math.inf), SLOError, "high = inf"),
        (lambda: Objective.capacity(low=math.nan), SLOError, "low = nan"),
        (lambda: Objective.minimize("capacity"), SLOError, "only be maximized"),
        (lambda: Objective.minimize("cost_per_million_tokens"), SLOError, "gpu_hour_price"),
        (lambda: Loop(SIM, GridSearch(), CAPACITY), ConfigError, "needs at least one SLO"),
        (lambda: Workload.poisson(1, 10, 8, 2).at_rate(0), Exception, "finite number > 0"),
        (lambda: Workload.poisson(1, 10, 8, 2).at_rate(math.nan), Exception, "finite"),
        (lambda: Workload.poisson(1, 1, 8, 2).at_rate(2.0), Exception, "no span"),
    ],
)
def test_bad_capacity_input_is_named(make: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()  # type: ignore[operator]


def test_a_capacity_metric_is_not_an_slo() -> None:
    with pytest.raises(SLOError, match="not a constraint"):
        Loop(SIM, GridSearch(), CAPACITY, ["capacity >= 5"])


STUDY = """
name: cap
workload:
  poisson: {rate: 8, requests: 200, prompt_len: 256, output_len: 32, seed: 0}
space:
  base: {max_model_len: 2048}
  knobs: {max_num_batched_tokens: [256, 1024], max_num_seqs: [8, 64]}
objective: {maximize: capacity, rel_tol: 0.05, gpu_hour_price: 2.5}
slos: ["ttft.p99 <= 500ms"]
backend:
  simulator: {step_cost: {fixed: 0.005, per_prefill_token: 3.0e-5, per_decode_token: 1.0e-4}}
output: OUT
"""


def test_a_capacity_study_reports_capacities_and_a_winner_that_is_no_tie(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "cap.yaml"
    p.write_text(STUDY.replace("OUT", str(tmp_path / "out")))
    assert main(["run", str(p)]) == 0
    out = capsys.readouterr().out
    assert "chosen:" in out and "WARNING: The objective is flat" not in out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Capacity" in md and "$ per 1M output tokens" in md
    assert "Latency against offered load" in md


def test_a_flat_throughput_objective_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "flat.yaml"
    flat = STUDY.replace(
        "objective: {maximize: capacity, rel_tol: 0.05, gpu_hour_price: 2.5}",
        "objective: {maximize: output_throughput}",
    ).replace("rate: 8", "rate: 2")
    p.write_text(flat.replace("OUT", str(tmp_path / "out")))
    assert main(["run", str(p)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: The objective is flat" in out and "Tune for capacity" in out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Warning: a flat objective" in md
