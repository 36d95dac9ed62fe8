"""Faults around the trial log: torn writes, two runs on one log, files that are not logs.

Every test asserts the exact error class and that the message names the file (and line).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tuner import (
    ConfigError,
    InfeasibleError,
    Loop,
    Measurement,
    Objective,
    Request,
    SearchSpace,
    ServingConfig,
    Trial,
    Workload,
)
from tuner.backends import SimulatorBackend
from tuner.core._trial import TrialStatus
from tuner.search import GridSearch
from tuner.tuning import TrialLog

OBJECTIVE = Objective.minimize("total_steps")
WORKLOAD = Workload([Request(arrival=0, prompt_tokens=64, output_tokens=8)])
SPACE = SearchSpace(
    {"max_num_batched_tokens": [16, 24, 32, 40, 48, 56]}, base=ServingConfig(max_num_seqs=4)
)


class Counting(SimulatorBackend):
    def __init__(self) -> None:
        super().__init__()
        self.evaluated: list[ServingConfig] = []

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        self.evaluated.append(config)
        return super().evaluate(config, workload)


def run(log: Path, backend: SimulatorBackend | None = None, **kw: object) -> list[Trial]:
    loop = Loop(backend or SimulatorBackend(), GridSearch(), OBJECTIVE, trial_log=log, **kw)  # type: ignore[arg-type]
    return list(loop.run(SPACE, WORKLOAD).trials)


def records(log: Path) -> list[dict[str, object]]:
    """Every line after the header, each of which must be a complete JSON record."""
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the log must end with a newline"
    return [json.loads(line) for line in lines[1:-1]]


def at(path: Path, line: int | None = None) -> str:
    return re.escape(str(path) + (f":{line}" if line is not None else ""))


# --- probe 1: a half-written last line --------------------------------------------------------


def test_a_half_written_last_line_is_cut_before_the_next_record_is_appended(
    tmp_path: Path,
) -> None:
    log = tmp_path / "trials.jsonl"
    run(log, max_trials=2)
    torn = b'{"number": 2, "config": {"max_num'
    with log.open("ab") as f:
        f.write(torn)  # killed mid-write
    backend = Counting()
    with pytest.warns(
        UserWarning,
        match=rf"{at(log, 4)}: ignoring a truncated last line .*"
        r"kept in .*trials\.jsonl\.corrupt-tail",
    ):
        trials = run(log, backend)
    assert len(backend.evaluated) == len(SPACE) - 2 and len(trials) == len(SPACE)
    rows = records(log)  # every line is whole: nothing was glued onto the torn bytes
    assert sorted(r["number"] for r in rows) == list(range(len(SPACE)))  # type: ignore[type-var]
    assert (tmp_path / "trials.jsonl.corrupt-tail").read_bytes() == torn + b"\n"
    again = Counting()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the repaired log reads cleanly
        assert len(run(log, again)) == len(SPACE)
    assert again.evaluated == []


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    run(log, max_trials=3)
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    backend = Counting()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(log, backend)
    assert len(backend.evaluated) == len(SPACE) - 3  # the third record was not lost
    assert len(records(log)) == len(SPACE)
    assert not (tmp_path / "trials.jsonl.corrupt-tail").exists()


def test_a_torn_header_alone_is_cut_and_the_study_starts_over(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    run(log, max_trials=1)
    header = log.read_bytes().split(b"\n")[0]
    log.write_bytes(header[:25])
    with pytest.warns(UserWarning, match=rf"{at(log, 1)}: ignoring a truncated last line"):
        assert len(run(log)) == len(SPACE)
    assert len(records(log)) == len(SPACE)


def test_an_unreadable_line_before_the_last_is_refused_with_its_line(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    run(log, max_trials=3)
    lines = log.read_bytes().split(b"\n")
    lines[2] = lines[2][:30]
    log.write_bytes(b"\n".join(lines))
    before = log.read_bytes()
    with pytest.raises(
        ConfigError, match=(rf"^{at(log, 3)}: unreadable trial record: not valid JSON")
    ):
        run(log)
    assert log.read_bytes() == before  # nothing is cut from the middle of a log


# --- probe 2: two runs on one log ----------------------------------------------------------------


def test_a_second_trial_log_on_the_same_file_is_refused_at_once(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    first, second = TrialLog(log, {"format": "tuner-trial-log/1"}), TrialLog(log, {})
    first.load()
    t0 = time.monotonic()
    with pytest.raises(
        ConfigError,
        match=(
            rf"^{at(log)}: trial log is in use by another run \(pid {os.getpid()} on "
            rf"{re.escape(socket.gethostname())}, since .*\)"
        ),
    ):
        second.load()
    assert time.monotonic() - t0 < 5  # refused, not waiting
    first.close()
    assert second.load() == [] and second.locked
    second.close()
    first.close()  # twice is harmless


def test_the_trial_log_is_a_context_manager_that_releases_its_lock(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    study = {"format": "tuner-trial-log/1"}
    with TrialLog(log, study) as held:
        assert held.locked
        with pytest.raises(ConfigError, match=rf"^{at(log)}: trial log is in use"):
            TrialLog(log, study).open()
        held.append(Trial(number=0, config=ServingConfig(), status=TrialStatus.FAILED, error="x"))
    assert not held.locked
    with TrialLog(log, study) as again:
        assert [t.number for t in again.load()] == [0]


class Boom(SimulatorBackend):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        raise self.exc


def test_the_lock_is_released_on_every_exit_path_of_the_loop(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    with pytest.raises(TypeError) as crashed:  # a bug in a backend stops the run
        run(log, Boom(TypeError("bug")))
    assert crashed.value  # the traceback (and so the Loop's frame) is still alive here
    interrupted = Loop(Boom(KeyboardInterrupt()), GridSearch(), OBJECTIVE, trial_log=log)
    assert interrupted.explore(SPACE, WORKLOAD).stop_reason == "interrupted"
    with pytest.raises(InfeasibleError):
        Loop(
            SimulatorBackend(),
            GridSearch(),
            OBJECTIVE,
            ["max_step_tokens <= 1"],
            trial_log=tmp_path / "other.jsonl",
        ).run(SPACE, WORKLOAD)
    with pytest.raises(ConfigError, match="another study"):
        Loop(
            SimulatorBackend(),
            GridSearch(),
            OBJECTIVE,
            ["max_step_tokens <= 2"],
            trial_log=tmp_path / "other.jsonl",
        ).run(SPACE, WORKLOAD)
    for path in (log, tmp_path / "other.jsonl"):  # nothing is still held
        TrialLog(path, {}).open().close()
    assert len(run(log)) == len(SPACE)


GATED_STUDY = """
import pathlib, sys, time
from tuner import ConfigError, Loop, Objective, Request, SearchSpace, ServingConfig, Workload
from tuner.backends import SimulatorBackend
from tuner.search import GridSearch

