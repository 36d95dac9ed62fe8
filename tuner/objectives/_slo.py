"""Service-level objectives: hard constraints on metrics, parsed from text."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from tuner.core import FrozenModel, Measurement, SLOError, TunerError
from tuner.objectives._metrics import KIND_NOUNS, TIME_UNITS, MetricRef

Op = Literal["<=", "<", ">=", ">"]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}
_SLO_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.]*(?:\([^()]*\))?)\s*(?P<op><=|>=|<|>|==|=|!=)\s*"
    r"(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>[A-Za-z/]*)\s*$"
)


class SLO(FrozenModel):
    """A hard constraint on one metric: ``metric op limit``.

    The limit of a metric that is never negative (every latency, count and throughput) must
    not be negative: such an SLO could never be met, or would constrain nothing.

    Time limits may carry a unit (``us``, ``ms``, ``s``) and are stored in seconds; without a
    unit a time limit is in the measurement's own time unit (steps on the unit step clock).

    Example:
        >>> SLO.parse("ttft.p99 <= 200ms").limit
        0.2
        >>> SLO.parse("max_step_tokens <= 64").text
        'max_step_tokens <= 64'
    """

    _error_class = SLOError

    metric: str = Field(min_length=1)
    """Metric reference, e.g. ``ttft.p99`` or ``max_step_tokens``."""
    op: Op = "<="
    """Comparison that must hold: ``value op limit``."""
    limit: float = Field(allow_inf_nan=False)
    """The limit, in seconds for time metrics given with a unit, else in the metric's unit."""
    unit: Literal["us", "ms", "s"] | None = None
    """The time unit the limit was written in (None = the measurement's own unit)."""

    @model_validator(mode="after")
    def _check(self) -> SLO:
        try:
            ref = MetricRef.parse(self.metric)
        except SLOError as e:
            raise ValueError(str(e)) from None
        if ref.is_capacity:
            raise ValueError(
                f"{self.metric} is the figure a capacity objective finds, not a constraint; "
                f"use it as the objective (objective: {{maximize: capacity}})"
            )
        if self.unit is not None and ref.kind != "time":
            raise ValueError(
                f"{self.metric} is not a time metric; its limit takes no unit (got {self.unit!r})"
            )
        if ref.nonnegative and self.limit < 0:
            outcome = (
                "can never be met"
                if self.op in ("<=", "<")
                else "always holds and constrains nothing"
            )
            raise ValueError(
                f"'{self.text}': the limit is negative, but {self.metric} is "
                f"{KIND_NOUNS[ref.kind]}, never negative, so this SLO {outcome}; "
                "give a limit >= 0"
            )
        if ref.nonnegative and self.limit == 0 and self.op == "<":
            raise ValueError(
                f"'{self.text}': {self.metric} is {KIND_NOUNS[ref.kind]}, never negative, so it "
                "is never < 0 and this SLO can never be met; write '<= 0' for none at all"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> SLO:
        """Parse ``"<metric> <op> <number>[unit]"``, e.g. ``"ttft.p99 <= 200ms"``.

        Raises:
            SLOError: naming what is wrong and what is allowed.
        """
        if isinstance(text, SLO):
            return text
        if not isinstance(text, str):
            raise SLOError(f"SLO {text!r}: expected text like 'ttft.p99 <= 200ms'")
        m = _SLO_RE.match(text)
        if not m:
            raise SLOError(
                f"SLO {text!r}: expected '<metric> <op> <number>[unit]', "
                "e.g. 'ttft.p99 <= 200ms' or 'max_step_tokens <= 512'"
            )
        op = m["op"]
        if op not in _OPS:
            raise SLOError(f"SLO {text!r}: unknown operator {op!r}; allowed: <=, <, >=, >")
        MetricRef.parse(m["metric"])  # a clear error for unknown metrics and statistics
        unit = m["unit"] or None
        limit = float(m["num"])
        if unit is not None:
            if unit not in TIME_UNITS:
                raise SLOError(
                    f"SLO {text!r}: unknown unit {unit!r}; allowed: {', '.join(TIME_UNITS)} "
                    "(time metrics only; no unit means the measurement's own unit)"
                )
            limit *= TIME_UNITS[unit]
        return cls(metric=m["metric"], op=op, limit=limit, unit=unit)

    @property
    def ref(self) -> MetricRef:
        return MetricRef.parse(self.metric)

    @property
    def text(self) -> str:
        if self.unit is None:
            return f"{self.metric} {self.op} {self.limit:g}"
        return f"{self.metric} {self.op} {self.limit / TIME_UNITS[self.unit]:g}{self.unit}"

    def __str__(self) -> str:
        return self.text

    def check_applicable(self, m: Measurement) -> None:
        """Raise :class:`SLOError` if this SLO cannot be judged on ``m`` (unit or steps)."""
        ref = self.ref
        if (self.unit is not None or ref.time_units) and m.time_unit == "step":
            raise SLOError(
                f"SLO '{self.text}' is in {self.unit} but {m.source} measures time in steps "
                "(the unit step clock); give the limit in steps (no unit) or use a "
                "seconds CostModel"
            )
        if ref.needs_steps and not m.has_steps:
            raise SLOError(f"SLO '{self.text}' needs the engine's steps, which {m.source} lacks")

    def value(self, m: Measurement) -> float:
        """The metric's value on ``m``."""
        return self.ref.value(m)

    def satisfied_by(self, value: float) -> bool:
        """Whether ``value`` meets the SLO (NaN never does)."""
        return not math.isnan(value) and _OPS[self.op](value, self.limit)

    def margin(self, value: float) -> float:
        """Slack to the limit in the metric's unit: >= 0 when met, < 0 by how much it is missed."""
        if math.isnan(value):
            return float("-inf")
        return self.limit - value if self.op in ("<=", "<") else value - self.limit

    def closeness(self, value: float) -> float:
        """A key to rank values by how close they come to meeting the SLO (smaller is closer)."""
        return -self.margin(value)


def parse_slos(slos: object) -> tuple[SLO, ...]:
    """Accept SLO objects or strings (or one of either); raise :class:`SLOError` otherwise."""
    if slos is None:
        return ()
    if isinstance(slos, (str, SLO)):
        slos = [slos]
    if not isinstance(slos, (list, tuple)):
        raise SLOError(f"slos: expected a list of SLOs or strings, got {type(slos).__name__}")
    out = []
    for i, s in enumerate(slos):
        try:
            out.append(SLO.parse(s))
        except TunerError as e:
            raise SLOError(f"slos[{i}]: {e}") from None
    return tuple(out)
