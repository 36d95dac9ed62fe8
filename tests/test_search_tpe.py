"""TPESearch: Optuna's TPE over the space, SLOs as Optuna constraints, cache and resume."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.contracts import SMALL
from tuner import (
    InfeasibleError,
    Loop,
    Objective,
    Request,
    SearchError,
    SearchSpace,
    ServingConfig,
    Trial,
    TrialStatus,
    TuningResult,
    Workload,
)
from tuner.backends import SimulatorBackend
from tuner.search import Search
from tuner.search import _tpe as tpe_module
from tuner.search._random import RandomSearch
from tuner.search._tpe import UNMEASURED, WORST, TPESearch

_rng = np.random.default_rng(1)
WORKLOAD = Workload.from_arrays(
    np.sort(_rng.uniform(0, 60, 40)).round(), _rng.integers(20, 200, 40), _rng.integers(2, 30, 40)
)
#: 128 configurations; fewest steps with the largest budget, which breaks the SLO below.
SPACE = SearchSpace(
    {
        "max_num_batched_tokens": [16, 32, 48, 64, 96, 128, 192, 256],
        "max_num_seqs": [1, 2, 4, 8],
        "long_prefill_token_threshold": [0, 8, 16, 32],
    },
    base=ServingConfig(max_model_len=256),
)
OBJECTIVE = Objective.minimize("total_steps", tie_break="ttft_steps.max")
SLO = "max_step_tokens <= 64"


def run(
    search: Search,
    space: SearchSpace = SPACE,
    slos: tuple[str, ...] = (SLO,),
    workload: Workload = WORKLOAD,
) -> TuningResult:
    return Loop(SimulatorBackend(), search, OBJECTIVE, slos).run(space, workload)


def tpe(seed: int = 0, **kw: object) -> TPESearch:
    kw = {"n_trials": 24, "n_startup_trials": 8, **kw}
    return TPESearch(seed=seed, **kw)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("error")  # no deprecated or experimental Optuna feature in use
def test_tpe_is_reproducible_per_seed() -> None:
    a = [t.config for t in run(tpe(seed=3)).trials]
    b = [t.config for t in run(tpe(seed=3)).trials]
    c = [t.config for t in run(tpe(seed=4)).trials]
    assert a == b
    assert a != c


def test_tpe_never_returns_a_repeat_and_respects_n_trials() -> None:
    result = run(tpe(n_trials=30))
    configs = [t.config for t in result.trials]
    assert len(configs) == 30 == len(set(configs))
    assert all(c in SPACE for c in configs)


def test_tpe_stops_when_every_config_is_measured() -> None:
    small = SearchSpace(
        {"max_num_batched_tokens": [16, 32, 64], "max_num_seqs": [1, 2]},
        base=ServingConfig(max_model_len=256),
    )
    search = tpe(n_trials=100, n_startup_trials=2)
    result = run(search, small, slos=())
    assert sorted(t.config.model_dump_json() for t in result.trials) == sorted(
        c.model_dump_json() for c in small
    )
    assert search.ask() is None


def test_tpe_answers_repeats_from_the_cache_and_stops_after_max_repeats() -> None:
    search = tpe(n_trials=100, n_startup_trials=2, max_repeats=3)
    result = run(search)
    measured = {t.config: t for t in result.trials}
    assert len(measured) == len(result.trials) < len(SPACE)  # stopped on repeats, not exhaustion
    cached = [t for t in search.study.trials if t.user_attrs.get("tuner_cached")]
    assert len(cached) >= 3
    for ot in cached:  # Optuna is told exactly what the first measurement gave
        config = SPACE.base.replace(**ot.params)  # the real knob values, not indices
        first = measured[config]
        assert ot.value == first.values["total_steps"]
        assert ot.constraints[f"0: {SLO}"] == -first.slo_results[0].margin


def test_tpe_passes_each_slo_to_optuna_as_a_constraint() -> None:
    search = tpe(n_trials=12)
    result = run(search, slos=(SLO, "ttft_steps.max <= 200"))
    told = [t for t in search.study.trials if "tuner_fidelity" in t.user_attrs]
    assert len(told) == len(result.trials) == 12
    for trial, ot in zip(result.trials, told, strict=True):
        assert ot.value == trial.values["total_steps"]
        assert ot.constraints == {
            UNMEASURED: 0.0,
            f"0: {SLO}": -trial.slo_results[0].margin,
            "1: ttft_steps.max <= 200": -trial.slo_results[1].margin,
        }
        assert (max(ot.constraints.values()) <= 0) == trial.feasible
    assert {t.feasible for t in result.trials} == {True, False}


def test_tpe_uses_the_constraints_to_find_feasible_configs() -> None:
    random_best = statistics.median(
        run(RandomSearch(seed=s, max_trials=24)).best.values["total_steps"] for s in range(5)
    )
    tpe_runs = [run(tpe(seed=s)) for s in range(3)]
    tpe_best = statistics.median(r.best.values["total_steps"] for r in tpe_runs)
    assert tpe_best < random_best
    feasible_share = sum(1 for t in tpe_runs[0].trials if t.feasible) / 24
    space_share = sum(1 for c in SPACE if c.max_num_batched_tokens <= 64) / len(SPACE)
    assert feasible_share > space_share + 0.1  # it learned where the SLO holds


def test_tpe_without_constraints_would_waste_more_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    def feasible_trials() -> int:
        return sum(sum(t.feasible for t in run(tpe(seed=s)).trials) for s in range(3))

    with_constraints = feasible_trials()
    real = tpe_module.outcome_of

    def objective_only(*args: object) -> tpe_module._Outcome:
        out = real(*args)  # type: ignore[arg-type]
        return tpe_module._Outcome(out.value, {UNMEASURED: out.constraints[UNMEASURED]})

    monkeypatch.setattr(tpe_module, "outcome_of", objective_only)
    assert feasible_trials() < with_constraints


def test_tpe_never_proposes_a_combination_outside_the_space() -> None:
    space = SearchSpace(
        {
            "enable_chunked_prefill": [False, True],
            "max_num_batched_tokens": [16, 32, 64, 256],
            "num_kv_blocks": [None, 20],
        },
        base=ServingConfig(max_num_seqs=4, max_model_len=256),
        skip_invalid=True,
    )
    assert space.excluded
    search = tpe(n_trials=50, n_startup_trials=4)
    result = run(search, space, slos=())
    assert len(result.trials) == len(space) == len({t.config for t in result.trials})
    invalid = [t for t in search.study.trials if "tuner_invalid" in t.user_attrs]
    assert invalid, "the sampler drew some refused combination along the way"
    for ot in invalid:
        assert ot.value == WORST
        assert ot.constraints == {UNMEASURED: WORST}


def test_a_failed_trial_is_reported_to_optuna_as_worst_and_infeasible() -> None:
    space = SearchSpace({"max_model_len": [64, 128, 256]}, base=ServingConfig(max_num_seqs=4))
    long = Workload([Request(arrival=0, prompt_tokens=100, output_tokens=4)])
    search = tpe(n_trials=10, n_startup_trials=2)
    result = run(search, space, slos=(), workload=long)
    assert len(result.failed) == 1 and result.best.config.max_model_len in (128, 256)
    [failed] = [t for t in search.study.trials if "tuner_error" in t.user_attrs]
    assert "max_model_len" in failed.user_attrs["tuner_error"]
    assert failed.value == WORST and failed.constraints == {UNMEASURED: WORST}


def test_a_nan_objective_is_reported_as_worst() -> None:
    trial = run(tpe(n_trials=1), slos=()).trials[0]
    nan = trial.model_copy(update={"values": {**trial.values, "total_steps": float("nan")}})
    assert tpe_module.outcome_of(nan, OBJECTIVE).value == WORST


def test_tpe_resumes_from_sqlite_without_reproposing_measured_configs(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = SearchSpace(
        {"max_num_batched_tokens": [16, 32, 64], "max_num_seqs": [1, 2, 4]},
        base=ServingConfig(max_model_len=256),
    )

    def resume(n_trials: int) -> set[ServingConfig]:
        search = tpe(n_trials=n_trials, n_startup_trials=2, storage=storage, study_name="s")
        try:
            return {t.config for t in run(search, space, slos=(), workload=SMALL).trials}
        except InfeasibleError as e:  # no trial at all: nothing was left to measure
            return {t.config for t in e.trials}

    first = resume(5)
    second = resume(100)  # only what the first run left, then stop: all 9 are measured
    assert len(first) == 5 and len(second) == 4
    assert first | second == set(space.configs())
    assert resume(100) == set()  # a third run has nothing left to measure


def test_workers_sharing_a_storage_object_never_measure_a_config_twice() -> None:
    storage = optuna.storages.InMemoryStorage()
    space = SearchSpace(
        {"max_num_batched_tokens": [16, 32, 64], "max_num_seqs": [1, 2, 4]},
        base=ServingConfig(max_model_len=256),
    )
    workers = [tpe(seed=s, n_trials=100, storage=storage, study_name="shared") for s in (1, 2)]
    for w in workers:
        w.start(space, OBJECTIVE)
    measured: list[ServingConfig] = []
    while True:  # the workers take turns; each sees what the other finished
        progressed = False
        for w in workers:
            if (p := w.ask()) is None:
                continue
            progressed = True
            measured.append(p.config)
            values = {"total_steps": float(p.config.max_num_batched_tokens), "ttft_steps.max": 0}
            w.tell(
                Trial(
                    number=len(measured) - 1,
                    config=p.config,
                    status=TrialStatus.COMPLETE,
                    values=values,
                )
            )
        if not progressed:
            break
    assert sorted(c.model_dump_json() for c in measured) == sorted(
        c.model_dump_json() for c in space
    )


def test_a_study_refuses_another_space_or_objective(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    run(tpe(n_trials=2, storage=storage, study_name="s"), slos=())
    other = SearchSpace({**SPACE.dimensions, "max_num_seqs": [1, 2, 4, 16]}, base=SPACE.base)
    with pytest.raises(SearchError, match="created for space"):
        tpe(storage=storage, study_name="s").start(other, OBJECTIVE)
    with pytest.raises(SearchError, match="created for objective"):
        tpe(storage=storage, study_name="s").start(SPACE, Objective.minimize("total_steps"))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_tpe_keeps_optunas_log_quiet_and_restores_its_verbosity() -> None:
    records = _Records()
    optuna_logger = logging.getLogger("optuna")
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    optuna_logger.addHandler(records)
    try:
        run(tpe(n_trials=5))
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna_logger.removeHandler(records)
        optuna.logging.set_verbosity(old)
    assert records.messages == []  # e.g. "A new study created in memory ..." stays unsaid


def test_telling_a_trial_it_did_not_propose_is_a_search_error() -> None:
    result = run(tpe(n_trials=1), slos=())
    search = tpe()
    search.start(SPACE, OBJECTIVE)
    with pytest.raises(SearchError, match="not proposed"):
        search.tell(result.trials[0])


def test_tpe_infeasible_everywhere_is_reported_by_the_loop() -> None:
    with pytest.raises(InfeasibleError):
        run(tpe(n_trials=4), slos=("max_step_tokens <= 1",))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, r"TPESearch\.seed = -1"),
        ({"n_trials": 0}, r"TPESearch\.n_trials = 0: Input should be greater than or equal to 1"),
        ({"n_startup_trials": -1}, r"TPESearch\.n_startup_trials = -1: Input should be greater"),
        ({"max_repeats": 0}, r"TPESearch\.max_repeats = 0"),
        ({"storage": 3, "study_name": "s"}, r"TPESearch\.storage = 3"),
        ({"study_name": ""}, r"TPESearch\.study_name = ''"),
        ({"storage": "sqlite:///x.db"}, r"TPESearch: a study_name is required with a storage"),
        ({"n_trails": 3}, r"TPESearch: unknown key 'n_trails' \(did you mean 'n_trials'\?\)"),
        ({"seed": True}, r"TPESearch\.seed = True: must be an integer, not a bool"),
    ],
)
def test_tpe_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SearchError, match=match):
        TPESearch(**kwargs)  # type: ignore[arg-type]


def test_ask_before_start_is_a_search_error() -> None:
    with pytest.raises(SearchError, match="start"):
        TPESearch().ask()
    with pytest.raises(SearchError, match="start"):
        TPESearch().study  # noqa: B018


def test_contract_space_smoke() -> None:
    assert run(
        tpe(n_trials=3), SearchSpace({"max_num_seqs": [1, 2]}), slos=(), workload=SMALL
    ).best.ok
