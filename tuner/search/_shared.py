"""Any search on a shared Optuna study: its proposals claimed and recorded through the storage."""

from __future__ import annotations

import time

from tuner.core import SearchError, SearchSpace, ServingConfig, Trial
from tuner.objectives import Objective
from tuner.search._base import Measured, Proposal, Search
from tuner.search._study import Claim, StudyStore


class SharedSearch(Search):
    """Wraps a search so that it runs on a :class:`StudyStore` shared by many workers.

    Three ways, by what the inner search is:

    - **planned** (grid, random, list: :meth:`Search.plan` is not None): the plan is enqueued
      once in the study and :meth:`ask` pops the next WAITING trial, so workers split the plan
      and none evaluates a configuration another one claimed; evaluations the study already
      holds (an earlier run) are not proposed again: resuming is rerunning. When nothing is
      WAITING but other live workers still hold evaluations, :meth:`ask` waits (polling every
      ``poll`` seconds) instead of ending: a claim given back or abandoned is enqueued again
      and taken here, and the run ends with the whole plan measured;
    - **in the study itself** (TPE: :meth:`Search.use_study` takes the study): its own claims
      and records, asks and tells passed through;
    - **anything else** (successive halving): each proposal is claimed before it is returned;
      one the study measured already is told to the inner search from the study (a resumed
      run catches up without measuring again), one a live worker holds is waited for.

    :meth:`tell` records each trial in the study (real knob values, the objective's value,
    SLOs as constraints, the tuner record). Call :meth:`release` when the run ends, to give
    back an evaluation a stopped run claimed but never finished.

    Example:
        >>> import optuna
        >>> from tuner import Objective, SearchSpace, ServingConfig
        >>> from tuner.search import GridSearch
        >>> objective = Objective.maximize("output_throughput")
        >>> store = StudyStore(optuna.storages.InMemoryStorage(), "s", objective)
        >>> s = SharedSearch(GridSearch(), store)
        >>> s.start(SearchSpace({"max_num_seqs": [1, 2]}, base=ServingConfig()), objective)
        >>> s.ask().config.max_num_seqs, len(store.study.trials)
        (1, 2)
    """

    def __init__(self, inner: Search, store: StudyStore, poll: float = 1.0) -> None:
        if not isinstance(inner, Search) or isinstance(inner, SharedSearch):
            raise SearchError(f"SharedSearch.inner = {inner!r}: must be a Search (not shared)")
        self.inner = inner
        self.store = store
        self.poll = poll
        self.mode = ""
        self._claims: dict[tuple[ServingConfig, float], Claim] = {}

    def start(
        self,
        space: SearchSpace,
        objective: Objective | None = None,
        measured: Measured | None = None,
    ) -> None:
        super().start(space, objective, measured)
        own = self.inner.use_study(self.store.storage, self.store.study_name)
        self.inner.start(space, self.objective, self.measured)
        plan = None if own else self.inner.plan()
        self.store.use_space(space, [p.config for p in plan or ()])
        if own:
            self.mode = "own"
        elif plan is not None:
            self.mode = "planned"
            self.store.plan([(p.config, p.fidelity) for p in plan], type(self.inner).__name__)
        else:
            self.mode = "claimed"

    def ask(self) -> Proposal | None:
        self.space  # noqa: B018 - raises a clear error when start() was not called
        if self.mode == "own":
            return self.inner.ask()
        if self.mode == "planned":
            # nothing WAITING: wait while other workers hold evaluations, for one they may yet
            # give back; None once the plan is measured (nothing waiting, nothing in flight)
            claim = self.store.pop() or self.store.wait_for_others(self.poll, then=self.store.pop)
            if claim is None:
                return None
            self._claims[(claim.config, claim.fidelity)] = claim
            return Proposal(claim.config, claim.fidelity)
        while True:
            p = self.inner.ask()
            if p is None or self.measured.get(p.config, p.fidelity) is not None:
                return p  # the Loop answers a repeat from its own record
            while True:
                got = self.store.claim(p.config, p.fidelity)
                if got is not None:
                    break
                time.sleep(self.poll)  # another live worker measures it: wait for its result
            if isinstance(got, Trial):
                self.inner.tell(got)
                continue
            self._claims[(p.config, p.fidelity)] = got
            return p

    def tell(self, trial: Trial) -> None:
        claim = self._claims.pop((trial.config, trial.fidelity), None)
        if claim is not None:
            self.store.finish(claim, trial)
        self.inner.tell(trial)

    def release(self) -> None:
        """Give back the claims of evaluations that never finished (the run stopped)."""
        self._claims.clear()
        self.store.release()
