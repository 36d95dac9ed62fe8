"""The Loop: SLOs are hard constraints, every trial is recorded, failures do not stop it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuner import (
    BackendError,
    ConfigError,
    InfeasibleError,
    Loop,
    Measurement,
    Objective,
    Request,
    SearchSpace,
    ServingConfig,
    SLOError,
    Workload,
)
from tuner.backends import Backend, SimulatorBackend
from tuner.search import GridSearch

SEED = Workload(
    [
        Request(arrival=0, prompt_tokens=8, output_tokens=24),
        Request(arrival=2, prompt_tokens=64, output_tokens=2),
        Request(arrival=2, prompt_tokens=64, output_tokens=2),
    ]
)
SPACE = SearchSpace(
    {"max_num_batched_tokens": [40, 64, 512], "long_prefill_token_threshold": [0, 32]},
    base=ServingConfig(max_num_seqs=8),
)
SEED_OBJECTIVE = Objective.minimize("total_steps", tie_break="ttft_steps.max")


class FlakyBackend(Backend):
    """The simulator, except that some budgets fail (a refused config, a crash)."""

    deterministic = True  # the simulator's measurements (repeating one tells nothing)

    def __init__(self, fail: dict[int, Exception]) -> None:
        self.sim = SimulatorBackend()
        self.fail = fail
        self.closed = 0

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        if config.max_num_batched_tokens in self.fail:
            raise self.fail[config.max_num_batched_tokens]
        return self.sim.evaluate(config, workload)

    def close(self) -> None:
        self.closed += 1


def test_grid_search_respects_the_slo() -> None:
    unconstrained = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE).run(SPACE, SEED)
    assert unconstrained.best.values["max_step_tokens"] > 64  # the fastest config spikes
    result = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"]).run(
        SPACE, SEED
    )
    assert result.best.values["max_step_tokens"] <= 64
    assert result.best.config.max_num_batched_tokens == 64  # ties broken by lower worst TTFT
    assert len(result.trials) == len(SPACE)  # every trial recorded, feasible or not
    assert {t.feasible for t in result.trials} == {True, False}


def test_ties_break_toward_lower_worst_ttft() -> None:
    result = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE).run(SPACE, SEED)
    best_steps = result.best.values["total_steps"]
    tied = [t for t in result.trials if t.values["total_steps"] == best_steps]
    assert len(tied) > 1
    assert result.best.values["ttft_steps.max"] == min(t.values["ttft_steps.max"] for t in tied)


def test_unsatisfiable_slo_is_loud() -> None:
    loop = Loop(
        SimulatorBackend(),
        GridSearch(),
        SEED_OBJECTIVE,
        ["max_step_tokens <= 16", "ttft_steps.max <= 5"],
    )
    with pytest.raises(InfeasibleError) as e:
        loop.run(SPACE, SEED)
    err = e.value
    spike, ttft = err.shortfalls
    assert spike.best_value == 40 and spike.limit == 16 and spike.satisfied_by == 0
    assert spike.closest_config.max_num_batched_tokens == 40
    assert ttft.satisfied_by == len(SPACE)
    assert len(err.trials) == len(SPACE)
    assert "max_step_tokens <= 16: best reached 40 (limit 16" in str(err)
    assert "refusing to return a violating config" in str(err)


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on() -> None:
    backend = FlakyBackend({40: BackendError("server refused"), 512: RuntimeError("segfault")})
    result = Loop(backend, GridSearch(), SEED_OBJECTIVE, catch=(RuntimeError,)).run(SPACE, SEED)
    assert len(result.trials) == len(SPACE)
    failed = result.failed
    assert len(failed) == 4
    assert {t.error for t in failed} == {"BackendError: server refused", "RuntimeError: segfault"}
    assert result.best.config.max_num_batched_tokens == 64
    assert backend.closed == 1  # the Loop closes its backend


def test_a_bug_in_a_custom_backend_stops_the_run_after_saving_the_finished_trials(
    tmp_path: Path,
) -> None:
    log = tmp_path / "trials.jsonl"
    backend = FlakyBackend({512: TypeError("unsupported operand")})
    loop = Loop(backend, GridSearch(), SEED_OBJECTIVE, trial_log=log)
    with pytest.raises(TypeError, match="unsupported operand"):
        loop.run(SPACE, SEED)
    lines = log.read_text().splitlines()
    assert len(lines) == 1 + 4  # header + the four trials before the first 512-token config
    assert backend.closed == 1  # closed on the way out


def test_only_backend_errors_and_listed_types_fail_a_trial() -> None:
    backend = FlakyBackend({512: RuntimeError("segfault")})
    with pytest.raises(RuntimeError):
        Loop(backend, GridSearch(), SEED_OBJECTIVE).run(SPACE, SEED)
    result = Loop(
        FlakyBackend({512: RuntimeError("x")}), GridSearch(), SEED_OBJECTIVE, catch=[RuntimeError]
    ).run(SPACE, SEED)
    assert len(result.failed) == 2
    with pytest.raises(ConfigError, match=r"Loop\.catch"):
        Loop(SimulatorBackend(), GridSearch(), catch=["RuntimeError"])  # type: ignore[list-item]


class ReturnsBackend(Backend):
    """A backend that returns whatever it is given (a broken user backend)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        return self.value  # type: ignore[return-value]


