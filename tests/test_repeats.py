"""Decisions that survive noise: the Repeats policy, intervals on trials, SLO rules, the tie
band, early abort through the Loop, and the noise benchmark's quick mode."""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tuner import (
    ConfigError,
    Loop,
    Measurement,
    Objective,
    Repeats,
    Request,
    SearchSpace,
    ServingConfig,
    Trial,
    TrialStatus,
    Workload,
)
from tuner.backends import Backend, CostModel, SimulatorBackend
from tuner.objectives import AbortRule, PartialRun, decide, tied_with_best
from tuner.search import GridSearch, ListSearch
from tuner.studies import build_spec

ROOT = Path(__file__).parent.parent


@functools.cache
def bench() -> Any:
    path = ROOT / "benchmarks" / "bench_noise.py"
    spec = importlib.util.spec_from_file_location("bench_noise", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


COST = CostModel(fixed=0.006, per_prefill_token=3e-5, per_decode_token=1.5e-4, time_unit="s")
WORK = Workload.poisson(rate=40, n=80, prompt_len=300, output_len=32, seed=0)
SPACE = SearchSpace({"max_num_seqs": [8, 32, 128]}, base=ServingConfig(max_model_len=2048))


class Recording(Backend):
    """A noisy backend that records every workload and session it was given."""

    deterministic = False

    def __init__(self, sigma: float = 0.15, seed: int = 0) -> None:
        self.noisy = bench().NoisyBackend(SimulatorBackend(COST), sigma=sigma, seed=seed)
        self.workloads: list[Workload] = []
        self.sessions = 0

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        self.workloads.append(workload)
        m: Measurement = self.noisy.evaluate(config, workload)
        return m

    @contextmanager
    def session(
        self, config: ServingConfig, abort: AbortRule | None = None
    ) -> Iterator[Callable[[Workload], Measurement]]:
        self.sessions += 1
        yield lambda w: self.evaluate(config, w)


# --- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min": 3, "max": 2}, r"min \(3\) is more than max \(2\)"),
        ({"min": 0}, r"Repeats\.min = 0"),
        ({"confidence": 0.0}, r"Repeats\.confidence = 0\.0"),
        ({"confidence": 1.0}, r"Repeats\.confidence = 1\.0"),
        ({"confidence": 1.5}, r"Repeats\.confidence = 1\.5"),
        ({"rule": "mean"}, r"Repeats\.rule = 'mean'.*'confident', 'median' or 'single'"),
        ({"rule": "single", "max": 5}, r"rule 'single' measures each configuration once"),
        ({"mx": 5}, r"unknown key 'mx' \(did you mean 'max'\?\)"),
    ],
)
def test_bad_repeats_are_named_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Repeats(**changes)


def test_a_study_file_validates_repeats_against_the_same_model() -> None:
    base = {
        "name": "x",
        "workload": {"requests": [{"arrival": 0, "prompt_tokens": 8, "output_tokens": 2}]},
        "space": {"knobs": {"max_num_seqs": [4, 8]}},
        "backend": {"simulator": {}},
    }
    assert build_spec({**base, "repeats": {"max": 3, "rule": "median"}}).repeats == Repeats(
        max=3, rule="median"
    )
    with pytest.raises(ConfigError, match=r"repeats.*min \(4\) is more than max \(2\)"):
        build_spec({**base, "repeats": {"min": 4, "max": 2}})
    with pytest.raises(ConfigError, match=r"repeats\.rule"):
        build_spec({**base, "repeats": {"rule": "sometimes"}})


def test_the_loop_refuses_a_repeats_that_is_not_one() -> None:
    with pytest.raises(ConfigError, match="expected Repeats"):
        Loop(SimulatorBackend(), GridSearch(), repeats={"max": 3})  # type: ignore[arg-type]


# --- deterministic backends ----------------------------------------------------------------------
def test_a_deterministic_backend_is_never_repeated_and_its_intervals_have_zero_width() -> None:
    loop = Loop(
        SimulatorBackend(COST), GridSearch(), slos=["ttft.p99 <= 1s"], repeats=Repeats(min=3)
    )
    for t in loop.explore(SPACE, WORK).trials:
        assert t.repeats == 1
        assert all(lo == hi == t.values[k] for k, (lo, hi) in t.intervals.items())
        assert all(len(v) == 1 for v in t.repeat_values.values())


