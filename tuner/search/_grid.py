"""Exhaustive grid search in a deterministic order."""

from __future__ import annotations

from tuner.core import SearchSpace, Trial
from tuner.search._base import Proposal, Search


class GridSearch(Search):
    """Every configuration of the space, once, in grid order (the last knob varies fastest).

    Example:
        >>> from tuner import Loop, SearchSpace, ServingConfig, Objective
        >>> from tuner.search import GridSearch
        >>> search = GridSearch()   # swap for RandomSearch(...) etc. without touching the rest
    """

    def __init__(self) -> None:
        self._queue: list[Proposal] = []
        self._next = 0
        self.told: list[Trial] = []

    def _on_start(self, space: SearchSpace) -> None:
        self._queue = [Proposal(c) for c in space.configs()]
        self._next = 0
        self.told = []

    def plan(self) -> list[Proposal] | None:
        """The whole grid, in grid order."""
        self.space  # noqa: B018 - raises a clear error when start() was not called
        return list(self._queue)

    def ask(self) -> Proposal | None:
        self.space  # noqa: B018 - raises a clear error when start() was not called
        if self._next >= len(self._queue):
            return None
        p = self._queue[self._next]
        self._next += 1
        return p

    def tell(self, trial: Trial) -> None:
        self.told.append(trial)
