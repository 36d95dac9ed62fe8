"""The baseline a study's winner is compared with: vLLM's defaults on the target, measured like
the trials (its capacity, its latencies and step timeline next to the winner's)."""

from __future__ import annotations

from tuner.backends.simulator import SimulatorBackend
from tuner.core import ConfigError, ConfigRefused, Measurement, ServingConfig, Trial
from tuner.search import ListSearch
from tuner.studies._outcome import DefaultsComparison, StudyOutcome, baseline_config
from tuner.tuning import Loop, WorkloadAt


def _defaults_trials(outcome: StudyOutcome, defaults: ServingConfig) -> list[Trial]:
    """The study's successful full-fidelity trials of vLLM's defaults (oldest first)."""
    return [t for t in outcome.trials if t.config == defaults and t.fidelity == 1.0 and t.ok]


def measure_baseline(
    outcome: StudyOutcome, sim: SimulatorBackend | None, workload_at: WorkloadAt | None
) -> Trial | None:
    """vLLM's defaults as a trial: the one the study ran, else measured on the simulator."""
    try:
        defaults = baseline_config(outcome)
    except ConfigError:
        return None  # the defaults do not fit this space's base (e.g. max_model_len)
    ran = _defaults_trials(outcome, defaults)
    shortcut = bool(ran) and (ran[-1].capacity_note or "").startswith("below the incumbent")
    if ran and not (shortcut and sim is not None):
        return ran[-1]
    if sim is None or not outcome.objective.is_capacity or outcome.interrupted:
        return None
    load = outcome.objective.load.replace(shortcut=False) if outcome.objective.load else None
    loop = Loop(
        sim,
        ListSearch([defaults]),
        outcome.objective.replace(load=load),
        outcome.slos,
        workload_at=workload_at,
    )
    trials = loop.explore(outcome.space, outcome.workload).trials
    return trials[0] if trials and trials[0].ok else None


def compare_with_defaults(
    outcome: StudyOutcome, sim: SimulatorBackend | None
) -> DefaultsComparison | None:
    """The winner and vLLM's defaults on the study's workload as written, by one backend: the
    simulator when there is one (the study's own, or a two-tier study's cheap tier), else the
    trials the study ran (an open-loop objective, the defaults among the trials). None without
    a winner; otherwise, when there is no such pair, a comparison that says why."""
    best = outcome.best
    if best is None or outcome.interrupted:
        return None
    try:
        defaults = baseline_config(outcome)
    except ConfigError as e:
        return DefaultsComparison(missing=f"vLLM's defaults do not fit this study's base ({e})")
    if defaults == best.config:
        return DefaultsComparison(same=True)
    w = outcome.workload
    load = (
        f"{len(w)} requests from {w.users} user{'s' * (w.users != 1)}"
        if w.users is not None
        else f"{len(w)} requests at {w.rate:.4g} req/{outcome.time_unit}"
    )
    ran = _defaults_trials(outcome, defaults)
    kept = [t.measurement for t in ran if t.measurement is not None]
    if sim is not None:
        # the study's own simulated trials are these measurements already: reuse them
        own = outcome.two_tier is None and not outcome.objective.is_capacity
        try:
            mine = best.measurement if own else None
            mine = mine or sim.evaluate(best.config, w)
            theirs = kept[-1] if own and kept else sim.evaluate(defaults, w)
        except (ConfigError, ConfigRefused) as e:
            return DefaultsComparison(missing=f"the simulator could not run vLLM's defaults: {e}")
        tier = "the cheap tier's simulator (an estimate)" if outcome.two_tier else "the simulator"
        at = ", at the load it is written with, not at each one's capacity" * bool(
            outcome.objective.is_capacity
        )
        how = f"both measured by {tier} on the study's workload ({load}{at})"
        return DefaultsComparison(mine, theirs, how)
    if outcome.objective.is_capacity:
        why = (
            "a capacity study measures each configuration at its own capacity, and only a "
            "simulator measures both on the same load"
        )
    elif not ran:
        why = (
            "they were not among its trials (add them to the space, or study on the "
            "simulator, which measures them on the side)"
        )
    elif not kept or best.measurement is None:
        why = "the trials were read back from the trial log, which keeps no per-request data"
    else:
        how = f"both trials of this study, measured by {outcome.backend} on its workload ({load})"
        return DefaultsComparison(best.measurement, kept[-1], how)
    return DefaultsComparison(missing=f"this study did not measure vLLM's defaults: {why}")


def baseline_timelines(outcome: StudyOutcome) -> dict[str, Measurement]:
    """The winner's and vLLM's defaults' step timelines on the same workload (from
    :attr:`StudyOutcome.versus_defaults`), else the winner's own."""
    best = outcome.best
    if best is None:
        return {}
    vs = outcome.versus_defaults
    w, d = (vs.winner, vs.defaults) if vs is not None else (None, None)
    if w is not None and d is not None and w.has_steps and d.has_steps:
        return {"winner": w, "vLLM defaults": d}
    m = best.measurement
    if m is None or not m.has_steps:
        return {}
    return {"winner (= vLLM's defaults)" if vs is not None and vs.same else "winner": m}
