"""``tuner demo``: the seed lab's budget x threshold grid on the simulator, end to end -- run
as two small studies (through :func:`~tuner.studies.run_study`): the real one, then the loud
refusal when the SLOs cannot be met."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from tuner.cli import _exit
from tuner.cli._study import run_and_report
from tuner.studies import StudySpec, build_spec

DEMO_REQUESTS = [
    {"arrival": 0, "prompt_tokens": 8, "output_tokens": 24},  # a long decode stream
    {"arrival": 2, "prompt_tokens": 64, "output_tokens": 2},  # two fat prompts at once
    {"arrival": 2, "prompt_tokens": 64, "output_tokens": 2},
    {"arrival": 5, "prompt_tokens": 16, "output_tokens": 8},
    {"arrival": 30, "prompt_tokens": 96, "output_tokens": 4},  # a lonely fat prompt
]
DEMO_SPACE = {
    "max_num_batched_tokens": [32, 40, 64, 128, 512],
    "long_prefill_token_threshold": [0, 16, 32],
}
DEMO_SLOS = ["max_step_tokens <= 64", "ttft_steps.max <= 4"]
IMPOSSIBLE_SLOS = ["max_step_tokens <= 16", "ttft_steps.max <= 1"]
METRICS = ["total_steps", "max_step_tokens", "ttft_steps.max"]


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="run the seed lab's budget x threshold grid on the simulator",
        description=(
            "Tune max_num_batched_tokens x long_prefill_token_threshold for a small arrival "
            "schedule on the step simulator (unit step clock): minimise total steps under a "
            "worst-step-tokens SLO and a worst-TTFT SLO, ties to lower worst TTFT. Then show "
            "the loud refusal when the SLOs cannot be met."
        ),
    )
    p.add_argument(
        "--slo",
        action="append",
        metavar="SLO",
        help=f"replace the SLOs (repeatable), e.g. 'max_step_tokens <= 64'; default: {DEMO_SLOS}",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="write the studies' reports here (default: a temporary folder)",
    )
    p.set_defaults(func=run)


def demo_spec(name: str, slos: list[str]) -> StudySpec:
    """The demo study with these SLOs."""
    data: dict[str, Any] = {
        "name": name,
        "description": "The seed lab's grid on the step simulator (unit step clock).",
        "workload": {"requests": DEMO_REQUESTS},
        "space": {"base": {"max_num_seqs": 8}, "knobs": DEMO_SPACE},
        "objective": {"minimize": "total_steps", "tie_break": "ttft_steps.max"},
        "slos": slos,
        "backend": {"simulator": {}},
    }
    return build_spec(data, "tuner demo")


def run(args: argparse.Namespace) -> int:
    slos = args.slo or DEMO_SLOS
    spec = demo_spec("demo", slos)
    print("workload (unit step clock):")
    for i, r in enumerate(DEMO_REQUESTS):
        print(
            f"  request {i}: arrives at step {r['arrival']:g}, prompt {r['prompt_tokens']} "
            f"tokens, output {r['output_tokens']} tokens"
        )
    print(f"space: {DEMO_SPACE} over max_num_seqs=8")
    print(
        f"objective: minimize total_steps (ties: minimize ttft_steps.max); SLOs: "
        f"{', '.join(slos)}\n"
    )
    with tempfile.TemporaryDirectory(prefix="tuner-demo-") as tmp:
        root = args.output or Path(tmp)
        _, status = run_and_report(
            spec, Path.cwd(), root / "demo", metrics=METRICS, report=args.output is not None
        )
        if status != _exit.OK or args.slo:
            return status
        print(f"\nNow an impossible SLO set: {', '.join(IMPOSSIBLE_SLOS)}")
        impossible = demo_spec("demo-impossible", IMPOSSIBLE_SLOS)
        _, refused = run_and_report(
            impossible,
            Path.cwd(),
            root / "demo-impossible",
            metrics=METRICS,
            report=args.output is not None,
        )
    if refused != _exit.INFEASIBLE:  # pragma: no cover - impossible by construction
        print("unexpected: the impossible SLOs were met")
        return _exit.FAILED
    print("(as it should be: the tuner refuses rather than returning a violating config)")
    return _exit.OK
