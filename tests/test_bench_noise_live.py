"""The offline part of the live noise benchmark (``benchmarks/bench_noise_live.py policies``)
on saved runs made by the simulator: the script reads what ``truth`` writes and prints its
tables (no vLLM; seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_scripts import load_bench
from tuner.backends import CostModel, SimulatorBackend


def _bench() -> ModuleType:
    return load_bench("bench_noise_live")


SIM = SimulatorBackend(CostModel(fixed=0.004, per_prefill_token=2e-5, time_unit="s"))


def saved_truth(bench: ModuleType, folder: Path, factors: tuple[float, ...]) -> None:
    """What ``truth`` writes, made by the simulator: each run's TTFTs scaled by a factor."""
    work = bench.workload(quick=True)
    saved: dict[str, object] = {"workload": len(work), "quick": True, "configs": {}}
    configs = saved["configs"]
    assert isinstance(configs, dict)
    for c in bench.configs(quick=False)[:4]:
        m = SIM.evaluate(c, work)
        runs = [
            {
                "wall": 1.0,
                "measurement": m.model_copy(update={"ttft": m.ttft * f}).model_dump(mode="json"),
            }
            for f in factors
        ]
        configs[bench.key(c)] = {"config": c.model_dump(mode="json"), "runs": runs}
    (folder / "truth.json").write_text(json.dumps(saved))


def test_the_policies_part_reads_saved_runs_and_prints_its_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _bench()
    saved_truth(bench, tmp_path, (0.9, 1.0, 1.1))
    assert bench.main(["policies", "--out", str(tmp_path), "--sessions", "2"]) == 0
    out = capsys.readouterr().out
    assert "ground truth = all 3 live runs per configuration" in out
    for name in bench.POLICIES:
        assert name in out
    assert "redo lagged runs" in out and "every run" in out


def test_a_replayed_run_is_stopped_when_its_slo_is_first_provably_lost_and_not_before() -> None:
    bench = _bench()
    from tuner.objectives import AbortRule, MetricRef

    m = SIM.evaluate(bench.configs(quick=False)[0], bench.workload(quick=True))
    p99 = MetricRef.parse("ttft.p99").value(m)
    assert bench.abort_time(m, AbortRule([f"ttft.p99 <= {p99 * 1.01:g}s"])) is None  # it meets
    slo = f"ttft.p99 <= {p99 / 2:g}s"
    at = bench.abort_time(m, AbortRule([slo]))
    assert at is not None and p99 / 2 <= at < m.duration  # nothing is over L before L passed
    later = bench.abort_time(m, AbortRule([slo], margins={slo: 1.5}))
    assert later is not None and later > at  # the margin waits for a wider miss
    assert bench.abort_time(m, AbortRule([slo], margins={slo: 4.0})) is None


def test_the_abort_replay_part_prints_each_rule_and_what_it_threw_away(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _bench()
    saved_truth(bench, tmp_path, (0.7, 1.0, 1.4))
    assert bench.main(["abort-replay", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "early abort replayed on 4 configurations x 3 saved live runs" in out
    for name in ("plain (final)", "margin, confident", "margin, median"):
        assert f"{name}: stops " in out
    assert "(x1.00)" in out  # the plain rule
