"""Requests and workloads: what arrives at the server, and when."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, overload

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator

from tuner.core import _traces
from tuner.core._arrivals import LengthSpec, sample_workload_arrays
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
    prompt_tokens: int = Field(ge=1, le=_traces.MAX_TOKENS)
    """Prompt length in tokens."""
    output_tokens: int = Field(ge=1, le=_traces.MAX_TOKENS)
    """Exact number of tokens to generate (served with ``ignore_eos``)."""

    @field_validator("prompt_tokens", "output_tokens", mode="before")
    @classmethod
    def _whole_float_as_int(cls, value: Any) -> Any:
        # So that 1e20 is reported against the bound, not as an integer too long to parse.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return value


_FINE_ROW = {"arrival": 0.0, "prompt_tokens": 1, "output_tokens": 1}


def _column(name: str, values: npt.ArrayLike) -> npt.NDArray[Any]:
    """``values`` as an array, kept as objects where numpy would hide a bool among numbers."""
    try:
        if isinstance(values, (list, tuple)) and any(
            isinstance(v, (bool, np.bool_)) for v in values
        ):
            return np.array(values, dtype=object)
        return np.asarray(values)
    except (ValueError, TypeError) as e:  # ragged or otherwise not an array
        raise WorkloadError(f"workload.{name}: not a 1-D array of numbers: {e}") from None


def _checked(name: str, col: npt.NDArray[Any], raw: dict[str, npt.NDArray[Any]]) -> Any:
    """The column as float64 (arrival) or int64 (lengths), or the first bad element's error."""
    tokens = name != "arrival"
    kind = col.dtype.kind
    if kind in "iuf":
        with np.errstate(invalid="ignore", over="ignore"):
            if tokens:
                ok = (col >= 1) & (col <= _traces.MAX_TOKENS)
                if kind == "f":
                    ok &= np.isfinite(col) & (col % 1 == 0)
            else:
                ok = np.isfinite(col) & (col >= 0)
            bad = np.flatnonzero(~ok)
        if not len(bad):
            return col.astype(np.int64 if tokens else np.float64)
        raise _row_error(int(bad[0]), name, raw)
    # Anything else (bools, strings, objects, complex): each element as Request takes it.
    out = np.empty(len(col), dtype=np.int64 if tokens else np.float64)
    for i, v in enumerate(col.tolist()):
        try:
            out[i] = getattr(Request(**{**_FINE_ROW, name: v}), name)
        except WorkloadError:
            raise _row_error(i, name, raw) from None
    return out


