"""The one error tree of tuner.

Every error tuner raises on purpose is a :class:`TunerError`. Input errors are also
:class:`ValueError` so that code written against plain Python conventions still catches them.

    TunerError
    ├── ConfigError        (also ValueError)  a ServingConfig / SearchSpace / spec is invalid
    ├── WorkloadError      (also ValueError)  a request, workload or trace file is invalid
    ├── SLOError           (also ValueError)  an SLO or objective cannot be parsed or applied
    ├── SearchError                           a search strategy was misused
    ├── BackendError                          a backend could not produce a measurement
    │   ├── ConfigRefused      (also ValueError)  the config cannot serve this workload
    │   ├── ServerStartError                  a live server would not start or become healthy
    │   └── TrialTimeout                      a trial ran past its time limit
    └── InfeasibleError                       no evaluated configuration met every SLO
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class TunerError(Exception):
    """Root of every error tuner raises on purpose."""


class ConfigError(TunerError, ValueError):
    """A serving configuration, search space or study spec is invalid."""


class WorkloadError(TunerError, ValueError):
    """A request, a workload or a trace file is invalid."""


class SLOError(TunerError, ValueError):
    """An SLO or an objective cannot be parsed, or names an unknown metric."""


class SearchError(TunerError):
    """A search strategy was misused (for example told about a trial it never proposed)."""


class BackendError(TunerError):
    """A backend could not produce a measurement for a configuration."""


class ConfigRefused(BackendError, ValueError):
    """The configuration cannot serve this workload (a request exceeds its ``max_model_len``):
    that trial fails, the search goes on."""


class ServerStartError(BackendError):
    """A live server refused the configuration, died, or never became healthy."""


class TrialTimeout(BackendError):
    """A trial ran past its time limit."""


@dataclass(frozen=True)
class SLOShortfall:
    """How close the search came to meeting one SLO.

    Attributes:
        slo: The SLO's text, e.g. ``"ttft_steps.max <= 4"``.
        limit: The SLO's limit in the metric's base unit.
        best_value: The best value any successful trial reached (``None`` if none succeeded).
        closest_config: The configuration that reached ``best_value`` (a ``ServingConfig``).
        satisfied_by: How many successful trials met this SLO on its own.
    """

    slo: str
    limit: float
    best_value: float | None
    closest_config: Any
    satisfied_by: int


class InfeasibleError(TunerError):
    """No evaluated configuration met every SLO: the tuner refuses to return a violation.

    Attributes:
        shortfalls: One :class:`SLOShortfall` per SLO, in the order the SLOs were given.
        trials: Every trial that was run (feasible ones do not exist, by definition).
    """

    def __init__(
        self, shortfalls: Sequence[SLOShortfall], trials: Sequence[Any] = (), note: str = ""
    ) -> None:
        self.shortfalls = tuple(shortfalls)
        self.trials = tuple(trials)
        self.note = note
        super().__init__(self._message())

    def _message(self) -> str:
        n_ok = sum(1 for t in self.trials if getattr(t, "ok", False))
        lines = [
            f"no configuration meets every SLO ({len(self.trials)} trials, "
            f"{n_ok} measured successfully); refusing to return a violating config:"
        ]
        if self.note:
            lines.insert(0, self.note + ".")
        for s in self.shortfalls:
            if s.best_value is None:
                lines.append(f"  - {s.slo}: no successful trial measured it")
                continue
            cfg = s.closest_config
            # Only the knobs that differ from vLLM's defaults, to keep the line readable.
            desc = cfg.describe(type(cfg)()) if hasattr(cfg, "describe") else repr(cfg)
            lines.append(
                f"  - {s.slo}: best reached {s.best_value:g} (limit {s.limit:g}; "
                f"met by {s.satisfied_by} trial(s) alone) with {desc}"
            )
        failed = len(self.trials) - n_ok
        if failed:
            lines.append(f"  ({failed} trial(s) failed; see their reasons in the trial records)")
        return "\n".join(lines)
