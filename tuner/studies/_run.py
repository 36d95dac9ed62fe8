"""Running a study file: build the objects its spec names, run, keep everything."""

from __future__ import annotations

import functools
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from tuner.backends import Backend, CostModel
from tuner.backends.simulator import Calibration, Deployment, SimulatorBackend
from tuner.core import (
    ConfigError,
    SearchSpace,
    ServingConfig,
    Trial,
    Workload,
    parse_length,
)
from tuner.objectives import Objective, parse_slos
from tuner.search import (
    GridSearch,
    HalvingSettings,
    ListSearch,
    RandomSearch,
    Search,
    SuccessiveHalving,
    TPESearch,
)
from tuner.studies._baseline import baseline_timelines, compare_with_defaults, measure_baseline
from tuner.studies._deployment import (
    build_deployment,
    compares_replicas_of_different_size,
    simulated_cost_given,
)
from tuner.studies._measurements import save_measurement
from tuner.studies._outcome import StudyOutcome
from tuner.studies._progress import Progress
from tuner.studies._spec import BackendSpec, SearchSpec, StudySpec
from tuner.studies._two_tier import TwoTierSettings, explore_two_tier
from tuner.studies._workload_spec import TraceFile, WorkloadSpec
from tuner.tuning import Loop, WorkloadAt


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
    w = w if spec.head >= 1 else w.head(spec.head)
    if rate is None and spec.rate is not None:
        w = w.at_rate(spec.rate)
    elif rate is None and spec.speedup is not None:
        w = w.at_rate(w.rate * spec.speedup)
    return w


