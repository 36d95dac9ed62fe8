"""The objective: which metric to optimise, in which direction, and how to break ties."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from tuner.core import FrozenModel, SLOError
from tuner.objectives._metrics import MetricRef

Direction = Literal["maximize", "minimize"]


class Objective(FrozenModel):
    """The figure to optimise among feasible configurations, with a tie-break.

    Ties (equal objective values, within ``tie_tolerance`` relative) go to the better
    ``tie_break`` value (minimised by default: the tie-break is usually a latency), then to the
    earlier trial.

    Example:
        >>> Objective.maximize("output_throughput").direction
        'maximize'
        >>> Objective.minimize("total_steps", tie_break="ttft_steps.max").metrics
        ('total_steps', 'ttft_steps.max')
    """

    _error_class = SLOError

    metric: str = Field(min_length=1)
    """Metric reference to optimise, e.g. ``output_throughput`` or ``total_steps``."""
    direction: Direction
    """Whether larger or smaller values are better."""
    tie_break: str | None = None
    """Metric that decides between equally good configurations."""
    tie_break_direction: Direction = "minimize"
    """Direction of the tie-break metric."""
    tie_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    """Relative difference under which two objective values count as a tie."""

    @model_validator(mode="after")
    def _check(self) -> Objective:
        for name in self.metrics:
            try:
                MetricRef.parse(name)
            except SLOError as e:
                raise ValueError(str(e)) from None
        return self

    @classmethod
    def maximize(cls, metric: str, tie_break: str | None = None, **kw: object) -> Objective:
        """Larger is better (throughput)."""
        return cls(metric=metric, direction="maximize", tie_break=tie_break, **kw)

    @classmethod
    def minimize(cls, metric: str, tie_break: str | None = None, **kw: object) -> Objective:
        """Smaller is better (steps, latency)."""
        return cls(metric=metric, direction="minimize", tie_break=tie_break, **kw)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric references this objective reads."""
        return (self.metric,) if self.tie_break is None else (self.metric, self.tie_break)

    @property
    def text(self) -> str:
        s = f"{self.direction} {self.metric}"
        if self.tie_break:
            s += f" (ties: {self.tie_break_direction} {self.tie_break})"
        return s

    def score(self, values: Mapping[str, float]) -> float:
        """The objective as a number where smaller is better (NaN counts as worst)."""
        return _signed(values[self.metric], self.direction)

    def tie_score(self, values: Mapping[str, float]) -> float:
        if self.tie_break is None:
            return 0.0
        return _signed(values[self.tie_break], self.tie_break_direction)

    def is_tie(self, a: float, b: float) -> bool:
        """Whether two objective values count as equally good."""
        if a == b:
            return True
        if math.isinf(a) or math.isinf(b):
            return False
        return abs(a - b) <= self.tie_tolerance * max(abs(a), abs(b))


def _signed(v: float, direction: Direction) -> float:
    if math.isnan(v):
        return math.inf
    return -v if direction == "maximize" else v


#: The objective when none is given: the most output tokens per second.
DEFAULT_OBJECTIVE = Objective.maximize("output_throughput")
