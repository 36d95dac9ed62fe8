"""The report's view of a calibration: the terms it chose and why, the request path, and how
well it predicts runs it was not fitted on (before and after), with a warning when it does
worse than no calibration."""

from __future__ import annotations

from tuner.backends.simulator import Calibration
from tuner.report._document import Block, Heading, Para, Table


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _tau(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def calibration_blocks(c: Calibration | None) -> list[Block]:
    """The calibration section (nothing without a calibration)."""
    if c is None:
        return []
    tried = ", ".join(f"{k} {_pct(v)}" for k, v in c.candidate_errors.items())
    p = c.request_path
    out: list[Block] = [
        Heading("Calibration checked on held-out runs", level=3),
        Para(
            f"Cost-model terms: {', '.join(c.terms)}, chosen by the step-time error on steps "
            f"left out of the fit ({_pct(c.held_out_step_error)}"
            + (f"; by term set: {tried}" if tried else "")
            + "). Request path: "
            f"{1000 * p.arrival_fixed:.2f} ms + {1e6 * p.arrival_per_prompt_token:.2f} us per "
            f"prompt token on the way in, {1000 * p.delivery:.2f} ms per token on the way out."
        ),
    ]
    h = c.held_out
    if h is None:
        out.append(Para("Not checked on held-out runs (a single configuration was measured)."))
        return out
    rows = [[m, _pct(h.before.get(m)), _pct(h.after.get(m))] for m in h.after]
    rows += [
        [f"Kendall tau, {m}", _tau(h.tau_before.get(m)), _tau(h.tau_after.get(m))]
        for m in h.tau_after
    ]
    out += [
        Para(
            f"Mean absolute error on {h.runs} held-out run(s) (each configuration predicted by "
            f"a fit of the others), against the uncalibrated model ({h.baseline}); Kendall tau "
            "of the configurations' order by each metric (1 = the same order as measured)."
        ),
        Table(["metric", "uncalibrated", "calibrated"], rows),
    ]
    if h.worse:
        out.append(
            Para(
                "The calibration predicts the held-out runs worse than the uncalibrated model: "
                "it was not applied (the shortlist was not re-run with it). Measure more varied "
                "configurations, or longer runs, before relying on it.",
                strong=True,
            )
        )
    return out
