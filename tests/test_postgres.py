"""Three workers (as on three hosts) on one study in a real PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.counting import CountingBackend
from tests.postgres import postgres_server
from tuner import Loop, Objective, SearchSpace, ServingConfig, Workload
from tuner.backends import SimulatorBackend
from tuner.search import GridSearch

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[1]

HOST = """
import sys
from tests.counting import CountingBackend
from tests.test_postgres import OBJECTIVE, SLOS, SPACE, WORKLOAD
from tuner import Loop
from tuner.search import GridSearch

run = Loop(CountingBackend(sys.argv[2], delay=0.05, peers=3), GridSearch(), OBJECTIVE, SLOS,
           storage=sys.argv[1], study_name="pg").explore(SPACE, WORKLOAD)
print(run.best.config.model_dump_json())
"""
SPACE = SearchSpace(
    {"max_num_batched_tokens": [64, 128, 256, 512], "max_num_seqs": [2, 8, 64]},
    base=ServingConfig(max_model_len=512),
)
WORKLOAD = Workload.poisson(8, 40, 64, 16, seed=0)
OBJECTIVE = Objective.maximize("output_throughput", tie_break="ttft.p99")
SLOS = ["max_step_tokens <= 256"]


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def test_three_workers_on_postgresql_lose_nothing_repeat_nothing_and_agree_with_a_serial_grid(
    tmp_path: Path, postgres_url: str
) -> None:
    script = tmp_path / "host.py"
    script.write_text(HOST)
    counts = tmp_path / "count.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    hosts = [  # started together: they race to create the schema, the study and the plan
        subprocess.Popen(
            [sys.executable, str(script), postgres_url, str(counts)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    answers = {h.communicate(timeout=300)[0].strip() for h in hosts}
    assert [h.returncode for h in hosts] == [0, 0, 0]
    evaluated = [c for _, c in CountingBackend(counts).evaluations()]
    assert len(evaluated) == len(set(evaluated)) == len(SPACE)  # none lost, none twice
    assert len({pid for pid, _ in CountingBackend(counts).evaluations()}) >= 2
    serial = Loop(SimulatorBackend(), GridSearch(), OBJECTIVE, SLOS).run(SPACE, WORKLOAD)
    assert answers == {serial.best.config.model_dump_json()}  # every host reports one answer
    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        study = optuna.load_study(study_name="pg", storage=storage)
        measured = [t for t in study.trials if "tuner_trial" in t.user_attrs]
        assert len(measured) == len(SPACE)
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE
        assert {t.params["max_num_seqs"] for t in measured} == {2, 8, 64}
    finally:  # close its connections now, not when a later test happens to collect them
        storage.remove_session()
        storage.engine.dispose()
