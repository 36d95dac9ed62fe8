"""A given list of configurations, in order: for confirming a shortlist."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.core import SearchError, SearchSpace, ServingConfig, Trial
from tuner.search._base import Proposal, Search


class ListSearch(Search):
    """Proposes exactly the given configurations, once each, in the given order, at full
    fidelity (they need not belong to the space; the space only names the knobs).

    Example:
        >>> from tuner import ServingConfig
        >>> s = ListSearch([ServingConfig(max_num_seqs=8), ServingConfig(max_num_seqs=16)])
    """

    def __init__(self, configs: Sequence[ServingConfig]) -> None:
        configs = list(configs)
        if not configs:
            raise SearchError("ListSearch.configs: needs at least one configuration")
        for i, c in enumerate(configs):
            if not isinstance(c, ServingConfig):
                raise SearchError(f"ListSearch.configs[{i}]: expected a ServingConfig, got {c!r}")
        self.configs = list(dict.fromkeys(configs))  # drop repeats, keep the order
        self._next = 0

    def _on_start(self, space: SearchSpace) -> None:
        self._next = 0

    def plan(self) -> list[Proposal] | None:
        """The configurations, in order."""
        self.space  # noqa: B018 - raises a clear error when start() was not called
        return [Proposal(c) for c in self.configs]

    def ask(self) -> Proposal | None:
        self.space  # noqa: B018 - raises a clear error when start() was not called
        if self._next >= len(self.configs):
            return None
        self._next += 1
        return Proposal(self.configs[self._next - 1])

    def tell(self, trial: Trial) -> None:
        """Nothing to learn: the list is fixed."""
