"""Measuring one trial on a running server: what the started and the attached backends share.

:class:`LiveBackend` owns the measurement of a server that answers at a URL -- the checks of
what it serves, the warm-up, the open-loop load, the engine's steps read from its log, the
preemption counter, the failure policy (``max_failed_requests``) -- and the record of the last
trial (:class:`LiveTrial`). How the server comes to be running is the subclass's business:
:class:`~tuner.backends.live.VLLMServerBackend` starts one per configuration,
:class:`~tuner.backends.live.AttachedServerBackend` measures one that is already up.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.backends._base import Backend, check_fits
from tuner.backends.live._errors import (
    ANSWER_ERRORS,
    HTTP_ERRORS,
    failed_requests_error,
    query_error,
)
from tuner.backends.live._load import LoadResult, replay
from tuner.backends.live._process import (
    LOG_TAIL_LINES,
    ServerProcess,
    failure_reason,
    http_get,
    log_tail,
)
from tuner.backends.live._settings import LoadSettings
from tuner.backends.live._steplog import StepLog, parse_step_log
from tuner.core import BackendError, ConfigError, Measurement, ServingConfig, Workload

_WARMUP = Workload.from_arrays([0.0], [16], [4])
_WARMUP_SALT = 999_983


@dataclass(frozen=True)
class LiveTrial:
    """What the live backend knows about one evaluated trial, beyond the Measurement.

    Attributes:
        number: The backend's trial counter (the ``NNN`` of ``trial-NNN.log``).
        config: The configuration served.
        url: The server's base URL.
        served_model: The model name the server reported (``GET /v1/models``).
        vllm_version: The server's version (``GET /version``), if it said.
        log_path: The server's log (None when attached without a ``log``).
        command: The command line run (empty when attached).
        startup_seconds: From the start of the process to ``/health`` = 200 (None if attached).
        load: Everything the load client recorded.
        steps: The engine steps parsed from the log during the load (None if no log).
        preemptions: Preemptions counted by the server during the load (None if unknown).
    """

    number: int
    config: ServingConfig
    url: str
    served_model: str
    vllm_version: str | None
    log_path: Path | None
    command: tuple[str, ...]
    startup_seconds: float | None
    load: LoadResult
    steps: StepLog | None
    preemptions: int | None


class LiveBackend(Backend):
    """Measures configurations on a server reachable over HTTP (the base of both live backends).

    Args:
        request_timeout: Seconds a request may take from its send to its last token.
        warmup: Send one small request before the load (the first request of a fresh server
            pays one-off costs).
        max_failed_requests: Failed requests tolerated before the trial fails.
    """

    name = "vllm-server"

    def __init__(self, settings: LoadSettings) -> None:
        self.request_timeout = settings.request_timeout
        self.warmup = settings.warmup
        self.max_failed_requests = settings.max_failed_requests
        self._trials = 0
        self._salt = secrets.randbelow(1 << 30)
        #: Details of the last successful trial (log path, startup time, load record, steps).
        self.last_trial: LiveTrial | None = None

    def _check_request(self, config: ServingConfig, workload: Workload) -> None:
        """Refuse what is not a config and a workload, or a request that does not fit."""
        if not isinstance(config, ServingConfig):
            raise ConfigError(f"evaluate(config=...): expected a ServingConfig, got {config!r}")
        if not isinstance(workload, Workload):
            raise ConfigError(f"evaluate(workload=...): expected a Workload, got {workload!r}")
        check_fits(config, workload)

    def _failure(
        self, what: str, config: ServingConfig, log_path: Path | None, *, cause: bool = False
    ) -> str:
        """``what`` happened (after the log's root-cause exception when ``cause``), the config,
        and the last lines of the server log."""
        reason = failure_reason(log_path) if cause and log_path is not None else None
        lines = [f"{reason} ({what})" if reason else what, f"config: {config.describe()}"]
        if log_path is not None:
            lines.append(f"--- last {LOG_TAIL_LINES} lines of {log_path} ---")
            lines += log_tail(log_path)
        return "\n".join(lines)

    # --- one measurement -----------------------------------------------------------------------
    def _measure(
        self,
        number: int,
        config: ServingConfig,
        workload: Workload,
        url: str,
        log_path: Path | None,
        server: ServerProcess | None,
        startup: float | None,
    ) -> Measurement:
        served, max_len = _served_model(url)
        if max_len is not None and max_len != config.max_model_len:
            raise ConfigError(
                f"the server at {url} serves max_model_len={max_len}, but the trial's config "
                f"says {config.max_model_len}"
            )
        version = _server_version(url)
        tail = _LogTail(log_path) if log_path is not None else None
        if self.warmup:
            warm = replay(
                url,
                served,
                _WARMUP,
                request_timeout=self.request_timeout,
                salt=_WARMUP_SALT + number,
            )
            if warm.failed:
                raise BackendError(
                    self._failure(
                        f"the warm-up request failed: {warm.failed[0].error}", config, log_path
                    )
                )
            if tail is not None:
                tail.wait_for(_scheduled_tokens(_WARMUP), timeout=5.0)
                tail.skip()
        preempted_before = _preemptions(url)
        load = replay(
            url, served, workload, request_timeout=self.request_timeout, salt=self._salt + number
        )
        ok = [r for r in load.requests if r.ok]
        steps = None
        if tail is not None:
            expected = _scheduled_tokens(workload) if len(ok) == len(workload) else None
            steps = tail.wait_for(expected, timeout=10.0)
            if expected is not None and steps.total_tokens < expected:
                warnings.warn(
                    f"{log_path}: the engine's step log holds {steps.total_tokens} tokens, "
                    f"fewer than the {expected} the workload needs (prompt + output - 1 per "
                    "request); was the server started with --enable-logging-iteration-details?",
                    stacklevel=3,
                )
        preempted_after = _preemptions(url)
        if server is not None and server.returncode is not None:
            raise BackendError(
                self._failure(
                    f"vllm serve exited with code {server.returncode} during the trial",
                    config,
                    log_path,
                    cause=True,
                )
            )
        self._check_failures(load, config, log_path)
        preemptions = (
            preempted_after - preempted_before
            if preempted_after is not None and preempted_before is not None
            else None
        )
        self.last_trial = LiveTrial(
            number=number,
            config=config,
            url=url,
            served_model=served,
            vllm_version=version,
            log_path=log_path,
            command=server.command if server else (),
            startup_seconds=startup,
            load=load,
            steps=steps,
            preemptions=preemptions,
        )
        where = [f"attached {url}"] if server is None else []
        where += [f"log {log_path}"] if log_path is not None else []
        source = f"{self.name}(vllm {version or '?'}, {', '.join(where)})"
        return _measurement(source, workload, load, steps, preemptions)

    def _check_failures(
        self, load: LoadResult, config: ServingConfig, log_path: Path | None
    ) -> None:
        failed = load.failed
        if len(failed) <= self.max_failed_requests:
            return
        shown = "; ".join(f"request {r.request_id}: {r.error}" for r in failed[:3])
        more = f"; ... {len(failed) - 3} more" if len(failed) > 3 else ""
        what = (
            f"{len(failed)} of {len(load.requests)} requests failed (max_failed_requests="
            f"{self.max_failed_requests}): {shown}{more}"
        )
        raise failed_requests_error(
            self._failure(what, config, log_path), timed_out=any(r.timed_out for r in failed)
        )


# --- what the server says ------------------------------------------------------------------------
def _served_model(url: str) -> tuple[str, int | None]:
    try:
        status, body = http_get(f"{url}/v1/models", timeout=10.0)
        data = json.loads(body) if status == 200 else None
        first = data["data"][0] if data else None
    except ANSWER_ERRORS as e:
        raise query_error(f"GET {url}/v1/models", e) from e
    if not isinstance(first, dict) or "id" not in first:
        raise BackendError(f"GET {url}/v1/models: no model in the answer (HTTP {status})")
    max_len = first.get("max_model_len")
    return str(first["id"]), int(max_len) if isinstance(max_len, int) else None


def _server_version(url: str) -> str | None:
    try:
        status, body = http_get(f"{url}/version", timeout=5.0)
        return str(json.loads(body)["version"]) if status == 200 else None
    except ANSWER_ERRORS:
        return None


_PREEMPTIONS = re.compile(r"^vllm:num_preemptions(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+]+)\s*$")


def _preemptions(url: str) -> int | None:
    """The server's preemption counter (``/metrics``), summed over engines; None if unknown."""
    try:
        status, body = http_get(f"{url}/metrics", timeout=5.0)
    except HTTP_ERRORS:
        return None
    if status != 200:
        return None
    total, seen = 0.0, False
    for line in body.decode("utf-8", "replace").splitlines():
        m = _PREEMPTIONS.match(line)
        if m:
            total += float(m.group(1))
            seen = True
    return int(total) if seen else None


def _scheduled_tokens(workload: Workload) -> int:
    """Tokens vLLM schedules for a workload without preemption: every prompt token and every
    output token but the last of each request (the last sampled token is never fed back)."""
    return workload.total_prompt_tokens + workload.total_output_tokens - len(workload)


class _LogTail:
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


def _measurement(
    source: str,
    workload: Workload,
    load: LoadResult,
    steps: StepLog | None,
    preemptions: int | None,
) -> Measurement:
    reqs = load.requests
    itl = [g for r in reqs for g in r.itl]
    fields: dict[str, Any] = {}
    if steps is not None and len(steps):
        if steps.missing:
            warnings.warn(
                f"{source}: {steps.missing} engine step(s) are missing from the log; the step "
                "record is incomplete",
                stacklevel=3,
            )
        fields["step_tokens"] = steps.tokens
        fields["step_prefill_tokens"] = steps.prefill_tokens
        fields["step_seqs"] = steps.seqs
        if steps.has_times:
            start, end = steps.times(origin=load.origin_unix)
            fields["step_start"] = start + load.time_offset
            fields["step_end"] = end + load.time_offset
    return Measurement(
        source=source,
        time_unit="s",
        arrival=workload.arrival,
        prompt_tokens=workload.prompt_tokens,
        output_tokens=[r.output_tokens for r in reqs],
        ttft=[r.ttft for r in reqs],
        e2e=[r.e2e for r in reqs],
        itl_values=itl,
        itl_counts=np.ones(len(itl), dtype=np.int64),
        duration=load.duration,
        preemptions=preemptions or 0,
        failed_requests=len(load.failed),
        **fields,
    )