def test_a_backend_returning_no_measurement_fails_the_trial_with_the_reason() -> None:
    run = Loop(ReturnsBackend(None), GridSearch(), SEED_OBJECTIVE).explore(SPACE, SEED)
    assert run.best is None and len(run.trials) == len(SPACE)
    assert all("returned NoneType, not a Measurement" in (t.error or "") for t in run.trials)


def test_a_measurement_of_zero_duration_never_wins_with_infinite_throughput() -> None:
    m = SimulatorBackend().evaluate(ServingConfig(max_num_seqs=8), SEED)
    zero = m.model_copy(update={"duration": 0.0})
    run = Loop(ReturnsBackend(zero), GridSearch()).explore(SPACE, SEED)
    assert run.best is None
    assert all("duration = 0.0" in (t.error or "") for t in run.trials)


def test_explore_gives_every_trial_without_catching_and_run_raises_the_same_refusal() -> None:
    slos = ["max_step_tokens <= 16"]
    run = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, slos).explore(SPACE, SEED)
    assert run.best is None and len(run.trials) == len(SPACE)
    assert run.infeasible is not None and run.stop_reason == "search exhausted"
    with pytest.raises(InfeasibleError) as e:
        run.result()
    assert str(e.value) == str(run.infeasible)


def test_all_trials_failing_is_infeasible_not_a_silent_answer() -> None:
    backend = FlakyBackend({b: BackendError("down") for b in (40, 64, 512)})
    with pytest.raises(InfeasibleError, match="0 measured successfully"):
        Loop(backend, GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"]).run(SPACE, SEED)
    assert backend.closed == 1


def test_every_trial_is_written_as_it_finishes(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    seen_lines = []

    def count_lines(_: object) -> None:
        seen_lines.append(len(log.read_text().splitlines()))

    loop = Loop(
        SimulatorBackend(),
        GridSearch(),
        SEED_OBJECTIVE,
        ["max_step_tokens <= 64"],
        trial_log=log,
        on_trial=count_lines,
    )
    loop.run(SPACE, SEED)
    # A header line naming the study, then one line per trial, written before the next starts.
    assert seen_lines == list(range(2, len(SPACE) + 2))
    header, *rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert header["format"] == "tuner-trial-log/1" and header["slos"] == ["max_step_tokens <= 64"]
    assert [r["number"] for r in rows] == list(range(len(SPACE)))
    assert rows[0]["config"]["max_num_batched_tokens"] == 40
    assert {r["feasible"] for r in rows} == {True, False}
    assert all("measurement" not in r for r in rows)


def test_max_trials_stops_the_run_and_says_why() -> None:
    result = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, max_trials=2).run(SPACE, SEED)
    assert len(result.trials) == 2
    assert result.stop_reason == "max_trials (2) reached"


def test_a_time_slo_on_the_step_clock_stops_the_run_with_a_clear_error() -> None:
    backend = FlakyBackend({})
    with pytest.raises(SLOError, match="unit step clock"):
        Loop(backend, GridSearch(), SEED_OBJECTIVE, ["ttft.p99 <= 200ms"]).run(SPACE, SEED)
    assert backend.closed == 1


@settings(max_examples=40, deadline=None)
@given(
    spike=st.integers(30, 140),
    ttft=st.integers(0, 4),
    objective=st.sampled_from(
        [SEED_OBJECTIVE, Objective.maximize("output_throughput"), Objective.minimize("ttft.p99")]
    ),
)
def test_the_loop_never_returns_an_infeasible_trial(
    spike: int, ttft: int, objective: Objective
) -> None:
    slos = [f"max_step_tokens <= {spike}", f"ttft_steps.max <= {ttft}"]
    try:
        result = Loop(SimulatorBackend(), GridSearch(), objective, slos).run(SPACE, SEED)
    except InfeasibleError as e:
        assert all(not t.feasible for t in e.trials)
        return
    best = result.best
    assert best.values["max_step_tokens"] <= spike and best.values["ttft_steps.max"] <= ttft
    feasible_scores = [objective.score(t.values) for t in result.feasible]
    assert objective.score(best.values) == min(feasible_scores)


class CountingBackend(SimulatorBackend):
    def __init__(self) -> None:
        super().__init__()
        self.evaluated: list[ServingConfig] = []

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        self.evaluated.append(config)
        return super().evaluate(config, workload)


def test_a_rerun_continues_from_the_trial_log_without_re_evaluating(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    first = CountingBackend()
    Loop(
        first, GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"], max_trials=4, trial_log=log
    ).run(SPACE, SEED)
    second = CountingBackend()
    result = Loop(
        second, GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"], trial_log=log
    ).run(SPACE, SEED)
    assert len(first.evaluated) == 4
    assert len(second.evaluated) == len(SPACE) - 4
    assert not set(first.evaluated) & set(second.evaluated)
    assert len(result.trials) == len(SPACE)
    assert sorted(t.number for t in result.trials) == list(range(len(SPACE)))
    fresh = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"]).run(
        SPACE, SEED
    )
    assert result.best.config == fresh.best.config
    third = CountingBackend()  # everything measured: nothing runs, the answer is the same
    again = Loop(third, GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"], trial_log=log).run(
        SPACE, SEED
    )
    assert third.evaluated == [] and again.best.config == fresh.best.config


def test_a_trial_log_of_another_study_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    Loop(
        SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, ["max_step_tokens <= 64"], trial_log=log
    ).run(SPACE, SEED)
    with pytest.raises(ConfigError, match=r"another study.*slos"):
        Loop(
            SimulatorBackend(),
            GridSearch(),
            SEED_OBJECTIVE,
            ["max_step_tokens <= 40"],
            trial_log=log,
        ).run(SPACE, SEED)
    with pytest.raises(ConfigError, match=r"another study.*workload"):
        Loop(
            SimulatorBackend(),
            GridSearch(),
            SEED_OBJECTIVE,
            ["max_step_tokens <= 64"],
            trial_log=log,
        ).run(SPACE, SEED.head(0.5))


def test_a_truncated_last_line_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, max_trials=2, trial_log=log).run(
        SPACE, SEED
    )
    with log.open("a") as f:
        f.write('{"number": 2, "config": {"max_num')  # killed mid-write
    backend = CountingBackend()
    with pytest.warns(UserWarning, match="truncated last line"):
        result = Loop(backend, GridSearch(), SEED_OBJECTIVE, trial_log=log).run(SPACE, SEED)
    assert len(backend.evaluated) == len(SPACE) - 2 and len(result.trials) == len(SPACE)


