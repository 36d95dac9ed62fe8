"""Every search on an Optuna study: what optuna-dashboard reads, resuming, claims, workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from tests.counting import CountingBackend
from tuner import ConfigError, Loop, Objective, SearchSpace, ServingConfig, Workload
from tuner.backends import SimulatorBackend
from tuner.search import (
    GridSearch,
    ListSearch,
    RandomSearch,
    Search,
    SuccessiveHalving,
    TPESearch,
    open_storage,
)

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = Workload.poisson(8, 40, 64, 16, seed=0)
SPACE = SearchSpace(
    {"max_num_batched_tokens": [64, 128, 256, 512], "max_num_seqs": [2, 4, 64]},
    base=ServingConfig(max_model_len=512),
)
THROUGHPUT = Objective.maximize("output_throughput", tie_break="ttft.p99")
SLOS = ["max_step_tokens <= 256"]


def study(storage: str, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def searches() -> dict[str, Search]:
    return {
        "grid": GridSearch(),
        "random": RandomSearch(seed=1, max_trials=6),
        "tpe": TPESearch(seed=0, n_trials=6, n_startup_trials=3),
        "halving": SuccessiveHalving(n_configs=6, min_fidelity=1 / 3, eta=3, seed=0),
        "list": ListSearch([SPACE.base.replace(max_num_seqs=64, max_num_batched_tokens=96)]),
    }


@pytest.mark.parametrize("kind", list(searches()))
def test_optuna_reads_every_search_with_real_knob_values_and_the_objectives_direction(
    tmp_path: Path, kind: str
) -> None:
    storage = str(tmp_path / "optuna.journal")
    loop = Loop(
        SimulatorBackend(), searches()[kind], THROUGHPUT, SLOS, storage=storage, study_name="s"
    )
    result = loop.explore(SPACE, WORKLOAD)
    s = study(storage)
    assert s.direction == optuna.study.StudyDirection.MAXIMIZE
    assert s.user_attrs["tuner_study"]["objective"] == THROUGHPUT.text
    measured = [t for t in s.trials if "tuner_trial" in t.user_attrs]
    assert len(measured) == len(result.trials) > 0
    for t in measured:
        record = t.user_attrs["tuner_trial"]
        assert t.params == {k: record["config"][k] for k in SPACE.dimensions}  # e.g. 64, not 2
        assert t.value == record["values"]["output_throughput"]
        assert (max(v for k, v in t.constraints.items() if k != "unmeasured") <= 0) == record[
            "feasible"
        ]
    if kind == "list":
        assert measured[0].params == {"max_num_batched_tokens": 96, "max_num_seqs": 64}


def test_a_capacity_study_is_maximized_and_its_value_is_the_capacity(tmp_path: Path) -> None:
    storage = str(tmp_path / "optuna.journal")
    objective = Objective.capacity(rel_tol=0.1)
    space = SearchSpace({"max_num_seqs": [4, 64]}, base=SPACE.base)
    result = Loop(
        SimulatorBackend(), GridSearch(), objective, ["ttft.p99 <= 8"], storage=storage
    ).run(space, WORKLOAD)
    [name] = optuna.get_all_study_names(open_storage(storage))
    s = study(storage, name)
    assert s.direction == optuna.study.StudyDirection.MAXIMIZE
    assert s.best_trial.params["max_num_seqs"] == result.best.config.max_num_seqs
    assert s.best_trial.value == result.best.values["capacity"]


def test_rerunning_resumes_and_another_study_is_refused(tmp_path: Path) -> None:
    storage = str(tmp_path / "optuna.journal")
    count = CountingBackend(tmp_path / "count.txt")
    first = Loop(count, GridSearch(), THROUGHPUT, SLOS, storage=storage, max_trials=5)
    assert len(first.explore(SPACE, WORKLOAD).trials) == 5
    again = Loop(count, GridSearch(), THROUGHPUT, SLOS, storage=storage).run(SPACE, WORKLOAD)
    assert len(again.trials) == len(SPACE) == len(count.evaluations())
    [name] = optuna.get_all_study_names(open_storage(storage))
    other = Loop(count, GridSearch(), THROUGHPUT, ["max_step_tokens <= 64"], storage=storage)
    other.study_name = name
    with pytest.raises(ConfigError, match=r"another study.*slos"):
        other.run(SPACE, WORKLOAD)


KILLABLE = """
import sys
from tests.counting import CountingBackend
from tuner import Loop, Objective, SearchSpace, ServingConfig, Workload
from tuner.search import GridSearch

space = SearchSpace({"max_num_batched_tokens": list(range(16, 16 + 8 * 12, 8))},
                    base=ServingConfig(max_num_seqs=4, max_model_len=256))
loop = Loop(CountingBackend(sys.argv[2], delay=float(sys.argv[3])), GridSearch(),
            Objective.minimize("total_steps"), storage=sys.argv[1], study_name="s")
