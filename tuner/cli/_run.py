"""``tuner run study.yaml``: a whole study from a file, with its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuner.cli._dry_run import dry_run
from tuner.cli._study import run_and_report
from tuner.studies import load_study


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run a study file and write its report",
        description=(
            "Run the study a YAML file describes (workload or trace, space, SLOs, objective, "
            "backend or two tiers, search and budget) and write report.md, report.html, the "
            "plots and trials.jsonl into its output folder. Rerunning continues an interrupted "
            "study; Ctrl-C or SIGTERM stops cleanly and keeps what finished. Exit status: 0 a "
            "recommendation, 2 a usage or study-file error, 3 no configuration meets the SLOs, "
            "4 every trial failed, 130 interrupted."
        ),
    )
    p.add_argument("study", type=Path, help="the study file (YAML)")
    p.add_argument("--output", type=Path, help="output folder (default: the study's 'output')")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the space, the refused combinations, the commands a live "
        "backend would run and an estimated cost; run nothing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec, root = load_study(args.study)
    if args.dry_run:
        return dry_run(spec, root)
    _, status = run_and_report(spec, root, args.output)
    return status
