"""``tuner run study.yaml``: a whole study from a file, with its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuner.report import write_report
from tuner.studies import load_study, run_study


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run a study file and write its report",
        description=(
            "Run the study a YAML file describes (workload or trace, space, SLOs, objective, "
            "backend or two tiers, search and budget) and write report.md, report.html, the "
            "plots and trials.jsonl into its output folder. Rerunning continues an interrupted "
            "study; Ctrl-C stops cleanly and keeps what finished. Exit status 2 when no "
            "configuration meets the SLOs."
        ),
    )
    p.add_argument("study", type=Path, help="the study file (YAML)")
    p.add_argument("--output", type=Path, help="output folder (default: the study's 'output')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec, root = load_study(args.study)
    outcome = run_study(spec, root, args.output)
    md, html = write_report(outcome)
    best = outcome.best
    if best is None:
        print(f"INFEASIBLE: {outcome.infeasible}")
    else:
        print(f"best: {best.config.describe()}")
        print("vllm serve <model> " + " ".join(best.config.to_vllm_args()))
    print(f"report: {md} and {html}")
    return 0 if best is not None else 2