loop.run(space, Workload.poisson(4, 8, 64, 8, seed=0))
"""


def test_a_grid_on_a_journal_resumes_after_kill_9_without_duplicates(tmp_path: Path) -> None:
    script = tmp_path / "study.py"
    script.write_text(KILLABLE)
    journal, counts = str(tmp_path / "optuna.journal"), tmp_path / "count.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), journal, str(counts), "0.4"], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(done(journal)) < 4:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = done(journal)
    assert 4 <= len(finished) < 12
    subprocess.run([sys.executable, str(script), journal, str(counts), "0"], env=env, check=True)
    evaluated = [c for _, c in CountingBackend(counts).evaluations()]
    again = Counter(evaluated)
    assert all(again[c] == 1 for c in finished), "a finished configuration was measured again"
    assert len(set(evaluated)) == 12 and len(evaluated) <= 13  # the killed trial, at most, twice
    s = study(journal)
    measured = [t for t in s.trials if "tuner_trial" in t.user_attrs]
    assert sorted(t.params["max_num_batched_tokens"] for t in measured) == list(range(16, 112, 8))
    assert not [t for t in s.trials if t.state == optuna.trial.TrialState.RUNNING]


def done(journal: str) -> list[str]:
    """The configurations the study has measured (as the counting backend writes them)."""
    if not Path(journal).exists():
        return []
    try:
        s = study(journal)
    except KeyError:
        return []
    return [
        ServingConfig(**t.user_attrs["tuner_trial"]["config"]).model_dump_json()
        for t in s.trials
        if "tuner_trial" in t.user_attrs
    ]


def run_workers(tmp_path: Path, search: Search, workers: int, tag: str) -> tuple:  # type: ignore[type-arg]
    count = CountingBackend(tmp_path / f"count-{tag}.txt", delay=0.02, peers=workers)
    seen: list[int] = []
    loop = Loop(
        count,
        search,
        THROUGHPUT,
        SLOS,
        workers=workers,
        storage=str(tmp_path / f"{tag}.journal"),
        on_trial=lambda t: seen.append(t.number),
    )
    return loop.explore(SPACE, WORKLOAD), count.evaluations(), seen


def test_two_workers_split_a_grid_never_evaluate_twice_and_agree_with_a_serial_run(
    tmp_path: Path,
) -> None:
    serial = Loop(SimulatorBackend(), GridSearch(), THROUGHPUT, SLOS).run(SPACE, WORKLOAD)
    run, evaluations, seen = run_workers(tmp_path, GridSearch(), 2, "grid")
    configs = [c for _, c in evaluations]
    assert len(configs) == len(set(configs)) == len(SPACE)  # each configuration exactly once
    assert len({pid for pid, _ in evaluations}) == 2  # both worker processes measured
    assert os.getpid() not in {pid for pid, _ in evaluations}
    assert run.best is not None and run.best.config == serial.best.config
    assert [t.config for t in run.trials] == [t.config for t in serial.trials]  # grid order
    assert len(seen) == len(SPACE)  # the parent showed every trial as it landed


def test_random_and_tpe_workers_never_evaluate_twice_and_random_keeps_its_seeded_set(
    tmp_path: Path,
) -> None:
    serial = Loop(SimulatorBackend(), RandomSearch(seed=3, max_trials=7), THROUGHPUT, SLOS)
    expected = {t.config for t in serial.explore(SPACE, WORKLOAD).trials}
    run, evaluations, _ = run_workers(tmp_path, RandomSearch(seed=3, max_trials=7), 2, "random")
    assert {t.config for t in run.trials} == expected
    assert len(evaluations) == len({c for _, c in evaluations}) == 7
    tpe = TPESearch(seed=0, n_trials=5, n_startup_trials=2)
    run, evaluations, _ = run_workers(tmp_path, tpe, 2, "tpe")
    assert len(evaluations) == len({c for _, c in evaluations}) == len(run.trials) >= 5


def test_halving_is_not_split_between_workers(tmp_path: Path) -> None:
    loop = Loop(
        SimulatorBackend(),
        SuccessiveHalving(n_configs=3),
        THROUGHPUT,
        workers=2,
        storage=str(tmp_path / "j"),
    )
    with pytest.raises(ConfigError, match="cannot be split between workers"):
        loop.explore(SPACE, WORKLOAD)


def test_workers_need_a_storage_to_share() -> None:
    with pytest.raises(ConfigError, match="need a storage to share"):
        Loop(SimulatorBackend(), GridSearch(), workers=2).explore(SPACE, WORKLOAD)
    with pytest.raises(ConfigError, match="workers = 0"):
        Loop(SimulatorBackend(), GridSearch(), workers=0)


STUDY = """\
name: shared
workload:
  poisson: {rate: 8, requests: 30, prompt_len: 64, output_len: 8, seed: 0}
space:
  base: {max_model_len: 512}
  knobs:
    max_num_seqs: [2, 8, 64]
    max_num_batched_tokens: [64, 256]
objective: {maximize: output_throughput, tie_break: ttft.p99}
slos: ["max_step_tokens <= 128"]
backend:
  simulator: {step_cost: {fixed: 0.005, per_prefill_token: 1.0e-5}}
output: OUT
"""


def test_tuner_worker_joins_a_study_in_storage_and_a_second_worker_finds_it_done(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tuner.cli import main

    study_file = tmp_path / "s.yaml"
    study_file.write_text(STUDY.replace("OUT", str(tmp_path / "out")))
    journal = str(tmp_path / "shared.journal")
    assert main(["worker", str(study_file), "--storage", journal, "--workers", "2"]) == 0
    first = capsys.readouterr().out
    assert main(["worker", str(study_file), "--storage", journal]) == 0  # nothing left to do
    second = capsys.readouterr().out
    chosen = [line for line in first.splitlines() if line.startswith("chosen:")]
    assert chosen and chosen == [ln for ln in second.splitlines() if ln.startswith("chosen:")]
    s = study(journal, "shared")
    assert len([t for t in s.trials if "tuner_trial" in t.user_attrs]) == 6
    assert not (tmp_path / "out" / "trials.jsonl").exists()  # the study is the record
    assert main(["worker", str(study_file)]) == 2
    assert "give --storage" in capsys.readouterr().err