# --- repeats on a noisy backend ------------------------------------------------------------------
def test_every_repeat_replays_the_identical_workload_in_one_session() -> None:
    backend = Recording()
    loop = Loop(backend, GridSearch(), slos=["ttft.p99 <= 1s"], repeats=Repeats(min=3, max=3))
    trials = loop.explore(SPACE, WORK).trials
    assert [t.repeats for t in trials] == [3, 3, 3]
    assert backend.sessions == len(SPACE)  # one session per configuration
    assert len(backend.workloads) == 9 and all(w is WORK for w in backend.workloads)
    t = trials[0]
    runs = t.repeat_values["ttft.p99"]
    assert len(runs) == 3 and len(set(runs)) == 3  # the noise differs, the workload does not
    assert t.values["ttft.p99"] == sorted(runs)[1]  # the median
    lo, hi = t.intervals["ttft.p99"]
    assert lo < t.values["ttft.p99"] < hi


def test_adaptive_repeats_learn_the_noise_then_stop_on_clear_losers() -> None:
    backend = Recording(seed=1)
    workload = Workload.poisson(rate=40, n=150, prompt_len=640, output_len=64, seed=0)
    space = SearchSpace(
        {"max_num_seqs": [4, 64, 128, 2, 3]}, base=ServingConfig(max_model_len=2048)
    )
    loop = Loop(backend, GridSearch(), slos=["ttft.p99 <= 2s"], repeats=Repeats(min=1, max=5))
    trials = loop.explore(space, workload).trials
    assert trials[0].repeats > 1  # nothing is known of the noise at first
    # two and three running sequences miss a 2 s TTFT by far: one run each, once noise is known
    assert [t.repeats for t in trials[3:]] == [1, 1]
    assert not any(t.feasible for t in trials[3:])


def test_the_confident_rule_refuses_what_the_median_rule_accepts() -> None:
    workload = Workload.poisson(rate=40, n=150, prompt_len=640, output_len=64, seed=0)
    space = SearchSpace({"max_num_seqs": [64]}, base=ServingConfig(max_model_len=2048))
    truth = Loop(SimulatorBackend(COST), GridSearch()).explore(space, workload).trials[0]
    limit = truth.values["ttft.p99"] * 1.02  # met, but within noise
    slo = [f"ttft.p99 <= {limit:.6g}s"]
    verdicts = {}
    for rule in ("confident", "median"):
        loop = Loop(Recording(seed=3), GridSearch(), slos=slo, repeats=Repeats(max=5, rule=rule))
        verdicts[rule] = loop.explore(space, workload).trials[0]
    confident, median = verdicts["confident"], verdicts["median"]
    assert median.repeats == 5  # the limit stays inside the interval
    # the confident rule stops once max runs could no longer show the limit met (futility)
    assert 2 <= confident.repeats <= 5
    assert median.feasible == (median.values["ttft.p99"] <= limit)
    assert not confident.feasible
    assert confident.slo_results[0].value == confident.intervals["ttft.p99"][1]


def test_single_rule_measures_once_like_before() -> None:
    loop = Loop(Recording(), GridSearch(), slos=["ttft.p99 <= 1s"], repeats=Repeats(rule="single"))
    assert [t.repeats for t in loop.explore(SPACE, WORK).trials] == [1, 1, 1]


def test_a_resumed_study_keeps_repeats_values_and_intervals(tmp_path: Path) -> None:
    log = tmp_path / "trials.jsonl"
    rep = Repeats(min=2, max=2)
    first = Loop(Recording(), GridSearch(), slos=["ttft.p99 <= 1s"], trial_log=log, repeats=rep)
    before = first.explore(SPACE, WORK).trials
    backend = Recording()
    again = Loop(backend, GridSearch(), slos=["ttft.p99 <= 1s"], trial_log=log, repeats=rep)
    after = again.explore(SPACE, WORK).trials
    assert backend.workloads == []  # nothing measured again
    for a, b in zip(before, after, strict=True):
        assert (a.repeats, a.repeat_values, a.intervals) == (
            b.repeats,
            b.repeat_values,
            b.intervals,
        )


def test_capacity_probes_are_repeated_by_the_rule() -> None:
    workload = Workload.poisson(rate=10, n=60, prompt_len=300, output_len=32, seed=0)
    loop = Loop(
        Recording(seed=2),
        ListSearch([ServingConfig(max_num_seqs=16, max_model_len=2048)]),
        Objective.capacity(low=1, high=200, rel_tol=0.1),
        slos=["ttft.p99 <= 0.5s"],
        repeats=Repeats(min=1, max=4),
    )
    t = loop.explore(SearchSpace({"max_num_seqs": [16]}), workload).trials[0]
    assert t.ok and any(p.repeats > 1 for p in t.load_points)
    assert all(1 <= p.repeats <= 4 for p in t.load_points)
    assert t.repeats == max(p.repeats for p in t.load_points if p.rate == t.values["capacity"])