log, evaluated, gate = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])

class Gated(SimulatorBackend):
    def evaluate(self, config, workload):
        with evaluated.open("a") as f:
            f.write(f"{config.max_num_batched_tokens}\\n")
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return super().evaluate(config, workload)

w = Workload([Request(arrival=0, prompt_tokens=64, output_tokens=8)])
space = SearchSpace({"max_num_batched_tokens": [16, 24, 32, 40, 48, 56]},
                    base=ServingConfig(max_num_seqs=4))
try:
    Loop(Gated(), GridSearch(), Objective.minimize("total_steps"), trial_log=log).run(space, w)
except ConfigError as e:
    print(f"REFUSED: {e}", file=sys.stderr)
    sys.exit(3)
"""


def test_two_processes_on_one_log_one_runs_the_other_is_refused_then_a_rerun_resumes(
    tmp_path: Path,
) -> None:
    script = tmp_path / "study.py"
    script.write_text(GATED_STUDY)
    log, evaluated, gate = tmp_path / "trials.jsonl", tmp_path / "evaluated.txt", tmp_path / "go"
    argv = [sys.executable, str(script), str(log), str(evaluated), str(gate)]
    # Started together; the one that takes the lock waits at its first trial until the gate
    # opens, and the gate opens only once the other has ended: the runs overlap for sure.
    procs = [subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    gate.touch()
    outs = [p.communicate(timeout=120)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    runner = next(p for p in procs if p.returncode == 0)
    refusal = next(o for o, p in zip(outs, procs, strict=True) if p.returncode == 3)
    host = re.escape(socket.gethostname())
    pattern = rf"REFUSED: {at(log)}: trial log is in use by another run \(pid {runner.pid} on "
    pattern += host
    assert re.search(pattern, refusal), refusal
    assert len(evaluated.read_text().split()) == len(SPACE)  # every config evaluated once
    lines = log.read_text().splitlines()
    assert sum('"format"' in line for line in lines) == 1  # one header
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert len(evaluated.read_text().split()) == len(SPACE)  # the rerun evaluated nothing
    rows = records(log)
    assert sorted(r["number"] for r in rows) == list(range(len(SPACE)))  # type: ignore[type-var]
    assert len({json.dumps(r["config"], sort_keys=True) for r in rows}) == len(SPACE)


def test_a_killed_run_leaves_no_lock_behind(tmp_path: Path) -> None:
    script = tmp_path / "study.py"
    script.write_text(GATED_STUDY)
    log, evaluated, gate = tmp_path / "trials.jsonl", tmp_path / "evaluated.txt", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, str(script), str(log), str(evaluated), str(gate)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not evaluated.exists():
        time.sleep(0.05)
    with pytest.raises(ConfigError, match=rf"in use by another run \(pid {proc.pid} "):
        TrialLog(log, {}).open()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    TrialLog(log, {}).open().close()  # the OS dropped the lock with the process
    assert len(run(log)) == len(SPACE)


# --- probe 3: files that are not trial logs ------------------------------------------------------


def test_random_bytes_are_refused_naming_the_file_and_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    log.write_bytes(random.Random(0).randbytes(4096))
    before = log.read_bytes()
    with pytest.raises(ConfigError, match=rf"^{at(log, 1)}: not a tuner trial log"):
        run(log)
    assert log.read_bytes() == before


def test_a_text_file_that_is_not_a_log_is_refused_and_left_alone(tmp_path: Path) -> None:
    log = tmp_path / "notes.txt"
    log.write_text("remember the milk")  # one line, no newline: must not pass for a torn header
    with pytest.raises(ConfigError, match=rf"^{at(log, 1)}: not a tuner trial log \(line 1 is not"):
        run(log)
    assert log.read_text() == "remember the milk"


def test_a_directory_as_trial_log_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=(rf"^{at(tmp_path)}: is a directory, not a trial log file")
    ):
        run(tmp_path)


def test_a_non_utf8_header_is_refused_naming_the_file(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    log.write_bytes(b"\xff\xfe{}\n")
    with pytest.raises(
        ConfigError, match=(rf"^{at(log, 1)}: not a tuner trial log \(not UTF-8 text\)")
    ):
        run(log)


def test_a_non_utf8_record_is_refused_naming_its_line(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    run(log, max_trials=3)
    lines = log.read_bytes().split(b"\n")
    lines[2] = b'{"number": "caf\xe9"}'
    log.write_bytes(b"\n".join(lines))
    with pytest.raises(
        ConfigError, match=(rf"^{at(log, 3)}: unreadable trial record: not UTF-8 text")
    ):
        run(log)


def test_a_deeply_nested_record_is_refused_naming_its_line(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    run(log, max_trials=3)
    lines = log.read_bytes().split(b"\n")
    lines[2] = b"[" * 100_000 + b"]" * 100_000
    log.write_bytes(b"\n".join(lines))
    with pytest.raises(ConfigError, match=rf"^{at(log, 3)}: unreadable trial record: JSON nested"):
        run(log)


# -- two TPE workers on one storage ------------------------------------------------------------

WORKER = """
import sys, time
from tuner import Loop, Objective, SearchSpace, Workload
from tuner.backends import SimulatorBackend
from tuner.search import TPESearch

