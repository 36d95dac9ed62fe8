"""Successive halving: many candidates on a slice of the workload, the best on all of it."""

from __future__ import annotations

from collections import deque
from typing import Any

from pydantic import Field

from tuner.core import SearchError, SearchSpace, ServingConfig, Settings, Trial
from tuner.objectives import rank, relative_shortfall
from tuner.search._base import Proposal, Search
from tuner.search._random import SEED_FIELD, RandomSearch
from tuner.search._rungs import n_promoted, rung_fidelities


class HalvingSettings(Settings):
    """The settings of :class:`SuccessiveHalving`."""

    _owner = "SuccessiveHalving"
    _error_class = SearchError

    n_configs: int = Field(default=27, ge=1)
    """How many candidates enter the first rung."""
    min_fidelity: float = Field(default=1 / 9, gt=0, le=1)
    """The first rung's fraction of the workload, in (0, 1]; the rungs run at ``eta ** -k``
    down to it (1.0 means plain evaluation of ``n_configs`` candidates)."""
    eta: int = Field(default=3, ge=2)
    """Reduction factor between rungs, an integer >= 2."""
    seed: int = SEED_FIELD
    """Seeds the default inner search."""
    min_promote: int = Field(default=1, ge=1)
    """The fewest candidates promoted from a rung."""
    promote_margin: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Relative slack an SLO must have at fidelity < 1 to count as met (0.2 = 20 % of each
    limit)."""
    backfill: bool = True
    """Promote more candidates when the last rung has no feasible trial."""
    brackets: int | None = Field(default=1, ge=1)
    """How many brackets to run one after the other, each racing ``n_configs`` fresh
    candidates from the inner search; None = until the inner search runs dry or the Loop's
    budget stops the run."""


class SuccessiveHalving(Search):
    """Candidates from an inner search, raced on growing slices of the workload.

    ``n_configs`` candidates drawn from ``inner`` (through its own ask/tell, started on the same
    space and objective) run in the first rung on ``workload.head(min_fidelity)`` (roughly);
    the top ``1 / eta`` of each rung (at least ``min_promote``) run again on ``eta`` times more
    of the workload, up to a last rung at fidelity 1.0 (see :mod:`tuner.search._rungs`). The
    Loop only ever answers with a feasible full-fidelity trial, so the answer comes from the
    last rung. The inner search is told each candidate's first-rung trial.

    Ranking for promotion is :func:`tuner.objectives.rank` (the one ranking of trials), best
    first: trials that meet every SLO (with ``promote_margin`` to spare), by objective score;
    then the others by total relative SLO shortfall (each SLO's missing slack divided by its
    limit, summed), then by score; failed trials last; ties go to the earlier trial.

    **Feasibility at low fidelity can mislead.** A head of the workload has fewer requests in
    flight, so queues are shorter: TTFT and E2E latencies look better than on the full workload
    and a latency SLO looks easier than it is; throughput differs too (a short run is dominated
    by ramp-up and drain). ``max_step_tokens`` is mostly set by the configuration (budget,
    threshold) and transfers well. What this class does about it:

    - infeasible candidates are not dropped at low fidelity, only ranked after the feasible
      ones by how far they miss (a near miss can still be promoted when few candidates meet
      the SLOs), and at least ``min_promote`` candidates always move up;
    - ``promote_margin`` (relative, e.g. 0.2 = 20 % of each limit) ranks a low-fidelity trial
      as feasible only with that much slack, to make up for the missing queueing;
    - the last rung always runs at fidelity 1.0 and only its trials can be the answer; with
      ``backfill=True``, if none of the last rung's trials is feasible, the next candidates of
      the previous rung that were feasible there are promoted to full fidelity, a batch at a
      time, until one is feasible at full fidelity or none is left.

    The search is synchronous: every proposal must be told before the next ``ask``.

    Settings (:class:`HalvingSettings`, also given as keywords): ``n_configs``,
    ``min_fidelity``, ``eta``, ``seed``, ``min_promote``, ``promote_margin``, ``backfill``,
    ``brackets``; ``inner`` (where candidates come from, default ``RandomSearch(seed=seed)``)
    is an object, passed first.

    Example:
        >>> from tuner import Loop, Objective, SearchSpace, ServingConfig
        >>> from tuner.search._halving import SuccessiveHalving
        >>> from tuner.search._tpe import TPESearch
        >>> sh = SuccessiveHalving(n_configs=9, min_fidelity=1 / 9, eta=3)
        >>> sh.fidelities
        (0.1111111111111111, 0.3333333333333333, 1.0)
        >>> tpe_driven = SuccessiveHalving(inner=TPESearch(seed=0, n_trials=27), n_configs=27)
    """

    def __init__(
        self,
        inner: Search | None = None,
        settings: HalvingSettings | None = None,
        **changes: Any,
    ) -> None:
        if inner is not None and (not isinstance(inner, Search) or inner is self):
            raise SearchError(f"SuccessiveHalving.inner = {inner!r}: must be a Search or None")
        self.settings = s = HalvingSettings.build(settings, changes)
        self.n_configs, self.min_fidelity, self.eta = s.n_configs, s.min_fidelity, s.eta
        self.seed, self.min_promote, self.promote_margin = s.seed, s.min_promote, s.promote_margin
        self.backfill, self.brackets = s.backfill, s.brackets
        self.inner = inner if inner is not None else RandomSearch(seed=self.seed)
        self.fidelities = rung_fidelities(self.min_fidelity, self.eta)
        self._reset()

    def _reset(self) -> None:
        self._bracket = 0
        self._inner_done = False
        self._new_bracket()

    def _new_bracket(self) -> None:
        self._rung = 0
        self._results: list[dict[ServingConfig, Trial]] = [{}]
        self._promoted: list[list[ServingConfig]] = []
        self._queue: deque[ServingConfig] = deque()
        self._outstanding: set[ServingConfig] = set()
        self._drawn = 0
        self._reserve: deque[ServingConfig] = deque()

    def _on_start(self, space: SearchSpace) -> None:
        self._reset()
        self.inner.start(space, self.objective)

    @property
    def bracket(self) -> int:
        """The bracket running now (0-based)."""
        return self._bracket

    @property
    def rung_trials(self) -> tuple[tuple[Trial, ...], ...]:
        """The current bracket's trials told so far, one tuple per rung reached, in order."""
        return tuple(tuple(r.values()) for r in self._results)

    @property
    def promotions(self) -> tuple[tuple[ServingConfig, ...], ...]:
        """For each rung of the current bracket after the first, the candidates promoted into
        it (backfills last)."""
        return tuple(tuple(p) for p in self._promoted)

    def ask(self) -> Proposal | None:
        self.space  # noqa: B018 - raises a clear error when start() was not called
        while True:
            if self._rung == 0 and not self._inner_done and self._drawn < self.n_configs:
                p = self.inner.ask()
                if p is None:
                    self._inner_done = True
                    continue
                self._drawn += 1
                if p.config in self._results[0]:  # an inner that repeats itself: answer it
                    self.inner.tell(self._results[0][p.config])
                    continue
                return self._propose(p.config)
            if self._queue:
                return self._propose(self._queue.popleft())
            if self._outstanding:
                raise SearchError(
                    f"SuccessiveHalving.ask: {len(self._outstanding)} proposal(s) of rung "
                    f"{self._rung} not told yet; tell each trial before asking again"
                )
            if not self._advance():
                more = self.brackets is None or self._bracket + 1 < self.brackets
                if not more or self._inner_done:
                    return None
                self._bracket += 1
                self._new_bracket()

    def tell(self, trial: Trial) -> None:
        if trial.config not in self._outstanding or trial.fidelity != self.fidelities[self._rung]:
            raise SearchError(
                f"SuccessiveHalving.tell: trial {trial.number} ({trial.config.describe()} at "
                f"fidelity {trial.fidelity:g}) is not an open proposal of rung {self._rung}"
            )
        self._outstanding.remove(trial.config)
        self._results[self._rung][trial.config] = trial
        if self._rung == 0:
            self.inner.tell(trial)

    def _propose(self, config: ServingConfig) -> Proposal:
        self._outstanding.add(config)
        return Proposal(config, self.fidelities[self._rung])

    def _advance(self) -> bool:
        """Fill the next rung's queue (or backfill the last one); False when the search ends."""
        last = len(self.fidelities) - 1
        if self._rung == last:
            if not self.backfill or any(t.feasible for t in self._results[last].values()):
                return False
            k = n_promoted(len(self._results[last - 1]) if last else 0, self.eta, self.min_promote)
            batch = [self._reserve.popleft() for _ in range(min(k, len(self._reserve)))]
            self._promoted[-1].extend(batch)
            self._queue.extend(batch)
            return bool(batch)
        trials = self._results[self._rung].values()
        ranked = rank(list(trials), self.objective, self.promote_margin)
        k = n_promoted(len(ranked), self.eta, self.min_promote)
        top = [t.config for t in ranked[:k]]
        if self._rung + 1 == last:
            self._reserve = deque(
                t.config
                for t in ranked[k:]
                if t.feasible and relative_shortfall(t.slo_results, self.promote_margin) == 0
            )
        self._promoted.append(top)
        self._results.append({})
        self._rung += 1
        self._queue.extend(top)
        return bool(top)
