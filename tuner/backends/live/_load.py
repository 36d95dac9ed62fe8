"""An open-loop load client: replay a workload's arrival schedule against an OpenAI-style server.

Each request is sent at its arrival time whatever the server is doing (open loop, like
``vllm bench serve --dataset-name timed_trace``), as a streamed ``/v1/completions`` call whose
prompt is a list of token ids of the requested length, with ``max_tokens`` = the output length
and ``ignore_eos`` so that exactly that many tokens come back. Tokens are counted from the
server's per-chunk usage (``stream_options.continuous_usage_stats``), so a chunk that carries
several tokens counts as several.

Plain asyncio streams and HTTP/1.1 (one connection per request, :mod:`._http`): no
dependency, and nothing between the socket and the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner.backends.live._errors import REQUEST_ERRORS, request_error
from tuner.backends.live._http import (
    RequestFailed,
    Target,
    connect,
    error_message,
    events,
    post_stream,
)
from tuner.core import BackendError, Workload

#: Prompt token ids are drawn from [low, high): ids that every real vocabulary has and that are
#: not special tokens in common tokenizers (and the tiny model's 2048-token vocabulary).
DEFAULT_TOKEN_RANGE = (100, 1000)
_KEY_TOKENS = 4  # leading tokens that encode (salt, request id): distinct prompts, no cache hit


@dataclass(frozen=True)
class RequestRecord:
    """What the client saw of one request. Times are seconds since the load's origin.

    Attributes:
        request_id: Position in the workload.
        scheduled: When the workload says to send it.
        sent: When it was actually sent (``sent - scheduled`` is the client's lag).
        token_times: When each output token arrived (tokens delivered in one chunk share it).
        requested_tokens: ``max_tokens`` asked for.
        prompt_tokens: Prompt tokens the server counted (None if it did not say).
        error: Why the request failed (None when it succeeded).
        timed_out: Whether it failed by running past the request timeout.
    """

    request_id: int
    scheduled: float
    sent: float
    token_times: tuple[float, ...]
    requested_tokens: int
    prompt_tokens: int | None = None
    error: str | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """Whether every requested token arrived, with no error."""
        return self.error is None

    @property
    def output_tokens(self) -> int:
        """Output tokens received."""
        return len(self.token_times)

    @property
    def ttft(self) -> float:
        """Time to first token, from the send (NaN if the request failed)."""
        return self.token_times[0] - self.sent if self.ok and self.token_times else math.nan

    @property
    def e2e(self) -> float:
        """End-to-end latency, from the send to the last token (NaN if the request failed)."""
        return self.token_times[-1] - self.sent if self.ok and self.token_times else math.nan

    @property
    def itl(self) -> list[float]:
        """Gaps between consecutive tokens (0 between tokens of one chunk); empty if failed."""
        if not self.ok:
            return []
        t = self.token_times
        return [t[k + 1] - t[k] for k in range(len(t) - 1)]


@dataclass(frozen=True)
class LoadResult:
    """Every request of one replay, in workload order.

    Attributes:
        requests: One record per request, in workload (request id) order.
        origin_unix: The Unix time (``time.time()``) of the load's origin, for lining up
            server-side timestamps with the client's clock.
        time_offset: Add this to a time of this result to put it on the workload's clock (the
            load's origin is the workload's first arrival).
    """

    requests: tuple[RequestRecord, ...]
    origin_unix: float
    time_offset: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def failed(self) -> tuple[RequestRecord, ...]:
        """The requests that failed."""
        return tuple(r for r in self.requests if not r.ok)

    @property
    def first_send(self) -> float:
        return min(r.sent for r in self.requests)

    @property
    def last_token(self) -> float:
        """When the last token of any request arrived (the first send if none did)."""
        times = [r.token_times[-1] for r in self.requests if r.token_times]
        return max(times) if times else self.first_send

    @property
    def duration(self) -> float:
        """From the first request's send to the last token."""
        return max(0.0, self.last_token - self.first_send)

    @property
    def send_lag(self) -> np.ndarray:
        """How late each request was sent against its schedule (seconds)."""
        return np.array([r.sent - r.scheduled for r in self.requests], dtype=np.float64)


