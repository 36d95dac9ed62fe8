"""Workers on one study that meet mid-way: a plan another worker is still enqueueing (or died
enqueueing), and evaluations other hosts still measure when this worker's own share is done."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from tuner import Loop, Objective, SearchSpace, ServingConfig, Trial, Workload
from tuner.backends import SimulatorBackend
from tuner.search import GridSearch, SharedSearch, StudyStore, TPESearch

WORKLOAD = Workload.poisson(8, 40, 64, 16, seed=0)
SPACE = SearchSpace(
    {"max_num_batched_tokens": [64, 128, 256, 512], "max_num_seqs": [2, 64]},
    base=ServingConfig(max_model_len=512),
)
OBJECTIVE = Objective.maximize("output_throughput", tie_break="ttft.p99")
SLOS = ["max_step_tokens <= 256"]
ELSEWHERE = {"host": "gpu-elsewhere", "pid": 411}


@functools.cache
def serial() -> tuple[Trial, ...]:
    """Every configuration measured by one plain run: what the study's other host reports."""
    return Loop(SimulatorBackend(), GridSearch(), OBJECTIVE, SLOS).explore(SPACE, WORKLOAD).trials


def measured(config: ServingConfig) -> Trial:
    return next(t for t in serial() if t.config == config)


def in_background(seconds: float, do: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        do()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class Died(Exception):
    """The planner's host went away."""


def slow_planner(storage: Any, calls_before_death: int | None = None) -> StudyStore:
    """A store whose enqueues take 50 ms each (a busy database), dying after some of them."""
    store = StudyStore(storage, "s", OBJECTIVE)
    enqueue = store.study.enqueue_trial
    calls = [0]

    def slow(*args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls_before_death is not None and calls[0] > calls_before_death:
            raise Died  # the planner's host went away part-way
        time.sleep(0.05)
        enqueue(*args, **kwargs)

    store.study.enqueue_trial = slow  # type: ignore[method-assign]
    return store


def start_planning(store: StudyStore) -> threading.Thread:
    """Plan the grid in the background; return once the plan's mark is set."""
    search = SharedSearch(GridSearch(), store)

    def planning() -> None:
        with contextlib.suppress(Died):
            search.start(SPACE, OBJECTIVE)

    t = threading.Thread(target=planning, daemon=True)
    t.start()
    while "tuner_plan" not in store.study.user_attrs:
        time.sleep(0.01)
    return t


def drain(search: SharedSearch) -> list[ServingConfig]:
    """Ask until the search is done, answering each proposal with its measured trial."""
    asked = []
    while (p := search.ask()) is not None:
        asked.append(p.config)
        search.tell(measured(p.config))
    return asked


def grid() -> list[ServingConfig]:
    g = GridSearch()
    g.start(SPACE, OBJECTIVE)
    return [p.config for p in g.plan() or ()]


def test_a_worker_that_finds_the_plan_half_enqueued_waits_for_all_of_it() -> None:
    storage = optuna.storages.InMemoryStorage()
    planning = start_planning(slow_planner(storage))
    worker = SharedSearch(GridSearch(), StudyStore(storage, "s", OBJECTIVE))
    worker.start(SPACE, OBJECTIVE)  # the mark is there, most of the plan not yet
    assert not planning.is_alive()  # it returned only once the whole plan was enqueued
    assert drain(worker) == grid()  # all of it, in plan order, none twice


def test_a_plan_whose_planner_died_part_way_is_completed_by_the_next_worker() -> None:
    storage = optuna.storages.InMemoryStorage()
    planning = start_planning(slow_planner(storage, calls_before_death=3))
    planning.join()
    worker = SharedSearch(GridSearch(), StudyStore(storage, "s", OBJECTIVE, plan_patience=0.3))
    worker.start(SPACE, OBJECTIVE)
    assert drain(worker) == grid()
    assert len(worker.store.study.trials) == len(SPACE)  # the missing 5 enqueued, not all 8


def hold_elsewhere(other: SharedSearch, n: int) -> list[ServingConfig]:
    """Claim the plan's next ``n`` evaluations as a worker on another host would."""
    held = []
    for _ in range(n):
        p = other.ask()
        assert p is not None
        claim = other._claims[(p.config, p.fidelity)]
        other.store.storage.set_trial_user_attr(claim.trial_id, "tuner_worker", ELSEWHERE)
        held.append(p.config)
    return held


def one_held_elsewhere() -> tuple[SharedSearch, ServingConfig, SharedSearch]:
    """A grid study in which another host holds the first evaluation, and this worker."""
    storage = optuna.storages.InMemoryStorage()
    other = SharedSearch(GridSearch(), StudyStore(storage, "s", OBJECTIVE))
    other.start(SPACE, OBJECTIVE)
    [held] = hold_elsewhere(other, 1)
    worker = SharedSearch(GridSearch(), StudyStore(storage, "s", OBJECTIVE), poll=0.05)
    worker.start(SPACE, OBJECTIVE)
    return other, held, worker


def test_a_worker_whose_share_is_done_waits_for_what_another_host_measures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    other, held, worker = one_held_elsewhere()
    finished = in_background(0.6, lambda: other.tell(measured(held)))
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tuner"):
        asked = drain(worker)
    assert time.monotonic() - t0 >= 0.5  # it did not end while the other host measured
    finished.join()
    assert sorted(map(str, [*asked, held])) == sorted(map(str, grid()))
    assert len(worker.store.trials()) == len(SPACE)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "trial 0 (host gpu-elsewhere, pid 411, 0 min)" in said[0]
    assert "after 6 h" in said[0]


def test_an_evaluation_another_host_gives_back_is_measured_by_the_waiting_worker() -> None:
    other, held, worker = one_held_elsewhere()
    in_background(0.3, other.release)  # that host was stopped before it finished
    asked = drain(worker)
    assert asked[-1] == held and sorted(map(str, asked)) == sorted(map(str, grid()))


def test_a_host_reports_the_whole_study_not_the_part_finished_when_its_share_was_done(
    tmp_path: Path,
) -> None:
    """The CI failure this guards against: a host that ran out of WAITING trials while the
    others still measured reported only what had landed -- there, nothing feasible, so no
    answer at all -- instead of the study's answer."""
    journal = str(tmp_path / "study.journal")
    other = SharedSearch(GridSearch(), StudyStore(journal, "s", OBJECTIVE))
    other.start(SPACE, OBJECTIVE)
    held = hold_elsewhere(other, 6)  # every configuration whose step budget meets the SLO
    assert all(c.max_num_batched_tokens <= 256 for c in held)
    in_background(1.0, lambda: [other.tell(measured(c)) for c in held])
    host = Loop(SimulatorBackend(), GridSearch(), OBJECTIVE, SLOS, storage=journal, study_name="s")
    run = host.explore(SPACE, WORKLOAD)
    assert len(run.trials) == len(SPACE) and run.stop_reason == "search exhausted"
    plain = Loop(SimulatorBackend(), GridSearch(), OBJECTIVE, SLOS).run(SPACE, WORKLOAD)
    assert run.best is not None and run.best.config == plain.best.config


def test_a_tpe_host_whose_trials_are_done_reports_what_another_host_still_measures(
    tmp_path: Path,
) -> None:
    journal = str(tmp_path / "study.journal")
    other = SharedSearch(GridSearch(), StudyStore(journal, "s", OBJECTIVE))
    other.start(SPACE, OBJECTIVE)
    [held] = hold_elsewhere(other, 1)
    in_background(1.5, lambda: other.tell(measured(held)))
    search = TPESearch(seed=0, n_trials=3, n_startup_trials=3)
    host = Loop(SimulatorBackend(), search, OBJECTIVE, SLOS, storage=journal, study_name="s")
    t0 = time.monotonic()
    run = host.explore(SPACE, WORKLOAD)
    assert time.monotonic() - t0 >= 1.4
    assert held in [t.config for t in run.trials]
