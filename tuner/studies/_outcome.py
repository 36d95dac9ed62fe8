"""What a study produced: the trials, the winner, the baseline, and the lines to paste."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuner.core import (
    InfeasibleError,
    Measurement,
    SearchSpace,
    ServingConfig,
    Trial,
    Workload,
    WorkloadSummary,
    summarize,
)
from tuner.hardware import Target
from tuner.objectives import SLO, Objective
from tuner.studies._deployment import estimates_note
from tuner.studies._spec import StudySpec
from tuner.studies._two_tier import TwoTierResult
from tuner.tuning import Exploration


@dataclass(frozen=True)
class DefaultsComparison:
    """The winner and vLLM's defaults measured on the same workload by the same backend (for the
    report's side-by-side latency distributions), or why the study has no such pair."""

    winner: Measurement | None = None
    defaults: Measurement | None = None
    how: str = ""
    """Where the two measurements come from, in words (which backend, which load)."""
    missing: str | None = None
    """Why there is no pair (None when there is one)."""
    same: bool = False
    """The winner *is* vLLM's defaults: nothing to compare."""


@dataclass
class StudyOutcome:
    """Everything a study produced, for its report."""

    spec: StudySpec
    folder: Path
    workload: Workload
    space: SearchSpace
    objective: Objective
    slos: tuple[SLO, ...]
    backend: str
    result: Exploration | None = None
    two_tier: TwoTierResult | None = None
    infeasible: InfeasibleError | None = None
    trials: tuple[Trial, ...] = ()
    timelines: dict[str, Measurement] = field(default_factory=dict)
    """Step timelines to plot: the winner and vLLM's defaults, on the same workload."""
    wall_time: float = 0.0
    planned: int | None = None
    """How many trials the search planned, when known (for "k of n")."""
    workload_note: str | None = None
    """What the ``oversized`` policy did to the workload (None: every request fit)."""
    baseline: Trial | None = None
    """vLLM's defaults measured like the trials (for a capacity study: their capacity), when
    they were a trial or cheap to measure (the simulator)."""
    versus_defaults: DefaultsComparison | None = None
    """The winner against vLLM's defaults on the same workload (None: no winner)."""

    @property
    def best(self) -> Trial | None:
        if self.two_tier is not None:
            return self.two_tier.best
        return self.result.best if self.result is not None else None

    @property
    def target(self) -> Target:
        """Where the recommendation is for (an assumed H100-class GPU if the study names
        none)."""
        return self.spec.target or Target()

    def recommended_knobs(self) -> list[str]:
        """The knobs the pasted ``vllm serve`` line sets for the winner (see
        :meth:`Target.recommended_knobs`)."""
        best = self.best
        if best is None:
            return []
        return self.target.recommended_knobs(best.config, self.space.dimensions,
                                             self.spec.space.base)  # fmt: skip

    def vllm_serve(self, model: str | None = None) -> str:
        """The ``vllm serve`` line to paste for the winner (the target's model, else
        ``<model>``)."""
        best = self.best
        if best is None:
            return ""
        model = model or self.target.model or "<model>"
        return " ".join(["vllm serve", model, *best.config.to_vllm_args(self.recommended_knobs())])

    def baseline_config(self) -> ServingConfig:
        """vLLM's defaults for the searched knobs on the target (see :func:`baseline_config`)."""
        return baseline_config(self)

    def estimates(self) -> str | None:
        """Which numbers are estimates (the model-and-GPU priors), or None."""
        if self.spec.backend is None:
            return None  # two tiers: the expensive tier's measurements decide
        return estimates_note(self.spec.backend, self.spec.target)

    @property
    def workload_summary(self) -> WorkloadSummary:
        """The workload at a glance (requests, duration, rates, burstiness, lengths)."""
        w = self.workload
        return summarize(w.arrival, w.prompt_tokens, w.output_tokens)

    @property
    def time_unit(self) -> str:
        """The unit the study's times and rates are in: ``"s"``, or ``"step"`` on the unit
        step clock."""
        for t in self.trials:
            if t.measurement is not None:
                return t.measurement.time_unit
        return "s"

    @property
    def interrupted(self) -> bool:
        """Whether Ctrl-C stopped the run before the search ended."""
        if self.two_tier is not None:
            return self.two_tier.interrupted
        return self.result is not None and self.result.interrupted


def vllm_defaults(space: SearchSpace, target: Target | None = None) -> ServingConfig:
    """The space's base with every searched knob at vLLM's default (on ``target`` when
    given): the baseline."""
    if target is not None:
        return target.vllm_defaults(space.base, space.dimensions)
    return space.base.replace(
        **{k: ServingConfig.model_fields[k].default for k in space.dimensions}
    )


def baseline_config(outcome: StudyOutcome) -> ServingConfig:
    """vLLM's defaults on the study's target for every searched knob, at the winner's
    ``tensor_parallel_size`` when that is searched (vLLM's default of 1 is a deployment
    choice, and may not even hold the model: the baseline compares knobs on the same GPUs)."""
    defaults = vllm_defaults(outcome.space, outcome.spec.target)
    best = outcome.best
    if best is not None and "tensor_parallel_size" in outcome.space.dimensions:
        defaults = defaults.replace(tensor_parallel_size=best.config.tensor_parallel_size)
    return defaults
