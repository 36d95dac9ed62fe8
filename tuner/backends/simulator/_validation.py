"""Calibrating from whole runs and checking the result on runs it was not fitted on.

A run is a configuration, a workload and what the live server measured on them. The check
simulates every held-out run twice -- with the uncalibrated cost model and with the
calibration (its cost model and request path) -- and scores both against the measurement
(:mod:`._held_out`): a calibration that does worse than none is marked so
(:attr:`Calibration.usable`) instead of being applied silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tuner.backends._cost import CostModel
from tuner.backends._request_path import RequestPath
from tuner.backends.simulator._calibration import TERMS, Calibration, fit_cost_model
from tuner.backends.simulator._held_out import METRICS, HeldOut, held_out
from tuner.backends.simulator._simulator import SimulatorBackend
from tuner.core import BackendError, Measurement, ServingConfig, TunerError, Workload
from tuner.objectives import metric_value


@dataclass(frozen=True)
class CalibrationRun:
    """One measured run: the configuration served, the workload sent, the measurement.

    Attributes:
        config: The configuration the server ran.
        workload: The requests sent (their arrivals on the measurement's clock).
        measurement: What the live backend measured (with its step log, to fit on).
        group: Runs of the same group are ranked against each other (default: the workload's
            rate, so configurations are compared at the same load).
    """

    config: ServingConfig
    workload: Workload
    measurement: Measurement
    group: str = ""

    @property
    def key(self) -> str:
        return self.group or f"rate {self.workload.rate:.6g}"


def _values(m: Measurement, metrics: Sequence[str]) -> dict[str, float]:
    out = {}
    for metric in metrics:
        try:
            out[metric] = metric_value(m, metric)
        except TunerError:
            continue
    return out


def predict(
    backend: SimulatorBackend, run: CalibrationRun, metrics: Sequence[str] = METRICS
) -> dict[str, float]:
    """The metric values the simulator predicts for a run."""
    return _values(backend.evaluate(run.config, run.workload), metrics)


#: The API-server times tried (seconds per request) when fitting the request path by simulation.
SERVER_TIMES = (0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06)


def refine_delivery(calibration: Calibration, runs: Sequence[CalibrationRun]) -> Calibration:
    """The calibration with its request path completed by simulating whole runs: the API
    server's time per request (:data:`SERVER_TIMES`, the one whose simulated TTFT and E2E
    percentiles match the runs best), then the median, over the runs' requests, of the
    measured minus the simulated last-token time (``delivery``) and first-token time
    (``first_token_delivery``). This attributes what the step log leaves to the request path,
    however the server queues requests and batches its stream (the step-log attribution of
    :func:`fit_request_path` assumes every token leaves when its step ends)."""
    if not runs:
        return calibration
    base = calibration.request_path.replace(delivery=0.0, first_token_delivery=None)
    best = (math.inf, base)
    for server_time in SERVER_TIMES:
        path = _deliveries(calibration, runs, base.replace(server_time=server_time))
        sim = SimulatorBackend(calibration.cost_model, request_path=path)
        err = float(
            np.mean(
                [
                    abs(metric_value(sim.evaluate(r.config, r.workload), k) / live - 1)
                    for r in runs
                    for k in _PATH_METRICS
                    if (live := metric_value(r.measurement, k)) > 0
                ]
            )
        )
        if err < best[0] - 1e-9:
            best = (err, path)
    return calibration.replace(request_path=best[1])


_PATH_METRICS = ("ttft.p50", "ttft.p99", "e2e.p50", "e2e.p99")


def _deliveries(
    calibration: Calibration, runs: Sequence[CalibrationRun], path: RequestPath
) -> RequestPath:
    sim = SimulatorBackend(calibration.cost_model, request_path=path)
    first: list[np.ndarray] = []
    last: list[np.ndarray] = []
    for r in runs:
        m = r.measurement
        pred = sim.evaluate(r.config, r.workload)
        ok = np.isfinite(m.ttft) & np.isfinite(m.e2e)
        first.append((m.ttft - pred.ttft)[ok])
        last.append((m.e2e - pred.e2e)[ok])
    delivery = max(0.0, float(np.median(np.concatenate(last))))
    first_delivery = max(0.0, float(np.median(np.concatenate(first))))
    return path.replace(delivery=delivery, first_token_delivery=first_delivery)


def calibrated_backend(calibration: Calibration) -> SimulatorBackend:
    """A simulator timed by a calibration: its cost model and request path."""
    return SimulatorBackend(calibration.cost_model, request_path=calibration.request_path)


def check_held_out(
    calibration: Calibration,
    runs: Sequence[CalibrationRun],
    baseline: CostModel,
    metrics: Sequence[str] = METRICS,
    *,
    name: str | None = None,
) -> HeldOut:
    """Score ``calibration`` on ``runs`` (which it must not have been fitted on) against the
    uncalibrated ``baseline`` cost model."""
    if not runs:
        raise BackendError("a held-out check needs at least one run not used for the fit")
    before, after = SimulatorBackend(baseline), calibrated_backend(calibration)
    return held_out(
        [r.key for r in runs],
        [_values(r.measurement, metrics) for r in runs],
        [predict(before, r, metrics) for r in runs],
        [predict(after, r, metrics) for r in runs],
        baseline=name or repr(baseline),
        metrics=metrics,
    )


def calibrate(
    fit_on: Sequence[CalibrationRun],
    held_out_runs: Sequence[CalibrationRun] = (),
    *,
    baseline: CostModel | None = None,
    source: str = "",
) -> Calibration:
    """Fit a calibration on ``fit_on`` and check it on ``held_out_runs``.

    Without held-out runs, and with ``fit_on`` covering at least two configurations, the check
    is leave-one-configuration-out: each configuration's runs are predicted by a calibration
    fitted on the others' (the returned one is fitted on all). With a single configuration
    there is nothing to hold out and :attr:`Calibration.held_out` stays None.

    Args:
        fit_on: The runs to fit on (they need step logs).
        held_out_runs: Runs to score the fit on (not fitted on).
        baseline: The uncalibrated cost model to compare with (default: :data:`COUNTS_ONLY`,
            the four count terms fitted on the same runs, fold by fold, without the request
            path -- how tuner calibrated before attention terms and the request path existed).
        source: Where the runs came from (recorded in the calibration).

    Example:
        >>> from tuner import Request
        >>> true = CostModel(fixed=0.01, per_prefill_token=1e-4, time_unit="s")
        >>> w = Workload([Request(arrival=i * 0.1, prompt_tokens=64, output_tokens=8)
        ...               for i in range(20)])
        >>> runs = [CalibrationRun(c, w, SimulatorBackend(true).evaluate(c, w))
        ...         for c in (ServingConfig(max_num_seqs=2), ServingConfig(max_num_seqs=8))]
        >>> cal = calibrate(runs, baseline=CostModel(fixed=0.02, time_unit="s"))
        >>> cal.usable, round(cal.cost_model.fixed, 6)
        (True, 0.01)
    """
    fit = refine_delivery(fit_cost_model([r.measurement for r in fit_on], source=source), fit_on)
    name = repr(baseline) if baseline is not None else COUNTS_ONLY
    if held_out_runs:
        base = baseline or _counts_only(fit_on, source)
        return fit.replace(held_out=check_held_out(fit, held_out_runs, base, name=name))
    configs = list(dict.fromkeys(r.config for r in fit_on))
    if len(configs) < 2:
        return fit
    groups: list[str] = []
    measured: list[dict[str, float]] = []
    before: list[dict[str, float]] = []
    after: list[dict[str, float]] = []
    for config in configs:
        rest = [r for r in fit_on if r.config != config]
        try:
            part = refine_delivery(
                fit_cost_model([r.measurement for r in rest], source=source), rest
            )
            uncalibrated = SimulatorBackend(baseline or _counts_only(rest, source))
        except BackendError:
            continue
        sim = calibrated_backend(part)
        for r in (r for r in fit_on if r.config == config):
            groups.append(r.key)
            measured.append(_values(r.measurement, METRICS))
            before.append(predict(uncalibrated, r))
            after.append(predict(sim, r))
    if not measured:
        return fit
    return fit.replace(held_out=held_out(groups, measured, before, after, baseline=name))


#: The default baseline of :func:`calibrate`.
COUNTS_ONLY = "four-term step fit, no request path"


def _counts_only(runs: Sequence[CalibrationRun], source: str) -> CostModel:
    """The four-term fit (no attention terms, no request path) of ``runs``."""
    return fit_cost_model(
        [r.measurement for r in runs], source=source, candidates=(TERMS,)
    ).cost_model
