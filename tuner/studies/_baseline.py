"""The baseline a study's winner is compared with: vLLM's defaults on the target, measured like
the trials (its capacity, its step timeline next to the winner's)."""

from __future__ import annotations

from tuner.backends.simulator import SimulatorBackend
from tuner.core import ConfigError, ConfigRefused, Measurement, Trial
from tuner.search import ListSearch
from tuner.studies._outcome import StudyOutcome, baseline_config
from tuner.tuning import Loop, WorkloadAt


def measure_baseline(
    outcome: StudyOutcome, sim: SimulatorBackend | None, workload_at: WorkloadAt | None
) -> Trial | None:
    """vLLM's defaults as a trial: the one the study ran, else measured on the simulator."""
    try:
        defaults = baseline_config(outcome)
    except ConfigError:
        return None  # the defaults do not fit this space's base (e.g. max_model_len)
    ran = [t for t in outcome.trials if t.config == defaults and t.fidelity == 1.0 and t.ok]
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


def baseline_timelines(
    outcome: StudyOutcome, sim: SimulatorBackend | None
) -> dict[str, Measurement]:
    """The winner's and vLLM's defaults' step timelines on the same workload."""
    best = outcome.best
    if best is None:
        return {}
    out: dict[str, Measurement] = {}
    if best.measurement is not None and best.measurement.has_steps:
        out["winner"] = best.measurement
    if sim is not None:
        try:
            defaults = baseline_config(outcome)
            if "winner" not in out:
                out["winner"] = sim.evaluate(best.config, outcome.workload)
            if defaults != best.config:
                out["vLLM defaults"] = sim.evaluate(defaults, outcome.workload)
            else:
                out["winner (= vLLM's defaults)"] = out.pop("winner")
        except (ConfigError, ConfigRefused):
            pass  # the defaults may not fit this workload (max_model_len) or the GPU's memory
    return out
