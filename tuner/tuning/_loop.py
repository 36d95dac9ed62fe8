"""The Loop: ask, evaluate, judge against the SLOs, record, tell; then the best feasible trial.

It is the one place that joins a backend, a search and the objectives. Failure policy (Optuna's
``catch=``): a :class:`BackendError` -- or an exception type the caller lists in ``catch`` --
fails that trial, which is recorded with its reason while the search goes on; any other
exception (a ``TypeError`` in a custom backend, a bug in tuner) stops the run with its traceback
after every finished trial has been saved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from tuner.backends import Backend
from tuner.core import (
    BackendError,
    ConfigError,
    Measurement,
    SearchSpace,
    ServingConfig,
    SLOError,
    Trial,
    TrialStatus,
    TrialTimeout,
    TunerError,
    Workload,
)
from tuner.objectives import (
    DEFAULT_OBJECTIVE,
    SLO,
    AbortRule,
    CapacitySettings,
    MetricRef,
    Objective,
    best_trial,
    infeasible_error,
    parse_slos,
)
from tuner.search import Proposal, Search
from tuner.tuning._budget import Budget
from tuner.tuning._capacity import WorkloadAt, capacity_trial, offered_load
from tuner.tuning._futility import abort_margin
from tuner.tuning._log import TrialLog, fingerprint
from tuner.tuning._open import open_question
from tuner.tuning._record import TrialRecord
from tuner.tuning._repeats import (
    InvalidMeasurement,
    NoisePool,
    Repeater,
    Repeats,
    saved,
    verdict,
)
from tuner.tuning._result import Exploration, TuningResult
from tuner.tuning._workers import explore_shared

#: Figures recorded on every trial when the backend can measure them (for tables and reports).
HEADLINE_METRICS = (
    "total_steps",
    "max_step_tokens",
    "ttft_steps.max",
    "ttft.p99",
    "output_throughput",
    "prefix_cache_hit_rate",
)


class Loop:
    """Runs a search over a space with a backend, treating SLOs as hard constraints.

    Every trial is recorded (feasible or not, failed or not); a trial the backend cannot measure
    is recorded with its reason and the search goes on. The result's ``best`` is the best
    FEASIBLE trial; when no trial is feasible, :meth:`run` raises :class:`InfeasibleError`
    naming, per SLO, the best value reached, the limit and the closest configuration. It never
    returns a configuration that violates an SLO.

    Args:
        backend: Measures a configuration on a workload.
        search: Proposes configurations.
        objective: What to optimise among feasible trials.
        slos: Hard constraints, as :class:`SLO` objects or text like ``"ttft.p99 <= 200ms"``.
        budget: When to stop (:class:`Budget`); its fields ``max_trials``, ``max_cost`` and
            ``timeout`` may also be given as keywords.
        trial_log: A JSON-lines file; each trial is appended as soon as it finishes, and a
            rerun of the same study continues from it.
        on_trial: Called with each trial as soon as it is recorded (progress display).
        catch: Exception types that fail a trial (recorded, the search goes on) besides
            :class:`BackendError`; any other exception stops the run after the finished trials
            are saved.
        workload_at: For a capacity objective, the workload offered at a load (default:
            ``workload.at_rate``, the same requests with scaled arrivals; a study regenerates a
            generated workload at the rate with the same seed instead).
        repeats: How often a configuration is measured on a noisy backend and how its SLOs
            are judged (:class:`Repeats`; default ``Repeats()``: up to 5 runs while the
            decision is open, SLOs met with 95 % confidence). A deterministic backend is
            measured once.
        workers: Worker processes sharing the study (see :mod:`tuner.tuning._workers`); more
            than one needs a ``storage`` (default: a journal file beside ``trial_log``).
        storage: An Optuna storage for the study: a journal file path or an RDB URL
            (``sqlite:///x.db``, ``postgresql://...``). The study is then the run's record
            (no trial log is written) and a rerun resumes it.
        study_name: The study's name in ``storage`` (default: from the study's fingerprint).

    Example:
        >>> from tuner import Loop, Objective, Request, SearchSpace, ServingConfig, Workload
        >>> from tuner.backends import SimulatorBackend
        >>> from tuner.search import GridSearch
        >>> w = Workload([Request(arrival=0, prompt_tokens=64, output_tokens=4)])
        >>> loop = Loop(SimulatorBackend(), GridSearch(),
        ...             objective=Objective.minimize("total_steps"),
        ...             slos=["max_step_tokens <= 32"])
        >>> space = SearchSpace({"max_num_batched_tokens": [16, 32, 64]},
        ...                     base=ServingConfig(max_num_seqs=4))
        >>> loop.run(space, w).best.config.max_num_batched_tokens
        32
    """

    def __init__(
        self,
        backend: Backend,
        search: Search,
        objective: Objective | None = None,
        slos: Sequence[SLO | str] | str | SLO | None = (),
        *,
        budget: Budget | None = None,
        trial_log: str | Path | None = None,
        on_trial: Callable[[Trial], None] | None = None,
        catch: Sequence[type[BaseException]] = (),
        workload_at: WorkloadAt | None = None,
        repeats: Repeats | None = None,
        workers: int = 1,
        storage: str | Path | Any | None = None,
        study_name: str | None = None,
        **budget_changes: Any,
    ) -> None:
        if not isinstance(backend, Backend):
            raise ConfigError(f"Loop.backend: expected a Backend, got {backend!r}")
        if not isinstance(search, Search):
            raise ConfigError(f"Loop.search: expected a Search, got {search!r}")
        if objective is None:
            objective = DEFAULT_OBJECTIVE
        if not isinstance(objective, Objective):
            raise ConfigError(f"Loop.objective: expected an Objective, got {objective!r}")
        self.budget = Budget.build(budget, budget_changes)
        self.repeats = Repeats.build(repeats, {})
        self.backend = backend
        self.search = search
        self.objective = objective
        self.slos = parse_slos(slos)
        self.trial_log = Path(trial_log) if trial_log is not None else None
        self.on_trial = on_trial
        catch = tuple(catch)
        for c in catch:
            if not (isinstance(c, type) and issubclass(c, BaseException)):
                raise ConfigError(f"Loop.catch: {c!r} is not an exception type")
        self.catch: tuple[type[BaseException], ...] = (BackendError, *catch)
        if objective.is_capacity and not self.slos:
            raise ConfigError(
                f"Loop: the objective {objective.text!r} needs at least one SLO: without one the "
                "sustainable load is unbounded"
            )
        if workload_at is not None and not callable(workload_at):
            raise ConfigError(
                f"Loop.workload_at = {workload_at!r}: must be a function rate -> Workload"
            )
        self.workload_at = workload_at
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"Loop.workers = {workers!r}: must be an integer >= 1")
        self.workers, self.storage, self.study_name = workers, storage, study_name
        metrics = [*objective.metrics, *(s.metric for s in self.slos), *HEADLINE_METRICS]
        self._metrics = list(dict.fromkeys(metrics))
        self._required = set(objective.metrics) | {s.metric for s in self.slos}
        rule = AbortRule(self.slos)
        #: Offered to a backend that can stop a run early (``Backend.supports_abort``).
        self.abort_rule: AbortRule | None = rule if rule.can_abort else None
        self._noise = NoisePool()

    @property
    def max_trials(self) -> int | None:
        return self.budget.max_trials

    @property
    def max_cost(self) -> float | None:
        return self.budget.max_cost

    @property
    def timeout(self) -> float | None:
        return self.budget.timeout

    def run(self, space: SearchSpace, workload: Workload) -> TuningResult:
        """Search ``space`` on ``workload``; return the best feasible trial and every trial.

        With a ``trial_log`` that already holds trials of this same study, they are read back
        and a configuration measured before is never evaluated again: the run continues where
        the last one stopped.

        Raises:
            InfeasibleError: no trial met every SLO.
            SLOError: an SLO or the objective cannot be judged on this backend's measurements.
            ConfigError: the trial log belongs to another study.
        """
        return self.explore(space, workload).result()

    def explore(self, space: SearchSpace, workload: Workload) -> Exploration:
        """Like :meth:`run`, but return the whole record whatever the verdict: every trial,
        the best feasible one (None when none is) and, then, the refusal :meth:`run` raises."""
        if not isinstance(workload, Workload):
            raise ConfigError(f"Loop.run(workload=...): expected a Workload, got {workload!r}")
        if self.workers > 1 or self.storage is not None:
            return explore_shared(self, space, workload)
        log = None
        if self.trial_log is not None:
            study = fingerprint(
                workload,
                space,
                self.objective.text,
                [s.text for s in self.slos],
                self.backend.describe(),
            )
            log = TrialLog(self.trial_log, study)
        record = TrialRecord(log.load() if log is not None else ())
        self._noise = NoisePool(record)
        stop_reason = "search exhausted"
        t0 = time.monotonic()
        answered = 0
        try:
            self.search.start(space, self.objective, record)
            while True:
                spent = self.budget.spent(len(record), record.cost, time.monotonic() - t0)
                if spent is not None:
                    stop_reason = spent
                    break
                proposal = self.search.ask()
                if proposal is None:
                    break
                known = record.get(proposal.config, proposal.fidelity)
                if known is not None:  # measured before: answer from the record
                    self.search.tell(known)
                    answered += 1
                    if answered > 2 * len(space) + 100:
                        stop_reason = "the search only proposes configurations already measured"
                        break
                    continue
                answered = 0
                trial = self._timed(record, proposal, workload)
                record.add(trial)
                if log is not None:
                    log.append(trial)
                self.search.tell(trial)
                if self.on_trial is not None:
                    self.on_trial(trial)
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        finally:
            if log is not None:
                log.close()
            self.backend.close()
        trials = record.trials
        best = best_trial(trials, self.objective)
        return Exploration(
            trials=trials,
            best=best,
            objective=self.objective.text,
            slos=tuple(s.text for s in self.slos),
            stop_reason=stop_reason,
            infeasible=infeasible_error(trials, self.slos) if best is None else None,
        )

    def _evaluate(self, record: TrialRecord, proposal: Proposal, workload: Workload) -> Trial:
        """One trial: the configuration measured once, or repeated as ``repeats`` says."""
        number = record.next_number
        work = workload if proposal.fidelity >= 1.0 else workload.head(proposal.fidelity)
        incumbent = _incumbent(record, proposal.fidelity, self.objective)
        repeater = self._repeater()
        t0 = time.perf_counter()
        try:
            with self._session(proposal.config) as measure:
                runs = repeater.run(
                    measure,
                    work,
                    lambda r: open_question(
                        r, repeater, self.slos, self.objective, incumbent, proposal.config
                    ),
                )
        except self.catch as e:
            return self._failed(number, proposal, f"{type(e).__name__}: {e}", t0)
        except InvalidMeasurement as e:
            return self._failed(number, proposal, f"invalid measurement: {e}", t0)
        results, aborted = verdict(self.slos, runs, self.repeats.rule, self.abort_rule)
        m = runs.representative(self.objective.metric)
        return Trial(
            number=number,
            config=proposal.config,
            fidelity=proposal.fidelity,
            status=TrialStatus.COMPLETE,
            values=runs.medians,
            slo_results=results,
            wall_time=time.perf_counter() - t0,
            cost=runs.cost,
            measurement=m,
            repeats=runs.n,
            repeat_values=runs.repeat_values,
            intervals=runs.intervals,
            abort_reason=aborted,
            abort_saved=saved(work, runs.measurements[-1]) if aborted else None,
        )

    def _repeater(self) -> Repeater:
        return Repeater(
            self.repeats, self.backend.deterministic, self._values, self.slos, self._noise
        )

    def _session(self, config: ServingConfig) -> Any:
        """``backend.session(config)``, with the abort rule for a backend that takes it."""
        if self.abort_rule is not None and self.backend.supports_abort:
            return self.backend.session(config, abort=self._abort_now())
        return self.backend.session(config)

    def _abort_now(self) -> AbortRule:
        """The abort rule with the noise margins the study's repeats give now
        (:func:`~tuner.tuning._futility.abort_margin`): a run is stopped only once no repeat
        could bring its SLO back, so that early abort never throws away a configuration the
        repeat policy would have kept. Without repeats (``max`` 1, a deterministic backend)
        an abort is final as it stands."""
        assert self.abort_rule is not None
        r = self.repeats
        if self.backend.deterministic or r.max <= 1:
            return self.abort_rule
        margins = {
            slo.text: abort_margin(
                slo, *self._noise.estimate(slo.metric), r.confidence, r.max, r.rule
            )
            for slo in self.slos
        }
        return self.abort_rule.widened(margins)

    def _trial(self, record: TrialRecord, proposal: Proposal, workload: Workload) -> Trial:
        if self.objective.is_capacity:
            return self._capacity(record, proposal, workload)
        return self._evaluate(record, proposal, workload)

    def _timed(self, record: TrialRecord, proposal: Proposal, workload: Workload) -> Trial:
        """One trial, within ``trial_timeout`` when one is set (in a worker thread)."""
        limit = self.budget.trial_timeout
        if limit is None:
            return self._trial(record, proposal, workload)
        t0 = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuner-trial")
        future = pool.submit(self._trial, record, proposal, workload)
        try:
            return future.result(timeout=limit)
        except FutureTimeout:
            self.backend.cancel()
            try:  # the evaluation raises once cancelled; its result no longer counts
                future.result(timeout=self.budget.cancel_grace)
            except FutureTimeout:
                raise TrialTimeout(
                    f"trial {record.next_number} ({proposal.config.describe()}) ran past "
                    f"trial_timeout ({limit:g}s) and {self.backend.describe()} did not stop it "
                    f"within {self.budget.cancel_grace:g}s; the run stops here (finished "
                    "trials are kept)"
                ) from None
            except BaseException:
                pass
            reason = (
                f"TrialTimeout: ran past trial_timeout ({limit:g}s); the evaluation was stopped"
            )
            return self._failed(record.next_number, proposal, reason, t0)
        except BaseException:
            self.backend.cancel()  # Ctrl-C: do not leave the evaluation running
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _capacity(self, record: TrialRecord, proposal: Proposal, workload: Workload) -> Trial:
        """One capacity trial: the configuration probed at several loads."""
        settings = self.objective.load or CapacitySettings()
        start, at = offered_load(settings, workload, self.workload_at)
        same = [t for t in record if t.fidelity == proposal.fidelity and t.feasible]
        caps = [t.values.get("capacity", math.nan) for t in same]
        incumbent = max((c for c in caps if math.isfinite(c)), default=None)
        return capacity_trial(
            record.next_number,
            proposal.config,
            proposal.fidelity,
            self.backend,
            at,
            start,
            self.slos,
            self.objective,
            self._values,
            incumbent,
            self.catch,
            repeater=self._repeater(),
            session=self._session,
            abort=self.abort_rule,
        )

    def _values(self, m: Measurement) -> dict[str, float]:
        """The recorded metrics of one measurement (capacity figures excluded)."""
        values: dict[str, float] = {}
        for name in self._metrics:
            ref = MetricRef.parse(name)
            if ref.is_capacity:
                continue
            try:
                values[name] = ref.value(m)
            except TunerError:
                if name in self._required:
                    raise SLOError(f"metric {name!r} cannot be measured by {m.source}") from None
        return {k: v for k, v in values.items() if not math.isnan(v) or k in self._required}

    def _failed(self, number: int, proposal: Proposal, reason: str, t0: float) -> Trial:
        return Trial(
            number=number,
            config=proposal.config,
            fidelity=proposal.fidelity,
            status=TrialStatus.FAILED,
            error=reason,
            wall_time=time.perf_counter() - t0,
        )


def _incumbent(record: TrialRecord, fidelity: float, objective: Objective) -> Trial | None:
    """The best feasible trial so far at ``fidelity`` (by median objective), if any."""
    pool = [
        t for t in record if t.fidelity == fidelity and t.feasible and objective.metric in t.values
    ]
    return min(pool, key=lambda t: (objective.score(t.values), t.number), default=None)