def _row_error(i: int, name: str, raw: dict[str, npt.NDArray[Any]]) -> WorkloadError:
    """Request's own message for element ``i`` of column ``name``."""
    value = raw[name][i]
    value = value.item() if isinstance(value, np.generic) else value
    why = "not a valid value"
    try:
        Request(**{**_FINE_ROW, name: value})
    except WorkloadError as e:
        prefix = f"Request.{name} = "
        clauses = [c for c in str(e).split("; ") if c.startswith(prefix)]
        if clauses:
            why = clauses[0].split(": ", 1)[1]
    return WorkloadError(f"requests[{i}].{name} = {value!r}: {why}")


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
        """Build a workload from three equal-length arrays (fast path for large workloads).

        The bounds and the messages are :class:`Request`'s: a bad element is reported as
        ``requests[i].field = value: what is allowed`` (bools, fractions, NaN, values out of
        range or not numbers at all).

        Raises:
            WorkloadError: for arrays of different shapes or a bad element.
        """
        raw = {
            "arrival": _column("arrival", arrival),
            "prompt_tokens": _column("prompt_tokens", prompt_tokens),
            "output_tokens": _column("output_tokens", output_tokens),
        }
        a, p, o = raw.values()
        if not (a.ndim == p.ndim == o.ndim == 1) or not (len(a) == len(p) == len(o)):
            raise WorkloadError(
                "workload arrays: arrival, prompt_tokens and output_tokens must be 1-D and of "
                f"equal length, got shapes {a.shape}, {p.shape}, {o.shape}"
            )
        checked = {name: _checked(name, col, raw) for name, col in raw.items()}
        w = cls.__new__(cls)
        w._init(checked["arrival"], checked["prompt_tokens"], checked["output_tokens"])
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

    # --- generators (definitions in _arrivals.py) --------------------------------------------
    @classmethod
    def poisson(
        cls,
        rate: float,
        n: int,
        prompt_len: LengthSpec,
        output_len: LengthSpec,
        seed: int = 0,
    ) -> Workload:
        """``n`` requests arriving as a Poisson process, like ``vllm bench serve --request-rate``.

        Same as :meth:`gamma` with ``burstiness=1``: exponential gaps of mean ``1 / rate``
        seconds; the first request arrives after the first gap and the times are rescaled so the
        last one arrives at exactly ``n / rate`` (as vLLM 0.32's ``get_request`` does).

        Args:
            rate: Requests per second, > 0; ``float("inf")`` puts every arrival at 0.
            n: The number of requests, >= 1.
            prompt_len: An int (fixed) or a length distribution (``Fixed``, ``Uniform``,
                ``LogNormal``, ``Empirical``).
            output_len: Likewise, for the output lengths.
            seed: Seeds every draw; the same seed gives the same workload.

        Raises:
            WorkloadError: naming the bad parameter, its value and what is allowed.

        Example:
            >>> from tuner.core._arrivals import Uniform
            >>> w = Workload.poisson(4.0, 100, prompt_len=Uniform(512, 0.5), output_len=64)
            >>> len(w), float(w.arrival.max())
            (100, 25.0)
        """
        a, p, o = sample_workload_arrays(
            "Workload.poisson", rate, n, prompt_len, output_len, 1.0, seed
        )
        return cls.from_arrays(a, p, o)

    @classmethod
    def gamma(
        cls,
        rate: float,
        n: int,
        prompt_len: LengthSpec,
        output_len: LengthSpec,
        burstiness: float,
        seed: int = 0,
    ) -> Workload:
        """``n`` requests with gamma gaps, like ``vllm bench serve --request-rate --burstiness``.

        Gaps have shape ``burstiness`` and scale ``1 / (rate * burstiness)``: mean ``1 / rate``,
        coefficient of variation ``1 / sqrt(burstiness)`` (1 = Poisson, < 1 burstier, > 1 more
        regular, ``inf`` evenly spaced). See :meth:`poisson` for the first arrival and the
        rescaling, and :func:`tuner.core._arrivals.arrival_times` for the definition.

        Example:
            >>> w = Workload.gamma(2.0, 8, 128, 16, burstiness=float("inf"))
            >>> w.arrival.tolist()
            [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
        """
        a, p, o = sample_workload_arrays(
            "Workload.gamma", rate, n, prompt_len, output_len, burstiness, seed
        )
        return cls.from_arrays(a, p, o)

    # --- trace files (formats in _traces.py) --------------------------------------------------
    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        *,
        sec_multiplier: float = 1.0,
        label_timestamp: str = "timestamp",
        label_input_length: str = "input_length",
        label_output_length: str = "output_length",
    ) -> Workload:
        """Read a ``vllm bench serve --dataset-name timed_trace`` JSONL file (ids in file order).

        Lines are ``{"timestamp": s, "input_length": n, "output_length": m, ...}``; ``hash_ids``
        and other keys are ignored. The keyword arguments are vLLM's
        ``--timed-trace-sec-multiplier`` and ``--timed-trace-label-*`` options. Timestamps need
        not be sorted here, but vllm bench sends lines in file order, so a line earlier than
        the one before it is sent late there.

        Raises:
            WorkloadError: for an unreadable or empty file, or a malformed line (naming the
                file, the line number and the field).

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "trace.jsonl"
            >>> Workload.poisson(1.0, 3, 100, 10).to_jsonl(p)
            >>> Workload.from_jsonl(p) == Workload.poisson(1.0, 3, 100, 10)
            True
        """
        return cls.from_arrays(
            *_traces.read_jsonl(
                path,
                sec_multiplier=sec_multiplier,
                label_timestamp=label_timestamp,
                label_input_length=label_input_length,
                label_output_length=label_output_length,
            )
        )

    def to_jsonl(self, path: str | os.PathLike[str], *, chunk_size: int = 16) -> None:
        """Write this workload as a ``timed_trace`` JSONL file, one line per request in id order.

        Each line carries ``ceil(input_length / chunk_size)`` hash ids, distinct across requests,
        so ``vllm bench serve`` builds full-length prompts that never share a cached prefix.
        ``chunk_size`` must equal ``--timed-trace-chunk-hash-size`` (default 16). vllm bench
        sends lines in file order, waiting for each timestamp; pass ``--num-prompts`` >= the
        number of requests (its default is 1000).

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "trace.jsonl"
            >>> Workload.from_arrays([0.0], [40], [8]).to_jsonl(p)
            >>> p.read_text()
            '{"timestamp": 0.0, "input_length": 40, "output_length": 8, "hash_ids": [0, 1, 2]}\\n'
        """
        _traces.write_jsonl(path, self._arrival, self._prompt, self._output, chunk_size=chunk_size)

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> Workload:
        """Read a CSV with header ``arrival,prompt_tokens,output_tokens`` (ids in file order).

        Raises:
            WorkloadError: for an unreadable or empty file, a wrong header or a malformed row
                (naming the file, the line number and the field).

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.csv"
            >>> _ = p.write_text("arrival,prompt_tokens,output_tokens\\n0.5,64,8\\n")
            >>> Workload.from_csv(p)[0]
            Request(arrival=0.5, prompt_tokens=64, output_tokens=8)
        """
        return cls.from_arrays(*_traces.read_csv(path))

    def to_csv(self, path: str | os.PathLike[str]) -> None:
        """Write this workload as a CSV with header ``arrival,prompt_tokens,output_tokens``, in id
        order; arrivals are written with ``repr`` precision, so :meth:`from_csv` reads it back
        exactly.

        Example:
            >>> import pathlib, tempfile
            >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.csv"
            >>> Workload.from_arrays([0.1], [64], [8]).to_csv(p)
            >>> p.read_text()
            'arrival,prompt_tokens,output_tokens\\n0.1,64,8\\n'
        """
        _traces.write_csv(path, self._arrival, self._prompt, self._output)

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
        keep = np.sort(self._order[:n])
        return Workload.from_arrays(self._arrival[keep], self._prompt[keep], self._output[keep])
