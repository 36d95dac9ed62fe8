"""The capacity benchmark's smoke mode runs and prints every table (so the script cannot rot)."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from tests.bench_scripts import load_bench


def _bench() -> ModuleType:
    return load_bench("bench_capacity")


def test_the_shipped_trace_reads_as_seconds_from_the_first_request() -> None:
    w = _bench().load_trace()
    assert len(w) == 3000
    assert w.arrival[0] == 0.0 and np.all(np.diff(w.arrival) >= 0)
    # 18:15:46.6805900 to 18:26:15.3839880 in the published file
    assert w.arrival[-1] == pytest.approx(628.703398, abs=1e-6)
    assert (w.prompt_tokens[0], w.output_tokens[0]) == (374, 44)


def test_slimming_a_measurement_keeps_every_percentile() -> None:
    from tuner import ServingConfig
    from tuner.backends import SimulatorBackend
    from tuner.objectives import MetricRef

    bench = _bench()
    from _caching import slim  # put on sys.path by loading the benchmark

    w = bench.load_trace(200)
    m = SimulatorBackend(bench.COST_MODEL).evaluate(ServingConfig(max_model_len=8192), w)
    s = slim(m)
    assert len(s.itl_values) < len(m.itl_values)
    for name in ("itl.p50", "itl.p99", "itl.max", "ttft.p99", "max_step_tokens", "total_steps"):
        assert MetricRef.parse(name).value(s) == MetricRef.parse(name).value(m), name
    assert math.isclose(MetricRef.parse("itl.mean").value(s), MetricRef.parse("itl.mean").value(m))


def test_quick_mode_prints_its_tables(capsys: pytest.CaptureFixture[str]) -> None:
    _bench().main(["--quick"])
    out = capsys.readouterr().out
    for heading in (
        "vLLM's defaults against the capacity-tuned best",
        "with and without the incumbent shortcut",
        "same answer: yes",
        "trials and probes to 99% of the optimum",
        "vLLM's auto_tune.sh procedure",
        "tuner grid, full space",
    ):
        assert heading in out, heading
    for strategy in ("grid (its order)", "random", "tpe", "halving"):
        assert f"\n{strategy} " in out, strategy
