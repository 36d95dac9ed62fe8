"""One request of a workload, and the checks that turn columns of numbers into requests."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator

from tuner.core import _traces
from tuner.core._errors import TunerError, WorkloadError
from tuner.core._model import FrozenModel

__all__ = ["Request", "check_hash_ids", "checked_column", "column", "readonly"]


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
    hash_ids: tuple[int, ...] = ()
    """The prompt's chunk hashes, as in a ``vllm bench serve`` timed_trace: the i-th id names
    the prompt's i-th chunk of ``Workload.hash_chunk_size`` tokens, so requests whose ids start
    alike share that prompt prefix (see :meth:`Workload.prompt_token_ids`). Empty: a prompt
    that shares nothing with any other."""

    @field_validator("prompt_tokens", "output_tokens", mode="before")
    @classmethod
    def _whole_float_as_int(cls, value: Any) -> Any:
        # So that 1e20 is reported against the bound, not as an integer too long to parse.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        return value

    @field_validator("hash_ids", mode="before")
    @classmethod
    def _check_hash_ids(cls, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, (list, tuple)):
            return check_hash_ids(value)
        raise ValueError("must be a sequence of integers")

    def __repr_args__(self) -> Any:  # hash_ids only when there are some
        for name, value in super().__repr_args__():
            if name != "hash_ids" or value:
                yield name, value


def check_hash_ids(value: Any) -> tuple[int, ...]:
    """``value`` as a tuple of hash ids, or ValueError saying what is allowed."""
    out = []
    for h in value:
        if isinstance(h, np.integer):
            h = int(h)
        if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h <= _traces.MAX_HASH_ID:
            raise ValueError(f"hash ids must be integers in [0, {_traces.MAX_HASH_ID}], got {h!r}")
        out.append(h)
    return tuple(out)


_FINE_ROW = {"arrival": 0.0, "prompt_tokens": 1, "output_tokens": 1}


def column(name: str, values: npt.ArrayLike) -> npt.NDArray[Any]:
    """``values`` as an array, kept as objects where numpy would hide a bool among numbers."""
    try:
        if isinstance(values, (list, tuple)) and any(
            isinstance(v, (bool, np.bool_)) for v in values
        ):
            return np.array(values, dtype=object)
        return np.asarray(values)
    except (ValueError, TypeError) as e:  # ragged or otherwise not an array
        raise WorkloadError(f"workload.{name}: not a 1-D array of numbers: {e}") from None


def checked_column(name: str, col: npt.NDArray[Any], raw: dict[str, npt.NDArray[Any]]) -> Any:
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


def readonly(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.setflags(write=False)
    return a
