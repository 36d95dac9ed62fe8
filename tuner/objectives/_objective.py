"""The objective: which metric to optimise, in which direction, and how to break ties."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from tuner.core import FrozenModel, SLOError
from tuner.objectives._capacity import (
    CAPACITY_DIRECTIONS,
    CAPACITY_METRICS,
    CapacityMode,
    CapacitySettings,
)
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
    load: CapacitySettings | None = None
    """For a capacity objective (``capacity``, ``throughput_per_gpu``,
    ``cost_per_million_tokens``): how each configuration's highest sustainable load is
    searched. Filled with the defaults when such a metric is named."""

    @model_validator(mode="before")
    @classmethod
    def _default_load(cls, data: Any) -> Any:
        capacity = isinstance(data, dict) and data.get("metric") in CAPACITY_METRICS
        if capacity and data.get("load") is None:
            data = {**data, "load": CapacitySettings()}
        return data

    @model_validator(mode="after")
    def _check(self) -> Objective:
        for name in self.metrics:
            try:
                MetricRef.parse(name)
            except SLOError as e:
                raise ValueError(str(e)) from None
        if self.tie_break in CAPACITY_METRICS:
            raise ValueError(
                f"tie_break {self.tie_break!r}: a capacity figure can only be the objective itself"
            )
        if self.load is not None and self.metric not in CAPACITY_METRICS:
            raise ValueError(
                f"load settings apply to a capacity objective ({', '.join(CAPACITY_METRICS)}), "
                f"not to {self.metric!r}"
            )
        if self.metric in CAPACITY_METRICS:
            wanted = CAPACITY_DIRECTIONS[self.metric]
            if self.direction != wanted:
                raise ValueError(f"{self.metric} can only be {wanted}d")
        if self.metric == "cost_per_million_tokens" and (
            self.load is None or self.load.gpu_hour_price is None
        ):
            raise ValueError(
                "cost_per_million_tokens needs gpu_hour_price (the price of one "
                "GPU-hour), e.g. Objective.minimize('cost_per_million_tokens', "
                "gpu_hour_price=2.5)"
            )
        return self

    @classmethod
    def capacity(
        cls,
        low: float | None = None,
        high: float | None = None,
        rel_tol: float = 0.02,
        mode: CapacityMode = "rate",
        **settings: Any,
    ) -> Objective:
        """The most load a configuration sustains under the SLOs (requests per second, or
        concurrent users with ``mode="concurrency"``): each trial's value
        ``trial.values["capacity"]`` comes from a search over the offered load (see
        :class:`CapacitySettings` for ``start``, ``max_probes``, ``shortcut``,
        ``gpu_hour_price``). Needs at least one SLO (capacity is unbounded without one).

        Example:
            >>> Objective.capacity(low=1, high=64).load.high
            64.0
        """
        load = CapacitySettings(low=low, high=high, rel_tol=rel_tol, mode=mode, **settings)
        return cls(metric="capacity", direction="maximize", load=load)

    @property
    def is_capacity(self) -> bool:
        """Whether each trial's value comes from a search over the offered load."""
        return self.load is not None

    @classmethod
    def maximize(cls, metric: str, tie_break: str | None = None, **kw: Any) -> Objective:
        """Larger is better (throughput). Capacity settings (``low``, ``gpu_hour_price``, ...)
        may be given as keywords for a capacity metric."""
        return cls(metric=metric, direction="maximize", tie_break=tie_break, **_split(kw))

    @classmethod
    def minimize(cls, metric: str, tie_break: str | None = None, **kw: Any) -> Objective:
        """Smaller is better (steps, latency, ``cost_per_million_tokens``)."""
        return cls(metric=metric, direction="minimize", tie_break=tie_break, **_split(kw))

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric references this objective reads."""
        return (self.metric,) if self.tie_break is None else (self.metric, self.tie_break)

    @property
    def text(self) -> str:
        s = f"{self.direction} {self.metric}"
        if self.load is not None:
            given = self.load.model_dump(exclude_defaults=True)
            opts = ", ".join(_setting(k, v) for k, v in given.items())
            s += f" ({opts})" if opts else ""
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


def _split(kw: dict[str, Any]) -> dict[str, Any]:
    """Objective fields as given; capacity settings gathered into ``load``."""
    load = {k: kw.pop(k) for k in list(kw) if k in CapacitySettings.model_fields}
    if load:
        kw["load"] = CapacitySettings(**load)
    return kw


def _signed(v: float, direction: Direction) -> float:
    if math.isnan(v):
        return math.inf
    return -v if direction == "maximize" else v


#: The objective when none is given: the most output tokens per second.
DEFAULT_OBJECTIVE = Objective.maximize("output_throughput")


def _setting(key: str, value: object) -> str:
    """A load setting as a reader reads it: ``shortcut off``, ``gpu_hour_price $2.5``,
    ``rel_tol 0.02`` (no Python ``True``/``False``)."""
    if isinstance(value, bool):
        return f"{key} {'on' if value else 'off'}"
    if key == "gpu_hour_price" and isinstance(value, int | float):
        return f"{key} ${value:g}"
    return f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
