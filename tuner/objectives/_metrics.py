"""Metrics: named figures extracted from a :class:`Measurement`, once, for every backend.

A metric reference is ``name`` for an engine-level figure (``max_step_tokens``,
``output_throughput``) or ``name.stat`` for a distribution (``ttft.p99``, ``ttft_steps.max``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tuner.core import BackendError, Measurement, SLOError
from tuner.objectives._goodput import CRITERIA, request_goodput
from tuner.objectives._stats import STATISTICS, check_statistic, statistic

Kind = Literal["time", "steps", "tokens", "count", "rate", "cost", "fraction"]

KIND_NOUNS: dict[str, str] = {
    "time": "a latency",
    "steps": "a number of steps",
    "tokens": "a number of tokens",
    "count": "a count",
    "rate": "a throughput",
    "cost": "a price",
    "fraction": "a fraction",
}
"""How error messages name a metric of each kind."""

#: Figures of a capacity search (``tuner.objectives._capacity``), not of one measurement.
CAPACITY_KINDS: dict[str, Kind] = {
    "capacity": "rate",
    "throughput_per_gpu": "rate",
    "cost_per_million_tokens": "cost",
}


@dataclass(frozen=True)
class _Distribution:
    kind: Kind
    doc: str
    samples: Callable[[Measurement], tuple[np.ndarray, np.ndarray | None]]
    needs_steps: bool = False
    nonnegative: bool = True


@dataclass(frozen=True)
class _Scalar:
    kind: Kind
    doc: str
    value: Callable[[Measurement], float]
    needs_steps: bool = False
    nonnegative: bool = True


def _steps_field(m: Measurement) -> np.ndarray:
    m._steps()  # raises the "no step record" error for backends that saw no steps
    if m.ttft_steps is None:  # a live server's log does not say which step served whom
        raise BackendError(
            f"{m.source} did not record which step emitted each first token; "
            "ttft_steps is not available (use ttft in seconds)"
        )
    return np.asarray(m.ttft_steps, dtype=np.float64)


def _cached_tokens(m: Measurement) -> np.ndarray:
    if m.cached_tokens is None:
        raise BackendError(
            f"{m.source} did not record the prompt tokens each request found in the prefix "
            "cache; prefix_cache_hit_rate and prefix_cache_hit_requests are not available"
        )
    return np.asarray(m.cached_tokens)


def prefix_cache_hit_rate(m: Measurement) -> float:
    """The fraction of all prompt tokens served from the prefix cache (vLLM's
    ``num_cached_tokens`` summed over requests, over their prompt tokens)."""
    total = int(np.sum(m.prompt_tokens))
    return float(np.sum(_cached_tokens(m)) / total) if total else 0.0


def prefix_cache_hit_requests(m: Measurement) -> float:
    """The fraction of requests that found any of their prompt in the prefix cache."""
    cached = _cached_tokens(m)
    return float(np.mean(cached > 0)) if len(cached) else 0.0


DISTRIBUTIONS: dict[str, _Distribution] = {
    "ttft": _Distribution("time", "time to first token, from arrival", lambda m: (m.ttft, None)),
    "tpot": _Distribution(
        "time",
        "time per output token after the first (requests with > 1 token)",
        lambda m: (m.tpot, None),
    ),
    "itl": _Distribution(
        "time",
        "inter-token latency samples of all requests",
        lambda m: (m.itl_values, m.itl_counts),
    ),
    "e2e": _Distribution("time", "end-to-end latency, from arrival", lambda m: (m.e2e, None)),
    "ttft_steps": _Distribution(
        "steps",
        "steps from the first step that could see a request to its first token",
        lambda m: (_steps_field(m), None),
        needs_steps=True,
    ),
}

SCALARS: dict[str, _Scalar] = {
    "max_step_tokens": _Scalar(
        "tokens",
        "most tokens scheduled in one step (the ITL-spike proxy)",
        lambda m: float(m.max_step_tokens),
        needs_steps=True,
    ),
    "total_steps": _Scalar(
        "count",
        "steps that scheduled any token",
        lambda m: float(m.total_steps),
        needs_steps=True,
    ),
    "mean_step_tokens": _Scalar(
        "tokens",
        "mean tokens per executed step",
        lambda m: float(np.mean(m._steps())) if m.total_steps else 0.0,
        needs_steps=True,
    ),
    "duration": _Scalar("time", "first arrival to last token", lambda m: m.duration),
    "output_throughput": _Scalar(
        "rate", "output tokens per time unit", lambda m: m.output_throughput
    ),
    "request_throughput": _Scalar(
        "rate", "completed requests per time unit", lambda m: m.request_throughput
    ),
    "total_token_throughput": _Scalar(
        "rate", "prompt + output tokens per time unit", lambda m: m.total_token_throughput
    ),
    "preemptions": _Scalar("count", "preemptions (recompute)", lambda m: float(m.preemptions)),
    "failed_requests": _Scalar(
        "count", "requests that errored", lambda m: float(m.failed_requests)
    ),
    "prefix_cache_hit_rate": _Scalar(
        "fraction",
        "fraction of prompt tokens served from the prefix cache (vLLM's num_cached_tokens)",
        prefix_cache_hit_rate,
    ),
    "prefix_cache_hit_requests": _Scalar(
        "fraction",
        "fraction of requests with any prefix-cache hit",
        prefix_cache_hit_requests,
    ),
}


def metric_names() -> list[str]:
    """Every metric reference pattern, for error messages and help."""
    return [
        *(f"{n}.<stat>" for n in DISTRIBUTIONS),
        *SCALARS,
        *CAPACITY_KINDS,
        "goodput(ttft:<limit>,tpot:<limit>,e2e:<limit>)",
    ]


@dataclass(frozen=True)
class MetricRef:
    """A parsed metric reference: ``ttft.p99``, ``max_step_tokens``, or
    ``goodput(ttft:200ms,tpot:50ms)`` (requests meeting every limit per time unit)."""

    name: str
    stat: str | None = None
    limits: tuple[tuple[str, float, str | None], ...] = ()
    """For goodput: (criterion, limit in seconds or the measurement's unit, unit written)."""

    @classmethod
    def parse(cls, text: str) -> MetricRef:
        """Parse a metric reference; raises :class:`SLOError` listing what is allowed."""
        if not isinstance(text, str) or not text.strip():
            raise SLOError(f"metric {text!r}: expected a name like 'ttft.p99'")
        text = text.strip()
        if text.startswith("goodput"):
            return cls._parse_goodput(text)
        name, _, stat = text.partition(".")
        if name in CAPACITY_KINDS and not stat:
            return cls(name)
        if name in SCALARS:
            if stat:
                raise SLOError(f"metric {text!r}: {name} is a single figure and takes no statistic")
            return cls(name)
        if name in DISTRIBUTIONS:
            if not stat:
                raise SLOError(
                    f"metric {text!r}: {name} is a distribution; add a statistic, e.g. "
                    f"{name}.p99 (allowed: {', '.join(STATISTICS)})"
                )
            check_statistic(stat)
            return cls(name, stat)
        raise SLOError(f"unknown metric {name!r} in {text!r}; allowed: {', '.join(metric_names())}")

    @classmethod
    def _parse_goodput(cls, text: str) -> MetricRef:
        m = _GOODPUT.match(text)
        if not m:
            raise SLOError(
                f"metric {text!r}: write goodput with its per-request limits, e.g. "
                "goodput(ttft:200ms,tpot:50ms,e2e:5s)"
            )
        limits: dict[str, tuple[float, str | None]] = {}
        for part in m["args"].split(","):
            key, sep, value = part.strip().partition(":")
            key = {"e2el": "e2e"}.get(key.strip(), key.strip())
            if key not in CRITERIA or not sep:
                raise SLOError(
                    f"metric {text!r}: goodput limit {part.strip()!r}; allowed criteria: "
                    f"{', '.join(CRITERIA)} as 'name:value[unit]'"
                )
            if key in limits:
                raise SLOError(f"metric {text!r}: {key} is limited twice")
            v = _LIMIT.match(value.strip())
            if not v or (v["unit"] and v["unit"] not in TIME_UNITS):
                raise SLOError(
                    f"metric {text!r}: limit {value.strip()!r} for {key}; expected a number "
                    f"with an optional unit ({', '.join(TIME_UNITS)})"
                )
            unit = v["unit"] or None
            limits[key] = (float(v["num"]) * (TIME_UNITS[unit] if unit else 1.0), unit)
        return cls("goodput", None, tuple((k, *limits[k]) for k in CRITERIA if k in limits))

    @property
    def is_capacity(self) -> bool:
        """Whether this is a figure of a capacity search (the Loop computes it from the load
        points of a trial, not from one measurement)."""
        return self.name in CAPACITY_KINDS

    @property
    def kind(self) -> Kind:
        if self.name in CAPACITY_KINDS:
            return CAPACITY_KINDS[self.name]
        if self.name == "goodput":
            return "rate"
        return (SCALARS[self.name] if self.stat is None else DISTRIBUTIONS[self.name]).kind

    @property
    def needs_steps(self) -> bool:
        if self.name == "goodput" or self.name in CAPACITY_KINDS:
            return False
        spec = SCALARS[self.name] if self.stat is None else DISTRIBUTIONS[self.name]
        return spec.needs_steps

    @property
    def nonnegative(self) -> bool:
        """Whether the metric can never be below 0 (every latency, count and throughput, and
        every statistic of them), so a negative limit on it is a mistake."""
        if self.name == "goodput" or self.name in CAPACITY_KINDS:
            return True
        spec = SCALARS[self.name] if self.stat is None else DISTRIBUTIONS[self.name]
        return spec.nonnegative

    @property
    def time_units(self) -> tuple[str, ...]:
        """The time units written inside this reference (goodput limits)."""
        return tuple(u for _, _, u in self.limits if u is not None)

    def value(self, m: Measurement) -> float:
        """This metric's value on a measurement (in the measurement's time unit)."""
        if self.name in CAPACITY_KINDS:
            raise SLOError(
                f"{self.name} comes from a search over the offered load (a capacity objective), "
                "not from one measurement"
            )
        if self.name == "goodput":
            kw = {f"{k}_max": v for k, v, _ in self.limits}
            return request_goodput(m, **kw)
        if self.stat is None:
            return SCALARS[self.name].value(m)
        values, counts = DISTRIBUTIONS[self.name].samples(m)
        return statistic(values, self.stat, counts)

    def __str__(self) -> str:
        if self.name == "goodput":
            parts = [
                f"{k}:{v / TIME_UNITS[u]:g}{u}" if u else f"{k}:{v:g}" for k, v, u in self.limits
            ]
            return f"goodput({','.join(parts)})"
        return self.name if self.stat is None else f"{self.name}.{self.stat}"


_GOODPUT = re.compile(r"^goodput\((?P<args>[^()]+)\)$")
_LIMIT = re.compile(r"^(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>[a-z]*)$")
TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def metric_value(m: Measurement, metric: str) -> float:
    """The value of a metric reference on a measurement, e.g. ``metric_value(m, "ttft.p99")``."""
    return MetricRef.parse(metric).value(m)
