"""Closed-loop workloads: a fixed number of users, each sending its next request when its
previous one has finished (after a think time), as ``vllm bench serve --max-concurrency``,
AIPerf's ``--concurrency`` and GuideLLM's ``concurrent`` profile load a server.

A closed-loop workload is a :class:`~tuner.Workload` that also says, for every request, which
user sends it (``user``) and how long that user waits after its previous request's last token
before sending it (``think_time``). A user sends its requests in request-id order. When a
request is actually sent depends on the server (it waits for the previous one), so
:attr:`Workload.arrival` holds the *earliest* possible times: a user's first request at its
start, each later one the sum of the think times after it (as if every response came back at
once). Backends report the actual send times in :attr:`Measurement.arrival`, and every latency
(TTFT, E2E) is measured from those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

from tuner.core._errors import WorkloadError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

__all__ = [
    "ClosedLoopViews",
    "check_think",
    "check_user_count",
    "check_users",
    "earliest_arrivals",
    "round_robin",
    "user_starts",
]


def check_user_count(where: str, users: object) -> int:
    """``users`` as an int >= 1, or WorkloadError naming it."""
    if isinstance(users, bool) or not isinstance(users, (int, np.integer)) or users < 1:
        raise WorkloadError(
            f"{where}(users={users!r}): users must be an integer >= 1 (concurrent users)"
        )
    return int(users)


def check_think(where: str, think_time: object, name: str = "think_time") -> float:
    """``think_time`` (or another duration called ``name``) as a finite float >= 0, or
    WorkloadError naming it."""
    if (
        isinstance(think_time, bool)
        or not isinstance(think_time, (int, float, np.integer, np.floating))
        or not (math.isfinite(think_time) and think_time >= 0)
    ):
        raise WorkloadError(
            f"{where}({name}={think_time!r}): must be a finite number >= 0 (seconds, or steps "
            "on the unit clock)"
        )
    return float(think_time)


def check_users(
    user: npt.ArrayLike, think_time: npt.ArrayLike | None, n: int
) -> tuple[IntArray, FloatArray]:
    """Per-request ``user`` ids (integers >= 0) and ``think_time`` (finite, >= 0; default 0),
    checked against ``n`` requests."""
    u = np.asarray(user)
    whole = u.dtype.kind in "iu" or (
        u.dtype.kind == "f" and bool(np.all(np.isfinite(u))) and bool(np.all(u % 1 == 0))
    )
    if u.shape != (n,) or not whole:
        raise WorkloadError(
            f"workload.user: expected {n} integer user ids (one per request), got {_shown(user)}"
        )
    u = u.astype(np.int64)
    bad = np.flatnonzero(u < 0)
    if len(bad):
        raise WorkloadError(f"requests[{bad[0]}].user = {u[bad[0]]}: user ids must be >= 0")
    if think_time is None:
        t = np.zeros(n, dtype=np.float64)
    else:
        t = np.asarray(think_time)
        if t.ndim == 0 and t.dtype.kind in "iuf":
            t = np.full(n, float(t))
        if t.shape != (n,) or t.dtype.kind not in "iuf":
            raise WorkloadError(
                f"workload.think_time: expected a number or {n} numbers (one per request), "
                f"got {_shown(think_time)}"
            )
        t = t.astype(np.float64)
        bad = np.flatnonzero(~(np.isfinite(t) & (t >= 0)))
        if len(bad):
            raise WorkloadError(
                f"requests[{bad[0]}].think_time = {float(t[bad[0]]):g}: must be a finite "
                "number >= 0"
            )
    return u, t


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def round_robin(n: int, users: int) -> IntArray:
    """Request ``i`` to user ``i % users``: each user's requests interleave in id order."""
    return np.arange(n, dtype=np.int64) % users


def user_starts(users: int, ramp: float) -> FloatArray:
    """When each user sends its first request: all at 0, or spread evenly over ``[0, ramp)``
    (user ``u`` at ``u * ramp / users``)."""
    return np.arange(users, dtype=np.float64) * (ramp / users)


