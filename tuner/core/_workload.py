"""Requests and workloads: what arrives at the server, and when."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, overload

import numpy as np
import numpy.typing as npt
from pydantic import Field

from tuner.core._errors import TunerError, WorkloadError
from tuner.core._model import FrozenModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class Request(FrozenModel):
    """One request of a workload.

    Example:
        >>> Request(arrival=0.5, prompt_tokens=128, output_tokens=16)
        Request(arrival=0.5, prompt_tokens=128, output_tokens=16)
    """

    _error_class: ClassVar[type[TunerError]] = WorkloadError

    arrival: float = Field(ge=0.0, allow_inf_nan=False)
    """When the request reaches the server, in the workload's time unit (seconds, or steps on
    the unit step clock), relative to the start of the run."""
    prompt_tokens: int = Field(ge=1, le=10_000_000)
    """Prompt length in tokens."""
    output_tokens: int = Field(ge=1, le=10_000_000)
    """Exact number of tokens to generate (served with ``ignore_eos``)."""


def _readonly(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.setflags(write=False)
    return a


class Workload:
    """An immutable list of requests. Request ids are positions 0..n-1 in the given order.

    The scheduler sees requests in arrival order (stable: equal arrivals keep the given order),
    but every per-request result is reported in the given order.

    Example:
        >>> w = Workload([Request(arrival=0, prompt_tokens=64, output_tokens=8),
        ...               Request(arrival=2, prompt_tokens=16, output_tokens=4)])
        >>> len(w), w.total_output_tokens
        (2, 12)
    """

    __slots__ = ("_arrival", "_order", "_output", "_prompt")

    def __init__(self, requests: Iterable[Request]) -> None:
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
        )

    def _init(self, arrival: FloatArray, prompt: IntArray, output: IntArray) -> None:
        if len(arrival) == 0:
            raise WorkloadError("workload: needs at least one request, got none")
        self._arrival = _readonly(arrival)
        self._prompt = _readonly(prompt)
        self._output = _readonly(output)
        self._order = _readonly(np.argsort(arrival, kind="stable").astype(np.int64))

    @classmethod
    def from_arrays(
        cls,
        arrival: npt.ArrayLike,
        prompt_tokens: npt.ArrayLike,
        output_tokens: npt.ArrayLike,
    ) -> Workload:
        """Build a workload from three equal-length arrays (fast path for large workloads)."""
        a = np.asarray(arrival, dtype=np.float64).copy()
        p = np.asarray(prompt_tokens)
        o = np.asarray(output_tokens)
        if not (a.ndim == p.ndim == o.ndim == 1) or not (len(a) == len(p) == len(o)):
            raise WorkloadError(
                "workload arrays: arrival, prompt_tokens and output_tokens must be 1-D and of "
                f"equal length, got shapes {a.shape}, {p.shape}, {o.shape}"
            )
        for name, arr in (("prompt_tokens", p), ("output_tokens", o)):
            if (
                len(arr)
                and not np.issubdtype(arr.dtype, np.integer)
                and not np.all(np.asarray(arr, dtype=np.float64) % 1 == 0)
            ):
                    raise WorkloadError(f"workload.{name}: must be whole numbers of tokens")
        p = p.astype(np.int64)
        o = o.astype(np.int64)
        bad = np.flatnonzero(~np.isfinite(a) | (a < 0))
        if len(bad):
            raise WorkloadError(
                f"requests[{bad[0]}].arrival = {a[bad[0]]!r}: must be a finite number >= 0"
            )
        for name, arr in (("prompt_tokens", p), ("output_tokens", o)):
            bad = np.flatnonzero(arr < 1)
            if len(bad):
                raise WorkloadError(
                    f"requests[{bad[0]}].{name} = {arr[bad[0]]}: must be an integer >= 1"
                )
        w = cls.__new__(cls)
        w._init(a, p, o)
        return w

    @classmethod
    def from_dicts(cls, rows: Sequence[dict[str, Any]]) -> Workload:
        """Build a workload from mappings with ``arrival``, ``prompt_tokens``, ``output_tokens``."""
        reqs = []
        for i, row in enumerate(rows):
            try:
                reqs.append(Request.parse_obj_strict(row))
            except WorkloadError as e:
                raise WorkloadError(f"requests[{i}]: {e}") from None
        return cls(reqs)

    # --- views -----------------------------------------------------------------------------
    @property
    def arrival(self) -> FloatArray:
        """Arrival times, in request-id order (read-only)."""
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
        for a, p, o in zip(self._arrival, self._prompt, self._output, strict=False):
            yield Request(arrival=float(a), prompt_tokens=int(p), output_tokens=int(o))

    @overload
    def __getitem__(self, i: int) -> Request: ...
    @overload
    def __getitem__(self, i: slice) -> Workload: ...
    def __getitem__(self, i: int | slice) -> Request | Workload:
        if isinstance(i, slice):
            return Workload.from_arrays(self._arrival[i], self._prompt[i], self._output[i])
        return Request(
            arrival=float(self._arrival[i]),
            prompt_tokens=int(self._prompt[i]),
            output_tokens=int(self._output[i]),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Workload):
            return NotImplemented
        return (
            np.array_equal(self._arrival, other._arrival)
            and np.array_equal(self._prompt, other._prompt)
            and np.array_equal(self._output, other._output)
        )

    def __hash__(self) -> int:
        return hash((self._arrival.tobytes(), self._prompt.tobytes(), self._output.tobytes()))

    def __repr__(self) -> str:
        return (
            f"Workload(n={len(self)}, span={float(self._arrival.max() - self._arrival.min()):g}, "
            f"prompt_tokens={self.total_prompt_tokens}, output_tokens={self.total_output_tokens})"
        )

    def head(self, fraction: float) -> Workload:
        """The first ``fraction`` of the requests by arrival (at least one), for cheap trials.

        Raises:
            WorkloadError: if ``fraction`` is not in (0, 1].
        """
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise WorkloadError(f"head(fraction={fraction!r}): fraction must be in (0, 1]")
        n = max(1, math.ceil(len(self) * fraction - 1e-9))
        keep = np.sort(self._order[:n])
        return Workload.from_arrays(self._arrival[keep], self._prompt[keep], self._output[keep])