KILLABLE_STUDY = """
import sys, time
from tuner import Loop, Objective, Request, SearchSpace, ServingConfig, Workload
from tuner.backends import SimulatorBackend
from tuner.search import GridSearch

class Slow(SimulatorBackend):
    def evaluate(self, config, workload):
        with open(sys.argv[2], "a") as f:
            f.write(f"{config.max_num_batched_tokens}\\n")
        time.sleep(float(sys.argv[3]))
        return super().evaluate(config, workload)

w = Workload([Request(arrival=0, prompt_tokens=64, output_tokens=8)])
space = SearchSpace({"max_num_batched_tokens": list(range(16, 16 + 8 * 12, 8))},
                    base=ServingConfig(max_num_seqs=4))
Loop(Slow(), GridSearch(), Objective.minimize("total_steps"), trial_log=sys.argv[1]).run(space, w)
"""


def test_killing_a_study_midway_loses_nothing_and_the_rerun_skips_finished_configs(
    tmp_path: Path,
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "study.py"
    script.write_text(KILLABLE_STUDY)
    log, evaluated = tmp_path / "trials.jsonl", tmp_path / "evaluated.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(log), str(evaluated), "0.3"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 1 + 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = [json.loads(line) for line in log.read_text().splitlines()[1:] if line.endswith("}")]
    finished = {r["config"]["max_num_batched_tokens"] for r in logged}
    assert 4 <= len(finished) < 12
    before = evaluated.read_text().split()
    subprocess.run([sys.executable, str(script), str(log), str(evaluated), "0"], check=True)
    rerun = evaluated.read_text().split()[len(before) :]
    assert not finished & {int(b) for b in rerun}  # finished configs are not evaluated again
    rows = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert sorted(r["config"]["max_num_batched_tokens"] for r in rows) == list(range(16, 112, 8))