def earliest_arrivals(user: IntArray, think: FloatArray, first: FloatArray) -> FloatArray:
    """The earliest time each request can be sent: a user's first request at ``first`` (its
    own entry), each later one the previous one's earliest time plus its think time.

    Example:
        >>> u = np.array([0, 1, 0, 1]); t = np.array([0.0, 0.0, 2.0, 3.0])
        >>> earliest_arrivals(u, t, np.array([0.0, 1.0, 9.0, 9.0])).tolist()
        [0.0, 1.0, 2.0, 4.0]
    """
    out = np.array(first, dtype=np.float64)
    last: dict[int, float] = {}
    for i, (u, th) in enumerate(zip(user.tolist(), think.tolist(), strict=True)):
        if u in last:
            out[i] = last[u] + th
        last[u] = float(out[i])
    return out


class ClosedLoopViews:
    """The closed-loop side of :class:`~tuner.Workload` (a mixin): who sends each request,
    the think times, and the same requests over another number of users."""

    __slots__ = ()

    if TYPE_CHECKING:  # defined by Workload
        _user: IntArray | None
        _think: FloatArray | None
        _prompt: IntArray
        _output: IntArray
        _hash: tuple[tuple[int, ...], ...] | None
        _chunk: int

        def _init(
            self,
            arrival: FloatArray,
            prompt: IntArray,
            output: IntArray,
            hash_ids: Sequence[tuple[int, ...]] | None = None,
            hash_chunk_size: int = 16,
            closed: tuple[IntArray, FloatArray] | None = None,
        ) -> None: ...

    def _open_loop_only(self, what: str) -> None:
        if self._user is not None:
            raise WorkloadError(
                f"{what}: a closed-loop workload ({self.users} users) has no fixed send times "
                "(each request waits for the user's previous one); a trace file would replay "
                "its earliest times open loop. Write a measurement's actual arrivals instead"
            )

    @property
    def user(self) -> IntArray | None:
        """Closed loop: the user who sends each request, in id order; None for open loop."""
        return self._user

    @property
    def think_time(self) -> FloatArray | None:
        """Closed loop: how long each request's user waits after its previous request's last
        token before sending it (unused for a user's first request); None for open loop."""
        return self._think

    @property
    def users(self) -> int | None:
        """Closed loop: the number of concurrent users; None for open loop."""
        return None if self._user is None else len(np.unique(self._user))

    @property
    def user_sequences(self) -> tuple[tuple[int, ...], ...]:
        """Closed loop: each user's request ids in the order it sends them (users in order of
        their first request); empty for open loop."""
        if self._user is None:
            return ()
        seqs: dict[int, list[int]] = {}
        for i, u in enumerate(self._user.tolist()):
            seqs.setdefault(u, []).append(i)
        return tuple(tuple(ids) for ids in seqs.values())

    @property
    def is_closed_loop(self) -> bool:
        """Whether requests wait for their user's previous request (see :attr:`user`)."""
        return self._user is not None

    def at_concurrency(self, users: int, *, ramp: float = 0.0) -> Self:
        """The same requests (lengths, hash ids, order), sent closed loop by ``users`` users:
        request ``i`` by user ``i % users``, each user's next request its think time (this
        workload's, or 0 for an open-loop one) after its previous request's last token; every
        user starts at 0, or they start evenly spread over ``[0, ramp)``.

        The closed-loop analogue of :meth:`at_rate`: a capacity search in users
        (``Objective.capacity(mode="concurrency")``) offers the very same requests at every
        number of users.

        Raises:
            WorkloadError: ``users`` is not an integer >= 1, or ``ramp`` not a number >= 0.

        Example:
            >>> from tuner import Workload
            >>> w = Workload.from_arrays([0.0] * 4, [8] * 4, [2] * 4).at_concurrency(2)
            >>> w.users, w.user.tolist()
            (2, [0, 1, 0, 1])
        """
        where = "at_concurrency"
        users = check_user_count(where, users)
        ramp = check_think(where, ramp, "ramp")
        user = round_robin(len(self._prompt), users)
        think = self._think if self._think is not None else np.zeros(len(self._prompt))
        starts = user_starts(users, ramp)[user]
        w = type(self).__new__(type(self))
        w._init(starts, self._prompt, self._output, self._hash, self._chunk, (user, think.copy()))
        return w
