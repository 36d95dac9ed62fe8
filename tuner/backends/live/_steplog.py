"""Parsing vLLM's per-step log (``vllm serve --enable-logging-iteration-details``).

With that flag, vLLM 0.32's API server logs one line per engine step that scheduled tokens
(``vllm/v1/metrics/loggers.py``, ``LoggingStatLogger._log_iteration_details``)::

    Engine 000: Iteration(12): 1 context requests, 64 context tokens, 3 generation requests,
    3 generation tokens, iteration elapsed time: 8.25 ms, CPU KV cache usage: 1.6%

(on one line). *Context* requests are those still prefilling (a chunk of their prompt), *generation*
requests decode one token each; the elapsed time is measured around the model's execution in the
engine process. The line carries no wall-clock time of its own: :class:`~tuner.backends.
VLLMServerBackend` prefixes every log line with the time it was logged (``%(created).6f``, via a
logging config), and :func:`step_times` turns those times and the elapsed times into step
start/end times. Everything here is pure (text in, numbers out) but :class:`LogTail`, which
reads the lines a running server's log gains.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_STEP = re.compile(
    r"(?:Engine (?P<engine>\d+): )?"
    r"Iteration\((?P<index>\d+)\): "
    r"(?P<ctx_reqs>\d+) context requests, (?P<ctx_tokens>\d+) context tokens, "
    r"(?P<gen_reqs>\d+) generation requests, (?P<gen_tokens>\d+) generation tokens, "
    r"iteration elapsed time: (?P<elapsed_ms>\d+(?:\.\d+)?) ms"
    r"(?P<dummy> \(dummy\))?"
    r"(?:, (?:\S+ )?KV cache usage: (?P<kv>\d+(?:\.\d+)?)%)?"
)
# A leading Unix time, as written by the logging config of VLLMServerBackend ("%(created).6f").
_LOGGED_AT = re.compile(r"^\s*(?P<t>\d{9,}\.\d+)\s")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class StepRecord:
    """One engine step as logged by vLLM.

    Attributes:
        index: vLLM's iteration counter (per engine; counts only steps that scheduled tokens).
        engine: The engine (data-parallel rank) that ran it.
        context_requests: Requests that ran a prefill chunk in this step.
        context_tokens: Prompt tokens scheduled in this step (all chunks).
        generation_requests: Requests that decoded in this step.
        generation_tokens: Decode tokens scheduled in this step.
        elapsed: Seconds the step's model execution took (vLLM's "iteration elapsed time").
        logged_at: Unix time the line was logged (None when the line has no timestamp).
        kv_cache_usage: KV cache usage after the step, as a fraction (None if not logged).
    """

    index: int
    engine: int
    context_requests: int
    context_tokens: int
    generation_requests: int
    generation_tokens: int
    elapsed: float
    logged_at: float | None = None
    kv_cache_usage: float | None = None

    @property
    def tokens(self) -> int:
        """Tokens scheduled in this step (prefill chunks + decodes)."""
        return self.context_tokens + self.generation_tokens

    @property
    def seqs(self) -> int:
        """Requests scheduled in this step (the batch size)."""
        return self.context_requests + self.generation_requests


def parse_step_line(line: str) -> StepRecord | None:
    """The step logged on ``line``, or None if the line is not a (non-dummy) step line.

    Data-parallel dummy iterations (``(dummy)``, no tokens) and steps that scheduled nothing are
    not steps of the workload and give None.

    Example:
        >>> r = parse_step_line(
        ...     "1795419229.939826 INFO 11394 [loggers.py:199] Engine 000: Iteration(0): "
        ...     "1 context requests, 10 context tokens, 0 generation requests, 0 generation "
        ...     "tokens, iteration elapsed time: 49.80 ms, CPU KV cache usage: 0.0%")
        >>> r.tokens, r.seqs, r.elapsed, r.logged_at
        (10, 1, 0.0498, 1795419229.939826)
    """
    if "Iteration(" not in line:
        return None
    line = _ANSI.sub("", line)
    m = _STEP.search(line)
    if m is None or m.group("dummy"):
        return None
    record = StepRecord(
        index=int(m.group("index")),
        engine=int(m.group("engine") or 0),
        context_requests=int(m.group("ctx_reqs")),
        context_tokens=int(m.group("ctx_tokens")),
        generation_requests=int(m.group("gen_reqs")),
        generation_tokens=int(m.group("gen_tokens")),
        elapsed=float(m.group("elapsed_ms")) / 1000.0,
        logged_at=_logged_at(line[: m.start()]),
        kv_cache_usage=float(m.group("kv")) / 100.0 if m.group("kv") else None,
    )
    return record if record.tokens > 0 else None


def _logged_at(prefix: str) -> float | None:
    m = _LOGGED_AT.match(prefix)
    return float(m.group("t")) if m else None


@dataclass(frozen=True)
class StepLog:
    """The engine steps found in a stretch of a vLLM log, in log order.

    Example:
        >>> log = parse_step_log([
        ...     "100.000 Engine 000: Iteration(0): 1 context requests, 8 context tokens, "
        ...     "0 generation requests, 0 generation tokens, iteration elapsed time: 5.00 ms",
        ...     "100.010 Engine 000: Iteration(1): 0 context requests, 0 context tokens, "
        ...     "1 generation requests, 1 generation tokens, iteration elapsed time: 2.00 ms",
        ... ])
        >>> log.tokens.tolist(), log.total_tokens, log.missing
        ([8, 1], 9, 0)
    """

    steps: tuple[StepRecord, ...]

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def tokens(self) -> IntArray:
        """Tokens scheduled in each step."""
        return np.array([s.tokens for s in self.steps], dtype=np.int64)

    @property
    def prefill_tokens(self) -> IntArray:
        """Context (prompt) tokens scheduled in each step. vLLM counts a request as in context
        while it has no output token, so the recompute of a preempted request that already had
        output is logged (and counted here) as generation tokens."""
        return np.array([s.context_tokens for s in self.steps], dtype=np.int64)

    @property
    def seqs(self) -> IntArray:
        """Requests scheduled in each step."""
        return np.array([s.seqs for s in self.steps], dtype=np.int64)

    @property
    def elapsed(self) -> FloatArray:
        """Seconds each step's model execution took."""
        return np.array([s.elapsed for s in self.steps], dtype=np.float64)

    @property
    def total_tokens(self) -> int:
        """Tokens scheduled over all steps."""
        return sum(s.tokens for s in self.steps)

    @property
    def engines(self) -> tuple[int, ...]:
        """The engines (data-parallel ranks) that logged steps, sorted."""
        return tuple(sorted({s.engine for s in self.steps}))

    @property
    def has_times(self) -> bool:
        """Whether every line carried the time it was logged."""
        return bool(self.steps) and all(s.logged_at is not None for s in self.steps)

    @property
    def missing(self) -> int:
        """Steps absent from the stretch: gaps in each engine's iteration counter."""
        gaps = 0
        last: dict[int, int] = {}
        for s in self.steps:
            if s.engine in last and s.index > last[s.engine] + 1:
                gaps += s.index - last[s.engine] - 1
            last[s.engine] = s.index
        return gaps

    def times(self, origin: float = 0.0) -> tuple[FloatArray, FloatArray]:
        """Start and end of each step, in seconds after the Unix time ``origin``.

        See :func:`step_times`; each engine's steps are placed on their own.

        Raises:
            ValueError: a line has no logged time (:attr:`has_times` is False).
        """
        if not self.has_times:
            raise ValueError("step times need every step line to carry the time it was logged")
        start = np.zeros(len(self.steps))
        end = np.zeros(len(self.steps))
        for engine in self.engines:
            idx = np.array([i for i, s in enumerate(self.steps) if s.engine == engine])
            logged = np.array([self.steps[i].logged_at for i in idx], dtype=np.float64) - origin
            start[idx], end[idx] = step_times(logged, self.elapsed[idx])
        return start, end


