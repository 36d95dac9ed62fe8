"""The compiled engines (``make native``) against the pure-Python ones: same source, so the same
schedules and times to the bit. Skipped when no compiled engines are built (the default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tuner.backends import SimulatorBackend
from tuner.backends.simulator import _native

CASES = """
import json, sys
from tuner import LogNormal, ServingConfig, Workload
from tuner.backends import CostModel, SimulatorBackend
out = []
for seed, blocks, cost in [(0, 4096, CostModel()), (1, 700, CostModel()),
                           (2, 900, CostModel(fixed=0.37, per_prefill_token=0.001, time_unit="s"))]:
    w = Workload.poisson(0.1, 400, LogNormal(mean=300, sigma=0.8, max_len=2000),
                         LogNormal(mean=80, sigma=0.9, max_len=400), seed=seed)
    c = ServingConfig(max_num_batched_tokens=512, max_num_seqs=32,
                      long_prefill_token_threshold=128, num_kv_blocks=blocks,
                      max_model_len=4096, enable_prefix_caching=seed != 1,
                      async_scheduling=seed == 2)
    for fast in (True, False):
        m = SimulatorBackend(cost, fast_forward=fast).evaluate(c, w)
        out.append([m.step_tokens.tolist(), m.step_start.tolist(), m.e2e.tolist(),
                    m.ttft.tolist(), m.preemptions])
json.dump(out, sys.stdout)
"""


def _run(pure: bool) -> object:
    env = dict(os.environ, TUNER_PURE_PYTHON="1" if pure else "0")
    out = subprocess.run(
        [sys.executable, "-c", CASES], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not _native.COMPILED, reason="no compiled engines (make native)")
def test_compiled_engines_give_the_pure_python_schedules_to_the_bit() -> None:
    assert _run(pure=False) == _run(pure=True)


@pytest.mark.skipif(not _native.COMPILED, reason="no compiled engines (make native)")
def test_the_pure_python_switch_loads_the_sources() -> None:
    code = (
        "import tuner.backends.simulator._fast_engine as f, tuner.backends.simulator as s;"
        "print(f.__file__.endswith('.py'), s._native.COMPILED)"
    )
    env = dict(os.environ, TUNER_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False"]


def test_the_simulator_runs_with_whichever_engines_loaded() -> None:
    from tuner import Request, ServingConfig, Workload

    w = Workload([Request(arrival=0, prompt_tokens=100, output_tokens=3)])
    m = SimulatorBackend().evaluate(ServingConfig(max_num_batched_tokens=64, max_num_seqs=4), w)
    assert m.step_tokens.tolist() == [64, 36, 1, 1]
