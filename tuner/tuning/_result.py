"""What a tuning run produced: every trial, the best feasible one, and why the run stopped.

:class:`Exploration` is the whole record of a run whatever its verdict (the studies, two-tier
tuning and reports read it); :class:`TuningResult` is the answer :meth:`Loop.run` returns only
when a configuration met every SLO.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.core import FrozenModel, InfeasibleError, ServingConfig, Trial


class TuningResult(FrozenModel):
    """The outcome of :meth:`Loop.run`: the best feasible trial and every trial run."""

    best: Trial
    """The best feasible trial (never one that violates an SLO)."""
    trials: tuple[Trial, ...]
    """Every trial, in evaluation order, feasible or not, failed or not."""
    objective: str
    """The objective's description."""
    slos: tuple[str, ...] = ()
    """The SLOs' text."""
    stop_reason: str = "search exhausted"
    """Why the run stopped."""

    @property
    def feasible(self) -> tuple[Trial, ...]:
        """The trials that met every SLO."""
        return tuple(t for t in self.trials if t.feasible)

    @property
    def failed(self) -> tuple[Trial, ...]:
        """The trials the backend could not measure."""
        return tuple(t for t in self.trials if not t.ok)

    @property
    def best_config(self) -> ServingConfig:
        return self.best.config


@dataclass(frozen=True)
class Exploration:
    """Every trial of a run and its verdict, feasible or not (read it without catching).

    Attributes:
        trials: Every trial, in evaluation order (those read back from a trial log first).
        best: The best feasible full-fidelity trial, or None when no trial met every SLO.
        objective: The objective's description.
        slos: The SLOs' text.
        stop_reason: Why the run stopped (``"interrupted"`` after Ctrl-C).
        infeasible: When ``best`` is None, the refusal :meth:`result` raises (per SLO, the
            closest any trial came); None otherwise.
        planned: How many trials the search planned, when it knows (for "k of n").
    """

    trials: tuple[Trial, ...]
    best: Trial | None
    objective: str
    slos: tuple[str, ...]
    stop_reason: str
    infeasible: InfeasibleError | None = None
    planned: int | None = None

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C (or SIGTERM) stopped the run before the search ended."""
        return self.stop_reason == "interrupted"

    def result(self) -> TuningResult:
        """The answer: the best feasible trial and every trial.

        Raises:
            InfeasibleError: no trial met every SLO.
        """
        if self.best is None:
            raise self.infeasible or InfeasibleError([], self.trials)
        return TuningResult(
            best=self.best,
            trials=self.trials,
            objective=self.objective,
            slos=self.slos,
            stop_reason=self.stop_reason,
        )
