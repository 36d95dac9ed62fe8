"""The backend interface: measure one configuration on one workload."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

import numpy as np

from tuner.core import ConfigRefused, Measurement, ServingConfig, Workload
from tuner.objectives import AbortRule


class Backend(ABC):
    """Turns a configuration and a workload into a :class:`Measurement`.

    A backend only measures: SLOs, records and stopping belong to the ``Loop``. Backends that
    hold resources (a server process) release them in :meth:`close`; every backend is a context
    manager. A backend raises :class:`~tuner.BackendError` (or a subclass) when it cannot
    measure; the Loop records that trial as failed, with the reason, and goes on.

    Example:
        >>> from tuner import ServingConfig, Workload, Request
        >>> from tuner.backends import SimulatorBackend
        >>> with SimulatorBackend() as backend:
        ...     m = backend.evaluate(ServingConfig(), Workload([Request(arrival=0,
        ...                          prompt_tokens=8, output_tokens=2)]))
        >>> m.total_steps
        2
    """

    #: A short name for records and reports.
    name: str = "backend"

    #: Whether the same config and workload always give the same measurement (then repeating
    #: a measurement tells nothing new). False unless a backend says otherwise.
    deterministic: bool = False

    #: Whether :meth:`session` takes an ``abort`` rule and may stop a run early (see there).
    #: The Loop passes ``abort=`` only to a backend that says so.
    supports_abort: bool = False

    @property
    def time_unit(self) -> str:
        """The unit its measurements' times are in: ``"s"``, or ``"step"`` for a backend on
        the unit step clock (the simulator and the replay without a seconds cost model)."""
        return "s"

    @abstractmethod
    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        """Run ``workload`` under ``config`` and return what was measured."""

    @contextmanager
    def session(
        self, config: ServingConfig, abort: AbortRule | None = None
    ) -> Iterator[Callable[[Workload], Measurement]]:
        """Measure several workloads under one configuration (a capacity search's load
        points, repeats of the identical workload): yields a function
        ``workload -> Measurement``.

        The default evaluates each workload on its own; a backend with a costly set-up (a
        live server) overrides this to set up once and measure every workload on it.

        Early abort (the hook for a load client that watches its run): a backend with
        ``supports_abort = True`` is given the Loop's ``abort`` rule. While a run goes, it may
        call ``abort.lost(PartialRun(now, arrival, output_tokens, first_token, last_token,
        tokens, failed, step_tokens))`` (:class:`~tuner.objectives.PartialRun`); once that
        returns a reason, it may stop sending, cancel what is in flight and return the
        partial :class:`Measurement` with ``aborted=reason`` (requests that never finished
        have NaN latencies). The Loop records such a trial as infeasible, with the reason
        and the part of the schedule it saved, and does not repeat it.
        """
        yield lambda workload: self.evaluate(config, workload)

    def describe(self) -> str:
        """What this backend measures with (names studies in trial logs)."""
        return self.name

    def cancel(self) -> None:  # noqa: B027 - optional hook; the default cannot interrupt
        """Stop an evaluation running in another thread as soon as possible (the Loop calls
        this when a trial runs past its time limit); that evaluation then raises. Backends
        that hold a process (a live server) stop it; in-process backends cannot be stopped."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release any resource the backend holds (idempotent)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_fits(config: ServingConfig, workload: Workload) -> None:
    """Raise :class:`ConfigRefused` if a request's prompt + output exceeds ``max_model_len``
    (vLLM refuses such a request), naming the first one and how many there are."""
    total = workload.prompt_tokens + workload.output_tokens
    bad = np.flatnonzero(total > config.max_model_len)
    if len(bad):
        i = int(bad[0])
        raise ConfigRefused(
            f"request {i}: prompt_tokens ({workload.prompt_tokens[i]}) + output_tokens "
            f"({workload.output_tokens[i]}) = {total[i]} exceeds max_model_len "
            f"({config.max_model_len}); {len(bad)} request(s) do not fit: raise max_model_len"
        )
