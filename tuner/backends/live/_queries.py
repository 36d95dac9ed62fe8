"""What a live backend asks a running server, besides the load: the model it serves, its
version, its Prometheus counters (preemptions, prefix-cache hits), and a prefix-cache reset.

Every call takes the request headers (the API key's bearer: vLLM guards ``/v1/*``). A query the
trial needs raises :class:`BackendError`; a probe answers None when the server does not say.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping

from tuner.backends.live._errors import ANSWER_ERRORS, HTTP_ERRORS, query_error
from tuner.backends.live._process import http_get, http_request
from tuner.core import BackendError

#: vLLM 0.32's counters (``vllm/v1/metrics/loggers.py``), without Prometheus' ``_total``.
PREEMPTIONS = "vllm:num_preemptions"
PREFIX_HITS = "vllm:prefix_cache_hits"
PREFIX_QUERIES = "vllm:prefix_cache_queries"
_RESET_ERRORS: tuple[type[Exception], ...] = (
    *ANSWER_ERRORS,
    AttributeError,
)  # also an answer that is not a JSON object
_COUNTER = re.compile(r"^(vllm:\w+?)(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$")


def served_model(url: str, headers: Mapping[str, str]) -> tuple[str, int | None]:
    """The served model's name and ``max_model_len`` (``GET /v1/models``)."""
    try:
        status, body = http_get(f"{url}/v1/models", timeout=10.0, headers=headers)
        data = json.loads(body) if status == 200 else None
        first = data["data"][0] if data else None
    except ANSWER_ERRORS as e:
        raise query_error(f"GET {url}/v1/models", e) from e
    if status == 401:
        raise BackendError(
            f"GET {url}/v1/models: HTTP 401 Unauthorized; the server wants an API key "
            "(give api_key_env or api_key)"
        )
    if not isinstance(first, dict) or "id" not in first:
        raise BackendError(f"GET {url}/v1/models: no model in the answer (HTTP {status})")
    max_len = first.get("max_model_len")
    return str(first["id"]), int(max_len) if isinstance(max_len, int) else None


def server_version(url: str, headers: Mapping[str, str]) -> str | None:
    """The server's version (``GET /version``), None if it does not say."""
    try:
        status, body = http_get(f"{url}/version", timeout=5.0, headers=headers)
        return str(json.loads(body)["version"]) if status == 200 else None
    except ANSWER_ERRORS:
        return None


def counters(url: str, headers: Mapping[str, str], names: Iterable[str]) -> dict[str, int]:
    """The server's counters named ``names`` (``GET /metrics``), summed over engines and
    labels; a counter the server does not export is left out."""
    wanted = set(names)
    try:
        status, body = http_get(f"{url}/metrics", timeout=5.0, headers=headers)
    except HTTP_ERRORS:
        return {}
    if status != 200:
        return {}
    totals: dict[str, float] = {}
    for line in body.decode("utf-8", "replace").splitlines():
        m = _COUNTER.match(line)
        if m and m.group(1) in wanted:
            totals[m.group(1)] = totals.get(m.group(1), 0.0) + float(m.group(2))
    return {k: int(v) for k, v in totals.items()}


RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"


def wait_idle(url: str, headers: Mapping[str, str], timeout: float) -> tuple[bool, str]:
    """Wait until the server runs and queues no request (its ``num_requests_running`` and
    ``_waiting`` gauges are 0; a server that exports neither counts as idle): (idle, what
    happened). Used after an aborted load, whose cancelled requests the server is dropping."""
    deadline = time.monotonic() + timeout
    while True:
        busy = counters(url, headers, (RUNNING, WAITING))
        if sum(busy.values()) == 0:
            return True, "idle"
        if time.monotonic() >= deadline:
            return False, (
                f"the server still had {busy.get(RUNNING, 0)} requests running and "
                f"{busy.get(WAITING, 0)} waiting {timeout:g} s after the load was aborted"
            )
        time.sleep(0.1)


def reset_prefix_cache(url: str, headers: Mapping[str, str]) -> tuple[bool, str]:
    """Empty the server's prefix cache (``POST /reset_prefix_cache``): (done, what happened).

    vLLM serves the route only with ``VLLM_SERVER_DEV_MODE=1``; elsewhere it answers 404, which
    is tolerated (and said). vLLM refuses (``success: false``) while blocks are still held, so a
    refusal is retried for a second.
    """
    deadline = time.monotonic() + 1.0
    while True:
        try:
            status, body = http_request(
                "POST", f"{url}/reset_prefix_cache", timeout=10.0, headers=headers
            )
            ok = status == 200 and bool(json.loads(body or b"{}").get("success", True))
        except _RESET_ERRORS as e:
            return False, f"POST /reset_prefix_cache failed ({type(e).__name__}: {e})"
        if ok:
            return True, "prefix cache reset"
        if status != 200:
            return False, (
                f"POST /reset_prefix_cache: HTTP {status} (start the server with "
                "VLLM_SERVER_DEV_MODE=1 to let tuner empty its prefix cache between trials)"
            )
        if time.monotonic() >= deadline:
            return False, "POST /reset_prefix_cache: the server kept refusing (blocks in use)"
        time.sleep(0.1)
