"""A load client: replay a workload's arrival schedule against an OpenAI-style server.

Each request is sent at its arrival time whatever the server is doing (open loop, like
``vllm bench serve --dataset-name timed_trace``); in a closed-loop workload each user sends its
next request ``think_time`` after its previous one's last token (like ``vllm bench serve
--max-concurrency`` and AIPerf's ``--concurrency``). Each is a streamed ``/v1/completions`` call
whose prompt is a list of token ids of the requested length (:mod:`._prompts`: distinct per request,
or expanded from the trace's hash ids so that shared prefixes hit the cache as in the trace),
with ``max_tokens`` = the output length and ``ignore_eos`` so that exactly that many tokens come
back. The HTTP is aiohttp's, as in ``vllm bench serve`` (:mod:`._stream`).

The client watches itself and the server while it replays: how late it sent each request
(:attr:`LoadResult.send_lag`), how late its event loop woke up (:attr:`LoadResult.read_lag`,
which bounds how late any token was read and stamped), and whether the server stopped making
progress (no token for ``stall_timeout`` seconds with requests outstanding:
:attr:`LoadResult.stalled`, every outstanding request abandoned); given the Loop's abort rule,
it also stops as soon as an SLO is provably lost (:attr:`LoadResult.aborted`; see
:mod:`._watch`).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from tuner.backends.live._errors import REQUEST_ERRORS, request_error
from tuner.backends.live._prompts import DEFAULT_TOKEN_RANGE, workload_prompts
from tuner.backends.live._stream import Progress, RequestFailed, payload, stream_completion
from tuner.backends.live._watch import Watch
from tuner.core import BackendError, Workload
from tuner.objectives import AbortRule


@dataclass(frozen=True)
class RequestRecord:
    """What the client saw of one request. Times are seconds since the load's origin.

    Attributes:
        request_id: Position in the workload.
        scheduled: When the workload says to send it (closed loop: when the user's previous
            request ended, plus the think time).
        sent: When it was actually sent (``sent - scheduled`` is the client's lag).
        token_times: When each output token arrived (tokens delivered in one chunk share it).
        requested_tokens: ``max_tokens`` asked for.
        prompt_tokens: Prompt tokens the server counted (None if it did not say).
        error: Why the request failed (None when it succeeded).
        timed_out: Whether it failed by running past the request timeout (or a stall).
        cached_tokens: Prompt tokens the server served from its prefix cache (None unless the
            server reports ``prompt_tokens_details``).
        cut: Abandoned (or never sent) because the load was cut short: a stall or an abort.
    """

    request_id: int
    scheduled: float
    sent: float
    token_times: tuple[float, ...]
    requested_tokens: int
    prompt_tokens: int | None = None
    error: str | None = None
    timed_out: bool = False
    cached_tokens: int | None = None
    cut: bool = False

    @property
    def ok(self) -> bool:
        """Whether every requested token arrived, with no error."""
        return self.error is None

    @property
    def output_tokens(self) -> int:
        """Output tokens received."""
        return len(self.token_times)

    @property
    def send_lag(self) -> float:
        """How late the client sent it against its schedule (seconds)."""
        return self.sent - self.scheduled

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
        read_lag: How late the client's event loop woke up, sampled every 5 ms during the load
            (seconds): a token can have been read and stamped at most this late.
        stalled: Why the load was cut short when the server made no progress (None if not).
        aborted: Why the load was cut short because an SLO was provably lost, as ``"aborted
            at 41.2 s: ttft.p99 <= 2s lost (...)"`` (None if it was not).
        aborted_at: When it was (seconds since the load's origin).
    """

    requests: tuple[RequestRecord, ...]
    origin_unix: float
    time_offset: float = 0.0
    notes: tuple[str, ...] = field(default=())
    read_lag: tuple[float, ...] = field(default=())
    stalled: str | None = None
    aborted: str | None = None
    aborted_at: float | None = None

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
        """How late each request was sent against its schedule (seconds), in workload order."""
        return np.array([r.send_lag for r in self.requests], dtype=np.float64)


def completions_url(url: str) -> str:
    """``{url}/v1/completions``; BackendError if ``url`` is not an http(s) base URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BackendError(f"server URL {url!r}: expected http://host:port or https://...")
    return url.rstrip("/") + "/v1/completions"


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
    headers: Mapping[str, str] | None = None,
    stall_timeout: float | None = None,
    abort: AbortRule | None = None,
) -> LoadResult:
    """Replay ``workload`` against the server at ``url``; see :func:`replay`."""
    target = completions_url(url)
    extra = dict(extra_body or {})
    send_headers = {"Content-Type": "application/json", **dict(headers or {})}
    arrival = workload.arrival.tolist()
    output = workload.output_tokens.tolist()
    prompt = workload.prompt_tokens.tolist()
    order = workload.schedule_order.tolist()
    first = arrival[order[0]]
    # Build every payload before the clock starts, so that sending costs only the write.
    prompts = workload_prompts(workload, salt=salt, token_range=token_range)
    payloads = [payload(model, prompts[i], output[i], extra) for i in range(len(workload))]
    records: list[RequestRecord | None] = [None] * len(workload)
    progress = [Progress() for _ in range(len(workload))]
    t0 = time.perf_counter()
    origin_unix = time.time()

    def now() -> float:
        return time.perf_counter() - t0

    scheduled_at = [arrival[i] - first for i in range(len(workload))]
    watch = Watch(progress, now, scheduled_at, output, abort)
    tasks: list[asyncio.Task[None]] = []
    # Closed loop: each user's requests in id order, and each request's successor.
    think = workload.think_time.tolist() if workload.think_time is not None else None
    users_ids = workload.user_sequences

    async def one(session: aiohttp.ClientSession, i: int, scheduled: float) -> None:
        p = progress[i]
        sent = now()
        watch.started(i)
        error: str | None = None
        timed_out = cut = False
        try:
            stream = stream_completion(session, target, payloads[i], send_headers, now, p)
            await asyncio.wait_for(stream, request_timeout)
        except RequestFailed as e:
            error = str(e)
        except REQUEST_ERRORS as e:
            error, timed_out = request_error(
                e, request_timeout=request_timeout, received=len(p.times), requested=output[i]
            )
        except asyncio.CancelledError:
            if watch.cut is None:
                raise
            error, cut = f"abandoned ({watch.cut}) with {len(p.times)} tokens", True
            timed_out = watch.stalled is not None
        finally:
            got = len(p.times)
            if error is None and got != output[i]:
                error = (
                    f"received {got} of {output[i]} output tokens "
                    f"(finish_reason={p.finish_reason!r})"
                )
            if error is None and p.prompt_tokens not in (None, prompt[i]):
                error = f"the server counted {p.prompt_tokens} prompt tokens, expected {prompt[i]}"
            watch.ended(i, failed=error is not None and not cut)
        records[i] = RequestRecord(
            request_id=i,
            scheduled=scheduled,
            sent=sent,
            token_times=tuple(p.times),
            requested_tokens=output[i],
            prompt_tokens=p.prompt_tokens,
            error=error,
            timed_out=timed_out,
            cached_tokens=p.cached_tokens,
            cut=cut,
        )

    async def send_all(session: aiohttp.ClientSession) -> None:
        for i in order:
            scheduled = arrival[i] - first
            delay = scheduled - now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i, scheduled)))

    async def user(session: aiohttp.ClientSession, ids: tuple[int, ...]) -> None:
        """One closed-loop user: its requests one after the other, each sent ``think_time``
        after the previous one's last token (or error)."""
        scheduled = arrival[ids[0]] - first
        for k, i in enumerate(ids):
            if k and think is not None:
                scheduled = now() + think[i]
            delay = scheduled - now()
            if delay > 0:
                await asyncio.sleep(delay)
            await one(session, i, scheduled)
            if watch.cut is not None:
                return  # abandoned: its later requests are never sent

    async def start_users(session: aiohttp.ClientSession) -> None:
        tasks.extend(asyncio.create_task(user(session, ids)) for ids in users_ids)

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None), trust_env=False
    ) as session:
        sender = asyncio.create_task(start_users(session) if users_ids else send_all(session))

        def stop() -> None:
            sender.cancel()
            for task in tasks:
                task.cancel()

        monitor = asyncio.create_task(watch.monitor(stall_timeout, stop))
        try:
            await asyncio.wait([sender])
            if watch.cut is None:
                sender.result()  # a bug in the sender is raised, not swallowed
            for outcome in await asyncio.gather(*list(tasks), return_exceptions=True):
                cut = isinstance(outcome, asyncio.CancelledError) and watch.cut is not None
                if isinstance(outcome, BaseException) and not cut:
                    raise outcome
        finally:
            monitor.cancel()
            for task in [sender, *tasks]:
                task.cancel()
    for i in [i for i in order if records[i] is None]:  # cut short before their send
        records[i] = RequestRecord(
            request_id=i,
            scheduled=arrival[i] - first,
            sent=now(),
            token_times=(),
            requested_tokens=output[i],
            error=f"never sent ({watch.cut})",
            timed_out=watch.stalled is not None,
            cut=True,
        )
    done = tuple(r for r in records if r is not None)
    if len(done) != len(workload):  # pragma: no cover - every task records, even on failure
        raise BackendError("the load client lost track of some requests")
    return LoadResult(
        requests=done,
        origin_unix=origin_unix,
        time_offset=first,
        read_lag=tuple(watch.read_lag),
        stalled=watch.stalled,
        aborted=watch.aborted,
        aborted_at=watch.aborted_at,
    )


