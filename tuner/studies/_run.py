"""Running a study file: build the objects its spec names, run, keep everything."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tuner.backends import Backend, CostModel
from tuner.backends.simulator import Calibration, SimulatorBackend
from tuner.core import (
    ConfigError,
    InfeasibleError,
    Measurement,
    SearchSpace,
    ServingConfig,
    Trial,
    Workload,
    parse_length,
)
from tuner.hardware import Target
from tuner.objectives import SLO, Objective, parse_slos
from tuner.search import (
    GridSearch,
    HalvingSettings,
    ListSearch,
    RandomSearch,
    Search,
    SuccessiveHalving,
    TPESearch,
    TPESettings,
)
from tuner.studies._progress import Progress
from tuner.studies._spec import BackendSpec, SearchSpec, StudySpec
from tuner.studies._two_tier import TwoTierResult, TwoTierSettings, explore_two_tier
from tuner.studies._workload_spec import TraceFile, WorkloadSpec
from tuner.tuning import Exploration, Loop, WorkloadAt


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
    baseline: Trial | None = None
    """vLLM's defaults measured like the trials (for a capacity study: their capacity), when
    they were a trial or cheap to measure (the simulator)."""

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

    def vllm_serve(self, model: str = "<model>") -> str:
        """The ``vllm serve`` line to paste for the winner."""
        best = self.best
        if best is None:
            return ""
        return " ".join(["vllm serve", model, *best.config.to_vllm_args(self.recommended_knobs())])

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


def build_workload(spec: WorkloadSpec, root: Path, rate: float | None = None) -> Workload:
    """The workload a spec describes (traces are read relative to the study file); a
    generated one at ``rate`` instead of its own when given (a closed loop: that many users)."""
    if spec.closed_loop is not None:
        c = spec.closed_loop
        w = Workload.closed_loop(
            c.users if rate is None else int(rate),
            c.requests,
            parse_length(str(c.prompt_len)),
            parse_length(str(c.output_len)),
            think_time=c.think_time,
            ramp=c.ramp,
            seed=c.seed,
        )
    elif spec.trace is not None:
        t = spec.trace if isinstance(spec.trace, TraceFile) else TraceFile(path=spec.trace)
        path = (root / t.path) if not Path(t.path).is_absolute() else Path(t.path)
        read = Workload.from_csv if path.suffix == ".csv" else Workload.from_jsonl
        w = read(path, time_unit=t.time_unit, hash_chunk_size=t.hash_chunk_size)
    elif spec.requests is not None:
        w = Workload(spec.requests)
    elif spec.multi_turn is not None:
        m = spec.multi_turn
        w = Workload.multi_turn(
            m.conversations,
            m.turns,
            m.rate if rate is None else rate,
            parse_length(str(m.user_len)),
            parse_length(str(m.answer_len)),
            think_time=m.think_time,
            system_prompt_tokens=m.system_prompt_tokens,
            seed=m.seed,
            hash_chunk_size=m.hash_chunk_size,
        )
    else:
        a = spec.poisson
        if a is None:  # pragma: no cover - the spec requires one of the four
            raise ConfigError("workload: give 'poisson', 'multi_turn', 'trace' or 'requests'")
        p, o = parse_length(str(a.prompt_len)), parse_length(str(a.output_len))
        if spec.shared_prefix is not None:
            sp = spec.shared_prefix
            w = Workload.shared_prefix(
                a.rate if rate is None else rate,
                a.requests,
                p,
                o,
                sp.tokens,
                fraction=sp.fraction,
                num_prefixes=sp.prompts,
                burstiness=a.burstiness,
                seed=a.seed,
                hash_chunk_size=sp.hash_chunk_size,
            )
        elif a.burstiness == 1.0:
            w = Workload.poisson(a.rate if rate is None else rate, a.requests, p, o, seed=a.seed)
        else:
            r = a.rate if rate is None else rate
            w = Workload.gamma(r, a.requests, p, o, burstiness=a.burstiness, seed=a.seed)
    return w if spec.head >= 1 else w.head(spec.head)


def build_workload_at(spec: WorkloadSpec, root: Path, mode: str = "rate") -> WorkloadAt | None:
    """How a capacity objective offers the workload at a load: a generated workload is
    regenerated at the rate (in mode ``concurrency``: a closed loop at the number of users)
    with the same seed; otherwise None (the Loop then scales the arrivals,
    ``Workload.at_rate``, or spreads the requests over the users, ``at_concurrency``)."""
    generated = ("closed_loop",) if mode == "concurrency" else ("poisson", "multi_turn")
    if all(getattr(spec, k) is None for k in generated):
        return None
    return lambda load: build_workload(spec, root, load)


def _cost(step_cost: CostModel | None, calibration: str | None, root: Path) -> CostModel:
    if calibration is not None:
        return Calibration.load(root / calibration).cost_model
    return step_cost or CostModel()


def build_backend(spec: BackendSpec, root: Path, workdir: Path) -> Backend:
    """The backend a spec names."""
    if spec.simulator is not None:
        return SimulatorBackend(_cost(spec.simulator.step_cost, spec.simulator.calibration, root))
    if spec.replay is not None:
        from tuner.backends.replay import SchedulerReplayBackend

        return SchedulerReplayBackend(_cost(spec.replay.step_cost, None, root))
    live = spec.live
    if live is None:  # pragma: no cover - the spec requires exactly one backend
        raise ConfigError("backend: give simulator, replay or live")
    from tuner.backends.live import AttachedServerBackend, VLLMServerBackend, build_tiny_model

    if live.attach_url is not None:
        return AttachedServerBackend(live.attach_url, settings=live.load_settings())
    model: str = live.model or ""
    if live.tiny_model is not None:
        tiny = Path(live.tiny_model).expanduser()
        model = str(build_tiny_model(tiny if tiny.is_absolute() else root / tiny))
    return VLLMServerBackend(model, live.server_settings(), workdir=workdir)


def build_search(spec: SearchSpec, storage: str | None, name: str, base: ServingConfig) -> Search:
    """The search a spec names, with its settings."""
    if spec.grid is not None:
        return GridSearch()
    if spec.random is not None:
        return RandomSearch(spec.random)
    if spec.tpe is not None:
        return _tpe(spec.tpe, storage, name)
    if spec.list is not None:
        return ListSearch([base.replace(**changes) for changes in spec.list])
    h = spec.halving
    if h is None:  # pragma: no cover - the spec requires exactly one search
        raise ConfigError("search: give one of grid, random, tpe, halving")
    inner: Search | None = None
    if h.inner is not None and h.inner.random is not None:
        inner = RandomSearch(h.inner.random)
    elif h.inner is not None and h.inner.tpe is not None:
        inner = _tpe(h.inner.tpe, storage, name)
    return SuccessiveHalving(inner, HalvingSettings(**h.model_dump(exclude={"inner"})))


def _tpe(settings: TPESettings, storage: str | None, name: str) -> TPESearch:
    if storage is not None and settings.storage is None:
        settings = settings.replace(storage=storage, study_name=settings.study_name or name)
    return TPESearch(settings)


def build_space(spec: StudySpec) -> SearchSpace:
    """The space a study searches; with a target, the base's unset knobs start at vLLM's
    defaults on that target."""
    base = spec.space.base
    if spec.target is not None:
        unset = [k for k in TARGET_KNOBS if k not in base.model_fields_set]
        base = spec.target.vllm_defaults(base, unset)
    knobs = {str(k): v for k, v in spec.space.knobs.items()}
    return SearchSpace(knobs, base=base, skip_invalid=spec.space.skip_invalid)


def build_objective(spec: StudySpec) -> Objective:
    """The objective a study names."""
    return spec.objective.objective()


def _planned_trials(spec: StudySpec, space_size: int) -> int | None:
    """How many trials the search plans, for the progress bar (None when unknown)."""
    s = spec.search
    if s.grid is not None:
        return space_size
    if s.random is not None:
        return min(space_size, s.random.max_trials or space_size)
    if s.tpe is not None:
        return s.tpe.n_trials
    if s.list is not None:
        return len(s.list)
    return None


def prepare_output(folder: Path) -> Path:
    """Create the output folder and check it takes files, before any trial runs.

    Raises:
        ConfigError: it is an existing file, or cannot be created or written.
    """
    folder = folder.expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output {folder}: exists and is not a folder; choose another output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"output {folder}: cannot write there: {e.strerror}") from None
    return folder


def run_study(spec: StudySpec, root: Path, output: Path | None = None) -> StudyOutcome:
    """Run a study; every trial is logged under the output folder as it finishes.

    Never raises InfeasibleError: an infeasible study is an outcome, reported loudly.
    """
    folder = prepare_output(output or spec.output_folder())
    t0 = time.monotonic()
    workload = build_workload(spec.workload, root)
    space = build_space(spec)
    objective = build_objective(spec)
    slos = parse_slos(list(spec.slos))
    search = build_search(spec.search, spec.storage, spec.name, space.base)
    total = spec.budget.max_trials or _planned_trials(spec, len(space))
    outcome: StudyOutcome
    if spec.backend is not None:
        backend = build_backend(spec.backend, root, folder / "live")
        outcome = StudyOutcome(spec, folder, workload, space, objective, slos, backend.describe())
        progress = Progress(spec.name, total, objective, space.base)
        loop = Loop(
            backend,
            search,
            objective,
            slos,
            workload_at=build_workload_at(spec.workload, root, spec.objective.mode),
            trial_log=folder / "trials.jsonl",
            on_trial=progress,
            budget=spec.budget,
        )
        try:
            outcome.result = loop.explore(space, workload)
        finally:
            progress.close()
        outcome.trials, outcome.infeasible = outcome.result.trials, outcome.result.infeasible
        timeline_backend = backend if isinstance(backend, SimulatorBackend) else None
    else:
        tt = spec.two_tier
        if tt is None:  # pragma: no cover - the spec requires one of the two
            raise ConfigError("give 'backend' or 'two_tier'")
        cheap = build_backend(tt.cheap, root, folder / "cheap")
        expensive = build_backend(tt.expensive, root, folder / "live")
        outcome = StudyOutcome(
            spec,
            folder,
            workload,
            space,
            objective,
            slos,
            f"{cheap.describe()} -> {expensive.describe()}",
        )
        tt_result = explore_two_tier(
            cheap,
            expensive,
            search,
            space,
            workload,
            objective,
            slos,
            TwoTierSettings(**tt.model_dump(include=set(TwoTierSettings.model_fields))),
        )
        outcome.two_tier = tt_result
        outcome.trials = tt_result.expensive or tt_result.cheap
        outcome.infeasible = tt_result.infeasible
        if tt_result.calibration is not None:
            tt_result.calibration.save(folder / "calibration.json")
        timeline_backend = cheap if isinstance(cheap, SimulatorBackend) else None
    outcome.planned = total
    outcome.timelines = _timelines(outcome, timeline_backend)
    outcome.baseline = _baseline(outcome, timeline_backend, root)
    outcome.wall_time = time.monotonic() - t0
    return outcome


#: The knobs vLLM picks by device (``Target.vllm_defaults``).
TARGET_KNOBS = ("max_num_batched_tokens", "max_num_seqs", "async_scheduling", "block_size")


def vllm_defaults(space: SearchSpace, target: Target | None = None) -> ServingConfig:
    """The space's base with every searched knob at vLLM's default (on ``target`` when
    given): the baseline."""
    if target is not None:
        return target.vllm_defaults(space.base, space.dimensions)
    return space.base.replace(
        **{k: ServingConfig.model_fields[k].default for k in space.dimensions}
    )


def _baseline(outcome: StudyOutcome, sim: SimulatorBackend | None, root: Path) -> Trial | None:
    """vLLM's defaults as a trial: the one the study ran, else measured on the simulator."""
    try:
        defaults = vllm_defaults(outcome.space, outcome.spec.target)
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
        workload_at=build_workload_at(outcome.spec.workload, root, outcome.spec.objective.mode),
    )
    trials = loop.explore(outcome.space, outcome.workload).trials
    return trials[0] if trials and trials[0].ok else None


def _timelines(outcome: StudyOutcome, sim: SimulatorBackend | None) -> dict[str, Measurement]:
    """The winner's and vLLM's defaults' step timelines on the same workload."""
    best = outcome.best
    if best is None:
        return {}
    out: dict[str, Measurement] = {}
    if best.measurement is not None and best.measurement.has_steps:
        out["winner"] = best.measurement
    if sim is not None:
        try:
            defaults = vllm_defaults(outcome.space, outcome.spec.target)
            if "winner" not in out:
                out["winner"] = sim.evaluate(best.config, outcome.workload)
            if defaults != best.config:
                out["vLLM defaults"] = sim.evaluate(defaults, outcome.workload)
            else:
                out["winner (= vLLM's defaults)"] = out.pop("winner")
        except ConfigError:
            pass  # the defaults may not fit this workload (e.g. max_model_len)
    return out
