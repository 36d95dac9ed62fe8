"""Capacity: bisection over the offered rate, the load sweep, the plot, the command."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tuner import ConfigError, InfeasibleError, ServingConfig, Workload
from tuner.backends import CostModel, SimulatorBackend
from tuner.cli import main
from tuner.report import plot_load_curves
from tuner.studies import find_capacity, load_sweep

SIM = SimulatorBackend(
    CostModel(fixed=0.01, per_prefill_token=1e-4, per_decode_token=1e-4, time_unit="s")
)
CFG = ServingConfig(max_num_batched_tokens=512, max_num_seqs=16)
SLOS = ["ttft.p99 <= 500ms"]


def at(rate: float) -> Workload:
    return Workload.poisson(rate, 300, 256, 32, seed=0)


def test_capacity_is_feasible_and_the_next_rate_is_not() -> None:
    cap = find_capacity(SIM, CFG, at, SLOS, low=1, high=64, rel_tol=0.01)
    assert cap.lowest_infeasible is not None and not cap.bounded
    assert cap.rate < cap.lowest_infeasible <= cap.rate * 1.01 + 1e-9
    by_rate = {p.rate: p for p in cap.points}
    assert by_rate[cap.rate].feasible and not by_rate[cap.lowest_infeasible].feasible
    # Every rate measured below capacity was feasible, every one above it was not (monotone).
    assert all(p.feasible == (p.rate <= cap.rate) for p in cap.points)
    assert cap.binding == "ttft.p99 <= 500ms"
    assert cap.points[1].rate == pytest.approx(2 * cap.points[0].rate, rel=0.01)  # doubled up


def test_a_configuration_that_holds_up_to_high_is_a_flagged_bound_never_extrapolated() -> None:
    cap = find_capacity(SIM, CFG, at, SLOS, low=1, high=4)
    assert cap.bounded and cap.rate <= 4
    assert cap.note is not None and cap.note.startswith(">= ")
    assert "not extrapolated" in cap.note


def test_capacity_is_reproducible_with_fixed_seeds() -> None:
    a = find_capacity(SIM, CFG, at, SLOS, low=1, high=64)
    b = find_capacity(SIM, CFG, at, SLOS, low=1, high=64)
    assert a.rate == b.rate and [p.rate for p in a.points] == [p.rate for p in b.points]


def test_more_slots_never_lower_capacity_here() -> None:
    small = find_capacity(SIM, CFG.replace(max_num_seqs=2), at, SLOS, low=0.5, high=64)
    big = find_capacity(SIM, CFG, at, SLOS, low=0.5, high=64)
    assert big.rate > small.rate


def test_an_slo_missed_even_at_the_lowest_rate_is_infeasible() -> None:
    with pytest.raises(InfeasibleError, match=r"ttft\.p99 <= 1ms"):
        find_capacity(SIM, CFG, at, ["ttft.p99 <= 1ms"], low=1, high=8)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"low": 0, "high": 8}, "0 < low < high"),
        ({"low": 8, "high": 1}, "0 < low < high"),
        ({"low": 1, "high": 8, "rel_tol": 0}, "rel_tol"),
    ],
)
def test_bad_capacity_arguments(kw: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        find_capacity(SIM, CFG, at, SLOS, **kw)
    with pytest.raises(ConfigError, match="at least one SLO"):
        find_capacity(SIM, CFG, at, [], low=1, high=2)


def test_load_sweep_latency_grows_with_load_into_a_hockey_stick(tmp_path: Path) -> None:
    rates = [1, 4, 16, 64]
    curves = load_sweep(SIM, [CFG], at, rates, "ttft.p99")
    ys = [y for _, y in curves[CFG]]
    assert ys == sorted(ys)
    assert ys[-1] > 10 * ys[0]  # queueing takes over
    with warnings.catch_warnings():  # a long configuration's legend leaves room for the axes
        warnings.simplefilter("error")
        png = plot_load_curves(curves, tmp_path / "hockey.png", metric="ttft.p99", limit=0.5)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_capacity_command_runs_a_capacity_study_and_prints_honest_capacities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "cap"
    code = main(
        [
            "capacity",
            "--config", "max_num_batched_tokens=256,max_num_seqs=16",
            "--config", "max_num_batched_tokens=1024,max_num_seqs=16",
            "--slo", "ttft.p99 <= 500ms",
            "--requests", "200",
            "--prompt-len", "256",
            "--output-len", "uniform:32:0.5",
            "--step-cost", "fixed=0.01,per_prefill_token=1e-4,per_decode_token=1e-4",
            "--low", "1",
            "--high", "64",
            "--gpu-hour-price", "2.5",
            "--output", str(out_dir),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "capacity (req/s)" in out and "binding SLO" in out and "$ per 1M output tokens" in out
    assert out.count("ttft.p99 <= 500ms") >= 2
    md = (out_dir / "report.md").read_text()
    assert "## Capacity" in md and "| vLLM's defaults |" in md
    assert (out_dir / "capacity.png").stat().st_size > 1000  # the hockey stick


def test_capacity_never_prints_an_unmeasured_number_when_every_rate_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "capacity", "--slo", "max_step_tokens <= 100000", "--requests", "50",
            "--low", "1", "--high", "8", "--output", str(tmp_path / "c"),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert ">= " in out and "e+12" not in out


def test_capacity_command_rejects_a_bad_knob(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:  # a usage error: argparse's exit status 2
        main(["capacity", "--config", "max_batch=4", "--slo", "ttft.p99 <= 1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown key 'max_batch'; allowed: max_num_batched_tokens" in err
