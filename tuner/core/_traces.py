"""Trace files: the ``timed_trace`` JSONL of ``vllm bench serve``, and a plain CSV.

The JSONL reader accepts what ``TimedTrace.sample`` in ``vllm/benchmarks/datasets/datasets.py``
(vLLM 0.32) accepts: one JSON object per line with a timestamp, an input length, an output
length and optionally ``hash_ids`` (the prompt's chunk hashes, see
:meth:`tuner.Workload.prompt_token_ids`) under configurable keys (``--timed-trace-label-*``),
timestamps scaled by ``--timed-trace-sec-multiplier`` or a ``time_unit``; any other key is
ignored. Mooncake / AIPerf traces have the same keys with millisecond timestamps and 512-token
chunks (``time_unit="ms"``, ``hash_chunk_size=512``). It is stricter than vLLM where vLLM would
fail later or silently (blank lines, wrong types, values below 1).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tuner.core._errors import WorkloadError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HashIds = tuple[int, ...]
Arrays = tuple[FloatArray, IntArray, IntArray, "list[HashIds] | None"]
"""Arrivals, prompt and output lengths, and each request's hash ids (None: no line had any)."""
PathLike = str | os.PathLike[str]
TimeUnit = Literal["s", "ms", "us"]
TIME_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e3, "us": 1e6}
"""Timestamp units a trace may use -> timestamps per second (arrival = timestamp / this)."""
MAX_HASH_ID = 2**63 - 1
MS_SUSPECT_GAP = 60.0
"""A mean gap between arrivals over this many seconds suggests milliseconds read as seconds."""

MAX_TOKENS = 10_000_000
CHUNK_SIZE = 16
"""Tokens per hash id: the default of ``--timed-trace-chunk-hash-size``."""
CSV_HEADER = ("arrival", "prompt_tokens", "output_tokens")
CSV_HASH_COLUMN = "hash_ids"
"""The optional fourth CSV column: the hash ids, separated by spaces."""

__all__ = [
    "CHUNK_SIZE",
    "CSV_HEADER",
    "TIME_UNITS",
    "check_time_unit",
    "read_csv",
    "read_jsonl",
    "write_csv",
    "write_jsonl",
]


def _at(path: PathLike, lineno: int) -> str:
    return f"{os.fspath(path)}:{lineno}"


