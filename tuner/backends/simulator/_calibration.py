"""Calibration: fit a :class:`CostModel` to measured step times by non-negative least squares."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import Field

from tuner.backends._cost import CostModel
from tuner.core import BackendError, ConfigError, FrozenModel, Measurement

TERMS = ("fixed", "per_prefill_token", "per_decode_token", "per_sequence")


class Calibration(FrozenModel):
    """A fitted cost model and how well it explains the steps it was fitted on."""

    cost_model: CostModel
    """The fitted model (seconds)."""
    steps: int = Field(ge=1)
    """How many measured steps it was fitted on."""
    r2: float
    """Fraction of the variance of step times explained (1 = perfect)."""
    mean_abs_rel_error: float = Field(ge=0)
    """Mean |predicted - measured| / measured over the steps."""
    source: str = ""
    """Where the steps came from."""
    max_seqs: int | None = Field(default=None, ge=1)
    """The widest batch (sequences in one step) among the fitted steps. Wider batches rely on
    the per-sequence cost extrapolated beyond what was measured: steps that all run a few
    sequences cannot tell what a sequence costs (None: not recorded, an older file)."""

    def extrapolates(self, max_num_seqs: int) -> bool:
        """Whether a configuration allowing ``max_num_seqs`` sequences could run batches wider
        than any step this was fitted on."""
        return self.max_seqs is not None and max_num_seqs > self.max_seqs

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
        return cls(**data)


def nonnegative_least_squares(
    x: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], float]:
    """Minimise ``|x @ c - y|`` subject to ``c >= 0`` (exactly, by trying every active set --
    fine for the four terms of a cost model). Returns the coefficients and the residual norm."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    best: tuple[npt.NDArray[np.float64], float] | None = None
    k = a.shape[1]
    for size in range(1, k + 1):
        for cols in itertools.combinations(range(k), size):
            sub = a[:, cols]
            coef, *_ = np.linalg.lstsq(sub, b, rcond=None)
            if (coef < 0).any():
                continue
            full = np.zeros(k)
            full[list(cols)] = coef
            res = float(np.linalg.norm(a @ full - b))
            if best is None or res < best[1] - 1e-15:
                best = (full, res)
    if best is None:  # pragma: no cover - the single-column fits cannot all be negative
        return np.zeros(k), float(np.linalg.norm(b))
    return best


def step_overhead(start: npt.ArrayLike, end: npt.ArrayLike) -> float:
    """The median time between a step's end and the next step's start (0 if none)."""
    s = np.asarray(start, dtype=np.float64)
    e = np.asarray(end, dtype=np.float64)
    if len(s) < 2:
        return 0.0
    gaps = s[1:] - e[:-1]
    gaps = gaps[gaps >= 0]
    return float(np.median(gaps)) if len(gaps) else 0.0


def fit_cost_model(measurements: Sequence[Measurement], source: str = "") -> Calibration:
    """Fit ``fixed + per_prefill_token x prefill + per_decode_token x decode + per_sequence x
    seqs`` to the step times of measurements that recorded them (a live server's step log).

    A live server logs each step's model time (``step_end - step_start``), which leaves out
    the scheduling and output handling between steps; the next step starts that much later.
    That per-step overhead is taken as the median gap between one step's end and the next
    one's start (robust to the idle gaps of a lightly loaded server) and added to every step,
    so the fitted model predicts the full period of a busy engine. (A simulator's steps are
    back to back: the overhead is 0 and the fit is exact.)

    Raises:
        BackendError: no measurement carries per-step times and token counts.
    """
    rows: list[npt.NDArray[np.float64]] = []
    times: list[npt.NDArray[np.float64]] = []
    for m in measurements:
        if m.step_start is None or m.step_end is None or m.step_tokens is None:
            continue
        if m.step_prefill_tokens is None or m.step_seqs is None:
            continue
        prefill = m.step_prefill_tokens.astype(np.float64)
        decode = m.step_tokens.astype(np.float64) - prefill
        rows.append(
            np.column_stack(
                [np.ones(len(prefill)), prefill, decode, m.step_seqs.astype(np.float64)]
            )
        )
        times.append(m.step_end - m.step_start + step_overhead(m.step_start, m.step_end))
    if not rows:
        raise BackendError(
            "calibration needs measurements with per-step times and prefill/decode tokens "
            "(a live server's iteration log); none was given"
        )
    x, y = np.vstack(rows), np.concatenate(times)
    max_seqs = int(x[:, 3].max()) if len(x) else None
    coef, _ = nonnegative_least_squares(x, y)
    pred = x @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    rel = float(np.mean(np.abs(pred - y) / np.maximum(y, 1e-12)))
    if coef.sum() <= 0:
        raise BackendError("calibration: the measured step times fit no positive cost model")
    model = CostModel(**dict(zip(TERMS, map(float, coef), strict=True)), time_unit="s")
    return Calibration(
        cost_model=model,
        steps=len(y),
        r2=r2,
        mean_abs_rel_error=rel,
        source=source,
        max_seqs=max_seqs,
    )
