"""Capacity in concurrent users (closed loop): the integer lattice, every search agrees, studies
and the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner import Loop, Objective, SearchSpace, ServingConfig, SLOError, Workload, WorkloadError
from tuner.backends import CostModel, SimulatorBackend
from tuner.cli import main
from tuner.core import ConfigError
from tuner.objectives import CapacitySettings, UserLattice
from tuner.search import GridSearch, RandomSearch, TPESearch

COST = CostModel(fixed=0.006, per_prefill_token=3e-5, per_decode_token=1.5e-4, time_unit="s")
SIM = SimulatorBackend(COST)
WORKLOAD = Workload.closed_loop(4, 240, prompt_len=512, output_len=64, think_time=0.5, seed=0)
SPACE = SearchSpace(
    {"max_num_batched_tokens": [512, 2048], "max_num_seqs": [8, 16, 64]},
    base=ServingConfig(max_model_len=2048),
)
SLOS = ["ttft.p99 <= 1s", "tpot.p90 <= 50ms"]
USERS = Objective.capacity(mode="concurrency", high=512)


def explore(search: object, objective: Objective = USERS):  # type: ignore[no-untyped-def]
    return Loop(SIM, search, objective, SLOS).explore(SPACE, WORKLOAD)  # type: ignore[arg-type]


# -- the lattice (pure) ----------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    boundary=st.integers(1, 400),
    tol=st.sampled_from([0.01, 0.02, 0.1]),
    start=st.integers(1, 64),
    first=st.one_of(st.none(), st.integers(1, 400)),
)
def test_the_user_lattice_finds_the_boundary_whatever_it_starts_from(
    boundary: int, tol: float, start: int, first: int | None
) -> None:
    lat = UserLattice(CapacitySettings(mode="concurrency", rel_tol=tol, max_probes=200), start)
    probes: list[tuple[int, bool]] = []
    if first is not None:  # the incumbent shortcut: a lattice point
        first = lat.index(first)
        probes.append((first, first <= boundary))
        if first > boundary:
            return
    while (k := lat.next_index(probes)) is not None:
        assert isinstance(k, int) and k >= 1 and all(k != j for j, _ in probes)
        probes.append((k, k <= boundary))
    top = max(k for k, ok in probes if ok)
    assert top == lat.points(1, boundary)[-1]  # the highest lattice point that holds
    above = min(k for k, ok in probes if not ok and k > top)
    assert lat.adjacent(top, above)  # and the next one was measured to fail


def test_the_user_lattice_is_every_whole_user_then_rel_tol_steps() -> None:
    lat = UserLattice(CapacitySettings(mode="concurrency"), 1)
    assert lat.points(1, 40) == list(range(1, 41))
    big = lat.points(1000, 1100)
    assert all(b / a - 1 < 0.03 for a, b in itertools.pairwise(big))
    assert len(big) < 10
    bounded = UserLattice(CapacitySettings(mode="concurrency", low=3, high=20), 8)
    assert bounded.next_index([(8, True), (16, True)]) == 20
    assert bounded.next_index([(3, False)]) is None


# -- capacity in users on the simulator -----------------------------------------------------
def test_capacity_in_users_is_a_whole_number_of_users_with_every_probe() -> None:
    r = explore(GridSearch())
    assert r.best is not None
    for t in r.trials:
        if t.feasible:
            cap = t.values["capacity"]
            assert cap == int(cap) and cap >= 1
            assert all(p.rate == int(p.rate) for p in t.load_points)
    first = r.trials[0]
    assert first.load_points[0].rate == 4  # the workload's own users


def test_grid_random_and_tpe_agree_on_the_most_users() -> None:
    grid = explore(GridSearch())
    assert grid.best is not None
    best = grid.best.values["capacity"]
    assert explore(RandomSearch(seed=3)).best.values["capacity"] == best  # type: ignore[union-attr]
    tpe = explore(TPESearch(seed=0, n_trials=len(SPACE), n_startup_trials=3))
    assert tpe.best is not None and tpe.best.values["capacity"] == best
    full = explore(GridSearch(), Objective.capacity(mode="concurrency", high=512, shortcut=False))
    assert full.best is not None and full.best.values["capacity"] == best


def test_more_slots_sustain_more_users() -> None:
    r = explore(GridSearch(), Objective.capacity(mode="concurrency", high=512, shortcut=False))
    caps = {t.config.max_num_seqs: t.values["capacity"] for t in r.trials if t.feasible}
    assert caps[8] < caps[64]


def test_an_open_loop_workload_is_spread_over_the_users() -> None:
    open_loop = Workload.poisson(4, 120, 256, 32, seed=1)
    r = Loop(SIM, GridSearch(), USERS, SLOS).explore(SearchSpace({"max_num_seqs": [16]}), open_loop)
    assert r.best is not None and r.best.load_points[0].rate == 1  # an open loop: from 1 user


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Objective.capacity(mode="concurrency", low=0.5), SLOError, "whole numbers >= 1"),
        (lambda: Objective.capacity(mode="concurrency", high=7.5), SLOError, "high = 7.5"),
        (lambda: Objective.capacity(mode="users"), SLOError, "mode"),
        (
            lambda: Loop(SIM, GridSearch(), Objective.capacity(), SLOS).explore(SPACE, WORKLOAD),
            WorkloadError,
            "closed loop.*mode='concurrency'",
        ),
    ],
)
def test_bad_concurrency_input_is_named(make: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make()  # type: ignore[operator]


# -- study files and the CLI -------------------------------------------------------------------
STUDY = """
name: users
workload:
  closed_loop: {users: 8, requests: 200, prompt_len: 256, output_len: 32, think_time: 0.5}
space:
  base: {max_model_len: 2048}
  knobs: {max_num_seqs: [8, 32]}
objective: {maximize: capacity, mode: concurrency, high: 256}
slos: ["ttft.p99 <= 500ms"]
backend:
  simulator: {step_cost: {fixed: 0.005, per_prefill_token: 3.0e-5, per_decode_token: 1.0e-4}}
output: OUT
"""


def test_a_concurrency_study_regenerates_the_users_and_reports_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "users.yaml"
    p.write_text(STUDY.replace("OUT", str(tmp_path / "out")))
    assert main(["run", str(p)]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "capacity (users)" in md and "concurrent users" in md
    assert "chosen:" in capsys.readouterr().out


def test_a_closed_loop_study_needs_mode_concurrency(tmp_path: Path) -> None:
    p = tmp_path / "users.yaml"
    p.write_text(STUDY.replace(", mode: concurrency", "").replace("OUT", str(tmp_path)))
    from tuner.studies import load_study

    with pytest.raises(ConfigError, match="mode: concurrency"):
        load_study(p)


def test_tuner_capacity_mode_concurrency_prints_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["capacity", "--mode", "concurrency", "--config", "max_num_seqs=8"]
    argv += ["--slo", "ttft.p99 <= 1s", "--requests", "100", "--prompt-len", "256"]
    argv += ["--output-len", "16", "--think-time", "1", "--high", "64"]
    argv += ["--step-cost", "fixed=0.005,per_prefill_token=3e-5", "--output", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "capacity (users)" in out and "first failing users" in out
    assert main(["capacity", "--users", "4", "--slo", "ttft.p99 <= 1s"]) == 2
