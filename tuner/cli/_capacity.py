"""``tuner capacity``: the highest request rate (or, with ``--mode concurrency``, the most
concurrent users) each configuration sustains under the SLOs, run as a capacity study (through
:func:`~tuner.studies.run_study`) built from the flags."""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

from tuner.cli._args import COST_TERMS, as_argument_type, knob_values, step_cost
from tuner.cli._fields import add_fields, values
from tuner.cli._study import run_and_report
from tuner.cli._table import format_table
from tuner.core import ConfigError
from tuner.objectives import CapacitySettings
from tuner.report import capacity_text, first_failing, limiting_slo, load_unit
from tuner.studies import Arrivals, ClosedLoop, StudyOutcome, build_spec

WORKLOAD_DEFAULTS = {
    "rate": 4.0,
    "requests": 500,
    "prompt_len": "uniform:512:0.5",
    "output_len": "uniform:128:0.5",
}


CLOSED_DEFAULTS = {"users": 1}


def _workload(args: argparse.Namespace) -> dict[str, Any]:
    """The study's workload section: Poisson arrivals, or closed-loop users."""
    arrivals = values(args, Arrivals, defaults=WORKLOAD_DEFAULTS)
    closed = values(args, ClosedLoop)
    if getattr(args, "CapacitySettings__mode", "rate") != "concurrency":
        if closed:
            flags = ", ".join("--" + k.replace("_", "-") for k in closed)
            raise ConfigError(f"tuner capacity: {flags} only apply with --mode concurrency")
        return {"poisson": arrivals}
    if "burstiness" in arrivals:
        raise ConfigError("tuner capacity: --burstiness does not apply with --mode concurrency")
    kept = {k: v for k, v in arrivals.items() if k != "rate"}
    return {"closed_loop": {**CLOSED_DEFAULTS, **kept, **closed}}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "capacity",
        help="find the highest request rate each config sustains under the SLOs",
        description=(
            "For each --config, search the offered request rate (the same requests, fixed "
            "seeds) for the highest rate at which every SLO holds, on the step simulator: a "
            "capacity study (objective: {maximize: capacity}) built from these flags. Prints "
            "capacity, the first failing rate, the binding SLO, tokens/s per GPU and, with "
            "--gpu-hour-price, the price of a million output tokens; the report draws latency "
            "against offered load (the hockey stick). A configuration that holds at --high is "
            "reported as '>= high', never extrapolated. With --mode concurrency the load is "
            "closed-loop users (each sends its next request --think-time after its previous "
            "one finished), searched from --users."
        ),
    )
    p.add_argument(
        "--config",
        action="append",
        metavar="KNOBS",
        type=as_argument_type(knob_values),
        help="knob=value pairs over vLLM's defaults, e.g. "
        "'max_num_batched_tokens=512,max_num_seqs=32' (repeatable; default: "
        "vLLM's defaults)",
    )
    p.add_argument(
        "--slo",
        action="append",
        required=True,
        metavar="SLO",
        help="e.g. 'ttft.p99 <= 500ms' (repeatable)",
    )
    add_fields(
        p.add_argument_group("the load search"),
        CapacitySettings,
        ["mode", "low", "high", "start", "rel_tol", "max_probes", "gpu_hour_price"],
    )
    add_fields(
        p.add_argument_group("workload (Poisson arrivals, regenerated at each rate)"),
        Arrivals,
        ["requests", "prompt_len", "output_len", "burstiness", "seed"],
        defaults=WORKLOAD_DEFAULTS,
    )
    add_fields(
        p.add_argument_group("closed loop (--mode concurrency)"),
        ClosedLoop,
        ["users", "think_time", "ramp"],
        defaults=CLOSED_DEFAULTS,
    )
    p.add_argument(
        "--step-cost",
        metavar="TERMS",
        type=as_argument_type(step_cost),
        help=f"seconds per step: {', '.join(t + '=..' for t in COST_TERMS)}; "
        "default: the unit step clock, rates per step",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="the study's folder: report with the hockey stick, trials.jsonl "
        "(default: a new temporary folder, kept)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configs: list[dict[str, Any]] = args.config or [{}]
    knobs = sorted({k for c in configs for k in c})
    space_knobs = {k: list(dict.fromkeys(c.get(k) for c in configs if k in c)) for k in knobs}
    simulator: dict[str, Any] = {}
    if args.step_cost:
        simulator["step_cost"] = args.step_cost
    spec = build_spec(
        {
            "name": "capacity",
            "workload": _workload(args),
            "space": {"knobs": space_knobs or {"max_num_seqs": [128]}},
            # Every listed configuration's own capacity: no incumbent shortcut.
            "objective": {
                "maximize": "capacity",
                "shortcut": False,
                **values(args, CapacitySettings),
            },
            "slos": args.slo,
            "backend": {"simulator": simulator},
            "search": {"list": configs},
        },
        "tuner capacity",
    )
    folder = args.output or Path(tempfile.mkdtemp(prefix="tuner-capacity-"))
    outcome, status = run_and_report(spec, Path.cwd(), folder)
    print()
    print(capacity_table(outcome))
    return status


def capacity_table(outcome: StudyOutcome) -> str:
    """One row per configuration: capacity (or the bound), first failing rate, binding SLO,
    tokens/s per GPU and $/1M output tokens."""
    unit = load_unit(outcome)
    rows: list[list[object]] = []
    for t in outcome.trials:
        rows.append(
            [
                t.config.describe(outcome.space.base),
                capacity_text(t),
                "-" if first_failing(t) is None else f"{first_failing(t):.4g}",
                limiting_slo(t) or "-",
                t.values.get("throughput_per_gpu", math.nan),
                t.values.get("cost_per_million_tokens", math.nan),
            ]
        )
    return format_table(
        [
            "config",
            f"capacity ({unit})",
            "first failing users" if unit == "users" else "first failing rate",
            "binding SLO",
            "tok/s per GPU",
            "$ per 1M output tokens",
        ],
        rows,
    )