def parse_step_log(lines: Iterable[str]) -> StepLog:
    """Every step line of ``lines`` (other lines, dummy and empty steps are skipped).

    Example:
        >>> parse_step_log(["INFO starting", "Engine 000: Iteration(4): 0 context requests, "
        ...                 "0 context tokens, 2 generation requests, 2 generation tokens, "
        ...                 "iteration elapsed time: 1.50 ms, CPU KV cache usage: 0.1%"]).tokens
        array([2])
    """
    steps = []
    for line in lines:
        record = parse_step_line(line)
        if record is not None:
            steps.append(record)
    return StepLog(tuple(steps))


def step_times(logged_at: npt.ArrayLike, elapsed: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """The latest step start/end times consistent with when the steps were logged.

    A step is logged by the API server some time after it ends (the engine sends its stats with
    its outputs), so each logged time is an upper bound on that step's end; and one engine runs
    its steps one after another, so a step ends no later than the next one starts. Walking back
    from the last step, ``end[i] = min(logged_at[i], end[i+1] - elapsed[i+1])`` and
    ``start[i] = end[i] - elapsed[i]``: steps never overlap, each lasts exactly its elapsed time,
    and starts strictly increase when elapsed times are positive. The error is the API server's
    lag in logging (typically well under a millisecond on an idle CPU, more under load).

    Example:
        >>> start, end = step_times([10.0, 10.0, 10.5], [0.2, 0.1, 0.1])
        >>> [round(x, 3) for x in start], [round(x, 3) for x in end]
        ([9.7, 9.9, 10.4], [9.9, 10.0, 10.5])
    """
    logged = np.asarray(logged_at, dtype=np.float64)
    dur = np.asarray(elapsed, dtype=np.float64)
    if logged.shape != dur.shape or logged.ndim != 1:
        raise ValueError(
            f"logged_at and elapsed must be 1-D of equal length, got {logged.shape}, {dur.shape}"
        )
    end = logged.copy()
    for i in range(len(end) - 2, -1, -1):
        end[i] = min(end[i], end[i + 1] - dur[i + 1])
    return end - dur, end


class LogTail:
    """Reads the step lines a log gains from a point on (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self._lines: list[str] = []

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        if end:
            self._lines += data[:end].decode("utf-8", "replace").splitlines()
            self.offset += end

    def skip(self) -> None:
        """Forget everything logged so far."""
        self._read()
        self._lines = []

    def wait_for(self, tokens: int | None, timeout: float) -> StepLog:
        """The steps logged since the start, once the log is quiet: for 0.3 s after they hold
        ``tokens`` tokens (later lines would be preemption recomputes), else for 1 s; at most
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last_growth = time.monotonic()
        size = -1
        while True:
            self._read()
            steps = parse_step_log(self._lines)
            now = time.monotonic()
            if self.offset != size:
                size, last_growth = self.offset, now
            reached = tokens is not None and steps.total_tokens >= tokens
            if now >= deadline or now - last_growth >= (0.3 if reached else 1.0):
                return steps
            time.sleep(0.05)