def _read_lines(path: PathLike, encoding: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise WorkloadError(f"{os.fspath(path)}: cannot read trace file: {e}") from e
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise WorkloadError(
            f"{_at(path, lineno)}: not a UTF-8 text file: byte {data[e.start]:#04x} ({e.reason})"
        ) from None
    return io.StringIO(text, newline="").readlines()


def _show(value: Any) -> str:
    """``repr(value)``, shortened so that a megabyte-long field does not flood the message."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _arrival(
    value: Any, where: str, field: str, scale: float = 1.0, per_second: float = 1.0
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkloadError(
            f"{where}: field {field!r} = {_show(value)}: must be a number (seconds)"
        )
    try:
        seconds = float(value) * scale
        if per_second != 1.0:  # divided, not multiplied by 0.001: 1500 ms is exactly 1.5 s
            seconds /= per_second
    except OverflowError:  # an integer too large for a float
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise WorkloadError(f"{where}: field {field!r} = {_show(value)}: must be finite and >= 0")
    return seconds


def _tokens(value: Any, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
        raise WorkloadError(
            f"{where}: field {field!r} = {_show(value)}: must be an integer in [1, {MAX_TOKENS}]"
        )
    return value


def _hash_ids(value: Any, where: str, field: str) -> HashIds:
    if not isinstance(value, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and 0 <= h <= MAX_HASH_ID for h in value
    ):
        raise WorkloadError(
            f"{where}: field {field!r} = {_show(value)}: must be a list of integers in "
            f"[0, {MAX_HASH_ID}]"
        )
    return tuple(value)


def check_time_unit(time_unit: Any, where: str) -> float:
    """Timestamps per second for a ``time_unit`` ("s", "ms" or "us"), or WorkloadError."""
    if not isinstance(time_unit, str) or time_unit not in TIME_UNITS:
        raise WorkloadError(
            f"{where}(time_unit={time_unit!r}): allowed: {', '.join(map(repr, TIME_UNITS))}"
        )
    return TIME_UNITS[time_unit]


def _warn_if_milliseconds(path: PathLike, a: list[float], time_unit: str) -> None:
    """Warn when second-timestamps look like milliseconds (a mean gap over a minute)."""
    if time_unit != "s" or len(a) < 2:
        return
    gap = (max(a) - min(a)) / (len(a) - 1)
    if gap > MS_SUSPECT_GAP:
        warnings.warn(
            f"{os.fspath(path)}: the mean gap between arrivals is {gap:.4g} s; if the "
            "timestamps are milliseconds (Mooncake / AIPerf traces), read it with "
            "time_unit='ms'",
            UserWarning,
            stacklevel=5,
        )


def _done(
    path: PathLike,
    a: list[float],
    p: list[int],
    o: list[int],
    hashes: list[HashIds] | None,
    time_unit: str = "s",
) -> Arrays:
    if not a:
        raise WorkloadError(f"{os.fspath(path)}: empty trace file, needs at least one request")
    _warn_if_milliseconds(path, a, time_unit)
    if hashes is not None and not any(hashes):
        hashes = None
    return (
        np.array(a, dtype=np.float64),
        np.array(p, dtype=np.int64),
        np.array(o, dtype=np.int64),
        hashes,
    )


def read_jsonl(
    path: PathLike,
    *,
    sec_multiplier: float = 1.0,
    label_timestamp: str = "timestamp",
    label_input_length: str = "input_length",
    label_output_length: str = "output_length",
    label_hash_ids: str = "hash_ids",
    time_unit: TimeUnit = "s",
) -> Arrays:
    """Arrivals, prompt and output lengths and hash ids from a ``timed_trace`` JSONL file, in
    file order.

    Args:
        path: The file, one JSON object per line.
        sec_multiplier: Arrival = timestamp * this (``--timed-trace-sec-multiplier``).
        label_timestamp: The key of the timestamp (``--timed-trace-label-timestamp``).
        label_input_length: The key of the prompt length (``--timed-trace-label-input-length``).
        label_output_length: The key of the output length (``--timed-trace-label-output-length``).
        label_hash_ids: The key of the hash ids (``--timed-trace-label-hash-ids``); a line
            without it has none.
        time_unit: The timestamps' unit: "s", "ms" (Mooncake, AIPerf) or "us". A warning says
            when second-timestamps have a mean gap over a minute (milliseconds, probably).

    Raises:
        WorkloadError: for an unreadable or empty file, or a malformed line, naming the file,
            the line number and the field.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
        >>> _ = p.write_text('{"timestamp": 500, "input_length": 20, "output_length": 4, '
        ...                  '"hash_ids": [7, 8]}\\n')
        >>> a, prompt, output, hashes = read_jsonl(p, time_unit="ms")
        >>> a.tolist(), prompt.tolist(), output.tolist(), hashes
        ([0.5], [20], [4], [(7, 8)])
    """
    per_second = check_time_unit(time_unit, "read_jsonl")
    if not (
        isinstance(sec_multiplier, (int, float))
        and not isinstance(sec_multiplier, bool)
        and math.isfinite(sec_multiplier)
        and sec_multiplier > 0
    ):
        raise WorkloadError(
            f"read_jsonl(sec_multiplier={sec_multiplier!r}): must be a finite number > 0"
        )
    a: list[float] = []
    p: list[int] = []
    o: list[int] = []
    hashes: list[HashIds] = []
    for lineno, line in enumerate(_read_lines(path, "utf-8"), start=1):
        where = _at(path, lineno)
        if not line.strip():
            raise WorkloadError(f"{where}: blank line (vllm bench serve cannot read it either)")
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkloadError(f"{where}: not valid JSON: {e.msg} (column {e.colno})") from None
        except ValueError as e:  # an integer longer than Python converts (4300 digits)
            why = str(e).split(";")[0]
            raise WorkloadError(f"{where}: a number is too long to read: {why}") from None
        except RecursionError:
            raise WorkloadError(
                f"{where}: JSON nested too deeply to read (expected one flat object)"
            ) from None
        if not isinstance(entry, dict):
            raise WorkloadError(f"{where}: expected a JSON object, got {type(entry).__name__}")
        for key in (label_timestamp, label_input_length, label_output_length):
            if key not in entry:
                raise WorkloadError(
                    f"{where}: missing field {key!r} (fields present: {sorted(entry)})"
                )
        a.append(
            _arrival(entry[label_timestamp], where, label_timestamp, sec_multiplier, per_second)
        )
        p.append(_tokens(entry[label_input_length], where, label_input_length))
        o.append(_tokens(entry[label_output_length], where, label_output_length))
        ids = entry.get(label_hash_ids)
        hashes.append(() if ids is None else _hash_ids(ids, where, label_hash_ids))
    return _done(path, a, p, o, hashes, time_unit)


def complete_hash_ids(
    prompt: IntArray, hashes: Sequence[HashIds] | None, chunk_size: int
) -> list[HashIds]:
    """Each request's hash ids, completed to ``ceil(prompt / chunk_size)`` with fresh ids (above
    every id in use, so distinct from all) where a request has fewer: what ``vllm bench serve``
    needs to build a full-length prompt. Extra ids are kept (vllm bench ignores them)."""
    used = [max(h) for h in hashes or () if h]
    next_id = max(used) + 1 if used else 0
    out: list[HashIds] = []
    for i, n in enumerate(prompt.tolist()):
        ids = hashes[i] if hashes is not None else ()
        missing = -(-n // chunk_size) - len(ids)
        if missing > 0:
            ids = (*ids, *range(next_id, next_id + missing))
            next_id += missing
        out.append(ids)
    return out


def write_jsonl(
    path: PathLike,
    arrival: FloatArray,
    prompt: IntArray,
    output: IntArray,
    *,
    chunk_size: int = CHUNK_SIZE,
    hash_ids: Sequence[HashIds] | None = None,
) -> None:
    """Write a ``timed_trace`` JSONL file that ``vllm bench serve`` replays exactly.

    Each line is ``{"timestamp": s, "input_length": n, "output_length": m, "hash_ids": [...]}``
    with at least ``ceil(n / chunk_size)`` hash ids, enough for vLLM to build a prompt of
    exactly ``n`` tokens: the request's own ``hash_ids`` (shared prefixes stay shared), completed
    with fresh ids, distinct across all requests, where it has fewer (none: a prompt that shares
    no prefix block with any other; vLLM seeds each chunk's tokens from a 32-bit hash of the id,
    so a collision is possible but negligible). Timestamps are written with ``repr`` precision,
    so reading back is exact.

    Raises:
        WorkloadError: if ``chunk_size`` is not an integer >= 1.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise WorkloadError(f"write_jsonl(chunk_size={chunk_size!r}): must be an integer >= 1")
    ids = complete_hash_ids(prompt, hash_ids, chunk_size)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for s, n, m, h in zip(arrival.tolist(), prompt.tolist(), output.tolist(), ids, strict=True):
            row = {
                "timestamp": float(s),
                "input_length": n,
                "output_length": m,
                "hash_ids": list(h),
            }
            f.write(json.dumps(row) + "\n")