def replay(url: str, model: str, workload: Workload, **options: Any) -> LoadResult:
    """Send every request of ``workload`` at its arrival time and record what comes back.

    Open loop: request ``i`` is sent ``arrival[i] - min(arrival)`` seconds after the start,
    however many are still running. Closed loop (``workload.user``): one task per user sends
    its first request at its arrival and each next one ``think_time`` after the previous one
    ended (its last token, or its failure); ``RequestRecord.sent`` is the actual send time.
    Each is a streamed ``POST {url}/v1/completions`` with the prompt as
    ``prompt_tokens[i]`` token ids (see :mod:`tuner.backends.live._prompts`),
    ``max_tokens = output_tokens[i]`` and ``ignore_eos``. A request fails (and is recorded as
    failed, not raised) on an HTTP error, a broken stream, fewer tokens than asked, a prompt
    the server counted differently, or when it runs past ``request_timeout`` seconds.

    Latencies follow ``vllm bench serve``: TTFT and E2E are measured from the moment the
    request is sent (``time.perf_counter``); the client's lag behind the schedule is kept in
    :attr:`LoadResult.send_lag`. Unlike ``vllm bench serve``, which keeps one inter-token gap per
    streamed chunk, tokens that arrive in one chunk each count, with a gap of 0 after the first.

    Runs its own event loop; from inside a running loop (a notebook) it runs in a helper thread.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8000``.
        model: The served model name (``GET /v1/models``).
        workload: The requests and their arrival times (seconds).
        **options: Of :func:`replay_async`: ``request_timeout`` (seconds a request may take
            from its send to its last token), ``salt`` (mixed into every prompt, so that
            replays with different salts share no prefix), ``token_range`` (prompt token ids
            are drawn from ``[low, high)``), ``extra_body`` (more fields for every request
            body, e.g. ``{"temperature": 0}``), ``headers`` (sent with every request, e.g.
            ``Authorization``), ``stall_timeout`` (seconds without any token, with requests
            outstanding, after which the load is abandoned; None: never), ``abort`` (an
            :class:`~tuner.objectives.AbortRule`: once it calls an SLO lost, nothing more is
            sent and what is in flight is cancelled; see :mod:`._watch`).

    Example:
        >>> from tuner import Workload
        >>> w = Workload.from_arrays([0.0, 0.1], [64, 64], [8, 8])
        >>> result = replay("http://127.0.0.1:8000", "my-model", w)  # doctest: +SKIP
        >>> [r.ttft for r in result.requests]  # doctest: +SKIP
        [0.012, 0.009]
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(replay_async(url, model, workload, **options))
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = asyncio.run(replay_async(url, model, workload, **options))
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, name="tuner-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: LoadResult = box["result"]
    return result
