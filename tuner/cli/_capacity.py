"""``tuner capacity``: the highest request rate each configuration sustains under the SLOs."""

from __future__ import annotations

import argparse
import math

from tuner.backends import SimulatorBackend
from tuner.cli._args import add_workload_args, cost_model, serving_config
from tuner.cli._table import format_table
from tuner.core import ConfigError, InfeasibleError, ServingConfig, Workload
from tuner.objectives import SLO
from tuner.report import plot_load_curves
from tuner.studies import find_capacity, load_sweep


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "capacity",
        help="find the highest request rate each config sustains under the SLOs",
        description=(
            "Bisect over the request rate (fixed seeds) for the highest rate at which every SLO "
            "holds, for each --config, on the step simulator; optionally plot a latency "
            "percentile against offered load for all of them (the hockey stick) to a PNG."
        ),
    )
    p.add_argument(
        "--config",
        action="append",
        metavar="KNOBS",
        help="knob=value pairs over vLLM's defaults, e.g. "
        "'max_num_batched_tokens=512,max_num_seqs=32' (repeatable)",
    )
    p.add_argument(
        "--slo",
        action="append",
        required=True,
        metavar="SLO",
        help="e.g. 'ttft.p99 <= 500ms' (repeatable)",
    )
    p.add_argument("--low", type=float, default=0.5, help="a rate the SLOs hold at (default 0.5)")
    p.add_argument("--high", type=float, default=8.0, help="first upper guess (default 8)")
    p.add_argument("--rel-tol", type=float, default=0.02, help="bisection tolerance (0.02)")
    p.add_argument("--plot", metavar="PNG", help="write the hockey-stick plot here")
    p.add_argument(
        "--plot-metric", default=None, help="metric to plot (default: the first SLO's metric)"
    )
    add_workload_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configs = [serving_config(c) for c in (args.config or [""])]
    slos = [SLO.parse(s) for s in args.slo]
    cm = cost_model(args.step_cost)
    backend = SimulatorBackend(cm)
    unit = "req/s" if cm.time_unit == "s" else "req/step"

    def workload_at(rate: float) -> Workload:
        if args.burstiness == 1.0:
            return Workload.poisson(
                rate, args.requests, args.prompt_len, args.output_len, seed=args.seed
            )
        return Workload.gamma(
            rate,
            args.requests,
            args.prompt_len,
            args.output_len,
            burstiness=args.burstiness,
            seed=args.seed,
        )

    rows: list[list[object]] = []
    caps: list[float] = []
    base = ServingConfig()
    for cfg in configs:
        try:
            cap = find_capacity(
                backend, cfg, workload_at, slos, low=args.low, high=args.high, rel_tol=args.rel_tol
            )
        except InfeasibleError as e:
            rows.append([cfg.describe(base), "none", "-", f"fails at {args.low:g} {unit}: {e}"])
            continue
        caps.append(cap.rate)
        above = "-" if cap.lowest_infeasible is None else f"{cap.lowest_infeasible:.4g}"
        rows.append([cfg.describe(base), f"{cap.rate:.4g}", above, cap.binding or "-"])
    print(format_table(["config", f"capacity ({unit})", "first failing rate", "binding SLO"], rows))
    if args.plot:
        metric = args.plot_metric or slos[0].metric
        top = max(caps) * 1.6 if caps else args.high
        rates = list(_geometric(args.low, top, 14))
        curves = load_sweep(backend, configs, workload_at, rates, metric)
        limit = next((s.limit for s in slos if s.metric == metric), None)
        path = plot_load_curves(
            curves,
            args.plot,
            metric=metric,
            base=base,
            limit=limit,
            unit="s" if cm.time_unit == "s" else "steps",
            rate_unit=unit,
        )
        print(f"plot: {path}")
    return 0


def _geometric(low: float, high: float, n: int) -> list[float]:
    if not (0 < low < high):
        raise ConfigError(f"rates: need 0 < low < high, got {low}, {high}")
    ratio = (high / low) ** (1 / (n - 1))
    return [low * ratio**i for i in range(n)] if math.isfinite(ratio) else [low]
