"""``tuner demo``: the seed lab's budget x threshold grid, on the simulator, end to end."""

from __future__ import annotations

import argparse

from tuner.backends import SimulatorBackend
from tuner.cli._table import trial_table
from tuner.core import (
    InfeasibleError,
    Request,
    SearchSpace,
    ServingConfig,
    Trial,
    Workload,
)
from tuner.objectives import Objective
from tuner.search import GridSearch
from tuner.tuning import Loop

DEMO_WORKLOAD = Workload(
    [
        Request(arrival=0, prompt_tokens=8, output_tokens=24),  # a long decode stream
        Request(arrival=2, prompt_tokens=64, output_tokens=2),  # two fat prompts at once
        Request(arrival=2, prompt_tokens=64, output_tokens=2),
        Request(arrival=5, prompt_tokens=16, output_tokens=8),
        Request(arrival=30, prompt_tokens=96, output_tokens=4),  # a lonely fat prompt
    ]
)
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
        "--slo", action="append", metavar="SLO",
        help=f"replace the SLOs (repeatable), e.g. 'max_step_tokens <= 64'; default: {DEMO_SLOS}",
    )  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    slos = args.slo or DEMO_SLOS
    space = SearchSpace(DEMO_SPACE, base=ServingConfig(max_num_seqs=8))
    objective = Objective.minimize("total_steps", tie_break="ttft_steps.max")
    print("workload (unit step clock):")
    for i, r in enumerate(DEMO_WORKLOAD):
        print(f"  request {i}: arrives at step {r.arrival:g}, prompt {r.prompt_tokens} tokens, "
              f"output {r.output_tokens} tokens")  # fmt: skip
    print(f"space: {space}")
    print(f"objective: {objective.text}; SLOs: {', '.join(slos)}\n")
    loop = Loop(SimulatorBackend(), GridSearch(), objective, slos)
    trials_seen: list[Trial] = []
    loop.on_trial = trials_seen.append
    try:
        result = loop.run(space, DEMO_WORKLOAD)
    except InfeasibleError as e:
        print(trial_table(trials_seen, space, METRICS))
        print(f"\nINFEASIBLE: {e}")
        return 2
    print(trial_table(result.trials, space, METRICS))
    best = result.best
    print(f"\nchosen: {best.config.describe(space.base)}")
    print("  " + ", ".join(f"{m} = {best.values[m]:g}" for m in METRICS))
    print("  vllm serve flags: " + " ".join(best.config.to_vllm_args()))

    if not args.slo:
        print(f"\nNow an impossible SLO set: {', '.join(IMPOSSIBLE_SLOS)}")
        try:
            Loop(SimulatorBackend(), GridSearch(), objective, IMPOSSIBLE_SLOS).run(
                space, DEMO_WORKLOAD
            )
        except InfeasibleError as e:
            print(f"INFEASIBLE (as it should be): {e}")
        else:  # pragma: no cover - the demo's impossible SLOs are impossible by construction
            print("unexpected: the impossible SLOs were met")
            return 1
    return 0
