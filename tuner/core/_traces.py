"""Trace files: the ``timed_trace`` JSONL of ``vllm bench serve``, and a plain CSV.

The JSONL reader accepts what ``TimedTrace.sample`` in ``vllm/benchmarks/datasets/datasets.py``
(vLLM 0.32) accepts: one JSON object per line with a timestamp, an input length and an output
length under configurable keys (``--timed-trace-label-*``), timestamps scaled by
``--timed-trace-sec-multiplier``; ``hash_ids`` and any other key are ignored. It is stricter than
vLLM where vLLM would fail later or silently (blank lines, wrong types, values below 1).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from tuner.core._errors import WorkloadError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Arrays = tuple[FloatArray, IntArray, IntArray]
PathLike = str | os.PathLike[str]

MAX_TOKENS = 10_000_000
CHUNK_SIZE = 16
"""Tokens per hash id: the default of ``--timed-trace-chunk-hash-size``."""
CSV_HEADER = ("arrival", "prompt_tokens", "output_tokens")

__all__ = ["CHUNK_SIZE", "CSV_HEADER", "read_csv", "read_jsonl", "write_csv", "write_jsonl"]


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


def _arrival(value: Any, where: str, field: str, scale: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkloadError(
            f"{where}: field {field!r} = {_show(value)}: must be a number (seconds)"
        )
    try:
        seconds = float(value) * scale
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


def _done(path: PathLike, a: list[float], p: list[int], o: list[int]) -> Arrays:
    if not a:
        raise WorkloadError(f"{os.fspath(path)}: empty trace file, needs at least one request")
    return np.array(a, dtype=np.float64), np.array(p, dtype=np.int64), np.array(o, dtype=np.int64)


def read_jsonl(
    path: PathLike,
    *,
    sec_multiplier: float = 1.0,
    label_timestamp: str = "timestamp",
    label_input_length: str = "input_length",
    label_output_length: str = "output_length",
) -> Arrays:
    """Arrivals, prompt and output lengths from a ``timed_trace`` JSONL file, in file order.

    Args:
        path: The file, one JSON object per line.
        sec_multiplier: Arrival = timestamp * this (``--timed-trace-sec-multiplier``; 0.001 for
            milliseconds).
        label_timestamp: The key of the timestamp (``--timed-trace-label-timestamp``).
        label_input_length: The key of the prompt length (``--timed-trace-label-input-length``).
        label_output_length: The key of the output length (``--timed-trace-label-output-length``).

    Raises:
        WorkloadError: for an unreadable or empty file, or a malformed line, naming the file,
            the line number and the field.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
        >>> _ = p.write_text('{"timestamp": 0.5, "input_length": 20, "output_length": 4}\\n')
        >>> [x.tolist() for x in read_jsonl(p)]
        [[0.5], [20], [4]]
    """
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
        a.append(_arrival(entry[label_timestamp], where, label_timestamp, sec_multiplier))
        p.append(_tokens(entry[label_input_length], where, label_input_length))
        o.append(_tokens(entry[label_output_length], where, label_output_length))
    return _done(path, a, p, o)


def write_jsonl(
    path: PathLike,
    arrival: FloatArray,
    prompt: IntArray,
    output: IntArray,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> None:
    """Write a ``timed_trace`` JSONL file that ``vllm bench serve`` replays exactly.

    Each line is ``{"timestamp": s, "input_length": n, "output_length": m, "hash_ids": [...]}``
    with ``ceil(n / chunk_size)`` hash ids, enough for vLLM to build a prompt of exactly ``n``
    tokens. Hash ids are distinct across all requests so no two prompts share a prefix block
    (vLLM seeds each block's tokens from a 32-bit hash of the id, so a collision is possible
    but negligible). Timestamps are written with ``repr`` precision, so reading back is exact.

    Raises:
        WorkloadError: if ``chunk_size`` is not an integer >= 1.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise WorkloadError(f"write_jsonl(chunk_size={chunk_size!r}): must be an integer >= 1")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        next_id = 0
        for s, n, m in zip(arrival.tolist(), prompt.tolist(), output.tolist(), strict=True):
            k = -(-n // chunk_size)
            row = {
                "timestamp": float(s),
                "input_length": n,
                "output_length": m,
                "hash_ids": list(range(next_id, next_id + k)),
            }
            next_id += k
            f.write(json.dumps(row) + "\n")


def read_csv(path: PathLike) -> Arrays:
    """Arrivals, prompt and output lengths from a CSV with header
    ``arrival,prompt_tokens,output_tokens``, in file order.

    Raises:
        WorkloadError: for an unreadable or empty file, a wrong header, or a malformed row,
            naming the file, the line number and the field.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("arrival,prompt_tokens,output_tokens\\n0.25,20,4\\n")
        >>> [x.tolist() for x in read_csv(p)]
        [[0.25], [20], [4]]
    """
    a: list[float] = []
    p: list[int] = []
    o: list[int] = []
    reader = csv.reader(_read_lines(path, "utf-8-sig"))
    header_seen = False
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
            if tuple(c.strip() for c in row) != CSV_HEADER:
                raise WorkloadError(
                    f"{where}: field 'header' = {_show(','.join(row))}: "
                    f"must be {','.join(CSV_HEADER)!r}"
                )
            header_seen = True
            continue
        if not any(c.strip() for c in row):
            raise WorkloadError(f"{where}: blank line")
        if len(row) != len(CSV_HEADER):
            raise WorkloadError(
                f"{where}: expected {len(CSV_HEADER)} fields {','.join(CSV_HEADER)}, got {len(row)}"
            )
        cells = dict(zip(CSV_HEADER, row, strict=True))
        try:
            arrival: Any = float(cells["arrival"])
        except ValueError:
            arrival = cells["arrival"]  # _arrival rejects the string, naming the field
        a.append(_arrival(arrival, where, "arrival"))
        for field, out in (("prompt_tokens", p), ("output_tokens", o)):
            try:
                value: Any = int(cells[field])
            except ValueError:
                value = cells[field]
            out.append(_tokens(value, where, field))
    return _done(path, a, p, o)


def write_csv(path: PathLike, arrival: FloatArray, prompt: IntArray, output: IntArray) -> None:
    """Write a CSV with header ``arrival,prompt_tokens,output_tokens``; arrivals with ``repr``
    precision, so reading back is exact."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(",".join(CSV_HEADER) + "\n")
        for s, n, m in zip(arrival.tolist(), prompt.tolist(), output.tolist(), strict=True):
            f.write(f"{float(s)!r},{n},{m}\n")
