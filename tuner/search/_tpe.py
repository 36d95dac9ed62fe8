"""Bayesian search with Optuna's TPE sampler, SLOs passed to Optuna as constraints."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import optuna
from pydantic import Field, model_validator

from tuner.core import ConfigError, SearchError, SearchSpace, ServingConfig, Settings, Trial
from tuner.objectives import Objective
from tuner.search._base import Proposal, Search
from tuner.search._optuna import (
    KEY_ATTR,
    TRIAL_ATTR,
    WORKER_ATTR,
    WORST,
    abandoned,
    evaluation_key,
    knob_distributions,
    objective_value,
    quiet_optuna,
    worker_identity,
    worst,
)
from tuner.search._random import SEED_FIELD

#: Constraint set on every Optuna trial: 0 when the Loop measured the configuration, WORST when
#: the trial failed or the sampled combination is not a valid configuration of the space.
UNMEASURED = "unmeasured"

_SPACE_ATTR = "tuner_space"
_OBJECTIVE_ATTR = "tuner_objective"


@dataclass(frozen=True)
class _Outcome:
    """What Optuna is told for one configuration: its objective value and constraints."""

    value: float
    constraints: dict[str, float] = field(default_factory=dict)


class TPESettings(Settings):
    """The settings of :class:`TPESearch`."""

    _owner = "TPESearch"
    _error_class = SearchError
    NEEDS_NAME: ClassVar[str] = (
        "TPESearch.study_name = None: a study_name is required with a storage, so that "
        "workers share one study and a rerun resumes it"
    )

    seed: int = SEED_FIELD
    """Seeds the sampler; an integer in [0, 2**32). Same seed, space and results give the same
    proposals (with a private in-memory study)."""
    n_trials: int = Field(default=50, ge=1)
    """Most configurations to return to the Loop."""
    n_startup_trials: int = Field(default=10, ge=0)
    """Random trials before TPE starts modelling (Optuna's default is 10)."""
    storage: str | None = Field(default=None, min_length=1)
    """An Optuna storage URL (e.g. ``sqlite:///study.db``); None = a private in-memory study."""
    study_name: str | None = Field(default=None, min_length=1)
    """Names the study in ``storage`` (required with ``storage``)."""
    max_repeats: int = Field(default=100, ge=1)
    """Stop after this many consecutive invalid or already-measured samples."""
    worker: int = Field(default=0, ge=0, lt=100_000)
    """This worker's number among those sharing one study: each worker's sampler is seeded
    distinctly (``seed`` and ``worker`` together), so the same seed set reproduces a run."""
    stale_after: float = Field(default=6 * 3600.0, gt=0, allow_inf_nan=False)
    """Seconds after which another worker's unfinished trial counts as abandoned (its
    configuration may then be measured here)."""

    @model_validator(mode="after")
    def _named(self) -> TPESettings:
        if self.storage is not None and self.study_name is None:
            raise ValueError(self.NEEDS_NAME.split(": ", 1)[1])
        return self


class TPESearch(Search):
    """Optuna's TPE sampler proposing configurations of the space, SLOs as constraints.

    Each knob of the space is a categorical Optuna parameter over its actual values (ints,
    bools and None: optuna-dashboard shows ``max_num_seqs=64``). The study has the
    objective's direction and each trial's value is the objective's metric (MAXIMIZE
    ``capacity``); each SLO becomes one Optuna constraint ``-margin`` (<= 0 when met) set with
    ``optuna.trial.Trial.set_constraint``, so TPE ranks feasible trials first and infeasible
    ones by total violation. Optuna needs finite numbers: a NaN/inf objective is reported as
    :data:`WORST` in the objective's direction and a NaN SLO metric's constraint as
    :data:`WORST`. A trial the backend could not measure is reported COMPLETE with the worst
    value and the constraint ``"unmeasured"`` violated by :data:`WORST` (so TPE learns to avoid
    its region); its reason is kept in the Optuna trial's user attribute ``tuner_error``.

    Only valid configurations reach the Loop, each at most once:

    - a sampled combination that is not in the space (vLLM refuses it; see
      ``SearchSpace.excluded``) is told to Optuna like a failed trial and sampling goes on;
    - a sampled configuration already measured -- in the Loop's record (:attr:`measured`), or
      by another worker of the shared study -- is answered from that measurement (Optuna is
      told its value and constraints) and sampling goes on.

    :meth:`ask` returns None after ``n_trials`` proposals, when every configuration of the space
    has been measured, or after ``max_repeats`` consecutive samples that were invalid or cached
    (TPE has converged on what it already knows).

    With ``storage`` (an Optuna storage URL such as ``"sqlite:///study.db"``, or a storage
    object such as a ``JournalStorage``) and ``study_name``, many workers share one study and a
    rerun resumes it: on :meth:`start`, and before every proposal, the study's COMPLETE trials
    are read, so a configuration measured by an earlier run or another worker is not
    measured again (failed ones included: delete them from the study to retry them). A
    configuration another worker is measuring (an earlier RUNNING trial with its parameters,
    younger than ``stale_after``) is not proposed; the earliest claim wins, so two workers never
    measure one configuration at once. Each worker's sampler is seeded from ``seed`` and its
    ``worker`` number, and uses Optuna's constant liar, so workers spread out. The cached trials
    are not replayed to the Loop: merging earlier results into a
    run's answer is the Loop's business (its trial log). The study remembers the space and the
    objective it was created for and refuses to resume with different ones.

    Each Optuna trial carries user attributes for readers of the study: ``tuner_trial`` (the
    tuner record of a measured trial), ``tuner_fidelity``, ``tuner_error`` (failed),
    ``tuner_invalid`` (a refused combination, with vLLM's reason) or ``tuner_cached`` (a
    repeat answered from the cache). A Loop given a ``storage`` hands its study to this search
    (:meth:`use_study`), so TPE samples from, and records in, the Loop's study.

    Optuna's INFO log lines ("A new study created ...", "Using an existing study ...") are
    silenced while this search talks to Optuna; the previous verbosity is restored afterwards
    (a temporary change of Optuna's global verbosity, so not thread-safe).

    Settings (:class:`TPESettings`, also given as keywords): ``seed``, ``n_trials``,
    ``n_startup_trials``, ``storage``, ``study_name``, ``max_repeats``. ``storage`` may also be
    an Optuna storage object (e.g. a ``JournalStorage``).

    Example:
        >>> from tuner import Loop, Objective, SearchSpace, ServingConfig
        >>> from tuner.search._tpe import TPESearch
        >>> search = TPESearch(seed=0, n_trials=20, n_startup_trials=5)
        >>> search.start(SearchSpace({"max_num_seqs": [1, 2, 4]}, base=ServingConfig()))
        >>> search.ask().config.max_num_seqs in (1, 2, 4)
        True
    """

    def __init__(self, settings: TPESettings | None = None, **changes: Any) -> None:
        if not hasattr(optuna.trial.Trial, "set_constraint"):
            raise SearchError(
                f"TPESearch needs optuna >= 5.0 (Trial.set_constraint); found {optuna.__version__}"
            )
        storage = changes.get("storage")
        if isinstance(storage, optuna.storages.BaseStorage):  # an object, not a setting
            changes = {**changes, "storage": None}
        elif storage is not None and not isinstance(storage, str):
            raise SearchError(
                f"TPESearch.storage = {storage!r}: must be None, an Optuna storage URL such as "
                "'sqlite:///study.db', or an optuna.storages.BaseStorage (e.g. JournalStorage)"
            )
        else:
            storage = None
        self.settings = TPESettings.build(settings, changes)
        if storage is not None and self.settings.study_name is None:
            raise SearchError(TPESettings.NEEDS_NAME)
        self.seed = self.settings.seed
        self.n_trials = self.settings.n_trials
        self.n_startup_trials = self.settings.n_startup_trials
        self.max_repeats = self.settings.max_repeats
        self.storage: str | optuna.storages.BaseStorage | None = storage or self.settings.storage
        self.study_name = self.settings.study_name
        self._study: Any = None
        self._dims: dict[str, tuple[Any, ...]] = {}
        self._distributions: dict[str, Any] = {}
        self._configs: set[ServingConfig] = set()
        self._at: dict[tuple[Any, ...], ServingConfig | str] = {}
        self._remote: dict[ServingConfig, _Outcome] = {}
        self._done: set[ServingConfig] = set()
        self._pending: dict[ServingConfig, Any] = {}
        self._synced: set[int] = set()
        self._returned = 0
        self._repeats = 0

    @property
    def study(self) -> Any:
        """The ``optuna.Study`` behind this search (after :meth:`start`)."""
        if self._study is None:
            raise SearchError("TPESearch: call start(space) before using the study")
        return self._study

    def use_study(self, storage: Any, study_name: str) -> bool:
        """Sample from and record in the Loop's study (when this search has no storage of its
        own, or the same one)."""
        if self.storage is None:
            self.storage, self.study_name = storage, study_name
            return True
        if self.storage is storage and self.study_name == study_name:
            return True
        raise SearchError(
            f"TPESearch has its own storage ({self.storage!r}, study {self.study_name!r}) and the "
            f"Loop another (study {study_name!r}); give the storage to the Loop only"
        )

    def as_worker(self, worker: int) -> TPESearch:
        """This search for worker ``worker``: its sampler seeded from ``seed`` and
        ``settings.worker + worker``."""
        copy = TPESearch(self.settings.replace(worker=self.settings.worker + worker))
        copy.storage, copy.study_name = self.storage, self.study_name
        return copy

    def _on_start(self, space: SearchSpace) -> None:
        self._dims = space.dimensions
        self._distributions = knob_distributions(space)
        self._configs = set(space.configs())
        self._at = {}
        self._remote = {}
        self._done = set()
        self._pending = {}
        self._synced = set()
        self._returned = 0
        self._repeats = 0
        sampler = optuna.samplers.TPESampler(
            seed=(self.seed + 7919 * self.settings.worker) % 2**32,
            n_startup_trials=self.n_startup_trials,
            constant_liar=True,  # running trials count as bad guesses: workers spread out
        )
        with quiet_optuna():
            try:
                self._study = optuna.create_study(
                    storage=self.storage,
                    sampler=sampler,
                    study_name=self.study_name,
                    direction=self.objective.direction,
                    load_if_exists=True,
                )
            except (ValueError, RuntimeError, ImportError) as e:
                raise SearchError(
                    f"TPESearch: cannot open study {self.study_name!r} in storage "
                    f"{self.storage!r}: {e}"
                ) from e
        self._check_study_matches()
        self._reap()
        self._sync()

    def ask(self) -> Proposal | None:
        self.space  # noqa: B018 - raises a clear error when start() was not called
        self._sync()
        while True:
            if self._returned >= self.n_trials or self._repeats >= self.max_repeats:
                return None
            if len(self._done) + len(self._pending) >= len(self._configs):
                return None
            with quiet_optuna():
                ot = self.study.ask(fixed_distributions=self._distributions)
            index = tuple(ot.params[k] for k in self._dims)
            config = self._config_at(index)
            known = None if isinstance(config, str) else self._known(config)
            if isinstance(config, str):
                ot.set_user_attr("tuner_invalid", config)
                self._tell(ot, _Outcome(worst(self.objective), {UNMEASURED: WORST}))
            elif known is not None:
                ot.set_user_attr("tuner_cached", True)
                self._tell(ot, known)
            elif (
                config in self._pending
                or config in self._done  # outside a Loop's record
                or self._claimed_elsewhere(ot.number, index)
                or self._finished_elsewhere(config)
            ):
                with quiet_optuna():
                    self.study.tell(ot, state=optuna.trial.TrialState.FAIL)
            else:
                ot.set_user_attr(WORKER_ATTR, worker_identity())
                ot.set_user_attr(KEY_ATTR, evaluation_key(config, 1.0))
                self._pending[config] = ot
                self._returned += 1
                self._repeats = 0
                return Proposal(config)
            self._repeats += 1

    def tell(self, trial: Trial) -> None:
        ot = self._pending.pop(trial.config, None)
        if ot is None:
            raise SearchError(
                f"TPESearch.tell: trial {trial.number} ({trial.config.describe()}) was not "
                "proposed by this search, or was already told"
            )
        ot.set_user_attr("tuner_fidelity", trial.fidelity)
        ot.set_user_attr(TRIAL_ATTR, trial.record())
        if not trial.ok:
            ot.set_user_attr("tuner_error", trial.error or "failed")
        self._done.add(trial.config)
        self._tell(ot, outcome_of(trial, self.objective))
        self._synced.add(ot.number)

    def _finished_elsewhere(self, config: ServingConfig) -> bool:
        """Whether another worker finished this configuration since the last sync."""
        if self.storage is None:
            return False
        self._sync()
        return config in self._remote

    def _claimed_elsewhere(self, number: int, index: tuple[Any, ...]) -> bool:
        """Whether another worker is measuring this configuration right now: an earlier
        RUNNING trial of the shared study with the same parameters whose worker is alive
        (:func:`~tuner.search._study.abandoned`: a dead process of this host, or a claim older
        than ``stale_after`` seconds, is a crashed worker's leftover). The earliest claim wins,
        so two workers that sampled the same configuration at the same moment never both
        measure it."""
        if self.storage is None:
            return False
        with quiet_optuna():
            running = self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            )
        mine = dict(zip(self._dims, index, strict=True))
        for t in running:
            if t.number >= number or not set(t.params) <= set(self._dims):
                continue
            if abandoned(t, self.settings.stale_after):
                continue
            # A trial still being written may hold only some parameters: if those match, it
            # may be this configuration, so yield (a spurious yield only costs a resample).
            if all(_same(v, mine[k]) for k, v in t.params.items()):
                return True
        return False

    def _reap(self) -> None:
        """Fail the RUNNING trials of dead workers (a killed run), so TPE's constant liar no
        longer counts them and their configurations can be measured again."""
        if self.storage is None:
            return
        with quiet_optuna():
            for t in self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)
            ):
                if WORKER_ATTR in t.user_attrs and abandoned(t, self.settings.stale_after):
                    with contextlib.suppress(ValueError, RuntimeError):  # finished meanwhile
                        self.study.tell(t.number, state=optuna.trial.TrialState.FAIL)

    def _known(self, config: ServingConfig) -> _Outcome | None:
        """What is known of ``config`` already: the Loop's record first, then the study."""
        trial = self.measured.get(config)
        if trial is not None:
            self._done.add(config)
            return outcome_of(trial, self.objective)
        return self._remote.get(config)

    def _tell(self, ot: Any, outcome: _Outcome) -> None:
        for key, value in outcome.constraints.items():
            ot.set_constraint(key, value)
        with quiet_optuna():
            self.study.tell(ot, outcome.value)

    def _config_at(self, index: tuple[Any, ...]) -> ServingConfig | str:
        """The configuration with these knob values, or why there is none (memoised)."""
        if index not in self._at:
            changes = dict(zip(self._dims, index, strict=True))
            try:
                config = self.space.base.replace(**changes)
            except ConfigError as e:
                self._at[index] = f"{changes}: {e}"
            else:
                self._at[index] = (
                    config if config in self._configs else f"{changes}: not in the space"
                )
        return self._at[index]

    def _sync(self) -> None:
        """Read the study's COMPLETE trials that other runs or workers measured."""
        with quiet_optuna():
            trials = self.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
            )
        for t in trials:
            if t.number in self._synced:
                continue
            self._synced.add(t.number)
            if "tuner_invalid" in t.user_attrs or set(t.params) != set(self._dims):
                continue
            config = self._config_at(tuple(t.params[k] for k in self._dims))
            if isinstance(config, ServingConfig) and config not in self._remote:
                self._remote[config] = _Outcome(float(t.value), dict(t.constraints))
                self._done.add(config)

    def _check_study_matches(self) -> None:
        """Refuse to resume a study created for another space or objective."""
        study = self.study
        space = {k: [repr(v) for v in vals] for k, vals in self._dims.items()}
        wanted = {_SPACE_ATTR: space, _OBJECTIVE_ATTR: self.objective.text}
        attrs = study.user_attrs
        for key, value in wanted.items():
            if key not in attrs:
                study.set_user_attr(key, value)
            elif attrs[key] != value:
                raise SearchError(
                    f"TPESearch: study {study.study_name!r} was created for {key[6:]} "
                    f"{attrs[key]!r}, not {value!r}; use another study_name for this one"
                )
        for t in study.get_trials(deepcopy=False):
            for k, dist in t.distributions.items():
                if k in self._distributions and dist != self._distributions[k]:
                    raise SearchError(
                        f"TPESearch: study {study.study_name!r} has parameter {k!r} as {dist}, "
                        f"not {self._distributions[k]}; use another study_name for this space"
                    )


def outcome_of(trial: Trial, objective: Objective) -> _Outcome:
    """What Optuna is told for a recorded trial: the objective's metric (the study has the
    objective's direction), the worst finite value when it is not a number or unmeasured."""
    bad = worst(objective)
    if not trial.ok:
        return _Outcome(bad, {UNMEASURED: WORST})
    constraints = {UNMEASURED: 0.0}
    for i, r in enumerate(trial.slo_results):
        constraints[f"{i}: {r.slo}"] = _finite(-r.margin)
    value = objective_value(trial, objective)
    return _Outcome(bad if math.isnan(value) else value, constraints)


def _same(a: Any, b: Any) -> bool:
    """Equal knob values of one parameter (True is not 1 here)."""
    return type(a) is type(b) and a == b


def _finite(x: float) -> float:
    if math.isnan(x) or x > WORST:
        return WORST
    return max(x, -WORST)
