"""Units for the report's figures: every value the report shows says what it is in."""

from __future__ import annotations

from tuner.objectives import MetricRef

#: Throughputs by what they count.
_RATES = {
    "output_throughput": "tok/{t}",
    "total_token_throughput": "tok/{t}",
    "throughput_per_gpu": "tok/{t} per GPU",
    "request_throughput": "req/{t}",
    "capacity": "req/{t}",
    "goodput": "req/{t}",
}


def unit_of(metric: str, time_unit: str = "s") -> str:
    """``ttft.p99`` -> ``s``; ``output_throughput`` -> ``tok/s``; ``capacity`` -> ``req/s``
    (``step`` for times on the unit clock); ``""`` for a bare count."""
    ref = MetricRef.parse(metric)
    t = "s" if time_unit == "s" else "step"
    if ref.kind == "time":
        return "s" if time_unit == "s" else "steps"
    if ref.kind == "steps":
        return "steps"
    if ref.kind == "tokens":
        return "tokens"
    if ref.kind == "cost":
        return "$ per 1M output tokens"
    if ref.kind == "fraction":
        return "fraction"
    if ref.kind == "rate":
        return _RATES.get(ref.name, "per {t}").format(t=t)
    return ""


def with_unit(metric: str, time_unit: str = "s") -> str:
    """A column header: ``ttft.p99 (s)``."""
    unit = unit_of(metric, time_unit)
    return f"{metric} ({unit})" if unit else metric


def headline(knobs: str, metric: str, value: float, time_unit: str = "s") -> str:
    """``max_num_batched_tokens 512, long_prefill_token_threshold 256: capacity 14.37 req/s``."""
    unit = unit_of(metric, time_unit)
    return f"{knobs}: {metric} {value:,.4g}" + (f" {unit}" if unit else "")
