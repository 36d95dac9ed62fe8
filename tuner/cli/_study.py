"""Running a study from a command and telling the user what came of it (one place for every
command that tunes: ``run``, ``demo``, ``live``)."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from tuner.cli import _exit
from tuner.cli._table import trial_table
from tuner.report import flat_warning, write_report
from tuner.studies import StudyOutcome, StudySpec, run_study


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a study like Ctrl-C: servers are stopped and finished trials kept."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_and_report(
    spec: StudySpec,
    root: Path,
    output: Path | None = None,
    *,
    metrics: Sequence[str] = (),
    report: bool = True,
) -> tuple[StudyOutcome, int]:
    """Run ``spec`` through :func:`run_study`, print the trial table and the verdict, write
    the report; return the outcome and the exit status."""
    with sigterm_as_interrupt():
        outcome = run_study(spec, root, output)
    shown = list(
        dict.fromkeys([*outcome.objective.metrics, *(s.metric for s in outcome.slos), *metrics])
    )
    print(trial_table(list(outcome.trials), outcome.space, shown, outcome.time_unit))
    status = verdict(outcome)
    if report:
        md, html = write_report(outcome)
        print(f"report: {md} and {html}")
    return outcome, status


def verdict(outcome: StudyOutcome) -> int:
    """Print what the study concluded and return the exit status."""
    best, trials = outcome.best, outcome.trials
    planned = outcome.planned
    if outcome.interrupted:
        of = f" of {planned}" if planned else ""
        print(
            f"\nINTERRUPTED after {len(trials)}{of} trials: no recommendation from a partial run"
            + (f" (best so far: {best.config.describe(outcome.space.base)})" if best else "")
        )
        print("rerun the same command to continue where it stopped")
        return _exit.INTERRUPTED
    flat = flat_warning(trials, outcome.objective)
    if flat is not None:
        print(f"\nWARNING: {flat}")
    if best is not None:
        print(f"\nchosen: {best.config.describe(outcome.space.base)}")
        values = ", ".join(
            f"{m} = {best.values[m]:.4g}" for m in outcome.objective.metrics if m in best.values
        )
        print(f"  {values}")
        print(f"  for {outcome.target.describe()}:")
        print("  " + outcome.vllm_serve())
        return _exit.OK
    if trials and all(not t.ok for t in trials):
        reasons = sorted({(t.error or "").splitlines()[0][:200] for t in trials})
        print(f"\nFAILED: all {len(trials)} trials failed; no measurement to judge")
        for r in reasons[:5]:
            print(f"  - {r}")
        return _exit.FAILED
    print(f"\nINFEASIBLE: {outcome.infeasible}")
    return _exit.INFEASIBLE
