"""The search interface: ask for a proposal, tell the recorded trial."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

from tuner.core import SearchError, SearchSpace, ServingConfig, Trial
from tuner.objectives import DEFAULT_OBJECTIVE, Objective


@dataclass(frozen=True)
class Proposal:
    """What to evaluate next: a configuration and the fraction of the workload to run it on."""

    config: ServingConfig
    fidelity: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.fidelity <= 1:
            raise SearchError(f"Proposal.fidelity = {self.fidelity!r}: must be in (0, 1]")


class Measured(Protocol):
    """Read-only view of what the run has measured (the Loop's record): searches look a
    configuration up here instead of keeping their own copy of past results."""

    def get(self, config: ServingConfig, fidelity: float = 1.0) -> Trial | None:
        """The trial that measured ``config`` at ``fidelity``, or None."""
        ...


class _NothingMeasured:
    def get(self, config: ServingConfig, fidelity: float = 1.0) -> Trial | None:
        return None


class Search(ABC):
    """Proposes configurations; learns from the trials the Loop records.

    A search only proposes: it never evaluates, never checks SLOs and never decides the final
    answer (the Loop does). The Loop calls :meth:`start` once with the space, then alternates
    :meth:`ask` and :meth:`tell` until ``ask`` returns ``None``.

    Example:
        >>> from tuner import SearchSpace, ServingConfig
        >>> from tuner.search import GridSearch
        >>> s = GridSearch()
        >>> s.start(SearchSpace({"max_num_seqs": [1, 2]}, base=ServingConfig()))
        >>> s.ask().config.max_num_seqs
        1
    """

    _space: SearchSpace | None = None
    _objective: Objective | None = None
    _measured: Measured = _NothingMeasured()

    def start(
        self,
        space: SearchSpace,
        objective: Objective | None = None,
        measured: Measured | None = None,
    ) -> None:
        """Bind the search to a space and the objective it should chase (called once by the
        Loop before the first ``ask``). Without an objective, output throughput is maximised.
        ``measured`` is the Loop's record: a search may skip (or learn from) what it holds; the
        Loop answers any proposal already in it from the record, never measuring it again."""
        if not isinstance(space, SearchSpace):
            raise SearchError(f"start(space=...): expected a SearchSpace, got {space!r}")
        if objective is not None and not isinstance(objective, Objective):
            raise SearchError(f"start(objective=...): expected an Objective, got {objective!r}")
        self._space = space
        self._objective = objective or DEFAULT_OBJECTIVE
        self._measured = measured if measured is not None else _NothingMeasured()
        self._on_start(space)

    @property
    def measured(self) -> Measured:
        """What the run has measured so far (the Loop's record; empty outside a Loop)."""
        return self._measured

    @property
    def objective(self) -> Objective:
        """The objective given to :meth:`start`."""
        if self._objective is None:
            raise SearchError(f"{type(self).__name__}: call start(space) before ask()")
        return self._objective

    @property
    def space(self) -> SearchSpace:
        if self._space is None:
            raise SearchError(f"{type(self).__name__}: call start(space) before ask()")
        return self._space

    def _on_start(self, space: SearchSpace) -> None:  # noqa: B027 - optional hook
        """Hook for subclasses: set up state for ``space``."""

    def plan(self) -> list[Proposal] | None:
        """Every proposal this search will make, in order, when that does not depend on any
        result (grid, random, list; after :meth:`start`); None otherwise. Workers sharing a
        study split a plan between them (it is enqueued once in the study)."""
        return None

    def use_study(self, storage: Any, study_name: str) -> bool:
        """Offer the Loop's Optuna study (storage and name): a search that keeps its own
        trials there (TPE, whose sampler reads them) takes it and returns True; the others
        return False and the Loop claims and records their proposals."""
        return False

    def as_worker(self, worker: int) -> Search:
        """This search for worker number ``worker`` of a shared study (a seeded sampler
        seeds each worker distinctly); the search itself when that makes no difference."""
        return self

    @abstractmethod
    def ask(self) -> Proposal | None:
        """The next proposal, or ``None`` when the search has nothing more to propose."""

    @abstractmethod
    def tell(self, trial: Trial) -> None:
        """Feed back the trial the Loop recorded for a proposal.

        ``trial.values`` holds the objective's metrics (score them with
        ``self.objective.score``), ``trial.slo_results`` each SLO's margin (>= 0 when met),
        ``trial.ok`` whether it was measured at all, and ``trial.fidelity`` the fraction of the
        workload it ran."""