# --- the tie band --------------------------------------------------------------------------------
def _trial(n: int, value: float, interval: tuple[float, float], tie: float, **knobs: int) -> Trial:
    return Trial(
        number=n,
        config=ServingConfig(**knobs),
        status=TrialStatus.COMPLETE,
        values={"output_throughput": value, "ttft.p99": tie},
        intervals={"output_throughput": interval},
    )


def test_overlapping_intervals_are_ties_and_go_to_the_tie_break() -> None:
    obj = Objective.maximize("output_throughput", tie_break="ttft.p99")
    trials = [
        _trial(0, 100, (95, 105), 0.5, max_num_seqs=8),
        _trial(1, 97, (93, 101), 0.3, max_num_seqs=16),  # overlaps: a tie, and lower TTFT
        _trial(2, 80, (78, 82), 0.1, max_num_seqs=32),  # clearly worse
    ]
    assert [t.number for t in tied_with_best(trials, obj)] == [0, 1]
    d = decide(trials, obj)
    assert d.best is trials[1] and d.broken_by == "tie_break"
    assert "tie of 2 configurations" in d.describe(obj) and "ttft.p99" in d.describe(obj)


def test_ties_without_a_tie_break_go_to_the_fewest_changed_knobs_then_the_earliest() -> None:
    obj = Objective.maximize("output_throughput")
    a = _trial(0, 100, (99, 101), 0.1, max_num_seqs=8, max_num_batched_tokens=512)
    b = _trial(1, 100, (99, 101), 0.1, max_num_seqs=8)
    c = _trial(2, 100, (99, 101), 0.1, max_num_seqs=16)
    d = decide([a, b, c], obj)
    assert d.best is b and d.broken_by == "earliest"  # b and c each change one knob
    d = decide([a, c], obj)
    assert d.best is c and d.broken_by == "knobs"
    assert decide([a], obj).broken_by is None


# --- early abort through the Loop ----------------------------------------------------------------
class Aborting(SimulatorBackend):
    """Watches each run at half its arrival span and stops it once the rule says it is lost."""

    supports_abort = True

    @contextmanager
    def session(
        self, config: ServingConfig, abort: AbortRule | None = None
    ) -> Iterator[Callable[[Workload], Measurement]]:
        def measure(w: Workload) -> Measurement:
            m = self.evaluate(config, w)
            if abort is None:
                return m
            now = float(w.arrival.max()) / 2
            first = m.arrival + m.ttft
            seen = first <= now
            partial = PartialRun(
                now=now,
                arrival=w.arrival,
                output_tokens=w.output_tokens,
                first_token=np.where(seen, first, np.nan),
            )
            reason = abort.lost(partial)
            if reason is None:
                return m
            return m.model_copy(update={"aborted": reason, "duration": now})

        yield measure


def test_an_aborted_run_is_recorded_infeasible_with_its_reason_and_the_time_saved() -> None:
    requests = [Request(arrival=i * 0.05, prompt_tokens=400, output_tokens=4) for i in range(60)]
    workload = Workload(requests)
    loop = Loop(Aborting(COST), GridSearch(), slos=["ttft.max <= 50ms"])
    space = SearchSpace(  # 64 tokens a step: seven steps per prompt
        {"max_num_batched_tokens": [64, 2048]}, base=ServingConfig(max_num_seqs=8)
    )
    trials = loop.explore(space, workload).trials
    lost, kept = trials
    assert lost.abort_reason is not None and lost.abort_reason.startswith("ttft.max <= 50ms lost")
    assert not lost.feasible and lost.repeats == 1
    assert lost.abort_saved is not None and lost.abort_saved > 0
    assert "aborted" in lost.verdict()
    assert lost.slo_results[0].ok is False and math.isnan(lost.slo_results[0].value)
    assert kept.abort_reason is None


