"""Non-negative least squares, exactly, for the few terms of a cost model."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt


def nonnegative_least_squares(
    x: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], float]:
    """Minimise ``|x @ c - y|`` subject to ``c >= 0`` (exactly, by trying every active set --
    fine for the four terms of a cost model). Returns the coefficients and the residual norm."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    scale = np.abs(a).max(axis=0) if len(a) else np.ones(a.shape[1])
    scale[scale == 0] = 1.0
    a = a / scale  # columns of comparable size: context sums reach millions, ones are 1
    best: tuple[npt.NDArray[np.float64], float] | None = None
    k = a.shape[1]
    for size in range(1, k + 1):
        for cols in itertools.combinations(range(k), size):
            sub = a[:, cols]
            coef, ss, rank, _ = np.linalg.lstsq(sub, b, rcond=None)
            if (coef < 0).any():
                continue
            full = np.zeros(k)
            full[list(cols)] = coef
            if rank == len(cols) and len(ss):
                res = float(np.sqrt(max(float(ss[0]), 0.0)))
            else:  # rank-deficient: lstsq reports no residual
                res = float(np.linalg.norm(sub @ coef - b))
            if best is None or res < best[1] - 1e-15 * max(1.0, best[1]):
                best = (full, res)
    if best is None:  # pragma: no cover - the single-column fits cannot all be negative
        return np.zeros(k), float(np.linalg.norm(b))
    return best[0] / scale, best[1]
