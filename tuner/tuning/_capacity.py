"""One capacity trial: a configuration probed at several offered loads on one backend session.

The probe plan is :func:`tuner.objectives.next_rate` (bracket, then bisect); this module runs it
on a backend and turns the probes into a :class:`~tuner.core.Trial`: the highest load at which
every SLO held is ``values["capacity"]``, the measurement there gives every other figure, and
every probe is kept in ``trial.load_points``.

On a noisy backend each probe is repeated as the Loop's :class:`Repeats` says, on its own: a
probe holds when every SLO holds by the policy's rule, and it is run again only while an SLO
limit lies inside its interval (there is no incumbent to beat within one configuration). The
trial's ``repeats``, ``repeat_values`` and ``intervals`` are those of the capacity point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from tuner.backends import Backend
from tuner.core import (
    ConfigRefused,
    LoadPoint,
    Measurement,
    ServerStartError,
    ServingConfig,
    Trial,
    TrialStatus,
    Workload,
    WorkloadError,
)
from tuner.objectives import (
    SLO,
    AbortRule,
    CapacitySettings,
    Objective,
    RateLattice,
    cost_per_million_tokens,
    load_lattice,
    throughput_per_gpu,
)
from tuner.tuning._open import open_question
from tuner.tuning._repeats import (
    InvalidMeasurement,
    NoisePool,
    Repeater,
    Repeats,
    Runs,
    verdict,
)

WorkloadAt = Callable[[float], Workload]
"""The workload offered at a load (same requests or same seeds: only the load varies): a
request rate, or in mode ``concurrency`` a whole number of users."""

#: Errors that mean the configuration cannot run at all (so the trial fails), as opposed to a
#: load it cannot sustain (a probe that does not hold).
_FATAL = (ConfigRefused, ServerStartError)


@dataclass
class _Probe:
    point: LoadPoint
    measurement: Measurement | None
    runs: Runs | None = None


def offered_load(
    settings: CapacitySettings, workload: Workload, workload_at: WorkloadAt | None
) -> tuple[float, WorkloadAt]:
    """Where a capacity search starts and how it offers ``workload`` at a load: in mode
    ``rate`` from the workload's own rate with :meth:`Workload.at_rate`; in mode
    ``concurrency`` from its own number of users (1 for an open-loop workload) with
    :meth:`Workload.at_concurrency` (``workload_at``, e.g. a study's regenerated workload,
    replaces the second).

    Raises:
        WorkloadError: mode ``rate`` with a closed-loop workload (it has no rate to scale).
    """
    if settings.mode == "concurrency":
        at = workload_at or (lambda users: workload.at_concurrency(int(users)))
        return settings.first_rate(float(workload.users or 1)), at
    if workload.is_closed_loop and workload_at is None:
        raise WorkloadError(
            f"Objective.capacity(mode='rate') offers the workload at request rates, but it is "
            f"closed loop ({workload.users} users, no rate to scale): use mode='concurrency'"
        )
    return settings.first_rate(workload.rate), workload_at or workload.at_rate


def gpus_of(config: ServingConfig) -> int:
    """GPUs one replica of ``config`` uses (tensor parallelism, once it is a knob)."""
    return config.tensor_parallel_size


def capacity_trial(
    number: int,
    config: ServingConfig,
    fidelity: float,
    backend: Backend,
    workload_at: WorkloadAt,
    start: float,
    slos: Sequence[SLO],
    objective: Objective,
    values_of: Callable[[Measurement], dict[str, float]],
    incumbent: float | None,
    catch: tuple[type[BaseException], ...],
    *,
    repeater: Repeater | None = None,
    session: Callable[[ServingConfig], AbstractContextManager[Any]] | None = None,
    abort: AbortRule | None = None,
) -> Trial:
    """Search the highest load ``config`` sustains under ``slos``; one trial with every probe.

    With an ``incumbent`` (the best capacity so far at this fidelity) and the shortcut on, the
    first probe is at the incumbent: a configuration that fails there cannot win, and stops.
    ``repeater`` repeats each probe (default: one run each); ``session`` opens the backend's
    session (default ``backend.session``), ``abort`` is the rule it was given.
    """
    if repeater is None:
        repeater = Repeater(
            Repeats(rule="single"), backend.deterministic, values_of, slos, NoisePool()
        )
    open_session = session or backend.session
    settings = objective.load or CapacitySettings()
    lattice = load_lattice(settings, start)
    t0 = time.perf_counter()
    probes: list[_Probe] = []
    shortcut = None
    if settings.shortcut and incumbent is not None:
        shortcut = lattice.index(incumbent)
    try:
        with open_session(config) as measure:
            while True:
                outcomes = [(lattice.index(p.point.rate), p.point.feasible) for p in probes]
                k = (
                    shortcut
                    if shortcut is not None and not probes
                    else lattice.next_index(outcomes)
                )
                if k is None or any(k == j for j, _ in outcomes):
                    break
                rate = lattice.rate(k)
                probe = _probe(measure, workload_at, rate, fidelity, slos, repeater, catch, abort)
                if probe.point.error is not None and not probes:
                    raise _FirstProbeFailed(probe.point.error)
                probes.append(probe)
                if shortcut is not None and len(probes) == 1 and not probe.point.feasible:
                    break
    except _FirstProbeFailed as e:
        return _failed(number, config, fidelity, str(e), t0)
    except _FATAL as e:
        return _failed(number, config, fidelity, f"{type(e).__name__}: {e}", t0)
    rate_shortcut = None if shortcut is None else lattice.rate(shortcut)
    return _trial(number, config, fidelity, probes, settings, lattice, rate_shortcut, t0)


class _FirstProbeFailed(Exception):
    """The first probe could not be measured: the configuration does not run (a trial error)."""


def _probe(
    measure: Callable[[Workload], Measurement],
    workload_at: WorkloadAt,
    rate: float,
    fidelity: float,
    slos: Sequence[SLO],
    repeater: Repeater,
    catch: tuple[type[BaseException], ...],
    abort: AbortRule | None,
) -> _Probe:
    work = workload_at(rate)
    if fidelity < 1.0:
        work = work.head(fidelity)
    errors: tuple[type[BaseException], ...] = (*catch, InvalidMeasurement)
    try:
        runs = repeater.run(measure, work, lambda r: open_question(r, repeater, slos, None, None))
    except _FATAL:
        raise
    except errors as e:  # the load broke the server: it does not hold
        return _Probe(LoadPoint(rate=rate, feasible=False, error=f"{type(e).__name__}: {e}"), None)
    results, aborted = verdict(slos, runs, repeater.repeats.rule, abort)
    point = LoadPoint(
        rate=rate,
        feasible=aborted is None and all(r.ok for r in results),
        slo_results=results,
        values=runs.medians,
        cost=runs.cost,
        repeats=runs.n,
    )
    return _Probe(point, runs.representative(slos[0].metric if slos else None), runs)


def _trial(
    number: int,
    config: ServingConfig,
    fidelity: float,
    probes: list[_Probe],
    settings: CapacitySettings,
    lattice: RateLattice,
    shortcut: float | None,
    t0: float,
) -> Trial:
    points = tuple(p.point for p in probes)
    held = [p for p in probes if p.point.feasible and p.measurement is not None]
    note = None
    if held:
        best = max(held, key=lambda p: p.point.rate)
        capacity = best.point.rate
        above = [p.rate for p in points if not p.feasible and p.rate > capacity]
        if not above:
            note = f">= {capacity:.4g} (held at the highest load tried; not extrapolated)"
        elif not lattice.adjacent(capacity, min(above)):
            note = (
                f"between {capacity:.4g} and {min(above):.4g} (max_probes "
                f"{settings.max_probes} reached before rel_tol)"
            )
    else:
        measured = [p for p in probes if p.measurement is not None]
        best = min(measured, key=lambda p: p.point.rate) if measured else probes[0]
        capacity = math.nan
        if shortcut is not None:
            note = f"below the incumbent's capacity of {shortcut:.4g} (fails there; not searched)"
        else:
            note = f"no load held down to {min(p.rate for p in points):.4g}"
    values = dict(best.point.values)
    values["capacity"] = capacity
    m = best.measurement
    gpus = gpus_of(config)
    if m is not None and held:
        tput = m.output_throughput
        values["throughput_per_gpu"] = throughput_per_gpu(tput, gpus)
        if settings.gpu_hour_price is not None and m.time_unit == "s":
            values["cost_per_million_tokens"] = cost_per_million_tokens(
                tput, gpus, settings.gpu_hour_price
            )
    else:
        values["throughput_per_gpu"] = math.nan
        if settings.gpu_hour_price is not None:
            values["cost_per_million_tokens"] = math.nan
    runs = best.runs
    return Trial(
        number=number,
        config=config,
        fidelity=fidelity,
        status=TrialStatus.COMPLETE,
        values=values,
        slo_results=best.point.slo_results,
        wall_time=time.perf_counter() - t0,
        cost=sum(p.cost for p in points),
        measurement=m,
        load_points=points,
        capacity_note=note,
        repeats=runs.n if runs is not None else 1,
        repeat_values=runs.repeat_values if runs is not None else {},
        intervals=runs.intervals if runs is not None else {},
    )


def _failed(number: int, config: ServingConfig, fidelity: float, reason: str, t0: float) -> Trial:
    return Trial(
        number=number,
        config=config,
        fidelity=fidelity,
        status=TrialStatus.FAILED,
        error=reason,
        wall_time=time.perf_counter() - t0,
    )


__all__ = ["WorkloadAt", "capacity_trial", "gpus_of", "offered_load"]
