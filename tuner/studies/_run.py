"""Running a study file: build the objects its spec names, run, keep everything."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.backends._base import Backend
from tuner.backends._cost import CostModel
from tuner.backends.simulator import Calibration, SimulatorBackend
from tuner.core._config import ServingConfig
from tuner.core._errors import ConfigError, InfeasibleError
from tuner.core._loop import Loop
from tuner.core._measurement import Measurement
from tuner.core._space import SearchSpace
from tuner.core._trial import Trial, TuningResult
from tuner.core._workload import Workload
from tuner.objectives import SLO, Objective, parse_slos
from tuner.search import GridSearch, RandomSearch, Search, SuccessiveHalving, TPESearch
from tuner.studies._spec import BackendSpec, SearchSpec, StepCost, StudySpec, WorkloadSpec
from tuner.studies._two_tier import TwoTierResult, two_tier


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
    result: TuningResult | None = None
    two_tier: TwoTierResult | None = None
    infeasible: InfeasibleError | None = None
    trials: tuple[Trial, ...] = ()
    timelines: dict[str, Measurement] = field(default_factory=dict)
    """Step timelines to plot: the winner and vLLM's defaults, on the same workload."""
    wall_time: float = 0.0

    @property
    def best(self) -> Trial | None:
        if self.two_tier is not None:
            return self.two_tier.best
        return self.result.best if self.result is not None else None


def build_workload(spec: WorkloadSpec, root: Path) -> Workload:
    """The workload a spec describes (traces are read relative to the study file)."""
    from tuner.cli._args import length

    if spec.trace is not None:
        path = (root / spec.trace) if not Path(spec.trace).is_absolute() else Path(spec.trace)
        w = Workload.from_csv(path) if path.suffix == ".csv" else Workload.from_jsonl(path)
    else:
        a = spec.poisson
        if a is None:  # pragma: no cover - the spec requires one of the two
            raise ConfigError("workload: give 'poisson' or 'trace'")
        p, o = length(str(a.prompt_len)), length(str(a.output_len))
        if a.burstiness == 1.0:
            w = Workload.poisson(a.rate, a.requests, p, o, seed=a.seed)
        else:
            w = Workload.gamma(a.rate, a.requests, p, o, burstiness=a.burstiness, seed=a.seed)
    return w if spec.head >= 1 else w.head(spec.head)


def _cost(step_cost: StepCost | None, calibration: str | None, root: Path) -> CostModel:
    if calibration is not None:
        return Calibration.load(root / calibration).cost_model
    if step_cost is None:
        return CostModel()
    return CostModel(**step_cost.model_dump(), time_unit="s")


def build_backend(spec: BackendSpec, root: Path, workdir: Path) -> Backend:
    """The backend a spec names."""
    if spec.simulator is not None:
        return SimulatorBackend(_cost(spec.simulator.step_cost, spec.simulator.calibration, root))
    if spec.replay is not None:
        from tuner.backends.replay import SchedulerReplayBackend

        extra = set(spec.replay) - {"step_cost"}
        if extra:
            raise ConfigError(f"backend.replay: unknown key(s) {sorted(extra)}; allowed: step_cost")
        cost = spec.replay.get("step_cost")
        return SchedulerReplayBackend(_cost(StepCost(**cost) if cost else None, None, root))
    live = spec.live
    if live is None:  # pragma: no cover - the spec requires exactly one backend
        raise ConfigError("backend: give simulator, replay or live")
    from tuner.backends.live import AttachedServerBackend, VLLMServerBackend, build_tiny_model

    if live.attach_url is not None:
        return AttachedServerBackend(live.attach_url, request_timeout=live.request_timeout)
    model: str = live.model or ""
    if live.tiny_model is not None:
        tiny = Path(live.tiny_model)
        model = str(build_tiny_model(tiny if tiny.is_absolute() else root / tiny))
    return VLLMServerBackend(
        model, server_args=live.server_args, env=live.env, workdir=workdir,
        startup_timeout=live.startup_timeout, request_timeout=live.request_timeout,
    )  # fmt: skip


def build_search(spec: SearchSpec, storage: str | None, name: str) -> Search:
    """The search a spec names, with its arguments."""
    kinds: dict[str, Callable[..., Search]] = {
        "grid": GridSearch, "random": RandomSearch, "tpe": TPESearch,
        "halving": SuccessiveHalving,
    }  # fmt: skip
    for key, cls in kinds.items():
        args: dict[str, Any] | None = getattr(spec, key)
        if args is None:
            continue
        if key == "tpe" and storage is not None:
            args = {"storage": storage, "study_name": name, **args}
        try:
            return cls(**args)
        except TypeError as e:
            raise ConfigError(f"search.{key}: {e}") from None
    raise ConfigError("search: give one of grid, random, tpe, halving")  # pragma: no cover


def build_space(spec: StudySpec) -> SearchSpace:
    base = ServingConfig(**spec.space.base)
    knobs = {str(k): v for k, v in spec.space.knobs.items()}
    return SearchSpace(knobs, base=base, skip_invalid=spec.space.skip_invalid)


