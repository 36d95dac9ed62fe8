"""Seeded random search over a finite space, without repeats."""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field

from tuner.core import SearchError, SearchSpace, Settings, Trial
from tuner.search._base import Proposal, Search

#: The seeds every seeded search accepts.
SEED_FIELD = Field(default=0, ge=0, lt=2**32)


class RandomSettings(Settings):
    """The settings of :class:`RandomSearch`."""

    _owner = "RandomSearch"
    _error_class = SearchError

    seed: int = SEED_FIELD
    """Seeds the permutation; an integer in [0, 2**32)."""
    max_trials: int | None = Field(default=None, ge=1)
    """How many configurations to propose at most (None = all of them)."""


class RandomSearch(Search):
    """Configurations of the space drawn uniformly at random, each at most once.

    The order is a seeded permutation of the space, so the same seed on the same space gives
    the same proposals. The search stops after ``max_trials`` proposals, or when every
    configuration has been proposed (``max_trials=None`` or larger than the space).

    Settings (:class:`RandomSettings`, also given as keywords): ``seed``, ``max_trials``.

    Example:
        >>> from tuner import SearchSpace, ServingConfig
        >>> from tuner.search._random import RandomSearch
        >>> s = RandomSearch(seed=1, max_trials=2)
        >>> s.start(SearchSpace({"max_num_seqs": [1, 2, 4]}, base=ServingConfig()))
        >>> len({s.ask().config, s.ask().config}), s.ask()
        (2, None)
    """

    def __init__(self, settings: RandomSettings | None = None, **changes: Any) -> None:
        self.settings = RandomSettings.build(settings, changes)
        self.seed = self.settings.seed
        self.max_trials = self.settings.max_trials
        self._order: list[int] = []
        self._next = 0
        self.told: list[Trial] = []

    def _on_start(self, space: SearchSpace) -> None:
        order = list(range(len(space)))
        random.Random(self.seed).shuffle(order)
        if self.max_trials is not None:
            order = order[: self.max_trials]
        self._order = order
        self._next = 0
        self.told = []

    def plan(self) -> list[Proposal] | None:
        """The seeded permutation (its first ``max_trials``)."""
        configs = self.space.configs()
        return [Proposal(configs[i]) for i in self._order]

    def ask(self) -> Proposal | None:
        configs = self.space.configs()  # raises a clear error when start() was not called
        if self._next >= len(self._order):
            return None
        config = configs[self._order[self._next]]
        self._next += 1
        return Proposal(config)

    def tell(self, trial: Trial) -> None:
        self.told.append(trial)
