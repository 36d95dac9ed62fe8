"""Successive halving: many candidates on a slice of the workload, the best on all of it."""

from __future__ import annotations

import math
from collections import deque

from tuner.core._config import ServingConfig
from tuner.core._errors import SearchError
from tuner.core._space import SearchSpace
from tuner.core._trial import Trial
from tuner.objectives import rank, relative_shortfall
from tuner.search._base import Proposal, Search
from tuner.search._random import RandomSearch, check_count, check_seed
from tuner.search._rungs import (
    check_eta,
    check_min_fidelity,
    check_min_promote,
    n_promoted,
    rung_fidelities,
)


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

    Args:
        inner: Where candidates come from (default: ``RandomSearch(seed=seed)``).
        n_configs: How many candidates enter the first rung.
        min_fidelity: The first rung's fraction of the workload, in (0, 1]; the rungs run at
            ``eta ** -k`` down to it (1.0 means plain evaluation of ``n_configs`` candidates).
        eta: Reduction factor between rungs, an integer >= 2.
        seed: Seeds the default inner search.
        min_promote: The fewest candidates promoted from a rung.
        promote_margin: Relative slack an SLO must have at fidelity < 1 to count as met.
        backfill: Promote more candidates when the last rung has no feasible trial.
        brackets: How many brackets to run one after the other, each racing ``n_configs``
            fresh candidates from the inner search; None = until the inner search runs dry or
            the Loop's budget (``max_cost``, ``max_trials``, ``timeout``) stops the run. More
            brackets spend a budget that one bracket would leave unused, and give a bracket
            whose candidate pool held nothing good another draw.

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
        n_configs: int = 27,
        min_fidelity: float = 1 / 9,
        eta: int = 3,
        seed: int = 0,
        *,
        min_promote: int = 1,
        promote_margin: float = 0.0,
        backfill: bool = True,
        brackets: int | None = 1,
    ) -> None:
        if inner is not None and (not isinstance(inner, Search) or inner is self):
            raise SearchError(f"SuccessiveHalving.inner = {inner!r}: must be a Search or None")
        self.n_configs = check_count("SuccessiveHalving", "n_configs", n_configs)
        try:
            self.min_fidelity = check_min_fidelity(min_fidelity)
            self.eta = check_eta(eta)
            self.min_promote = check_min_promote(min_promote)
        except SearchError as e:
            raise SearchError(f"SuccessiveHalving.{e}") from None
        self.seed = check_seed("SuccessiveHalving", seed)
        if (
            isinstance(promote_margin, bool)
            or not isinstance(promote_margin, (int, float))
            or not 0 <= promote_margin < math.inf
        ):
            raise SearchError(
                f"SuccessiveHalving.promote_margin = {promote_margin!r}: must be a finite "
                "number >= 0 (relative slack, e.g. 0.2 for 20 % of each SLO's limit)"
            )
        if brackets is not None and (
            isinstance(brackets, bool) or not isinstance(brackets, int) or brackets < 1
        ):
            raise SearchError(
                f"SuccessiveHalving.brackets = {brackets!r}: must be an integer >= 1 or None"
            )
        self.brackets = brackets
        if not isinstance(backfill, bool):
            raise SearchError(f"SuccessiveHalving.backfill = {backfill!r}: must be True or False")
        self.promote_margin = float(promote_margin)
        self.backfill = backfill
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
            k = n_promoted(len(self._results[last - 1]) if last else 0, self.eta,
                           self.min_promote)  # fmt: skip
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
                t.config for t in ranked[k:]
                if t.feasible and relative_shortfall(t.slo_results, self.promote_margin) == 0
            )  # fmt: skip
        self._promoted.append(top)
        self._results.append({})
        self._rung += 1
        self._queue.extend(top)
        return bool(top)

