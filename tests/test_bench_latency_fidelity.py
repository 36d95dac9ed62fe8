"""The offline part of the latency benchmark (``benchmarks/bench_latency_fidelity.py score`` and
``splits``) on runs made by the simulator standing in for a live server: it reads what
``measure`` writes, and its noise floors are the arithmetic they claim (no vLLM; seconds)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.bench_scripts import load_bench
from tuner.backends import CostModel, SimulatorBackend
from tuner.core import ClientHealth

TRUE = CostModel(fixed=0.004, per_prefill_token=2e-5, per_sequence=3e-4, time_unit="s")


def _bench() -> ModuleType:
    return load_bench("bench_latency_fidelity")


def _measured(bench: ModuleType, speed: float, only: str = "all") -> dict[str, Any]:
    """What ``measure`` pickles, from a simulated server ``speed`` times as slow as TRUE."""
    sim = SimulatorBackend(
        TRUE.replace(fixed=TRUE.fixed * speed, per_sequence=TRUE.per_sequence * speed)
    )
    configs = [bench.NOISE] * 3 if only == "noise" else bench.CALIBRATION + bench.HELD_OUT
    runs = []
    for budget, seqs in configs:
        i = (bench.CALIBRATION + bench.HELD_OUT).index((budget, seqs))
        config = bench.BASE.replace(max_num_batched_tokens=budget, max_num_seqs=seqs)
        role = "noise" if only == "noise" else (
            "calibration" if (budget, seqs) in bench.CALIBRATION else "held-out"
        )  # fmt: skip
        for load, rate in {"light": 2.0, "heavy": 8.0}.items():
            w = bench.workload(rate, 40, seed=100 + i)
            m = sim.evaluate(config, w).replace(client=ClientHealth(cpus="not pinned"))
            runs.append(
                {"config": config, "workload": w, "measurement": m, "role": role,
                 "load": load, "repeat": 0}
            )  # fmt: skip
    return {"model": "small", "rates": {"light": 2.0, "heavy": 8.0}, "runs": runs}


def test_score_and_splits_read_measured_runs_and_print_the_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _bench()
    paths = []
    for name, data in {
        "a": _measured(bench, 1.0),
        "b": _measured(bench, 1.1),
        "noise": _measured(bench, 1.0, only="noise"),
    }.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps(data))
        paths.append(str(path))
    bench.score(paths)
    out = capsys.readouterr().out
    assert "## small, not pinned: 12 held-out runs" in out
    assert "noise (every point x2)" in out and "calibrated (again)" in out
    assert "bar e2e.p50 <= 12%: " in out and "bar tau(ttft.p99) >= 0.8: " in out
    # the simulator predicts itself: the calibrated error on the exact runs is small
    line = next(x for x in out.splitlines() if x.startswith("bar e2e.p50"))
    assert "(meets;" in line, line
    bench.splits(paths[:1])
    out = capsys.readouterr().out
    assert out.count(" + ") == 28 and "median: e2e.p50" in out


def test_the_noise_floors_are_a_perfect_predictors_error_against_one_run() -> None:
    bench = _bench()
    a = _measured(bench, 1.0)["runs"]
    b = _measured(bench, 1.0)["runs"]
    same = bench.pair_noise(a, b)
    assert same and all(v == 0 for v in same.values())  # identical runs: no noise
    assert all(t == pytest.approx(1.0) for t in bench.pair_tau(a, b).values() if not np.isnan(t))
    b = _measured(bench, 1.5)["runs"]
    slower = bench.pair_noise(a, b)
    # per point: the mean over the two runs of |their mean - run| / run, times sqrt(2) (the
    # correction for a mean of two): a perfect predictor of the mean's error against one run,
    # relative to that run as the simulator's error is
    x = [bench.metric_value(r["measurement"], "e2e.p50") for r in a if r["role"] == "held-out"]
    y = [bench.metric_value(r["measurement"], "e2e.p50") for r in b if r["role"] == "held-out"]
    want = np.mean(
        [math.sqrt(2) * abs(p - q) / 2 * (1 / p + 1 / q) / 2 for p, q in zip(x, y, strict=True)]
    )
    assert slower["e2e.p50"] == pytest.approx(want) and want > 0.05
    # measured again: one run as the other's prediction, both ways
    again = bench.pair_remeasured(a, b)
    want = np.mean([(abs(p - q) / p + abs(p - q) / q) / 2 for p, q in zip(x, y, strict=True)])
    assert again["e2e.p50"] == pytest.approx(want) and again["e2e.p50"] > slower["e2e.p50"]


def test_a_skewed_metric_floor_is_relative_to_each_run_not_to_their_mean() -> None:
    bench = _bench()
    # a tail that built in one run (3 s) and not in the other (0.2 s): predicting their mean
    # (1.6 s) is 700 % off the first and 47 % off the second
    assert bench._deviation([0.2, 3.0]) == pytest.approx(math.sqrt(2) * (7.0 + 1.4 / 3) / 2)
    assert bench._deviation([1.0, 0.0]) is None  # a 0 has no relative error
    assert bench._remeasured(0.2, 3.0) == pytest.approx((14.0 + 2.8 / 3) / 2)


def test_the_verdict_says_at_the_floor_when_the_floor_cannot_tell() -> None:
    judge = _bench().judge
    assert judge(0.10, 0.12, 0.30) == "meets"
    assert judge(0.20, 0.12, 0.30) == "within the noise floor"
    assert judge(0.29, 0.12, 0.30) == "at the noise floor"
    assert judge(0.31, 0.12, 0.30) == "at the noise floor"
    assert judge(0.33, 0.12, 0.30) == "misses"


def test_a_ranking_is_judged_against_how_well_the_live_ranking_reproduces() -> None:
    judge_tau = _bench().judge_tau
    assert judge_tau(0.85, 0.5) == "meets"
    assert judge_tau(0.75, 0.73) == "within the noise floor"
    assert judge_tau(0.70, 0.73) == "at the noise floor"
    assert judge_tau(0.5, 0.73) == "misses"
    assert judge_tau(0.75, None) == "misses"  # no second measurement: nothing to compare with
    assert judge_tau(0.75, 0.9) == "misses"  # the live order reproduces: the bar stands
