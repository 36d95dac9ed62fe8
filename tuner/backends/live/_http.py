"""HTTP/1.1 over plain asyncio streams, for the load client: one POST, its streamed body, and the
server-sent events in it.

No dependency and nothing between the socket and the clock. A request the server answers with
anything but a stream raises :class:`RequestFailed` (the message says why); what the socket or
the stream raise is left to the caller (see :mod:`tuner.backends.live._errors`).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from tuner.core import BackendError

_MAX_HEADER = 64 * 1024
_MAX_ERROR_BODY = 4096


class RequestFailed(Exception):
    """The server answered, but not with a stream of tokens (the message says why)."""


class _HTTPError(RequestFailed):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where a server's base URL points: host, port, TLS or not, and the path prefix."""

    host: str
    port: int
    ssl: bool
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """``http://host:port/prefix`` (or https) taken apart; BackendError if it is not one."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"server URL {url!r}: expected http://host:port or https://...")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.hostname, port, parts.scheme == "https", parts.path.rstrip("/"))


async def connect(target: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """One new connection to ``target`` (TLS for https)."""
    ctx = ssl.create_default_context() if target.ssl else None
    return await asyncio.open_connection(target.host, target.port, ssl=ctx, limit=_MAX_HEADER)


async def post_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: Target,
    path: str,
    payload: bytes,
) -> AsyncIterator[bytes]:
    """POST ``payload`` and yield the response body as it arrives (chunked or not)."""
    head = (
        f"POST {target.base_path}{path} HTTP/1.1\r\n"
        f"Host: {target.host}:{target.port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: text/event-stream\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    writer.write(head + payload)
    await writer.drain()
    raw = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split(" ", 2)[1])
    except (IndexError, ValueError):
        raise ConnectionError(f"malformed HTTP status line {status_line!r}") from None
    headers = {}
    for h in header_lines:
        name, sep, value = h.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    body = _body(reader, headers)
    if status != 200:
        data = b""
        async for piece in body:
            data += piece
            if len(data) > _MAX_ERROR_BODY:
                break
        raise _HTTPError(status, error_message(data))
    async for piece in body:
        yield piece


async def _body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> AsyncIterator[bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left > 0:
            piece = await reader.read(min(left, 65536))
            if not piece:
                raise ConnectionError("connection closed before the end of the response")
            left -= len(piece)
            yield piece
    else:
        while piece := await reader.read(65536):
            yield piece


def error_message(data: bytes) -> str:
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
            for line in event.replace(b"\r\n", b"\n").split(b"\n")
            if line.startswith(b"data:")
        ]
        if data:
            out.append(b"\n".join(data))
