"""Scale-out on one machine: a CPU-bound capacity grid with ``workers=1`` and ``workers=2``.

Run: ``.venv/bin/python benchmarks/bench_workers.py`` (``--requests 6000``, ``--workers 1,2``).
The problem: a capacity grid (``Objective.capacity``: per configuration, a load search of
several simulations) over 12 configurations of ``max_num_batched_tokens`` x ``max_num_seqs``,
a chat workload simulated with a seconds ``CostModel``, SLOs ``ttft.p99 <= 2s`` and
``itl.p99 <= 60ms``. Each row runs the same study in a fresh journal file (``workers=N``: N
processes share it; the parent only waits); wall time includes starting the processes. The
machine's load average before and after each row says how busy the cores were (other jobs
share them), which bounds the speed-up more than anything in tuner does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tuner import Loop, Objective, SearchSpace, ServingConfig, Workload
from tuner.backends import CostModel, SimulatorBackend
from tuner.core import LogNormal, Uniform
from tuner.search import GridSearch

COST = CostModel(
    fixed=0.006, per_prefill_token=3e-5, per_decode_token=1.5e-4, per_sequence=0, time_unit="s"
)
SPACE = SearchSpace(
    {"max_num_batched_tokens": [256, 512, 1024, 2048], "max_num_seqs": [16, 64, 256]},
    base=ServingConfig(max_model_len=8192),
)
SLOS = ["ttft.p99 <= 2s", "itl.p99 <= 60ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    workload = Workload.poisson(
        10, args.requests, LogNormal(600, 0.6, 4000), Uniform(150, 0.5), seed=0
    )
    print(f"{len(SPACE)} configurations, {args.requests} requests, {os.cpu_count()} cores")
    print(
        f"{'workers':>7}  {'wall (s)':>8}  {'trials':>6}  {'chosen':<40} {'capacity':>8}  "
        "load before/after"
    )
    for n in (int(x) for x in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            loop = Loop(
                SimulatorBackend(COST),
                GridSearch(),
                Objective.capacity(rel_tol=0.05),
                SLOS,
                workers=n,
                storage=str(Path(tmp) / "optuna.journal"),
                study_name="bench",
            )
            best = loop.run(SPACE, workload)
            wall = time.perf_counter() - t0
            load1 = os.getloadavg()[0]
        chosen = best.best.config.describe(SPACE.base)
        cap = best.best.values["capacity"]
        print(
            f"{n:>7}  {wall:8.1f}  {len(best.trials):>6}  {chosen:<40} {cap:8.3g}  "
            f"{load0:.1f}/{load1:.1f}"
        )


if __name__ == "__main__":
    main()