def read_csv(path: PathLike, *, time_unit: TimeUnit = "s") -> Arrays:
    """Arrivals, prompt and output lengths (and hash ids) from a CSV with header
    ``arrival,prompt_tokens,output_tokens`` and optionally a fourth column ``hash_ids`` (the
    ids separated by spaces), in file order. ``time_unit`` as in :func:`read_jsonl`.

    Raises:
        WorkloadError: for an unreadable or empty file, a wrong header, or a malformed row,
            naming the file, the line number and the field.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("arrival,prompt_tokens,output_tokens\\n0.25,20,4\\n")
        >>> [x.tolist() for x in read_csv(p)[:3]]
        [[0.25], [20], [4]]
    """
    per_second = check_time_unit(time_unit, "read_csv")
    a: list[float] = []
    p: list[int] = []
    o: list[int] = []
    hashes: list[HashIds] = []
    reader = csv.reader(_read_lines(path, "utf-8-sig"))
    header_seen = False
    header: tuple[str, ...] = CSV_HEADER
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:  # a field over the csv module's limit (128 kB), a bad quote
            where = _at(path, reader.line_num)
            raise WorkloadError(f"{where}: not a readable CSV row: {e}") from None
        where = _at(path, reader.line_num)
        if not header_seen:
            header = tuple(c.strip() for c in row)
            if header not in (CSV_HEADER, (*CSV_HEADER, CSV_HASH_COLUMN)):
                raise WorkloadError(
                    f"{where}: field 'header' = {_show(','.join(row))}: "
                    f"must be {','.join(CSV_HEADER)!r} (optionally with ',{CSV_HASH_COLUMN}')"
                )
            header_seen = True
            continue
        if not any(c.strip() for c in row):
            raise WorkloadError(f"{where}: blank line")
        if len(row) != len(header):
            raise WorkloadError(
                f"{where}: expected {len(header)} fields {','.join(header)}, got {len(row)}"
            )
        cells = dict(zip(header, row, strict=True))
        try:
            arrival: Any = float(cells["arrival"])
        except ValueError:
            arrival = cells["arrival"]  # _arrival rejects the string, naming the field
        a.append(_arrival(arrival, where, "arrival", per_second=per_second))
        for field, out in (("prompt_tokens", p), ("output_tokens", o)):
            try:
                value: Any = int(cells[field])
            except ValueError:
                value = cells[field]
            out.append(_tokens(value, where, field))
        text = cells.get(CSV_HASH_COLUMN, "")
        try:
            ids: Any = [int(x) for x in text.split()]
        except ValueError:
            ids = text
        hashes.append(_hash_ids(ids, where, CSV_HASH_COLUMN))
    return _done(path, a, p, o, hashes, time_unit)


def write_csv(
    path: PathLike,
    arrival: FloatArray,
    prompt: IntArray,
    output: IntArray,
    hash_ids: Sequence[HashIds] | None = None,
) -> None:
    """Write a CSV with header ``arrival,prompt_tokens,output_tokens`` (and ``hash_ids``, space
    separated, when given); arrivals with ``repr`` precision, so reading back is exact."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        header = CSV_HEADER if hash_ids is None else (*CSV_HEADER, CSV_HASH_COLUMN)
        f.write(",".join(header) + "\n")
        rows = zip(arrival.tolist(), prompt.tolist(), output.tolist(), strict=True)
        for i, (s, n, m) in enumerate(rows):
            tail = "" if hash_ids is None else "," + " ".join(map(str, hash_ids[i]))
            f.write(f"{float(s)!r},{n},{m}{tail}\n")
