"""Seeded random search over a finite space, without repeats."""

from __future__ import annotations

import random

from tuner.core._errors import SearchError
from tuner.core._space import SearchSpace
from tuner.core._trial import Trial
from tuner.search._base import Proposal, Search


def check_seed(owner: str, seed: object) -> int:
    """``seed`` as an int in [0, 2**32), or :class:`SearchError` naming ``owner.seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise SearchError(f"{owner}.seed = {seed!r}: must be an integer in [0, 2**32)")
    return seed


def check_count(owner: str, name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or :class:`SearchError` naming ``owner.name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SearchError(f"{owner}.{name} = {value!r}: must be an integer >= {minimum}")
    return value


class RandomSearch(Search):
    """Configurations of the space drawn uniformly at random, each at most once.

    The order is a seeded permutation of the space, so the same seed on the same space gives
    the same proposals. The search stops after ``max_trials`` proposals, or when every
    configuration has been proposed (``max_trials=None`` or larger than the space).

    Args:
        seed: Seeds the permutation; an integer in [0, 2**32).
        max_trials: How many configurations to propose at most (None = all of them).

    Example:
        >>> from tuner import SearchSpace, ServingConfig
        >>> from tuner.search._random import RandomSearch
        >>> s = RandomSearch(seed=1, max_trials=2)
        >>> s.start(SearchSpace({"max_num_seqs": [1, 2, 4]}, base=ServingConfig()))
        >>> len({s.ask().config, s.ask().config}), s.ask()
        (2, None)
    """

    def __init__(self, seed: int = 0, max_trials: int | None = None) -> None:
        self.seed = check_seed("RandomSearch", seed)
        self.max_trials = (
            None if max_trials is None else check_count("RandomSearch", "max_trials", max_trials)
        )
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

    def ask(self) -> Proposal | None:
        configs = self.space.configs()  # raises a clear error when start() was not called
        if self._next >= len(self._order):
            return None
        config = configs[self._order[self._next]]
        self._next += 1
        return Proposal(config)

    def tell(self, trial: Trial) -> None:
        self.told.append(trial)
