"""Decisions that survive noise: the Loop's repeat policy and the repeated measurement of one
configuration.

:class:`Repeats` says how often a configuration is measured on a noisy backend and how its SLOs
are judged; :class:`Repeater` runs it: every run replays the identical workload (same arrivals,
lengths, prompts: common random numbers) through one ``backend.session(config)``, each metric
keeps every run's value, the median is the trial's value and its confidence interval comes
from :mod:`tuner.objectives` (a bootstrap over requests and runs, widened by the noise pooled
over the study's repeats, :class:`NoisePool`). A run is repeated only while the decision is
open (:func:`tuner.tuning._open.open_question`); a deterministic backend is never repeated.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from tuner.core import Measurement, Settings, SLOResult, Trial
from tuner.objectives import (
    SLO,
    AbortRule,
    Rule,
    combined_interval,
    constant_replicates,
    judge_values,
    median_of,
    metric_samples,
    pooled_log_sd,
    run_replicates,
)
from tuner.tuning._futility import (
    Reach,
    outlook,
)

Interval = tuple[float, float]


class Repeats(Settings):
    """How often the Loop measures a configuration on a noisy backend, and how it judges SLOs.

    A configuration is measured ``min`` times, then again (up to ``max``) only while its
    decision is open: an SLO limit inside the metric's confidence interval, or an objective
    interval that overlaps the incumbent's -- and only while ``max`` runs could still settle
    it (futility: :func:`open_question`). Clear winners and clear losers are not repeated.
    A deterministic backend (``Backend.deterministic``: the simulator, replay) is measured once
    whatever this says; its intervals have zero width.

    Example:
        >>> Repeats(max=3).rule, Repeats(rule="single").max
        ('confident', 1)
    """

    _owner = "Repeats"

    min: int = Field(default=1, ge=1, le=1000)
    """Runs of every configuration on a noisy backend before the policy may stop."""
    max: int = Field(default=5, ge=1, le=1000)
    """Most runs of one configuration (of one capacity probe)."""
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    """Confidence level of every metric's interval (``trial.intervals``)."""
    rule: Rule = "confident"
    """How the runs decide an SLO: ``confident`` -- the interval's unfavourable end meets the
    limit; ``median`` -- the median meets it (vLLM recipes' rule); ``single`` -- one run,
    never repeated (the behaviour without repeats)."""

    @model_validator(mode="before")
    @classmethod
    def _single_runs_once(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rule") == "single":
            data = {"min": 1, "max": 1, **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> Repeats:
        if self.min > self.max:
            raise ValueError(
                f"min ({self.min}) is more than max ({self.max}): give min <= max "
                f"(e.g. min={self.min}, max={self.min})"
            )
        if self.rule == "single" and self.max > 1:
            raise ValueError(
                f"rule 'single' measures each configuration once, but max = {self.max}: "
                "give rule 'median' or 'confident' to repeat"
            )
        return self


class NoisePool:
    """Every configuration's repeats, per metric: the run-to-run noise pooled over the study.

    Example:
        >>> pool = NoisePool()
        >>> pool.add({"x": (100.0, 110.0)}); pool.add({"x": (50.0,)})
        >>> round(pool.estimate("x")[0], 3), pool.estimate("x")[1]
        (0.067, 1)
    """

    def __init__(self, trials: Iterable[Trial] = ()) -> None:
        self._groups: dict[str, list[tuple[float, ...]]] = {}
        for t in trials:
            self.add(t.repeat_values)

    def add(self, repeat_values: dict[str, tuple[float, ...]]) -> None:
        """Add one configuration's runs (single runs add nothing)."""
        for k, v in repeat_values.items():
            if len(v) >= 2:
                self._groups.setdefault(k, []).append(tuple(v))

    def estimate(self, metric: str, current: Sequence[float] = ()) -> tuple[float, int]:
        """``(log_sd, df)`` for ``metric``, counting ``current`` runs too."""
        groups = [*self._groups.get(metric, []), tuple(current)]
        return pooled_log_sd(groups)


@dataclass
class Runs:
    """The runs of one configuration on one workload so far, and what they add up to."""

    measurements: list[Measurement] = field(default_factory=list)
    values: list[dict[str, float]] = field(default_factory=list)
    replicates: dict[str, list[npt.NDArray[np.float64]]] = field(default_factory=dict)
    cost: float = 0.0
    medians: dict[str, float] = field(default_factory=dict)
    repeat_values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.measurements)

    @property
    def aborted(self) -> str | None:
        """The abort reason of the run that stopped early (None when none did)."""
        return next((m.aborted for m in self.measurements if m.aborted), None)

    def representative(self, metric: str | None) -> Measurement:
        """The run whose ``metric`` is closest to the median (the earliest of equals)."""
        if metric is None or metric not in self.medians or math.isnan(self.medians[metric]):
            return self.measurements[0]
        mid = self.medians[metric]
        gaps = [abs(v.get(metric, math.nan) - mid) for v in self.values]
        best = min(range(self.n), key=lambda i: (math.inf if math.isnan(gaps[i]) else gaps[i], i))
        return self.measurements[best]


def _seed(metric: str) -> int:
    return zlib.crc32(metric.encode())


class Repeater:
    """Measures one configuration as a :class:`Repeats` policy says.

    Args:
        repeats: The policy.
        deterministic: Whether the backend always gives the same measurement (then one run).
        values_of: The recorded metrics of one measurement.
        slos: The SLOs (their applicability is checked on the first run).
        noise: The study's pooled run-to-run noise.
    """

    def __init__(
        self,
        repeats: Repeats,
        deterministic: bool,
        values_of: Callable[[Measurement], dict[str, float]],
        slos: Sequence[SLO],
        noise: NoisePool,
    ) -> None:
        self.repeats = repeats
        self.deterministic = deterministic
        self.values_of = values_of
        self.slos = slos
        self.noise = noise

    def run(
        self,
        measure: Callable[[Any], Measurement],
        work: Any,
        is_open: Callable[[Runs], str | None],
    ) -> Runs:
        """Measure ``work`` with ``measure`` until the policy stops; raises what ``measure``
        raises, and :class:`InvalidMeasurement` for a return value that cannot be judged."""
        runs = Runs()
        limit = 1 if self.deterministic else self.repeats.max
        redo = limit  # measurement hygiene: runs a lagging load client may be given again
        while True:
            m = measure(work)
            problem = invalid_measurement(m)
            if problem:
                raise InvalidMeasurement(problem)
            if redo and not trusted(m):
                redo -= 1
                runs.cost += float(m.total_steps) if m.has_steps else m.duration
                continue
            if not runs.measurements:
                for slo in self.slos:  # a user error (wrong unit, a metric it lacks): stop now
                    slo.check_applicable(m)
            self._add(runs, m)
            if m.aborted or runs.n >= limit:
                break
            if runs.n >= self.repeats.min and is_open(runs) is None:
                break
        if runs.n >= 2:
            self.noise.add(runs.repeat_values)
        return runs

    def _add(self, runs: Runs, m: Measurement) -> None:
        values = self.values_of(m)
        runs.measurements.append(m)
        runs.values.append(values)
        runs.cost += float(m.total_steps) if m.has_steps else m.duration
        names = list(dict.fromkeys(k for v in runs.values for k in v))
        runs.repeat_values = {k: tuple(v.get(k, math.nan) for v in runs.values) for k in names}
        runs.medians = {k: median_of(v) for k, v in runs.repeat_values.items()}
        if self.deterministic:
            runs.intervals = {k: (v, v) for k, v in runs.medians.items()}
            return
        i = runs.n - 1
        for k in names:
            if math.isnan(values.get(k, math.nan)):
                rows = constant_replicates(math.nan)
            else:
                samples = metric_samples(m, k)
                stat = k.partition(".")[2]
                rows = (
                    constant_replicates(values[k])
                    if samples is None
                    else run_replicates(samples, stat, seed=_seed(k) + 7919 * i)
                )
            runs.replicates.setdefault(k, []).append(rows)
        runs.intervals = {k: self._interval(runs, k) for k in names}

    def _interval(self, runs: Runs, metric: str) -> Interval:
        vals = runs.repeat_values[metric]
        if math.isnan(runs.medians[metric]):
            return (math.nan, math.nan)
        s, df = self.noise.estimate(metric, vals)
        return combined_interval(
            vals, runs.replicates[metric], s, df, self.repeats.confidence, _seed(metric)
        )

    def outlook(self, runs: Runs, metric: str) -> tuple[Interval, Reach] | None:
        """What ``max`` runs could show of ``metric``, with the noise known now: where the
        median after ``max`` runs may lie (the prediction interval, at the policy's confidence,
        of the median of the runs so far and the ones still to come: ``median * exp(+-t * s *
        sqrt((max - n) / (max * n)))``, Student's t with the pooled noise's degrees of freedom;
        each end a one-sided bound at the policy's confidence, as each question asks whether
        the median can move one way)
        and the interval's reach then (:data:`Reach`: the run-to-run part at ``max`` runs with
        the degrees of freedom those runs add, and this configuration's within-run part, which
        more runs of the same requests do not shrink). None when nothing can be projected (no
        noise known yet, or a value <= 0: no relative scale)."""
        pairs = [
            (v, r)
            for v, r in zip(runs.repeat_values[metric], runs.replicates[metric], strict=True)
            if math.isfinite(v)
        ]
        if not pairs or any(v <= 0 for v, _ in pairs):
            return None
        if self.deterministic:
            m = runs.medians[metric]
            return (m, m), (0.0, 0.0)
        s, df = self.noise.estimate(metric, runs.repeat_values[metric])
        if df < 1:
            return None
        return outlook(
            [v for v, _ in pairs],
            [r for _, r in pairs],
            s,
            df,
            self.repeats.confidence,
            max(self.repeats.max, runs.n),
        )

    def noise_known(self, runs: Runs, metric: str) -> bool:
        """Whether anything is known of ``metric``'s run-to-run noise (own or pooled)."""
        return (
            self.deterministic
            or self.noise.estimate(metric, runs.repeat_values.get(metric, ()))[1] >= 1
        )


def trusted(m: Measurement) -> bool:
    """Whether a run may decide: not one whose live load client lagged beyond its threshold
    (``Measurement.client``; an aborted run stands). A lagged run is measured again, up to
    ``max`` more times per configuration; after that the lagged run is used, flagged."""
    return m.aborted is not None or m.client is None or m.client.trusted


class InvalidMeasurement(Exception):
    """A backend's return value that cannot be judged (its trial fails)."""


def invalid_measurement(m: object) -> str:
    """Why a backend's return value cannot be judged ('' when it can)."""
    if not isinstance(m, Measurement):
        return f"the backend returned {type(m).__name__}, not a Measurement"
    if not (m.duration > 0 and math.isfinite(m.duration)):
        return f"duration = {m.duration!r} (must be a finite number > 0)"
    return ""


def verdict(
    slos: Sequence[SLO], runs: Runs, rule: Rule, abort: AbortRule | None
) -> tuple[tuple[SLOResult, ...], str | None]:
    """Each SLO's verdict on the runs (by ``rule``) and the abort reason of a run stopped
    early (the SLO it names is then lost, whatever the partial values say)."""
    results = judge_values(slos, runs.medians, runs.intervals, rule)
    reason = runs.aborted
    if reason is None:
        return results, None
    lost = abort.lost_slo(reason) if abort is not None else None
    out = []
    for slo, r in zip(slos, results, strict=True):
        if lost is not None and slo.text == lost.text:
            r = SLOResult(slo=r.slo, value=math.nan, limit=r.limit, ok=False, margin=-math.inf)
        out.append(r)
    return tuple(out), reason


def saved(work: Any, m: Measurement) -> float:
    """The part of the workload's arrival schedule an aborted run never reached."""
    arrival = np.asarray(work.arrival, dtype=np.float64)
    if not len(arrival):
        return 0.0
    return max(0.0, float(arrival.max()) - (float(arrival.min()) + m.duration))


__all__ = [
    "InvalidMeasurement",
    "NoisePool",
    "Repeater",
    "Repeats",
    "Runs",
    "invalid_measurement",
    "saved",
    "verdict",
]