def test_max_cost_stops_the_run_and_says_why() -> None:
    result = Loop(SimulatorBackend(), GridSearch(), SEED_OBJECTIVE, max_cost=50).run(SPACE, SEED)
    assert result.stop_reason.startswith("max_cost (50) reached")
    assert len(result.trials) == 3  # 24 steps per trial: the third crosses 50
    assert all(t.cost == t.values["total_steps"] for t in result.trials)


def test_timeout_stops_starting_trials() -> None:
    class Slow(SimulatorBackend):
        def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
            import time

            time.sleep(0.05)
            return super().evaluate(config, workload)

    result = Loop(Slow(), GridSearch(), SEED_OBJECTIVE, timeout=0.01).run(SPACE, SEED)
    assert len(result.trials) == 1 and result.stop_reason == "timeout (0.01s) reached"


@pytest.mark.parametrize("kw", [{"max_cost": 0}, {"timeout": -1}, {"max_trials": 0}])
def test_bad_budgets_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kw))):
        Loop(SimulatorBackend(), GridSearch(), **kw)  # type: ignore[arg-type]


def test_ctrl_c_stops_cleanly_and_keeps_what_finished(tmp_path: Path) -> None:
    class Interrupted(FlakyBackend):
        def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
            if len(calls) == 3:
                raise KeyboardInterrupt
            calls.append(config)
            return super().evaluate(config, workload)

    calls: list[ServingConfig] = []
    backend = Interrupted({})
    log = tmp_path / "trials.jsonl"
    result = Loop(backend, GridSearch(), SEED_OBJECTIVE, trial_log=log).run(SPACE, SEED)
    assert result.stop_reason == "interrupted"
    assert len(result.trials) == 3 and backend.closed == 1
    assert len(log.read_text().splitlines()) == 1 + 3  # every finished trial was kept


class HangingBackend(Backend):
    """Hangs on one budget until cancelled (a server that never answers)."""

    def __init__(self, hang_on: int, stoppable: bool = True) -> None:
        import threading

        self.sim = SimulatorBackend()
        self.hang_on = hang_on
        self.stoppable = stoppable
        self.stop = threading.Event()
        self.cancels = 0

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        hangs = config.max_num_batched_tokens == self.hang_on
        if hangs and self.stop.wait(timeout=30 if self.stoppable else 3):
            self.stop.clear()  # the next hanging trial hangs again
            raise BackendError("stopped")
        return self.sim.evaluate(config, workload)

    def cancel(self) -> None:
        self.cancels += 1
        if self.stoppable:
            self.stop.set()


def test_a_hung_trial_is_stopped_at_trial_timeout_and_the_search_goes_on() -> None:
    import time

    backend = HangingBackend(hang_on=64)
    t0 = time.monotonic()
    result = Loop(backend, GridSearch(), SEED_OBJECTIVE, trial_timeout=0.5).run(SPACE, SEED)
    assert time.monotonic() - t0 < 10
    hung = [t for t in result.trials if t.config.max_num_batched_tokens == 64]
    assert len(hung) == 2 and all(not t.ok for t in hung)
    assert all("ran past trial_timeout (0.5s)" in (t.error or "") for t in hung)
    assert backend.cancels == 2
    assert len(result.trials) == len(SPACE)  # the others ran


def test_a_backend_that_cannot_stop_a_hung_trial_ends_the_run_with_the_trials_kept(
    tmp_path: Path,
) -> None:
    from tuner import TrialTimeout

    log = tmp_path / "trials.jsonl"
    backend = HangingBackend(hang_on=64, stoppable=False)
    loop = Loop(
        backend, GridSearch(), SEED_OBJECTIVE, trial_log=log, trial_timeout=0.3, cancel_grace=0.3
    )
    with pytest.raises(TrialTimeout, match=r"did not stop it within 0\.3s"):
        loop.run(SPACE, SEED)
    assert len(log.read_text().splitlines()) == 1 + 2  # header + the two trials before it
