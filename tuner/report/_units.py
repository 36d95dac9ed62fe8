"""Units for the report's figures: every value the report shows says what it is in."""

from __future__ import annotations

import math
import re

from tuner.core import ServingConfig
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


def quantity(value: float, unit: str) -> str:
    """A value with its unit, latencies in the unit that reads best: ``0.0335, "s"`` ->
    ``33.5 ms``, ``27.91, "s"`` -> ``27.9 s``, ``12.3, "req/s"`` -> ``12.3 req/s``; ``-`` for
    NaN (no sample)."""
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return ("inf" if value > 0 else "-inf") + (f" {unit}" if unit else "")
    if unit == "s" and value != 0 and abs(value) < 1:
        return f"{value * 1e3:.3g} ms" if abs(value) >= 1e-3 else f"{value * 1e6:.3g} us"
    if unit == "s":
        return f"{value:,.0f} s" if abs(value) >= 1000 else f"{value:.3g} s"
    return f"{value:,.4g} {unit}" if unit else f"{value:,.4g}"


def knobs_text(config: ServingConfig, base: ServingConfig | None = None) -> str:
    """The knobs of ``config`` that differ from ``base``, as ``max_num_seqs=64,
    long_prefill_token_threshold=256`` (no Python repr around them); ``the base`` when none
    differ."""
    return config.describe(base).removeprefix("ServingConfig(").removesuffix(")") or "the base"


_COST = re.compile(r"CostModel\(([^()]*)\)")
_TERMS = (
    ("fixed", ""),
    ("per_prefill_token", " per prefill token"),
    ("per_decode_token", " per decode token"),
    ("per_sequence", " per sequence"),
)


def cost_text(text: str) -> str:
    """``CostModel(...)`` written out in words wherever it appears in ``text`` (a backend's
    description): ``step time 6 ms + 30 us per prefill token + 150 us per decode token``, or
    ``the unit step clock``."""

    def words(m: re.Match[str]) -> str:
        kv = dict(p.split("=", 1) for p in m[1].split(", ") if "=" in p)
        try:
            coef = {k: float(kv.get(k, "0")) for k, _ in _TERMS[1:]}
            coef["fixed"] = float(kv.get("fixed", "1"))
        except ValueError:
            return m[0]
        unit = kv.get("time_unit", "'step'").strip("'\"")
        if unit == "step" and coef["fixed"] == 1 and not any(coef[k] for k, _ in _TERMS[1:]):
            return "the unit step clock"
        t = "s" if unit == "s" else "steps"
        shown = [quantity(coef[k], t) + what for k, what in _TERMS if coef[k]]
        return "step time " + " + ".join(shown)

    return _COST.sub(words, text)
