"""Calibration: fit a :class:`CostModel` to measured step times by non-negative least squares,
choosing its terms by held-out error, and the :class:`RequestPath` from the client's times."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import Field

from tuner.backends._cost import CostModel
from tuner.backends._request_path import RequestPath
from tuner.backends.simulator._attribution import (
    Steps,
    decode_context_per_step,
    delivery_delay,
    fit_request_path,
    prefill_pairs_per_step,
    steps_of,
)
from tuner.backends.simulator._held_out import HeldOut
from tuner.backends.simulator._nnls import nonnegative_least_squares
from tuner.core import BackendError, ConfigError, FrozenModel, Measurement

TERMS = ("fixed", "per_prefill_token", "per_decode_token", "per_sequence")
ATTENTION = ("per_decode_context_token", "per_prefill_context_pair")
ALL_TERMS = TERMS + ATTENTION
#: The term sets tried, by held-out error: the four counts, then with each attention term.
CANDIDATES: tuple[tuple[str, ...], ...] = (
    TERMS,
    (*TERMS, "per_decode_context_token"),
    (*TERMS, "per_prefill_context_pair"),
    ALL_TERMS,
)
#: A bigger term set must beat a smaller one's held-out step error by this much (relative).
MIN_GAIN = 0.01


class Calibration(FrozenModel):
    """A fitted cost model and request path, and how well they predict what they were not
    fitted on."""

    cost_model: CostModel
    """The fitted model (seconds)."""
    steps: int = Field(ge=1)
    """How many measured steps it was fitted on."""
    r2: float
    """Fraction of the variance of step times explained, in sample (1 = perfect)."""
    mean_abs_rel_error: float = Field(ge=0)
    """Mean |predicted - measured| / measured over the steps, in sample."""
    source: str = ""
    """Where the steps came from."""
    max_seqs: int | None = Field(default=None, ge=1)
    """The widest batch (sequences in one step) among the fitted steps. Wider batches rely on
    the per-sequence cost extrapolated beyond what was measured: steps that all run a few
    sequences cannot tell what a sequence costs (None: not recorded, an older file)."""
    terms: tuple[str, ...] = TERMS
    """The cost-model terms fitted (chosen by held-out step error among :data:`CANDIDATES`)."""
    held_out_step_error: float | None = Field(default=None, ge=0)
    """Mean |predicted - measured| / measured step time on steps left out of the fit
    (cross-validated: one run out at a time, or five blocks of one run's steps)."""
    candidate_errors: dict[str, float] = Field(default_factory=dict)
    """That held-out error for every term set tried (keyed by the terms added to the four)."""
    request_path: RequestPath = RequestPath()
    """The time outside the engine's steps (inbound, delivery), fitted from the client's times."""
    held_out: HeldOut | None = None
    """How well the calibrated simulator predicts whole runs left out of the fit, against the
    uncalibrated one (None: not checked)."""

    def extrapolates(self, max_num_seqs: int) -> bool:
        """Whether a configuration allowing ``max_num_seqs`` sequences could run batches wider
        than any step this was fitted on."""
        return self.max_seqs is not None and max_num_seqs > self.max_seqs

    @property
    def usable(self) -> bool:
        """False when held-out runs were predicted worse than without it (then it should not be
        applied silently); True when it helped or was not checked."""
        return self.held_out is None or not self.held_out.worse

    def save(self, path: str | Path) -> Path:
        """Write this calibration as JSON (reload it with :meth:`load`)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"calibration {path}: cannot read it: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"calibration {path}: expected a JSON object, got {type(data).__name__}"
            )
        return cls(**data)


def step_overhead(start: npt.ArrayLike, end: npt.ArrayLike) -> float:
    """The median time between a step's end and the next step's start (0 if none)."""
    s = np.asarray(start, dtype=np.float64)
    e = np.asarray(end, dtype=np.float64)
    if len(s) < 2:
        return 0.0
    gaps = s[1:] - e[:-1]
    gaps = gaps[gaps >= 0]
    return float(np.median(gaps)) if len(gaps) else 0.0


def step_features(m: Measurement) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The columns of :data:`ALL_TERMS` for each logged step of ``m``, and its period (model
    time plus the median overhead between steps). The attention columns are attributed from
    the client's times (:mod:`._attribution`)."""
    steps = steps_of(m)
    if steps is None:
        raise BackendError(f"{m.source}: no per-step times and token counts")
    x = np.column_stack(
        [
            np.ones(len(steps.prefill)),
            steps.prefill.astype(np.float64),
            steps.decode,
            steps.seqs.astype(np.float64),
            decode_context_per_step(m, steps, delivery_delay(m, steps)),
            prefill_pairs_per_step(m, steps),
        ]
    )
    return x, step_periods(m, steps)


def step_periods(m: Measurement, steps: Steps) -> npt.NDArray[np.float64]:
    """How long each step held the engine: from its start to the next one's while the engine
    had work (a request still unfinished, by the client's times, when the next step began), so
    the scheduling, output handling and any CPU contention between steps count; otherwise
    (idle after it, or the last step) its model time plus the median of those busy gaps."""
    start, end = steps.start, steps.end
    elapsed = end - start
    if len(start) < 2:
        return elapsed + step_overhead(start, end)
    nxt = start[1:]
    delivery = delivery_delay(m, steps)
    arrived = np.searchsorted(np.sort(m.arrival), end[:-1], side="right")
    done = np.searchsorted(np.sort(m.arrival + m.e2e - delivery), nxt, side="right")
    busy = (arrived - done >= 1) & (nxt >= end[:-1])
    gaps = (nxt - end[:-1])[busy]
    overhead = float(np.median(gaps)) if len(gaps) else step_overhead(start, end)
    period = elapsed + overhead
    period[:-1][busy] = (nxt - start[:-1])[busy]
    return period


def _fit(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    coef, _ = nonnegative_least_squares(x, y)
    return coef


def _rel_error(pred: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    return float(np.mean(np.abs(pred - y) / np.maximum(y, 1e-12)))


def _folds(groups: list[int]) -> list[npt.NDArray[np.bool_]]:
    """Held-out masks: one run at a time, or five contiguous blocks of a single run's steps."""
    g = np.asarray(groups)
    runs = np.unique(g)
    if len(runs) >= 2:
        return [g == r for r in runs]
    blocks = np.array_split(np.arange(len(g)), min(5, len(g)))
    masks = []
    for b in blocks:
        mask = np.zeros(len(g), dtype=bool)
        mask[b] = True
        masks.append(mask)
    return [m for m in masks if m.any() and not m.all()]


def cross_validated_error(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], groups: list[int], cols: list[int]
) -> float | None:
    """Mean relative step-time error of the ``cols`` fit on the steps each fold leaves out."""
    errors, counts = [], []
    for held in _folds(groups):
        coef = _fit(x[~held][:, cols], y[~held])
        errors.append(_rel_error(x[held][:, cols] @ coef, y[held]) * held.sum())
        counts.append(held.sum())
    return float(sum(errors) / sum(counts)) if counts else None


def fit_cost_model(
    measurements: Sequence[Measurement],
    source: str = "",
    *,
    candidates: Sequence[tuple[str, ...]] = CANDIDATES,
) -> Calibration:
    """Fit a cost model (``fixed + per_prefill_token x prefill + per_decode_token x decode +
    per_sequence x seqs``, with attention terms where they predict better) to the step times
    of measurements that recorded them (a live server's step log), and the request path.

    A live server logs each step's model time (``step_end - step_start``), which leaves out
    the scheduling and output handling between steps; the next step starts that much later.
    That per-step overhead is taken as the median gap between one step's end and the next
    one's start (robust to the idle gaps of a lightly loaded server) and added to every step,
    so the fitted model predicts the full period of a busy engine. (A simulator's steps are
    back to back: the overhead is 0 and the fit is exact.)

    The term set is the one of ``candidates`` with the lowest cross-validated step error (a
    larger set must beat a smaller one by :data:`MIN_GAIN`), never the best in-sample fit.

    Raises:
        BackendError: no measurement carries per-step times and token counts.
    """
    logged = [m for m in measurements if steps_of(m) is not None]
    if not logged:
        raise BackendError(
            "calibration needs measurements with per-step times and prefill/decode tokens "
            "(a live server's iteration log); none was given"
        )
    parts = [step_features(m) for m in logged]
    x = np.vstack([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    groups = [i for i, p in enumerate(parts) for _ in range(len(p[1]))]
    errors: dict[str, float] = {}
    best: tuple[float, tuple[str, ...]] | None = None
    for terms in sorted(candidates, key=len):
        cols = [ALL_TERMS.index(t) for t in terms]
        err = cross_validated_error(x, y, groups, cols)
        key = "+".join(t for t in terms if t not in TERMS) or "counts"
        if err is None:
            continue
        errors[key] = err
        if best is None or err < best[0] * (1 - MIN_GAIN):
            best = (err, tuple(terms))
    chosen = best[1] if best is not None else TERMS
    cols = [ALL_TERMS.index(t) for t in chosen]
    coef = _fit(x[:, cols], y)
    if coef.sum() <= 0:
        raise BackendError("calibration: the measured step times fit no positive cost model")
    pred = x[:, cols] @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    values = dict.fromkeys(ALL_TERMS, 0.0) | dict(zip(chosen, map(float, coef), strict=True))
    return Calibration(
        cost_model=CostModel(**values, time_unit="s"),
        steps=len(y),
        r2=r2,
        mean_abs_rel_error=_rel_error(pred, y),
        source=source,
        max_seqs=int(x[:, 3].max()),
        terms=chosen,
        held_out_step_error=best[0] if best is not None else None,
        candidate_errors=errors,
        request_path=fit_request_path(logged),
    )


__all__ = [
    "ALL_TERMS",
    "CANDIDATES",
    "TERMS",
    "Calibration",
    "fit_cost_model",
    "nonnegative_least_squares",
    "step_overhead",
]
