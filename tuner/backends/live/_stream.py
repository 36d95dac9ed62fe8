"""One streamed ``/v1/completions`` call over aiohttp (the client library of ``vllm bench
serve``), with a timestamp for every output token.

Like vllm bench's ``async_request_openai_completions``: POST the body, read the response with
``iter_any()`` (whatever bytes have arrived), split server-sent events on blank lines and stamp
each chunk with ``time.perf_counter`` as it is read. Tokens are counted from the server's
per-chunk usage (``stream_options.continuous_usage_stats``), so a chunk that carries several
tokens counts as several; the final usage chunk's ``completion_tokens`` has the last word. A
request the server answers with anything but a stream raises :class:`RequestFailed`; what
aiohttp raises is left to the caller (see :mod:`tuner.backends.live._errors`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

_MAX_ERROR_BODY = 4096


class RequestFailed(Exception):
    """The server answered, but not with a stream of tokens (the message says why)."""


@dataclass
class Progress:
    """What one request's stream has delivered so far (read by the stall watchdog too).

    Attributes:
        times: When each output token arrived (seconds on the replay's clock).
        prompt_tokens: Prompt tokens the server counted.
        cached_tokens: Prompt tokens served from the prefix cache (``usage.prompt_tokens_details
            .cached_tokens``; only servers started with ``--enable-prompt-tokens-details``).
        finish_reason: The last ``finish_reason`` seen.
        usage_total: ``completion_tokens`` of the final usage chunk.
    """

    times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reason: str | None = None
    usage_total: int | None = None


def payload(model: str, prompt: Sequence[int], max_tokens: int, extra: Mapping[str, Any]) -> bytes:
    """The JSON body of one streamed completion whose prompt is token ids (built before the
    clock starts, so that sending costs only the write)."""
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


def error_message(data: bytes) -> str:
    """The server's error message from an error body (JSON ``error.message`` or the text)."""
    text = data.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:500]
        return str(obj.get("message") or err)[:500]
    return text[:500]


def events(buffer: bytearray) -> list[bytes]:
    """Pop every complete server-sent event's data payload from ``buffer``."""
    out: list[bytes] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return out
        event = bytes(buffer[:end])
        del buffer[: end + 2]
        data = [
            line[5:].lstrip(b" ")
            for line in event.split(b"\n")
            if line.startswith(b"data:")  # SSE comments (":ping") and other fields skipped
        ]
        if data:
            out.append(b"\n".join(data))


async def stream_completion(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    now: Callable[[], float],
    progress: Progress,
) -> None:
    """POST ``body`` to ``url`` and record every token of the streamed answer in ``progress``."""
    async with session.post(url, data=body, headers=dict(headers)) as response:
        if response.status != 200:
            data = await response.content.read(_MAX_ERROR_BODY)
            raise RequestFailed(f"HTTP {response.status}: {error_message(data)}")
        buffer = bytearray()
        counted = 0
        async for piece in response.content.iter_any():
            t = now()
            buffer += piece.replace(b"\r\n", b"\n")
            for data in events(buffer):
                if data.strip() == b"[DONE]":
                    _reconcile(progress, counted)
                    return
                counted += _on_event(data, t, counted, progress)
        _reconcile(progress, counted)


def _on_event(data: bytes, t: float, counted: int, progress: Progress) -> int:
    """Record one event's tokens at time ``t``; returns how many it brought."""
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise RequestFailed(f"unexpected data in the stream: {data[:200]!r}")
    if "error" in obj:
        raise RequestFailed(f"error in the stream: {error_message(data)}")
    usage = obj.get("usage") or {}
    if usage.get("prompt_tokens") is not None:
        progress.prompt_tokens = int(usage["prompt_tokens"])
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        progress.cached_tokens = int(details["cached_tokens"])
    choices = obj.get("choices") or []
    if not choices:  # the final usage-only chunk
        if usage.get("completion_tokens") is not None:
            progress.usage_total = int(usage["completion_tokens"])
        return 0
    if choices[0].get("finish_reason"):
        progress.finish_reason = str(choices[0]["finish_reason"])
    if usage.get("completion_tokens") is not None:
        new = max(int(usage["completion_tokens"]) - counted, 0)
    else:  # no per-chunk usage: one token per chunk with text
        new = 1 if choices[0].get("text") else 0
    progress.times.extend([t] * new)
    return new


def _reconcile(progress: Progress, counted: int) -> None:
    """Trust the final usage count over chunk counting (servers without per-chunk usage)."""
    total = progress.usage_total
    if total is None or total == counted or not progress.times:
        return
    if total > counted:
        progress.times.extend([progress.times[-1]] * (total - counted))
    else:
        del progress.times[total:]
