"""The Loop's budgets: when a run stops before its search is exhausted."""

from __future__ import annotations

from pydantic import Field

from tuner.core import Settings


class Budget(Settings):
    """When the Loop stops starting new trials (whichever comes first).

    Example:
        >>> Budget(max_trials=40).max_trials
        40
    """

    _owner = "Loop"

    max_trials: int | None = Field(default=None, ge=1)
    """Stop after this many trials (None = until the search is exhausted)."""
    max_cost: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Stop once the trials' evaluation cost reaches this (``Trial.cost``: engine steps run, for
    backends that see the engine's steps; seconds of load otherwise)."""
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Stop starting new trials after this many seconds of wall time."""
    trial_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Fail a trial whose evaluation (all of its repeats) runs longer than this many seconds
    (the backend is asked to stop it: a live server is killed) and go on with the next."""
    cancel_grace: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    """Seconds a backend has to stop a timed-out evaluation; one that does not stop ends the
    run (its finished trials are kept)."""

    def spent(self, trials: int, cost: float, elapsed: float) -> str | None:
        """Why no new trial may start after ``trials`` trials costing ``cost`` in ``elapsed``
        seconds, or None while the budget lasts.

        Example:
            >>> Budget(max_trials=2).spent(2, 0.0, 1.0)
            'max_trials (2) reached'
        """
        if self.max_trials is not None and trials >= self.max_trials:
            return f"max_trials ({self.max_trials}) reached"
        if self.max_cost is not None and cost >= self.max_cost:
            return f"max_cost ({self.max_cost:g}) reached: cost {cost:g}"
        if self.timeout is not None and elapsed >= self.timeout:
            return f"timeout ({self.timeout:g}s) reached"
        return None