def prompt_token_ids(
    request_id: int,
    length: int,
    *,
    salt: int = 0,
    token_range: tuple[int, int] = DEFAULT_TOKEN_RANGE,
) -> list[int]:
    """A prompt of ``length`` token ids, distinct for each (salt, request id).

    The first four tokens spell out ``(salt, request_id)`` in base ``high - low``, least
    significant digit first, so two prompts of one replay (or of replays with different salts)
    never share a first KV block and prefix caching never hits; the rest are pseudo-random,
    seeded by the same pair.

    Example:
        >>> a, b = prompt_token_ids(0, 32), prompt_token_ids(1, 32)
        >>> len(a), a[:4] != b[:4], all(100 <= t < 1000 for t in a + b)
        (32, True, True)
    """
    low, high = token_range
    span = high - low
    if span < 2 or low < 0:
        raise ValueError(f"token_range={token_range!r}: need 0 <= low < high - 1")
    if length < 1:
        raise ValueError(f"prompt length must be >= 1, got {length}")
    key = (salt % 1_000_003) * 1_000_003 + request_id
    head = []
    k = key
    for _ in range(min(_KEY_TOKENS, length)):
        head.append(low + k % span)
        k //= span
    rng = random.Random(key)
    return head + [low + rng.randrange(span) for _ in range(length - len(head))]


# --- one request ---------------------------------------------------------------------------------
@dataclass
class _Progress:
    times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    usage_total: int | None = None


async def _stream_one(
    target: Target, payload: bytes, now: Callable[[], float], progress: _Progress
) -> None:
    reader, writer = await connect(target)
    try:
        buffer = bytearray()
        counted = 0
        async for piece in post_stream(reader, writer, target, "/v1/completions", payload):
            t = now()
            buffer += piece.replace(b"\r\n", b"\n")
            for data in events(buffer):
                if data.strip() == b"[DONE]":
                    _reconcile(progress, counted)
                    return
                obj = json.loads(data)
                if not isinstance(obj, dict):
                    raise RequestFailed(f"unexpected data in the stream: {data[:200]!r}")
                if "error" in obj:
                    raise RequestFailed(f"error in the stream: {error_message(data)}")
                usage = obj.get("usage") or {}
                if usage.get("prompt_tokens") is not None:
                    progress.prompt_tokens = int(usage["prompt_tokens"])
                choices = obj.get("choices") or []
                if not choices:  # the final usage-only chunk
                    if usage.get("completion_tokens") is not None:
                        progress.usage_total = int(usage["completion_tokens"])
                    continue
                if choices[0].get("finish_reason"):
                    progress.finish_reason = str(choices[0]["finish_reason"])
                if usage.get("completion_tokens") is not None:
                    new = int(usage["completion_tokens"]) - counted
                else:  # no per-chunk usage: one token per chunk with text
                    new = 1 if choices[0].get("text") else 0
                counted += max(new, 0)
                progress.times.extend([t] * max(new, 0))
        _reconcile(progress, counted)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def _reconcile(progress: _Progress, counted: int) -> None:
    """Trust the final usage count over chunk counting (servers without per-chunk usage)."""
    total = progress.usage_total
    if total is None or total == counted or not progress.times:
        return
    if total > counted:
        progress.times.extend([progress.times[-1]] * (total - counted))
    else:
        del progress.times[total:]


def _payload(model: str, prompt: Sequence[int], max_tokens: int, extra: Mapping[str, Any]) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(prompt),
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