class Slow(SimulatorBackend):
    def evaluate(self, config, workload):
        time.sleep(0.03)  # long enough for the workers' trials to overlap
        return super().evaluate(config, workload)

storage, worker, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
space = SearchSpace({"max_num_batched_tokens": [32, 64, 128, 256, 512],
                     "max_num_seqs": [1, 2, 4, 8, 16, 32, 64, 128]}, skip_invalid=True)
search = TPESearch(seed=0, n_trials=20, n_startup_trials=5, storage=storage, study_name="s",
                   worker=worker)
run = Loop(Slow(), search, Objective.minimize("total_steps")).explore(
    space, Workload.poisson(1, 30, 64, 8, seed=0))
open(out, "w").write("\\n".join(t.config.model_dump_json() for t in run.trials))
"""


@pytest.mark.parametrize("workers", [(0, 0), (0, 1)])
def test_two_tpe_workers_on_one_storage_never_measure_a_configuration_twice(
    tmp_path: Path, workers: tuple[int, int]
) -> None:
    import optuna

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.storages.RDBStorage(url)  # create the schema once (two creators race in SQLite)
    procs = [
        subprocess.Popen([sys.executable, str(script), url, str(w), str(tmp_path / f"w{i}.txt")])
        for i, w in enumerate(workers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    measured = [
        line for i in range(2) for line in (tmp_path / f"w{i}.txt").read_text().splitlines()
    ]
    assert len(measured) == len(set(measured)), "a configuration was measured twice"
    assert len(measured) >= 30  # both workers worked (37 valid configurations, 20 trials each)


def test_a_configuration_another_worker_is_running_is_not_proposed(tmp_path: Path) -> None:
    from tuner import SearchSpace
    from tuner.search import TPESearch

    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = SearchSpace({"max_num_seqs": [1, 2]})
    a = TPESearch(seed=0, n_trials=2, storage=url, study_name="s")
    b = TPESearch(seed=0, n_trials=2, storage=url, study_name="s")
    a.start(space)
    b.start(space)
    first = a.ask()  # a's trial is RUNNING in the shared study
    second = b.ask()  # the same seed samples the same first config: b must take the other
    assert first is not None and second is not None
    assert first.config != second.config
