"""The one record of what a run measured: every trial, looked up by configuration and fidelity.

The Loop owns it (and persists it through a :class:`~tuner.tuning._log.TrialLog`); searches
read it through the :class:`~tuner.search.Measured` view they are given at ``start``, so a
configuration measured once -- in this run, or in an earlier run resumed from its log -- is
never measured again and nobody keeps a second copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tuner.core import ServingConfig, Trial


class TrialRecord:
    """Trials in evaluation order, indexed by ``(config, fidelity)``.

    Example:
        >>> from tuner import ServingConfig, Trial, TrialStatus
        >>> r = TrialRecord()
        >>> t = Trial(number=0, config=ServingConfig(), status=TrialStatus.FAILED, error="x")
        >>> r.add(t); r.get(ServingConfig()) is t, len(r)
        (True, 1)
    """

    def __init__(self, trials: Iterable[Trial] = ()) -> None:
        self._trials: list[Trial] = []
        self._by_key: dict[tuple[ServingConfig, float], Trial] = {}
        for t in trials:
            self.add(t)

    def add(self, trial: Trial) -> None:
        """Record a trial (a later trial of the same config and fidelity replaces the index)."""
        self._trials.append(trial)
        self._by_key[(trial.config, trial.fidelity)] = trial

    def get(self, config: ServingConfig, fidelity: float = 1.0) -> Trial | None:
        """The trial that measured ``config`` at ``fidelity``, if any."""
        return self._by_key.get((config, fidelity))

    @property
    def trials(self) -> tuple[Trial, ...]:
        """Every trial, in evaluation order."""
        return tuple(self._trials)

    @property
    def next_number(self) -> int:
        """The number the next trial gets."""
        return max((t.number for t in self._trials), default=-1) + 1

    @property
    def cost(self) -> float:
        """The summed evaluation cost of every trial."""
        return sum(t.cost for t in self._trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self._trials)

    def __len__(self) -> int:
        return len(self._trials)