def fit_to(workload: Workload, max_model_len: int, policy: str) -> tuple[Workload, str | None]:
    """Apply the ``oversized`` policy: the workload, and what was done (None: all fit).

    Raises:
        ConfigError: with ``policy="error"``, naming how many requests do not fit and the
            longest, before any trial runs.
    """
    total = workload.prompt_tokens + workload.output_tokens
    over = np.flatnonzero(total > max_model_len)
    if not len(over):
        return workload, None
    longest = int(total.max())
    what = (
        f"{len(over)} of {len(workload)} requests are longer than max_model_len "
        f"({max_model_len}); the longest has {longest} tokens"
    )
    if policy == "error":
        raise ConfigError(
            f"workload: {what}. vLLM refuses them: raise max_model_len, or set "
            "workload.oversized to 'drop' (leave them out) or 'clip' (shorten their output, "
            "then prompt)"
        )
    chunk = workload.hash_chunk_size
    if policy == "drop":
        kept = [r for r, t in zip(workload, total.tolist(), strict=True) if t <= max_model_len]
        if not kept:
            raise ConfigError(f"workload: {what}; dropping them leaves no request")
        return Workload(kept, hash_chunk_size=chunk), f"{what}: dropped"
    clipped = []
    for r in workload:
        out = min(r.output_tokens, max(max_model_len - r.prompt_tokens, 1))
        prompt = min(r.prompt_tokens, max_model_len - out)
        hashes = r.hash_ids[: -(-prompt // chunk)] if r.hash_ids else ()
        clipped.append(r.replace(prompt_tokens=prompt, output_tokens=out, hash_ids=hashes))
    return Workload(clipped, hash_chunk_size=chunk), f"{what}: clipped to fit"


def _fitted(regenerate: WorkloadAt, limit: int, policy: str, rate: float) -> Workload:
    """``regenerate(rate)`` under the ``oversized`` policy (module level: picklable)."""
    return fit_to(regenerate(rate), limit, policy)[0]


def build_workload_at(spec: WorkloadSpec, root: Path, mode: str = "rate") -> WorkloadAt | None:
    """How a capacity objective offers the workload at a load: a generated workload is
    regenerated at the rate (in mode ``concurrency``: a closed loop at the number of users)
    with the same seed; otherwise None (the Loop then scales the arrivals,
    ``Workload.at_rate``, or spreads the requests over the users, ``at_concurrency``)."""
    generated = ("closed_loop",) if mode == "concurrency" else ("poisson", "multi_turn")
    if all(getattr(spec, k) is None for k in generated):
        return None
    return functools.partial(build_workload, spec, root)  # picklable: worker processes


def _cost(step_cost: CostModel | None, calibration: str | None, root: Path) -> CostModel:
    if calibration is not None:
        return _calibration(root / calibration).cost_model
    return step_cost or CostModel()


def _calibration(path: Path) -> Calibration:
    """A calibration file, with a warning if it predicted held-out runs worse than no
    calibration (it is applied as asked, but not silently)."""
    cal = Calibration.load(path)
    if not cal.usable and cal.held_out is not None:
        warnings.warn(
            f"calibration {path}: it predicted its held-out runs worse than the uncalibrated "
            f"model ({cal.held_out.baseline}); the study uses it as asked",
            stacklevel=3,
        )
    return cal


def build_backend(
    spec: BackendSpec, root: Path, workdir: Path, deployment: Deployment | None = None
) -> Backend:
    """The backend a spec names; a simulator on a ``deployment`` sizes KV caches from memory
    and, unless the spec gives step costs, times steps with the roofline prior."""
    if spec.simulator is not None:
        sim = spec.simulator
        if deployment is not None and not simulated_cost_given(spec):
            return SimulatorBackend(None, deployment=deployment)
        if sim.calibration is not None:
            cal = _calibration(root / sim.calibration)
            return SimulatorBackend(
                cal.cost_model, deployment=deployment, request_path=cal.request_path
            )
        return SimulatorBackend(_cost(sim.step_cost, None, root), deployment=deployment)
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


def build_search(spec: SearchSpec, base: ServingConfig) -> Search:
    """The search a spec names, with its settings (the study's storage goes to the Loop,
    which hands it to a TPE search)."""
    if spec.grid is not None:
        return GridSearch()
    if spec.random is not None:
        return RandomSearch(spec.random)
    if spec.tpe is not None:
        return TPESearch(spec.tpe)
    if spec.list is not None:
        return ListSearch([base.replace(**changes) for changes in spec.list])
    h = spec.halving
    if h is None:  # pragma: no cover - the spec requires exactly one search
        raise ConfigError("search: give one of grid, random, tpe, halving")
    inner: Search | None = None
    if h.inner is not None and h.inner.random is not None:
        inner = RandomSearch(h.inner.random)
    elif h.inner is not None and h.inner.tpe is not None:
        inner = TPESearch(h.inner.tpe)
    return SuccessiveHalving(inner, HalvingSettings(**h.model_dump(exclude={"inner"})))


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
    """The objective a study names (per-GPU figures over several TP sizes: without the
    capacity search's incumbent shortcut, which compares capacities per replica)."""
    objective = spec.objective.objective()
    if objective.load is not None and compares_replicas_of_different_size(
        spec.space.knobs, spec.objective.metric
    ):
        objective = objective.replace(load=objective.load.replace(shortcut=False))
    return objective


def planned_trials(spec: StudySpec, space_size: int) -> int | None:
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
    space = build_space(spec)
    limit = min(c.max_model_len for c in space.configs())
    workload, fitted = fit_to(build_workload(spec.workload, root), limit, spec.workload.oversized)
    regenerate = build_workload_at(spec.workload, root, spec.objective.mode)
    workload_at = None
    if regenerate is not None:
        workload_at = functools.partial(_fitted, regenerate, limit, spec.workload.oversized)

    objective = build_objective(spec)
    slos = parse_slos(list(spec.slos))
    search = build_search(spec.search, space.base)
    total = spec.budget.max_trials or planned_trials(spec, len(space))
    deployment = build_deployment(spec.target, root)
    outcome: StudyOutcome
    if spec.backend is not None:
        backend = build_backend(spec.backend, root, folder / "live", deployment)
        storage = spec.storage or (str(folder / "optuna.journal") if spec.workers > 1 else None)
        outcome = StudyOutcome(spec, folder, workload, space, objective, slos, backend.describe())
        outcome.workload_note = fitted
        progress = Progress(spec.name, total, objective, space.base)
        progress.say(
            f"workload: {outcome.workload_summary.text(backend.time_unit)}"
            + (f"; {fitted}" if fitted else "")
        )
        loop = Loop(
            backend,
            search,
            objective,
            slos,
            workload_at=workload_at,
            trial_log=folder / "trials.jsonl" if storage is None else None,
            on_trial=functools.partial(_record, progress, folder),
            budget=spec.budget,
            repeats=spec.repeats,
            workers=spec.workers,
            storage=storage,
            study_name=(spec.study_name or spec.name) if storage is not None else None,
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
        cheap = build_backend(tt.cheap, root, folder / "cheap", deployment)
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
        outcome.workload_note = fitted
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
        for t in tt_result.expensive:
            save_measurement(folder, t)
        outcome.trials = tt_result.expensive or tt_result.cheap
        outcome.infeasible = tt_result.infeasible
        if tt_result.calibration is not None:
            tt_result.calibration.save(folder / "calibration.json")
        timeline_backend = cheap if isinstance(cheap, SimulatorBackend) else None
    outcome.planned = total
    outcome.versus_defaults = compare_with_defaults(outcome, timeline_backend)
    outcome.timelines = baseline_timelines(outcome)
    outcome.baseline = measure_baseline(outcome, timeline_backend, workload_at)
    outcome.wall_time = time.monotonic() - t0
    return outcome


def _record(progress: Progress, folder: Path, trial: Trial) -> None:
    """Each recorded trial: shown, and its measurement kept if a live server measured it."""
    progress(trial)
    save_measurement(folder, trial)


#: The knobs vLLM picks by device (``Target.vllm_defaults``).
TARGET_KNOBS = ("max_num_batched_tokens", "max_num_seqs", "async_scheduling", "block_size")