class NoisyAborting(Aborting):
    """:class:`Aborting` on a noisy backend: each run's TTFTs scaled by the next of ``factors``
    (as a live server's runs move), the abort rule watching the scaled run."""

    deterministic = False

    def __init__(self, factors: list[float]) -> None:
        super().__init__(COST)
        self.factors, self.runs = factors, 0

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        m = super().evaluate(config, workload)
        f = self.factors[min(self.runs, len(self.factors) - 1)]
        self.runs += 1
        return m.model_copy(update={"ttft": m.ttft * f})


def test_a_run_over_its_limit_by_less_than_the_noise_is_measured_in_full_and_repeated() -> None:
    """Early abort must not throw away a configuration the repeat policy would keep: a run
    over the limit by less than the run-to-run noise could explain runs in full, and the other
    runs decide; a run far past it is still stopped, and stays stopped."""
    requests = [Request(arrival=i * 0.05, prompt_tokens=400, output_tokens=4) for i in range(60)]
    work = Workload(requests)
    space = SearchSpace({"max_num_batched_tokens": [2048]}, base=ServingConfig(max_num_seqs=8))
    (config,) = list(space)
    limit = float(SimulatorBackend(COST).evaluate(config, work).ttft.max())
    slos = [f"ttft.max <= {limit * 1000:.6g}ms"]

    def run(factors: list[float], repeats: Repeats) -> Trial:
        (trial,) = (
            Loop(NoisyAborting(factors), GridSearch(), slos=slos, repeats=repeats)
            .explore(space, work)
            .trials
        )
        return trial

    once = run([1.3], Repeats(max=1))  # without repeats an abort is final, as it always was
    assert once.abort_reason is not None and "noise margin" not in once.abort_reason
    median = Repeats(min=1, max=3, rule="median")
    kept = run([1.3, 0.8, 0.8], median)  # 30 % over: inside the 1.6x the prior noise allows
    assert kept.abort_reason is None and kept.repeats == 3 and kept.feasible
    assert kept.repeat_values["ttft.max"][0] == pytest.approx(1.3 * limit)
    far = run([3.0, 0.8, 0.8], median)  # 3x over: no two runs could bring the median back
    assert far.abort_reason is not None and far.repeats == 1 and not far.feasible
    assert "noise margin x1.6" in far.abort_reason


def test_the_abort_rule_is_offered_only_to_a_backend_that_takes_it() -> None:
    backend = Recording()
    loop = Loop(backend, GridSearch(), slos=["ttft.p99 <= 1s"], repeats=Repeats(max=1))
    assert loop.abort_rule is not None and not backend.supports_abort
    loop.explore(SPACE, WORK)  # Recording.session would not mind; the Loop does not pass it


# --- the benchmark -------------------------------------------------------------------------------
def test_the_noise_benchmark_quick_mode_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench().main(["--quick", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "adaptive" in out and "right" in out and "runs" in out


def test_tuner_live_takes_the_repeats_flags() -> None:
    from tuner.cli import build_parser
    from tuner.cli._live import spec_from_args

    args = build_parser().parse_args(
        ["live", "--model", "m", "--repeats-max", "3", "--repeats-rule", "median"]
    )
    assert spec_from_args(args, "m").repeats == Repeats(max=3, rule="median")
    default = build_parser().parse_args(["live", "--model", "m"])
    assert spec_from_args(default, "m").repeats == Repeats()


def test_the_report_shows_intervals_runs_and_the_measured_noise(tmp_path: Path) -> None:
    from tuner.objectives import parse_slos
    from tuner.report._content import blocks
    from tuner.report._document import to_markdown
    from tuner.studies import StudyOutcome

    slos = parse_slos(["ttft.p99 <= 1s"])
    objective = Objective.maximize("output_throughput", tie_break="ttft.p99")
    loop = Loop(Recording(), GridSearch(), objective, slos, repeats=Repeats(min=2, max=3))
    result = loop.explore(SPACE, WORK)
    spec = build_spec(
        {
            "name": "noisy",
            "workload": {"requests": [{"arrival": 0, "prompt_tokens": 8, "output_tokens": 2}]},
            "space": {"knobs": {"max_num_seqs": [8, 32, 128]}},
            "backend": {"simulator": {}},
            "repeats": {"min": 2, "max": 3},
        }
    )
    outcome = StudyOutcome(spec, tmp_path, WORK, SPACE, objective, slos, "noisy", result=result)
    outcome.trials = result.trials
    md = to_markdown(blocks(outcome), tmp_path)
    assert "| runs |" in md and "## Measured noise" in md
    assert "value (judged: confident)" in md and "median [95% interval]" in md
    assert " [" in md.split("## Trials")[1]  # values with their intervals
