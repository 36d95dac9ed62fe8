"""Trials kept in an Optuna study: real knob values, the objective's direction, claims.

Every search can keep its trials in an Optuna storage -- a journal file
(``optuna.storages.JournalStorage``, Optuna's own file lock) for worker processes on one
machine, or an RDB URL (SQLite, PostgreSQL) for many hosts -- so that optuna-dashboard and
``optuna.load_study`` read the study as users expect: each knob is a
``CategoricalDistribution`` over its actual values (``max_num_seqs=64``, not an index), the
study's direction is the objective's (MAXIMIZE for capacity or throughput), each SLO is an
Optuna constraint (``<= 0`` when met) and the study's user attribute ``tuner_study`` holds the
fingerprint of the workload, space, objective, SLOs and backend (a rerun of another study on it
is refused).

Each finished trial carries the whole tuner record in the user attribute ``tuner_trial``:
that attribute, not the Optuna state, is what makes it a measured trial (a rerun reads them
back, so resuming is rerunning).

**Claims** (how workers never evaluate one configuration twice): a search whose proposals do
not depend on results (grid, random, list: :meth:`Search.plan`) has its whole plan enqueued
once (``Study.enqueue_trial``, WAITING trials in plan order) and workers pop WAITING trials the
way ``Study.ask`` does (``set_trial_state_values(RUNNING)`` succeeds for exactly one caller).
Any other configuration is claimed by enqueueing it and popping that trial. The plan's mark
(``tuner_plan``) is set before its trials are enqueued, so a worker that finds the mark waits
until every position of the plan is in the study (and enqueues the rest itself when the plan
stops growing for ``plan_patience`` seconds: its planner died part-way). When two copies of one
evaluation exist (two hosts enqueued the plan at the same moment), only the lowest-numbered
live one may run: the holder of a later copy yields it (FAIL, ``tuner_duplicate``). A RUNNING
trial whose worker died -- same host and its process gone, or older than ``stale_after`` -- is
abandoned: it is failed (``tuner_abandoned``) and its configuration enqueued again. A worker
whose own share is done waits for what other live workers hold (:meth:`StudyStore.wait_for_others`)
before it reports, so every host reports the whole study.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuner.core import ConfigError, SearchError, SearchSpace, ServingConfig, Trial
from tuner.objectives import Objective
from tuner.search._optuna import (
    KEY_ATTR,
    ORDER_ATTR,
    PLAN_ATTR,
    STALE_AFTER,
    STUDY_ATTR,
    TRIAL_ATTR,
    WORKER_ATTR,
    WORST,
    abandoned,
    evaluation_key,
    knob_distributions,
    objective_value,
    open_storage,
    quiet_optuna,
    trial_of,
    worker_identity,
)

_FAIL = optuna.trial.TrialState.FAIL
_RUNNING = optuna.trial.TrialState.RUNNING
_WAITING = optuna.trial.TrialState.WAITING
#: Seconds a plan being enqueued by another worker may stop growing before it counts as
#: abandoned part-way (one enqueue takes milliseconds, even on a busy database).
PLAN_PATIENCE = 30.0


@dataclass(frozen=True)
class Claim:
    """A configuration this worker holds in the study (a RUNNING trial)."""

    trial_id: int
    number: int
    config: ServingConfig
    fidelity: float


class StudyStore:
    """One tuner study in an Optuna storage: open it, enqueue a plan, claim, record, read back.

    Args:
        storage: An RDB URL, a journal file path, or an Optuna storage object.
        study_name: The study's name in the storage.
        objective: Sets the study's direction and the value each trial reports.
        fingerprint: What makes two runs the same study (kept in the study's user attribute
            ``tuner_study``); a study holding another fingerprint is refused.
        stale_after: Seconds after which another host's claim counts as abandoned.
        plan_patience: Seconds a plan another worker is enqueueing may stop growing before
            this worker enqueues the rest itself (its planner died part-way).

    Example:
        >>> from tuner import Objective
        >>> store = StudyStore(optuna.storages.InMemoryStorage(), "s",
        ...                    Objective.maximize("output_throughput"))
        >>> store.study.direction.name
        'MAXIMIZE'
    """

    def __init__(
        self,
        storage: str | Path | optuna.storages.BaseStorage,
        study_name: str,
        objective: Objective,
        fingerprint: dict[str, Any] | None = None,
        stale_after: float = STALE_AFTER,
        plan_patience: float = PLAN_PATIENCE,
    ) -> None:
        self.storage = open_storage(storage)
        self.study_name = study_name
        self.objective = objective
        self.stale_after = stale_after
        self.plan_patience = plan_patience
        self._claims: dict[int, Claim] = {}
        self._distributions: dict[str, optuna.distributions.CategoricalDistribution] = {}
        with quiet_optuna():
            try:
                self.study = optuna.create_study(
                    storage=self.storage,
                    study_name=study_name,
                    direction=objective.direction,
                    load_if_exists=True,
                )
            except (ValueError, RuntimeError, optuna.exceptions.OptunaError) as e:
                raise SearchError(f"study {study_name!r}: cannot open it: {e}") from e
        self._study_id = self.storage.get_study_id_from_name(study_name)
        if fingerprint is not None:
            self._check_fingerprint(fingerprint)

    def _check_fingerprint(self, fingerprint: dict[str, Any]) -> None:
        held = self.study.user_attrs.get(STUDY_ATTR)
        wanted = json.loads(json.dumps(fingerprint))
        if held is None:
            self.study.set_user_attr(STUDY_ATTR, wanted)
        elif held != wanted:
            diff = sorted(
                k for k in wanted if not isinstance(held, dict) or held.get(k) != wanted[k]
            )
            raise ConfigError(
                f"study {self.study_name!r} holds trials of another study (its "
                f"{', '.join(diff) or 'fingerprint'} differ); use another study name or storage"
            )

    # --- set-up ------------------------------------------------------------------------------
    def use_space(self, space: SearchSpace, extra: Sequence[ServingConfig] = ()) -> None:
        """The knobs shown as parameters, over their actual values."""
        self._distributions = knob_distributions(space, extra)

    def plan(self, configs: Sequence[tuple[ServingConfig, float]], search: str) -> None:
        """Enqueue a search's whole plan once (WAITING trials in order); a rerun, or another
        worker, finds it there.

        Raises:
            ConfigError: the study was planned by another search.
        """
        keys = [evaluation_key(c, f) for c, f in configs]
        digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]
        wanted = {"search": search, "size": len(keys), "sha1": digest}
        held = self.study.user_attrs.get(PLAN_ATTR)
        if held is not None:
            if held != wanted:
                raise ConfigError(
                    f"study {self.study_name!r} was planned by {held.get('search')} "
                    f"({held.get('size')} trials), not this {search} ({len(keys)} trials); use "
                    "another study name, or the same search settings"
                )
            self._await_plan(configs, keys)
            return
        self.study.set_user_attr(PLAN_ATTR, wanted)
        self._enqueue_plan(configs, keys, range(len(keys)))

    def _enqueue_plan(
        self,
        configs: Sequence[tuple[ServingConfig, float]],
        keys: Sequence[str],
        orders: Iterable[int],
    ) -> None:
        with quiet_optuna():
            for order in orders:
                config, fidelity = configs[order]
                self.study.enqueue_trial(
                    self._params(config),
                    user_attrs={
                        KEY_ATTR: keys[order],
                        ORDER_ATTR: order,
                        "tuner_fidelity": fidelity,
                    },
                )

    def _await_plan(
        self, configs: Sequence[tuple[ServingConfig, float]], keys: Sequence[str]
    ) -> None:
        """Return once every evaluation of a plan another worker is enqueueing is in the study
        (the plan's mark is set before its trials, one by one), so that finding no WAITING
        trial means the plan is taken, not that it is not there yet. A plan that stops growing
        for ``plan_patience`` seconds (its planner died part-way) is completed here."""
        missing = self._unplanned(len(keys))
        last, since = len(missing), time.monotonic()
        while missing:
            if time.monotonic() - since > self.plan_patience:
                self._enqueue_plan(configs, keys, sorted(missing))
                return
            time.sleep(0.1)
            missing = self._unplanned(len(keys))
            if len(missing) < last:
                last, since = len(missing), time.monotonic()

    def _unplanned(self, size: int) -> set[int]:
        """The plan positions (0..size-1) no trial of the study holds yet."""
        held = {t.user_attrs.get(ORDER_ATTR) for t in self._all()}
        return {order for order in range(size) if order not in held}

    # --- claims ------------------------------------------------------------------------------
    def pop(self) -> Claim | None:
        """Claim the next WAITING evaluation of the plan (None when none is left)."""
        self.reap()
        return self._pop(None)

    def claim(self, config: ServingConfig, fidelity: float) -> Claim | Trial | None:
        """Claim one evaluation: the Claim when it is this worker's to run, the Trial when the
        study already measured it, None while another live worker holds it."""
        key = evaluation_key(config, fidelity)
        same = [t for t in self._all() if t.user_attrs.get(KEY_ATTR) == key]
        for t in same:
            done = trial_of(t)
            if done is not None:
                return done
        for t in same:
            if abandoned(t, self.stale_after):
                self._fail(t, "tuner_abandoned")
            elif t.state == _RUNNING:
                return None
        if not any(t.state == _WAITING for t in same):
            with quiet_optuna():
                self.study.enqueue_trial(
                    self._params(config),
                    user_attrs={KEY_ATTR: key, "tuner_fidelity": fidelity},
                )
        return self._pop(key)

    def _pop(self, key: str | None) -> Claim | None:
        for t in self._all(states=(_WAITING,)):
            if key is not None and t.user_attrs.get(KEY_ATTR) != key:
                continue
            try:
                if not self.storage.set_trial_state_values(t._trial_id, state=_RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            ot = optuna.trial.Trial(self.study, t._trial_id)
            ot.set_user_attr(WORKER_ATTR, worker_identity())
            mine = t.user_attrs.get(KEY_ATTR)
            config, fidelity = _from_key(mine)
            if self._earlier_copy(t.number, mine):
                self._fail(t, "tuner_duplicate")
                continue
            for name, dist in self._distributions.items():
                value = getattr(config, name)
                if value in dist.choices:
                    self.storage.set_trial_param(
                        t._trial_id, name, dist.to_internal_repr(value), dist
                    )
            claim = Claim(t._trial_id, t.number, config, fidelity)
            self._claims[t._trial_id] = claim
            return claim
        return None

    def _earlier_copy(self, number: int, key: Any) -> bool:
        """Whether a lower-numbered live or measured trial holds the same evaluation."""
        for t in self._all():
            if t.number >= number or t.user_attrs.get(KEY_ATTR) != key:
                continue
            if TRIAL_ATTR in t.user_attrs or t.state == _WAITING:
                return True
            if t.state == _RUNNING and not abandoned(t, self.stale_after):
                return True
        return False

    def reap(self) -> int:
        """Fail the abandoned claims (a dead worker's) and enqueue their evaluations again;
        returns how many."""
        n = 0
        for t in self._all(states=(_RUNNING,)):
            if KEY_ATTR in t.user_attrs and abandoned(t, self.stale_after):
                self._fail(t, "tuner_abandoned")
                self._requeue(t)
                n += 1
        return n

    def held_elsewhere(self) -> list[str]:
        """The evaluations other live workers hold (RUNNING, not finished, not abandoned),
        each as ``trial 3 (host gpu-2, pid 411, 2 min)``: what a worker whose own share is
        done waits for before it reports the study, so that its answer is the whole study's."""
        me = worker_identity()
        held = []
        for t in self._all(states=(_RUNNING,)):
            who = t.user_attrs.get(WORKER_ATTR)
            if TRIAL_ATTR in t.user_attrs or who == me or abandoned(t, self.stale_after):
                continue
            where = f"host {who.get('host')}, pid {who.get('pid')}" if isinstance(who, dict) else ""
            if t.datetime_start is not None:
                now = datetime.datetime.now(t.datetime_start.tzinfo)
                age = (now - t.datetime_start).total_seconds() / 60
                where += f"{', ' if where else ''}{age:.0f} min"
            held.append(f"trial {t.number}" + (f" ({where})" if where else ""))
        return held

    def wait_for_others(
        self, poll: float = 1.0, then: Callable[[], Claim | None] | None = None
    ) -> Claim | None:
        """Wait while other live workers hold evaluations (:meth:`held_elsewhere`), saying
        once why (a warning on the ``tuner`` logger: stderr by default). With ``then``, call
        it after each poll and return what it finds as soon as it finds something (a claim
        given back, or abandoned and enqueued again); None once nothing is held elsewhere.
        A claim older than ``stale_after`` counts as abandoned, so the wait ends by then."""
        said = False
        while held := self.held_elsewhere():
            if not said:
                said = True
                logging.getLogger("tuner").warning(
                    "study %r: this worker's share is done; waiting for what other workers "
                    "hold, to report the whole study: %s (a claim counts as abandoned after "
                    "%s and is measured again; Ctrl-C reports the study as it stands)",
                    self.study_name,
                    "; ".join(held[:5]) + (f"; {len(held) - 5} more" if len(held) > 5 else ""),
                    f"{self.stale_after / 3600:g} h"
                    if self.stale_after >= 3600
                    else f"{self.stale_after:g} s",
                )
            time.sleep(poll)
            if then is not None and (got := then()) is not None:
                return got
        return None

    def release(self) -> None:
        """Give back this worker's unfinished claims (a stopped run): FAIL, enqueued again."""
        for claim in list(self._claims.values()):
            t = self.storage.get_trial(claim.trial_id)
            self._claims.pop(claim.trial_id)
            if t.state == _RUNNING and TRIAL_ATTR not in t.user_attrs:
                self._fail(t, "tuner_released")
                self._requeue(t)

    # --- results -----------------------------------------------------------------------------
    def finish(self, claim: Claim, trial: Trial) -> None:
        """Record a claimed evaluation: the tuner record, the SLOs as constraints, the
        objective's value (COMPLETE), or FAIL with the reason."""
        ot = optuna.trial.Trial(self.study, claim.trial_id)
        ot.set_user_attr(TRIAL_ATTR, trial.record())
        with quiet_optuna():
            if not trial.ok:
                ot.set_user_attr("tuner_error", trial.error or "failed")
                self.study.tell(ot, state=_FAIL)
            else:
                for i, r in enumerate(trial.slo_results):
                    margin = -r.margin if not math.isnan(r.margin) else WORST
                    ot.set_constraint(f"{i}: {r.slo}", max(min(margin, WORST), -WORST))
                value = objective_value(trial, self.objective)
                if math.isnan(value):
                    ot.set_user_attr("tuner_note", f"{self.objective.metric} is not a number")
                    self.study.tell(ot, state=_FAIL)
                else:
                    self.study.tell(ot, value)
        self._claims.pop(claim.trial_id, None)

    def trials(self) -> tuple[Trial, ...]:
        """Every measured trial of the study, in plan order (then claim order), numbered
        0..n-1."""
        found = []
        for t in self._all():
            trial = trial_of(t)
            if trial is not None:
                found.append((t.user_attrs.get(ORDER_ATTR, math.inf), t.number, trial))
        found.sort(key=lambda x: (x[0], x[1]))
        return tuple(tr.model_copy(update={"number": i}) for i, (_, _, tr) in enumerate(found))

    def _all(self, states: tuple[Any, ...] | None = None) -> list[optuna.trial.FrozenTrial]:
        return list(self.storage.get_all_trials(self._study_id, deepcopy=False, states=states))

    def _params(self, config: ServingConfig) -> dict[str, Any]:
        return {k: getattr(config, k) for k in self._distributions}

    def _requeue(self, t: optuna.trial.FrozenTrial) -> None:
        """Enqueue a failed claim's evaluation again, at its place in the plan."""
        kept = (KEY_ATTR, ORDER_ATTR, "tuner_fidelity")
        attrs = {k: t.user_attrs[k] for k in kept if k in t.user_attrs}
        config, _ = _from_key(t.user_attrs[KEY_ATTR])
        with quiet_optuna():
            self.study.enqueue_trial(self._params(config), user_attrs=attrs)

    def _fail(self, t: optuna.trial.FrozenTrial, why: str) -> None:
        try:
            self.storage.set_trial_user_attr(t._trial_id, why, True)
            self.storage.set_trial_state_values(t._trial_id, state=_FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # someone else finished or failed it meanwhile


def _from_key(key: Any) -> tuple[ServingConfig, float]:
    data, fidelity = json.loads(str(key))
    return ServingConfig(**data), float(fidelity)
