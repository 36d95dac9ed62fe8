"""Requests and workloads: what arrives at the server, and when."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import Self

from tuner.core import _closed_loop, _prompts, _traces
from tuner.core._closed_loop import ClosedLoopViews
from tuner.core._errors import WorkloadError
from tuner.core._request import Request, check_hash_ids, checked_column, column, readonly
from tuner.core._workload_files import TraceFiles
from tuner.core._workload_generators import WorkloadGenerators

HashIds = tuple[int, ...]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class Workload(WorkloadGenerators, TraceFiles, ClosedLoopViews):
    """An immutable list of requests. Request ids are positions 0..n-1 in the given order.

    The scheduler sees requests in arrival order (stable: equal arrivals keep the given order),
    but every per-request result is reported in the given order.

    Example:
        >>> w = Workload([Request(arrival=0, prompt_tokens=64, output_tokens=8),
        ...               Request(arrival=2, prompt_tokens=16, output_tokens=4)])
        >>> len(w), w.total_output_tokens
        (2, 12)
    """

    __slots__ = (
        "_arrival",
        "_chunk",
        "_hash",
        "_order",
        "_output",
        "_prompt",
        "_shares",
        "_think",
        "_user",
    )

    def __init__(
        self, requests: Iterable[Request], hash_chunk_size: int = _traces.CHUNK_SIZE
    ) -> None:
        reqs = list(requests)
        for i, r in enumerate(reqs):
            if not isinstance(r, Request):
                raise WorkloadError(
                    f"workload.requests[{i}]: expected a Request, got {type(r).__name__}"
                )
        self._init(
            np.array([r.arrival for r in reqs], dtype=np.float64),
            np.array([r.prompt_tokens for r in reqs], dtype=np.int64),
            np.array([r.output_tokens for r in reqs], dtype=np.int64),
            [r.hash_ids for r in reqs],
            hash_chunk_size,
        )

    def _init(
        self,
        arrival: FloatArray,
        prompt: IntArray,
        output: IntArray,
        hash_ids: Sequence[HashIds] | None = None,
        hash_chunk_size: int = _traces.CHUNK_SIZE,
        closed: tuple[IntArray, FloatArray] | None = None,
    ) -> None:
        if len(arrival) == 0:
            raise WorkloadError("workload: needs at least one request, got none")
        if (
            isinstance(hash_chunk_size, bool)
            or not isinstance(hash_chunk_size, (int, np.integer))
            or not 1 <= hash_chunk_size <= _traces.MAX_TOKENS
        ):
            raise WorkloadError(
                f"workload.hash_chunk_size = {hash_chunk_size!r}: must be an integer in "
                f"[1, {_traces.MAX_TOKENS}] (tokens per hash id; vllm bench's default is 16)"
            )
        self._user: IntArray | None = None
        self._think: FloatArray | None = None
        if closed is not None:  # a user's later requests: their earliest possible send times
            self._user, self._think = (readonly(a) for a in closed)
            arrival = _closed_loop.earliest_arrivals(self._user, self._think, arrival)
        self._arrival = readonly(arrival)
        self._prompt = readonly(prompt)
        self._output = readonly(output)
        self._order = readonly(np.argsort(arrival, kind="stable").astype(np.int64))
        self._chunk = int(hash_chunk_size)
        self._hash: tuple[HashIds, ...] | None = None
        self._shares: bool | None = None
        if hash_ids is not None and any(hash_ids):
            if len(hash_ids) != len(arrival):
                raise WorkloadError(
                    f"workload.hash_ids: {len(hash_ids)} entries for {len(arrival)} requests"
                )
            self._hash = tuple(tuple(h) for h in hash_ids)

    @classmethod
    def from_arrays(
        cls,
        arrival: npt.ArrayLike,
        prompt_tokens: npt.ArrayLike,
        output_tokens: npt.ArrayLike,
        hash_ids: Sequence[Sequence[int]] | None = None,
        *,
        hash_chunk_size: int = _traces.CHUNK_SIZE,
        user: npt.ArrayLike | None = None,
        think_time: npt.ArrayLike | None = None,
    ) -> Self:
        """Build a workload from equal-length arrays (fast path for large workloads).

        The bounds and the messages are :class:`Request`'s: a bad element is reported as
        ``requests[i].field = value: what is allowed`` (bools, fractions, NaN, values out of
        range or not numbers at all). ``hash_ids`` (optional) holds each request's hash ids
        (see :meth:`prompt_token_ids`), ``hash_chunk_size`` the tokens per id.

        ``user`` makes it a closed-loop workload (see :mod:`tuner.core._closed_loop`): request
        ``i`` is sent by user ``user[i]``, each user's requests in id order, the next one
        ``think_time[i]`` (a number or one per request; default 0) after the previous one's
        last token. Only a user's first arrival is read (when the user starts); the later ones
        become the earliest possible send times.

        Raises:
            WorkloadError: for arrays of different shapes or a bad element.
        """
        raw = {
            "arrival": column("arrival", arrival),
            "prompt_tokens": column("prompt_tokens", prompt_tokens),
            "output_tokens": column("output_tokens", output_tokens),
        }
        a, p, o = raw.values()
        if not (a.ndim == p.ndim == o.ndim == 1) or not (len(a) == len(p) == len(o)):
            raise WorkloadError(
                "workload arrays: arrival, prompt_tokens and output_tokens must be 1-D and of "
                f"equal length, got shapes {a.shape}, {p.shape}, {o.shape}"
            )
        checked = {name: checked_column(name, col, raw) for name, col in raw.items()}
        ids: list[HashIds] | None = None
        if hash_ids is not None:
            ids = []
            for i, h in enumerate(hash_ids):
                try:
                    ids.append(check_hash_ids(h))
                except (ValueError, TypeError) as e:
                    raise WorkloadError(f"requests[{i}].hash_ids = {h!r}: {e}") from None
        if think_time is not None and user is None:
            raise WorkloadError(
                "workload.think_time: given without user (think times are for closed-loop "
                "workloads: say which user sends each request)"
            )
        closed = None if user is None else _closed_loop.check_users(user, think_time, len(a))
        w = cls.__new__(cls)
        w._init(
            checked["arrival"],
            checked["prompt_tokens"],
            checked["output_tokens"],
            ids,
            hash_chunk_size,
            closed,
        )
        return w

    @classmethod
    def from_dicts(
        cls, rows: Sequence[dict[str, Any]], hash_chunk_size: int = _traces.CHUNK_SIZE
    ) -> Workload:
        """Build a workload from mappings with ``arrival``, ``prompt_tokens``, ``output_tokens``
        (and optionally ``hash_ids``)."""
        reqs = []
        for i, row in enumerate(rows):
            try:
                reqs.append(Request.parse_obj_strict(row))
            except WorkloadError as e:
                raise WorkloadError(f"requests[{i}]: {e}") from None
        return cls(reqs, hash_chunk_size)

    # --- trace files (formats in _traces.py) --------------------------------------------------
    # --- views -----------------------------------------------------------------------------
    @property
    def arrival(self) -> FloatArray:
        """Arrival times, in request-id order (read-only). For a closed-loop workload, the
        earliest possible send times (a user's first request at its start, each later one the
        previous one's earliest time plus its think time); the actual ones depend on the
        server and are in :attr:`Measurement.arrival`."""
        return self._arrival

    @property
    def prompt_tokens(self) -> IntArray:
        """Prompt lengths, in request-id order (read-only)."""
        return self._prompt

    @property
    def output_tokens(self) -> IntArray:
        """Output lengths, in request-id order (read-only)."""
        return self._output

    @property
    def hash_ids(self) -> tuple[HashIds, ...] | None:
        """Each request's hash ids, in id order; None when no request has any."""
        return self._hash

    @property
    def hash_chunk_size(self) -> int:
        """Tokens per hash id (``--timed-trace-chunk-hash-size``; vllm bench's default is 16)."""
        return self._chunk

    @property
    def shares_prefixes(self) -> bool:
        """Whether two prompts can share a prefix (some requests start with the same chunk),
        so that a prefix cache can serve one request from another's blocks."""
        if self._shares is None:
            firsts = set()
            shares = False
            for n, ids in zip(self._prompt.tolist(), self._hash or (), strict=False):
                if ids:
                    key = (ids[0], min(n, self._chunk))
                    if key in firsts:
                        shares = True
                        break
                    firsts.add(key)
            self._shares = shares
        return self._shares

    def prompt_token_ids(self, i: int, *, vocab_size: int = _prompts.VOCAB_SIZE) -> list[int]:
        """The token ids of request ``i``'s prompt, as ``vllm bench serve`` builds them from
        hash ids: the prompt is cut into chunks of :attr:`hash_chunk_size` tokens (the last one
        may be shorter), and the k-th chunk's tokens are a fixed function of the request's k-th
        hash id and the chunk's length. So the same ids give the same tokens in every request
        (and every process), and prompts that start with the same ids share that prefix; a
        prompt with no hash ids (or too few) gets tokens of its own for the rest. Ids are in
        ``[4, vocab_size)`` (pass the served model's vocabulary size when it is below 32000:
        same sharing, other token values). The simulator's prefix cache and the scheduler replay
        use these prompts; the live client builds prompts with the same sharing structure,
        salted per trial so one trial cannot warm the next (``tuner.backends.live._prompts``).
        See :mod:`tuner.core._prompts`.

        Raises:
            WorkloadError: ``vocab_size`` is not an integer >= 5.

        Example:
            >>> w = Workload([Request(arrival=0, prompt_tokens=20, output_tokens=1,
            ...                       hash_ids=(5, 6)),
            ...               Request(arrival=1, prompt_tokens=18, output_tokens=1,
            ...                       hash_ids=(5, 7))])
            >>> a, b = w.prompt_token_ids(0), w.prompt_token_ids(1)
            >>> len(a), a[:16] == b[:16], a[16:18] == b[16:]
            (20, True, False)
        """
        return self.prompt_token_array(i, vocab_size=vocab_size).tolist()  # type: ignore[no-any-return]

    def prompt_token_array(self, i: int, *, vocab_size: int = _prompts.VOCAB_SIZE) -> IntArray:
        """:meth:`prompt_token_ids` as an int64 array."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 5:
            raise WorkloadError(f"prompt_token_ids(vocab_size={vocab_size!r}): must be >= 5")
        n = int(self._prompt[i])
        ids = self._hash[i] if self._hash is not None else ()
        return _prompts.prompt_tokens(n, ids, self._chunk, int(i) % len(self), vocab_size)

    @property
    def schedule_order(self) -> IntArray:
        """Request ids sorted by arrival (stable), the order the server sees them."""
        return self._order

    @property
    def requests(self) -> tuple[Request, ...]:
        """The requests as models, in id order."""
        return tuple(self)

    @property
    def total_prompt_tokens(self) -> int:
        return int(self._prompt.sum())

    @property
    def total_output_tokens(self) -> int:
        return int(self._output.sum())

    @property
    def max_sequence_tokens(self) -> int:
        """The longest prompt + output of any request."""
        return int((self._prompt + self._output).max())

    def __len__(self) -> int:
        return len(self._arrival)

    def __iter__(self) -> Iterator[Request]:
        for i in range(len(self)):
            yield self[i]

    @overload
    def __getitem__(self, i: int) -> Request: ...
    @overload
    def __getitem__(self, i: slice) -> Workload: ...
    def __getitem__(self, i: int | slice) -> Request | Workload:
        if isinstance(i, slice):
            return self._subset(np.arange(len(self))[i])
        return Request(
            arrival=float(self._arrival[i]),
            prompt_tokens=int(self._prompt[i]),
            output_tokens=int(self._output[i]),
            hash_ids=self._hash[i] if self._hash is not None else (),
        )

    def _subset(self, keep: IntArray) -> Workload:
        """The requests at positions ``keep``, in that order, with their hash ids."""
        w = Workload.__new__(Workload)
        hashes = None if self._hash is None else [self._hash[k] for k in keep.tolist()]
        closed = None
        if self._user is not None and self._think is not None:
            closed = (self._user[keep], self._think[keep])
        w._init(
            self._arrival[keep], self._prompt[keep], self._output[keep], hashes, self._chunk, closed
        )
        return w

    def _key(self) -> tuple[Any, ...]:
        """What equality compares: the arrays, and the hash ids with their chunk size."""
        extra: tuple[Any, ...] = () if self._hash is None else (self._hash, self._chunk)
        if self._user is not None and self._think is not None:
            extra += ("closed", self._user.tobytes(), self._think.tobytes())
        return (self._arrival.tobytes(), self._prompt.tobytes(), self._output.tobytes(), *extra)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Workload):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        prefix = "" if self._hash is None else f", hash_chunk_size={self._chunk}"
        if self._user is not None:
            prefix += f", users={self.users}"
        return (
            f"Workload(n={len(self)}, span={float(self._arrival.max() - self._arrival.min()):g}, "
            f"prompt_tokens={self.total_prompt_tokens}, output_tokens={self.total_output_tokens}"
            f"{prefix})"
        )

    @property
    def rate(self) -> float:
        """Mean offered rate: ``n / (last arrival - first arrival)`` (requests per second, or
        per step on the unit clock); ``inf`` when every request arrives at once.

        Example:
            >>> Workload.from_arrays([0.0, 1.0, 2.0, 4.0], [8] * 4, [2] * 4).rate
            1.0
        """
        span = float(self._arrival.max() - self._arrival.min())
        return len(self) / span if span > 0 else math.inf

    def at_rate(self, rate: float) -> Workload:
        """The same requests (lengths, order, ids), their arrival offsets from the first arrival
        scaled so that :attr:`rate` equals ``rate``.

        Scaling keeps the shape of the arrivals (bursts stay bursts), so capacity searches
        compare a configuration at several loads on the very same requests.

        Raises:
            WorkloadError: ``rate`` is not a finite number > 0, or the workload has no span (a
                single request, or all at once), so it has no rate to scale.

        Example:
            >>> w = Workload.from_arrays([0.0, 1.0, 2.0, 4.0], [8] * 4, [2] * 4)
            >>> w.at_rate(2.0).arrival.tolist()
            [0.0, 0.5, 1.0, 2.0]
        """
        if (
            isinstance(rate, (bool, np.bool_))
            or not isinstance(rate, (int, float))
            or not (math.isfinite(rate) and rate > 0)
        ):
            raise WorkloadError(f"at_rate(rate={rate!r}): the rate must be a finite number > 0")
        if self._user is not None:
            raise WorkloadError(
                f"at_rate({rate!r}): a closed-loop workload ({self.users} users) has no rate to "
                "scale: its load is its number of users (use at_concurrency)"
            )
        current = self.rate
        if not math.isfinite(current):
            raise WorkloadError(
                f"at_rate({rate!r}): a workload of {len(self)} request(s) all arriving at "
                f"{float(self._arrival.min()):g} has no span, so it has no rate to scale"
            )
        first = float(self._arrival.min())
        arrival = first + (self._arrival - first) * (current / rate)
        return Workload.from_arrays(arrival, self._prompt, self._output)

    def head(self, fraction: float) -> Workload:
        """The first ``fraction`` of the requests by arrival (at least one), for cheap trials.

        Raises:
            WorkloadError: if ``fraction`` is not in (0, 1].
        """
        if isinstance(fraction, (bool, np.bool_)) or not (
            isinstance(fraction, (int, float)) and 0 < fraction <= 1
        ):
            raise WorkloadError(f"head(fraction={fraction!r}): fraction must be in (0, 1]")
        n = max(1, math.ceil(len(self) * fraction - 1e-9))
        return self._subset(np.sort(self._order[:n]))
