"""``tuner worker study.yaml --storage postgresql://...``: this host joins a shared study."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuner.cli._fields import add_fields, values
from tuner.cli._study import run_and_report
from tuner.core import ConfigError
from tuner.studies import StudySpec, build_spec, load_study

#: The study-file fields a worker may override from its command line.
FIELDS = ("storage", "study_name", "workers")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "worker",
        help="join a study shared through an Optuna storage (one command per host)",
        description=(
            "Run a study file as one of many workers sharing its Optuna storage (an RDB URL "
            "such as postgresql://user@host/db, or a journal file on a shared disk): start the "
            "same command on every host; no configuration is measured twice, and each worker "
            "prints and reports the whole study once its share is done and what the others "
            "still measure has landed (Ctrl-C: the study as it stands). "
            "Rerunning continues. Exit status as for 'tuner run'."
        ),
    )
    p.add_argument("study", type=Path, help="the study file (YAML)")
    p.add_argument("--output", type=Path, help="output folder (default: the study's 'output')")
    add_fields(p, StudySpec, FIELDS)
    p.set_defaults(func=run)


def joined(spec: StudySpec, changes: dict[str, object]) -> StudySpec:
    """The study with this worker's command-line fields, validated like the file.

    Raises:
        ConfigError: the study names no storage to share.
    """
    data = spec.model_dump(mode="json", exclude_unset=True)
    spec = build_spec({**data, **changes}, "tuner worker")
    if spec.storage is None:
        raise ConfigError(
            "tuner worker joins a shared study: give --storage (e.g. postgresql://user@host/db, "
            "or a journal file on a shared disk) or 'storage:' in the study file"
        )
    return spec


def run(args: argparse.Namespace) -> int:
    spec, root = load_study(args.study)
    spec = joined(spec, values(args, StudySpec))
    _, status = run_and_report(spec, root, args.output)
    return status
