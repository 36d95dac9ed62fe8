"""Headline benchmark: two-tier tuning against an exhaustive live grid, on a real vLLM.

On this machine kind: the CPU build of vLLM 0.32 serving the tiny random Llama (built locally).
The same workload, space and SLOs are tuned twice:

1. **exhaustive live**: every configuration of the space measured on a real ``vllm serve``;
2. **two-tier**: two live probes (a middle configuration and the widest batch at its budget)
   calibrate the simulator's cost model from the server's step log; the simulator searches the
   whole space; only the shortlist (top feasible configurations plus near misses) is measured
   live, and the answer comes from those.

Prints whether both find the same best configuration, with how many live trials and how much
wall time, and the simulator's prediction error on the shortlist.

Run (needs vLLM; about 16 minutes on 2 cores):
    TUNER_WITH_VLLM=1 bash scripts/venv.sh          # prints a venv that has vLLM
    HF_HUB_OFFLINE=1 <that venv>/bin/python benchmarks/bench_two_tier.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tuner import (
    InfeasibleError,
    Loop,
    Objective,
    SearchSpace,
    ServingConfig,
    Trial,
    Uniform,
    Workload,
)
from tuner.backends import SimulatorBackend
from tuner.backends.live._server import VLLMServerBackend
from tuner.backends.live._tiny_model import build_tiny_model
from tuner.backends.simulator._calibration import fit_cost_model
from tuner.cli._table import format_table
from tuner.search import GridSearch, ListSearch
from tuner.studies import two_tier

BASE = ServingConfig(max_model_len=1024, block_size=128, max_num_seqs=8)
SERVER_ARGS = ["--dtype", "bfloat16", "--enforce-eager"]
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 configs instead of 12 (a smoke run)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep server logs here")
    args = ap.parse_args()
    knobs = {
        "max_num_batched_tokens": [64, 128, 256, 512] if not args.quick else [64, 512],
        "max_num_seqs": [4, 8, 16] if not args.quick else [4, 16],
    }
    space = SearchSpace(knobs, base=BASE)
    # More than any configuration serves (40 req/s), long enough (200 requests) that the
    # configurations' capacities, not latency noise, decide: the best serves ~500 output tok/s,
    # the worst well under 300. (At a load every configuration keeps up with, throughput ties
    # and a noisy p99 tie-break picks the winner: not a test of the search.)
    rate, n = 40, 200
    workload = Workload.poisson(rate, n, Uniform(384, 0.5), Uniform(24, 0.5), seed=0)
    objective = Objective.maximize("output_throughput", tie_break="ttft.p99", tie_tolerance=0.02)
    slos = ["tpot.p99 <= 60ms", "max_step_tokens <= 256"]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="tuner-bench-"))
    model = str(build_tiny_model(root / "tiny-model"))
    print(
        f"workload: {len(workload)} requests at {rate} req/s; space: {len(space)} configs; "
        f"SLOs: {', '.join(slos)}",
        file=sys.stderr,
    )

    def live(name: str) -> VLLMServerBackend:
        return VLLMServerBackend(model, server_args=SERVER_ARGS, env=ENV, workdir=root / name)

    # 1. Exhaustive live grid (its trial log lets a rerun with the same --workdir resume).
    t0 = time.monotonic()
    grid_log = root / "grid-trials.jsonl"
    try:
        grid = Loop(live("grid"), GridSearch(), objective, slos, trial_log=grid_log).run(
            space, workload
        )
        grid_best: ServingConfig | None = grid.best.config
        grid_all = grid.trials
    except InfeasibleError as e:
        grid_best, grid_all = None, e.trials
    grid_trials = len(grid_all)
    grid_s = time.monotonic() - t0

    # 2. Two-tier: a live probe calibrates the simulator, which shortlists for live confirmation.
    t0 = time.monotonic()
    # Two probes: a middle configuration, and the one with the most sequences at its budget.
    # One configuration varies the batch too little for the fit to see what a sequence costs
    # (a lone max_num_seqs=4 probe fitted 0 s per sequence and overestimated the 16-sequence
    # configurations' throughput by ~40%).
    middle = space.configs()[len(space) // 2]
    widest = max(
        (c for c in space.configs() if c.max_num_batched_tokens == middle.max_num_batched_tokens),
        key=lambda c: c.max_num_seqs,
    )
    probes = list(dict.fromkeys([middle, widest]))
    probe_trials = [
        t for c in probes for t in _measure(live("probe"), c, space, workload, objective, slos)
    ]
    calibration = fit_cost_model([t.measurement for t in probe_trials if t.measurement])
    cheap = SimulatorBackend(calibration.cost_model)
    try:
        tt = two_tier(
            cheap,
            live("confirm"),
            GridSearch(),
            space,
            workload,
            objective,
            slos,
            top_k=2,
            margin=0.2,
        )
        tt_best: ServingConfig | None = tt.best.config
        tt_live = len(probes) + len(tt.expensive)
        errors = tt.mean_abs_error()
        confirmed = tt.expensive
    except InfeasibleError as e:
        tt_best, tt_live, errors, confirmed = None, len(probes) + len(e.trials), {}, e.trials
    tt_s = time.monotonic() - t0

    def show(c: ServingConfig | None) -> str:
        return "infeasible" if c is None else c.describe(BASE).removeprefix("ServingConfig")

    print(
        format_table(
            ["method", "live trials", "wall s", "best config"],
            [
                ["exhaustive live grid", grid_trials, round(grid_s), show(grid_best)],
                ["two-tier (probe + sim + shortlist)", tt_live, round(tt_s), show(tt_best)],
            ],
        )
    )
    print(
        f"\nsame best config: {'yes' if grid_best == tt_best else 'no'}; "
        f"live trials {tt_live}/{grid_trials}; wall time {tt_s / grid_s:.0%} of the grid's"
    )
    metrics = [objective.metric, "ttft.p99", "max_step_tokens"]
    print("\nthe exhaustive grid, live:")
    print(
        format_table(
            [*space.dimensions, *metrics, "feasible"],
            [
                [
                    *(getattr(t.config, k) for k in space.dimensions),
                    *(round(t.values.get(m, float("nan")), 4) for m in metrics),
                    "FAILED" if not t.ok else ("yes" if t.feasible else "no"),
                ]
                for t in grid_all
            ],
        )
    )
    print("\nthe two-tier shortlist, live:")
    print(
        format_table(
            [*space.dimensions, *metrics, "feasible"],
            [
                [
                    *(getattr(t.config, k) for k in space.dimensions),
                    *(round(t.values.get(m, float("nan")), 4) for m in metrics),
                    "FAILED" if not t.ok else ("yes" if t.feasible else "no"),
                ]
                for t in confirmed
            ],
        )
    )
    by_config = {t.config: t for t in grid_all if t.ok}
    if grid_best is not None and tt_best is not None and tt_best in by_config:
        a, b = by_config[grid_best].values, by_config[tt_best].values
        gap = 1 - b[objective.metric] / a[objective.metric]
        print(
            f"two-tier's choice, as the grid measured it: {objective.metric} "
            f"{b[objective.metric]:.4g} vs the grid's best {a[objective.metric]:.4g} "
            f"({100 * gap:+.1f}% gap); ttft.p99 {b['ttft.p99']:.3f}s vs {a['ttft.p99']:.3f}s; "
            f"feasible in the grid: {'yes' if by_config[tt_best].feasible else 'no'}"
        )
    print(
        f"calibrated from {calibration.steps} live steps of up to {calibration.max_seqs} "
        f"sequences (R^2 {calibration.r2:.2f}): "
        f"{calibration.cost_model!r}"
    )
    for metric, err in errors.items():
        print(f"simulator error on the shortlist, {metric}: {100 * err:.1f}%")


def _measure(
    backend: VLLMServerBackend,
    config: ServingConfig,
    space: SearchSpace,
    workload: Workload,
    objective: Objective,
    slos: list[str],
) -> tuple[Trial, ...]:
    """Every trial of measuring one configuration (feasible or not)."""
    try:
        return Loop(backend, ListSearch([config]), objective, slos).run(space, workload).trials
    except InfeasibleError as e:
        return e.trials


if __name__ == "__main__":
    main()
