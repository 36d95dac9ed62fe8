"""The ``tuner`` command line."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from importlib import metadata
from typing import TextIO

from tuner.cli import _calibrate, _capacity, _demo, _fidelity, _live, _plan, _run, _worker
from tuner.core import TunerError


def _version() -> str:
    try:
        return metadata.version("vllm-slo-tuner")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "0.0.0+source"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuner",
        description=(
            "Find the best vLLM serving configuration for a workload: latency SLOs are hard "
            "constraints, throughput is the objective, and an impossible SLO is refused loudly."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()} (vllm-slo-tuner)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run.add_parser(sub)
    _demo.add_parser(sub)
    _fidelity.add_parser(sub)
    _capacity.add_parser(sub)
    _plan.add_parser(sub)
    _live.add_parser(sub)
    _calibrate.add_parser(sub)
    _worker.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tuner`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args))
    except TunerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A warning as one ``warning: ...`` line on stderr, without Python's source line (the
    user ran a command; the file and line of tuner's code that noticed are no help)."""
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
