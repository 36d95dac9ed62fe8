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


def test_the_policies_part_reads_saved_runs_and_prints_its_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = _bench()
    work = bench.workload(quick=True)
    sim = SimulatorBackend(CostModel(fixed=0.004, per_prefill_token=2e-5, time_unit="s"))
    saved: dict[str, object] = {"workload": len(work), "quick": True, "configs": {}}
    configs = saved["configs"]
    assert isinstance(configs, dict)
    for c in bench.configs(quick=False)[:4]:
        m = sim.evaluate(c, work)
        runs = [
            {
                "wall": 1.0,
                "measurement": m.model_copy(update={"ttft": m.ttft * f}).model_dump(mode="json"),
            }
            for f in (0.9, 1.0, 1.1)
        ]
        configs[bench.key(c)] = {"config": c.model_dump(mode="json"), "runs": runs}
    (tmp_path / "truth.json").write_text(json.dumps(saved))
    assert bench.main(["policies", "--out", str(tmp_path), "--sessions", "2"]) == 0
    out = capsys.readouterr().out
    assert "ground truth = all 3 live runs per configuration" in out
    for name in bench.POLICIES:
        assert name in out
    assert "redo lagged runs" in out and "every run" in out
