"""``tuner fidelity``: how often the simulator schedules exactly like vLLM's own scheduler."""

from __future__ import annotations

import argparse
import time

from tuner.backends import SimulatorBackend
from tuner.cli._table import format_table
from tuner.fidelity import CASE_KINDS, FidelityCase, cases, run_fidelity


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "fidelity",
        help="compare the simulator with vLLM's real scheduler on random cases",
        description=(
            "Run N random cases (bursts, Poisson arrivals, long and short prompts, single "
            "requests, KV pressure with preemption, chunked prefill off, shared prefixes, "
            "closed loop, and async scheduling) through the simulator and through vLLM's own "
            "Scheduler or AsyncScheduler (SchedulerReplayBackend, needs vLLM), and compare "
            "per-step tokens, first-token and finish steps and preemptions. Exit status 1 if "
            "any case differs."
        ),
    )
    p.add_argument("--cases", type=int, default=120, help="number of random cases (default 120)")
    p.add_argument("--seed", type=int, default=0, help="seed of the case generator (default 0)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tuner.backends import SchedulerReplayBackend

    if args.cases < 1:
        raise SystemExit("error: --cases must be >= 1")
    case_list = cases(args.cases, args.seed)

    def show(case: FidelityCase, diffs: list[str]) -> None:
        if args.verbose or diffs:
            print(("DIFFERS " if diffs else "same    ") + case.describe())
            for d in diffs:
                print(f"          {d}")

    t0 = time.perf_counter()
    with SchedulerReplayBackend() as replay:
        report = run_fidelity(replay, SimulatorBackend(), case_list, on_case=show)
    rows: list[list[object]] = []
    for kind in CASE_KINDS:
        ok, tot = report.by_kind().get(kind, (0, 0))
        if tot:
            rows.append([kind, tot, ok, f"{100 * ok / tot:.1f}%"])
    rows.append(["all", report.total, report.agreed, f"{100 * report.agreed / report.total:.1f}%"])
    print(format_table(["case kind", "cases", "identical", "agreement"], rows))
    print(
        f"({time.perf_counter() - t0:.1f}s; identical = same step_tokens, first_token_step, "
        "finish_step, preemptions and prefix-cache hits per request)"
    )
    return 0 if not report.disagreements else 1
