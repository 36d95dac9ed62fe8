"""Trial records: one configuration evaluated (once, or repeated), and each SLO's verdict."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field

from tuner.core._config import ServingConfig
from tuner.core._measurement import Measurement
from tuner.core._model import FrozenModel


class TrialStatus(str, Enum):
    """How a trial ended."""

    COMPLETE = "complete"
    """The backend measured the configuration (feasible or not)."""
    FAILED = "failed"
    """The backend could not measure it (refused config, crash, timeout); see ``error``."""


class SLOResult(FrozenModel):
    """One SLO judged on one trial."""

    slo: str
    """The SLO's text."""
    value: float
    """The metric's value (NaN if it could not be measured)."""
    limit: float
    """The SLO's limit, in the metric's base unit."""
    ok: bool
    """Whether the SLO holds."""
    margin: float
    """Slack to the limit (>= 0 when met; negative by how much it is missed)."""


class LoadPoint(FrozenModel):
    """One probe of a capacity search: the configuration measured at one offered load."""

    rate: float = Field(gt=0, allow_inf_nan=False)
    """The offered load: requests per time unit (or concurrent users in closed loop)."""
    feasible: bool
    """Whether every SLO held at this load."""
    slo_results: tuple[SLOResult, ...] = ()
    """Each SLO's verdict at this load."""
    values: dict[str, float] = Field(default_factory=dict)
    """The metrics measured at this load (the SLOs' and a few headline figures)."""
    cost: float = Field(default=0.0, ge=0.0)
    """Evaluation cost of this probe (engine steps, or seconds of load)."""
    error: str | None = None
    """Why the backend could not measure this load (then it counts as not holding)."""
    repeats: int = Field(default=1, ge=1)
    """How many runs measured this load (``values`` are their medians)."""


class Trial(FrozenModel):
    """One configuration evaluated (in one run, or ``repeats`` runs of the same workload): what
    was run, what came out, and the verdict."""

    number: int = Field(ge=0)
    """Position in the run (0-based), in evaluation order."""
    config: ServingConfig
    """The configuration evaluated."""
    fidelity: float = Field(default=1.0, gt=0.0, le=1.0)
    """Fraction of the workload run (1 = all of it)."""
    status: TrialStatus
    """Whether the backend produced a measurement."""
    values: dict[str, float] = Field(default_factory=dict)
    """Metric values read by the objective and the SLOs (and a few headline figures)."""
    slo_results: tuple[SLOResult, ...] = ()
    """Each SLO's verdict, in the order the SLOs were given."""
    error: str | None = None
    """Why the trial failed (with the log tail for live backends)."""
    wall_time: float = Field(default=0.0, ge=0.0)
    """Seconds of real time the evaluation took."""
    cost: float = Field(default=0.0, ge=0.0)
    """Evaluation cost for budgets: engine steps run (step-level backends), else seconds."""
    measurement: Measurement | None = Field(default=None, exclude=True, repr=False)
    """The full measurement (not written to trial logs); for a capacity objective, the one at
    the capacity point."""
    load_points: tuple[LoadPoint, ...] = ()
    """For a capacity objective: every offered load probed, in probe order."""
    capacity_note: str | None = None
    """How to read a capacity value that is a bound, not a measured boundary: ``">= 64
    (held at the highest load tried)"`` or ``"below the incumbent's capacity of 12.3"``."""
    repeats: int = Field(default=1, ge=1)
    """How many runs of the identical workload measured this configuration (the Loop's
    ``Repeats`` policy; always 1 on a deterministic backend)."""
    repeat_values: dict[str, tuple[float, ...]] = Field(default_factory=dict)
    """Each metric's value in each run, in run order (``values`` holds their median)."""
    intervals: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """Each metric's confidence interval ``(low, high)``: a bootstrap over the requests of each
    run and over the runs, widened by the run-to-run noise pooled over the study's repeats;
    zero width on a deterministic backend."""
    abort_reason: str | None = None
    """Set when the backend stopped the run early because an SLO was provably lost (the
    trial is infeasible; ``values`` are those of the partial run)."""
    abort_saved: float | None = Field(default=None, ge=0.0)
    """For an aborted run: the part of the workload's arrival schedule that was never run
    (a lower bound on the time saved), in the measurement's time unit."""

    @property
    def ok(self) -> bool:
        """Whether the backend measured this configuration."""
        return self.status is TrialStatus.COMPLETE

    @property
    def feasible(self) -> bool:
        """Measured in full, and every SLO holds."""
        return self.ok and self.abort_reason is None and all(r.ok for r in self.slo_results)

    @property
    def violations(self) -> tuple[SLOResult, ...]:
        """The SLOs this trial misses."""
        return tuple(r for r in self.slo_results if not r.ok)

    def verdict(self, max_error: int = 80) -> str:
        """One short word for tables: ``yes``, ``no (the SLOs missed)`` or ``FAILED: reason``."""
        if not self.ok:
            return f"FAILED: {(self.error or '')[:max_error]}"
        if self.feasible:
            return "yes"
        if self.abort_reason is not None:
            said = self.abort_reason[:max_error]
            return f"no ({said})" if said.startswith("aborted") else f"no (aborted: {said})"
        return "no (" + ", ".join(r.slo for r in self.violations) + ")"

    def record(self) -> dict[str, Any]:
        """A JSON-ready record of this trial (one line of a trial log)."""
        out = self.model_dump(mode="json")
        out["feasible"] = self.feasible
        return out