# --- the replay ----------------------------------------------------------------------------------
async def replay_async(
    url: str,
    model: str,
    workload: Workload,
    *,
    request_timeout: float = 300.0,
    salt: int = 0,
    token_range: tuple[int, int] = DEFAULT_TOKEN_RANGE,
    extra_body: Mapping[str, Any] | None = None,
) -> LoadResult:
    """Replay ``workload`` against the server at ``url``; see :func:`replay`."""
    target = Target.parse(url)
    extra = dict(extra_body or {})
    arrival = workload.arrival.tolist()
    prompt = workload.prompt_tokens.tolist()
    output = workload.output_tokens.tolist()
    order = workload.schedule_order.tolist()
    first = arrival[order[0]]
    # Build every payload before the clock starts, so that sending costs only the write.
    payloads = [
        _payload(
            model,
            prompt_token_ids(i, prompt[i], salt=salt, token_range=token_range),
            output[i],
            extra,
        )
        for i in range(len(workload))
    ]
    records: list[RequestRecord | None] = [None] * len(workload)
    t0 = time.perf_counter()
    origin_unix = time.time()

    def now() -> float:
        return time.perf_counter() - t0

    async def one(i: int, scheduled: float) -> None:
        progress = _Progress()
        sent = now()
        error: str | None = None
        timed_out = False
        try:
            await asyncio.wait_for(_stream_one(target, payloads[i], now, progress), request_timeout)
        except RequestFailed as e:
            error = str(e)
        except REQUEST_ERRORS as e:
            error, timed_out = request_error(
                e,
                request_timeout=request_timeout,
                received=len(progress.times),
                requested=output[i],
            )
        got = len(progress.times)
        if error is None and got != output[i]:
            error = (
                f"received {got} of {output[i]} output tokens "
                f"(finish_reason={progress.finish_reason!r})"
            )
        if error is None and progress.prompt_tokens not in (None, prompt[i]):
            error = (
                f"the server counted {progress.prompt_tokens} prompt tokens, expected {prompt[i]}"
            )
        records[i] = RequestRecord(
            request_id=i,
            scheduled=scheduled,
            sent=sent,
            token_times=tuple(progress.times),
            requested_tokens=output[i],
            prompt_tokens=progress.prompt_tokens,
            error=error,
            timed_out=timed_out,
        )

    tasks = []
    try:
        for i in order:
            scheduled = arrival[i] - first
            delay = scheduled - now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    done = tuple(r for r in records if r is not None)
    if len(done) != len(workload):  # pragma: no cover - every task records, even on failure
        raise BackendError("the load client lost track of some requests")
    return LoadResult(requests=done, origin_unix=origin_unix, time_offset=first)


def replay(
    url: str,
    model: str,
    workload: Workload,
    *,
    request_timeout: float = 300.0,
    salt: int = 0,
    token_range: tuple[int, int] = DEFAULT_TOKEN_RANGE,
    extra_body: Mapping[str, Any] | None = None,
) -> LoadResult:
    """Send every request of ``workload`` at its arrival time and record what comes back.

    Open loop: request ``i`` is sent ``arrival[i] - min(arrival)`` seconds after the start,
    however many are still running. Each is a streamed ``POST {url}/v1/completions`` with the
    prompt as ``prompt_tokens[i]`` token ids (see :func:`prompt_token_ids`), ``max_tokens =
    output_tokens[i]`` and ``ignore_eos``. A request fails (and is recorded as failed, not
    raised) on an HTTP error, a broken stream, fewer tokens than asked, a prompt the server
    counted differently, or when it runs past ``request_timeout`` seconds.

    Latencies follow ``vllm bench serve``: TTFT and E2E are measured from the moment the
    request is sent (``time.perf_counter``); the client's lag behind the schedule is kept in
    :attr:`LoadResult.send_lag`. Unlike ``vllm bench serve``, which keeps one inter-token gap per
    streamed chunk, tokens that arrive in one chunk each count, with a gap of 0 after the first.

    Runs its own event loop; from inside a running loop (a notebook) it runs in a helper thread.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8000``.
        model: The served model name (``GET /v1/models``).
        workload: The requests and their arrival times (seconds).
        request_timeout: Seconds a request may take from its send to its last token.
        salt: Mixed into every prompt, so that replays with different salts share no prefix.
        token_range: Prompt token ids are drawn from ``[low, high)``.
        extra_body: More fields for every request body (e.g. ``{"temperature": 0}``).

    Example:
        >>> from tuner import Workload
        >>> w = Workload.from_arrays([0.0, 0.1], [64, 64], [8, 8])
        >>> result = replay("http://127.0.0.1:8000", "my-model", w)  # doctest: +SKIP
        >>> [r.ttft for r in result.requests]  # doctest: +SKIP
        [0.012, 0.009]
    """
    coro_args: dict[str, Any] = {
        "request_timeout": request_timeout,
        "salt": salt,
        "token_range": token_range,
        "extra_body": extra_body,
    }
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(replay_async(url, model, workload, **coro_args))
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = asyncio.run(replay_async(url, model, workload, **coro_args))
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, name="tuner-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: LoadResult = box["result"]
    return result