def build_objective(spec: StudySpec) -> Objective:
    o = spec.objective
    if o.maximize is not None:
        return Objective.maximize(o.maximize, tie_break=o.tie_break, tie_tolerance=o.tie_tolerance,
                                  tie_break_direction=o.tie_break_direction)  # fmt: skip
    return Objective.minimize(str(o.minimize), tie_break=o.tie_break, tie_tolerance=o.tie_tolerance,
                              tie_break_direction=o.tie_break_direction)  # fmt: skip


class Progress:
    """One line per trial on stderr (a live bar when stderr is a terminal)."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label, self.total, self.n = label, total, 0
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, trial: Trial) -> None:
        self.n += 1
        of = f"/{self.total}" if self.total else ""
        verdict = "feasible" if trial.feasible else ("FAILED" if not trial.ok else "infeasible")
        bar = ""
        if self.total:
            done = int(20 * min(self.n, self.total) / self.total)
            bar = "[" + "#" * done + "." * (20 - done) + "] "
        line = (f"{self.label} {bar}{self.n}{of} trial {trial.number}: {verdict} "
                f"({time.monotonic() - self.t0:.0f}s)")  # fmt: skip
        sys.stderr.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.n:
            sys.stderr.write("\n")


def _planned_trials(spec: StudySpec, space_size: int) -> int | None:
    """How many trials the search plans, for the progress bar (None when unknown)."""
    s = spec.search
    if s.grid is not None:
        return space_size
    if s.random is not None:
        return min(space_size, s.random.get("max_trials") or space_size)
    if s.tpe is not None:
        return int(s.tpe.get("n_trials", 50))
    return None


def run_study(spec: StudySpec, root: Path, output: Path | None = None) -> StudyOutcome:
    """Run a study; every trial is logged under the output folder as it finishes.

    Never raises InfeasibleError: an infeasible study is an outcome, reported loudly.
    """
    folder = output or Path(spec.output.format(name=spec.name))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    workload = build_workload(spec.workload, root)
    space = build_space(spec)
    objective = build_objective(spec)
    slos = parse_slos(list(spec.slos))
    search = build_search(spec.search, spec.storage, spec.name)
    budget = spec.budget.model_dump()
    total = budget["max_trials"] or _planned_trials(spec, len(space))
    outcome: StudyOutcome
    if spec.backend is not None:
        backend = build_backend(spec.backend, root, folder / "live")
        outcome = StudyOutcome(spec, folder, workload, space, objective, slos, backend.describe())
        progress = Progress(spec.name, total)
        loop = Loop(backend, search, objective, slos, trial_log=folder / "trials.jsonl",
                    on_trial=progress, **budget)  # fmt: skip
        try:
            outcome.result = loop.run(space, workload)
            outcome.trials = outcome.result.trials
        except InfeasibleError as e:
            outcome.infeasible, outcome.trials = e, e.trials
        finally:
            progress.done()
        timeline_backend = backend if isinstance(backend, SimulatorBackend) else None
    else:
        tt = spec.two_tier
        if tt is None:  # pragma: no cover - the spec requires one of the two
            raise ConfigError("give 'backend' or 'two_tier'")
        cheap = build_backend(tt.cheap, root, folder / "cheap")
        expensive = build_backend(tt.expensive, root, folder / "live")
        outcome = StudyOutcome(spec, folder, workload, space, objective, slos,
                               f"{cheap.describe()} -> {expensive.describe()}")  # fmt: skip
        try:
            outcome.two_tier = two_tier(
                cheap, expensive, search, space, workload, objective, slos, top_k=tt.top_k,
                margin=tt.margin, calibrate=tt.calibrate,
            )  # fmt: skip
            outcome.trials = outcome.two_tier.expensive
            if outcome.two_tier.calibration is not None:
                outcome.two_tier.calibration.save(folder / "calibration.json")
        except InfeasibleError as e:
            outcome.infeasible, outcome.trials = e, e.trials
        timeline_backend = cheap if isinstance(cheap, SimulatorBackend) else None
    outcome.timelines = _timelines(outcome, timeline_backend)
    outcome.wall_time = time.monotonic() - t0
    return outcome


def _timelines(outcome: StudyOutcome, sim: SimulatorBackend | None) -> dict[str, Measurement]:
    """The winner's and vLLM's defaults' step timelines on the same workload."""
    best = outcome.best
    if best is None:
        return {}
    out: dict[str, Measurement] = {}
    if best.measurement is not None and best.measurement.has_steps:
        out["winner"] = best.measurement
    if sim is not None:
        defaults = outcome.space.base.replace(
            **{k: ServingConfig.model_fields[k].default for k in outcome.space.dimensions}
        )
        try:
            if "winner" not in out:
                out["winner"] = sim.evaluate(best.config, outcome.workload)
            if defaults != best.config:
                out["vLLM defaults"] = sim.evaluate(defaults, outcome.workload)
            else:
                out["winner (= vLLM's defaults)"] = out.pop("winner")
        except ConfigError:
            pass  # the defaults may not fit this workload (e.g. max_model_len)
    return out
