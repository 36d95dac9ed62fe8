"""Measuring one trial on a running server: what the started and the attached backends share.

:class:`LiveBackend` owns the measurement of a server that answers at a URL -- the checks of
what it serves, the warm-up, the open-loop load, the engine's steps read from its log, the
server's counters (preemptions, prefix-cache hits), the failure policy (``max_failed_requests``,
a stalled server), the client's own lag -- and the record of the last trial (:class:`LiveTrial`).
How the server comes to be running is the subclass's business:
:class:`~tuner.backends.live.VLLMServerBackend` starts one per configuration,
:class:`~tuner.backends.live.AttachedServerBackend` measures one that is already up.
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tuner.backends._base import Backend, check_fits
from tuner.backends.live._affinity import Pinning, pin
from tuner.backends.live._errors import failed_requests_error, stall_error
from tuner.backends.live._health import Lag, client_health, client_lag
from tuner.backends.live._load import LoadResult, replay
from tuner.backends.live._process import LOG_TAIL_LINES, ServerProcess, failure_reason, log_tail
from tuner.backends.live._queries import (
    PREEMPTIONS,
    PREFIX_HITS,
    PREFIX_QUERIES,
    counters,
    reset_prefix_cache,
    served_model,
    server_version,
    wait_idle,
)
from tuner.backends.live._secrets import Scrubber
from tuner.backends.live._settings import LoadSettings
from tuner.backends.live._steplog import LogTail, StepLog
from tuner.core import (
    BackendError,
    ClientHealth,
    ConfigError,
    Measurement,
    ServingConfig,
    Workload,
)
from tuner.objectives import AbortRule

_WARMUP = Workload.from_arrays([0.0], [16], [4])
_WARMUP_SALT = 999_983
_COUNTERS = (PREEMPTIONS, PREFIX_HITS, PREFIX_QUERIES)


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
        command: The command line run, secrets redacted (empty when attached).
        startup_seconds: From the start of the process to ``/health`` = 200 (None if attached).
        load: Everything the load client recorded.
        steps: The engine steps parsed from the log during the load (None if no log).
        preemptions: Preemptions counted by the server during the load (None if unknown).
        send_lag: How late the client sent the requests against their schedule.
        read_lag: How late the client's event loop woke up to read tokens.
        client_lagged: Whether the client fell behind by more than ``max_send_lag`` (the
            latencies then hold some of the client's own delay; measure again).
        client_lag_reason: What lagged, and by how much (None when it did not).
        prefix_cache_hits: Prompt tokens vLLM served from its prefix cache during the load
            (``vllm:prefix_cache_hits``; None if the server does not say).
        prefix_cache_queries: Prompt tokens vLLM looked up in its prefix cache
            (``vllm:prefix_cache_queries``; None if the server does not say).
        prefix_cache_reset: Whether the prefix cache was emptied before the load (None: not
            needed, a fresh server; False: the server refused, see ``notes``).
        aborted: Why the load stopped early (an SLO provably lost), None if it ran in full.
        cpus: How the cores were split between the client and the server during the load.
        notes: What else happened that a reader of the trial should know.
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
    send_lag: Lag = field(default_factory=Lag)
    read_lag: Lag = field(default_factory=Lag)
    client_lagged: bool = False
    client_lag_reason: str | None = None
    prefix_cache_hits: int | None = None
    prefix_cache_queries: int | None = None
    prefix_cache_reset: bool | None = None
    aborted: str | None = None
    cpus: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        """Hits over queries during the load (None if unknown or nothing was looked up)."""
        if self.prefix_cache_hits is None or not self.prefix_cache_queries:
            return None
        return self.prefix_cache_hits / self.prefix_cache_queries


class LiveBackend(Backend):
    """Measures configurations on a server reachable over HTTP (the base of both live backends).

    Early abort: both live backends take the Loop's abort rule (``supports_abort``): the load
    client asks it while the load runs and, once an SLO is provably lost, stops sending,
    cancels what is in flight (the server aborts those requests and stays up), waits for the
    server to be idle and returns the partial measurement with ``aborted`` set.

    Args:
        settings: The load settings (request timeout, warm-up, failure policy, API key and
            headers, the client-lag threshold, the stall timeout).
        cpu_pinning: Whether the client and a started server's processes are pinned apart.
    """

    name = "vllm-server"
    supports_abort = True

    def __init__(self, settings: LoadSettings, cpu_pinning: Pinning = "off") -> None:
        self.request_timeout = settings.request_timeout
        self.warmup = settings.warmup
        self.max_failed_requests = settings.max_failed_requests
        self.max_send_lag = settings.max_send_lag
        self.stall_timeout = settings.stall_timeout
        self.cpu_pinning: Pinning = cpu_pinning
        self._load_settings = settings
        self._trials = 0
        self._salt = secrets.randbelow(1 << 30)
        #: Removes every known secret from text taken from a server log.
        self.scrubber = Scrubber()
        #: Details of the last successful trial (log path, startup time, load record, steps).
        self.last_trial: LiveTrial | None = None

    def _headers(self) -> dict[str, str]:
        """The headers of every request to the server (the API key's bearer included)."""
        return self._load_settings.request_headers()

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
        and the last lines of the server log; every known secret scrubbed."""
        reason = failure_reason(log_path) if cause and log_path is not None else None
        lines = [f"{reason} ({what})" if reason else what, f"config: {config.describe()}"]
        if log_path is not None:
            lines.append(f"--- last {LOG_TAIL_LINES} lines of {log_path} ---")
            lines += log_tail(log_path)
        return "\n".join(self.scrubber.lines(lines))

    def _replay(
        self, url: str, model: str, workload: Workload, salt: int, abort: AbortRule | None = None
    ) -> LoadResult:
        return replay(
            url,
            model,
            workload,
            request_timeout=self.request_timeout,
            salt=salt,
            headers=self._headers(),
            stall_timeout=self.stall_timeout,
            abort=abort,
        )

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
        *,
        reset_cache: bool = False,
        abort: AbortRule | None = None,
    ) -> Measurement:
        headers = self._headers()
        served, max_len = served_model(url, headers)
        if max_len is not None and max_len != config.max_model_len:
            raise ConfigError(
                f"the server at {url} serves max_model_len={max_len}, but the trial's config "
                f"says {config.max_model_len}"
            )
        version = server_version(url, headers)
        tail = LogTail(log_path) if log_path is not None else None
        notes: list[str] = []
        if self.warmup:
            warm = self._replay(url, served, _WARMUP, _WARMUP_SALT + number)
            self._check_stall(warm, config, log_path, "the warm-up request")
            if warm.failed:
                raise BackendError(
                    self._failure(
                        f"the warm-up request failed: {warm.failed[0].error}", config, log_path
                    )
                )
            if tail is not None:
                tail.wait_for(_scheduled_tokens(_WARMUP), timeout=5.0)
                tail.skip()
        reset: bool | None = None
        if reset_cache:  # a server that served before: one trial must not warm the next
            reset, said = reset_prefix_cache(url, headers)
            if not reset:
                notes.append(said)
        before = counters(url, headers, _COUNTERS)
        cpus, restore = pin(self.cpu_pinning, server.members() if server is not None else ())
        try:
            load = self._replay(url, served, workload, self._salt + number, abort)
        finally:
            restore()
        self._check_stall(load, config, log_path, "the load")
        if load.aborted is not None:  # the cancelled requests leave the server: wait for it
            idle, said = wait_idle(url, headers, timeout=30.0)
            if not idle:
                notes.append(said)
        ok = [r for r in load.requests if r.ok]
        steps = None
        if tail is not None:
            expected = _scheduled_tokens(workload) if len(ok) == len(workload) else None
            if expected is not None:  # cached prompt tokens are not scheduled
                expected -= _delta(before, counters(url, headers, [PREFIX_HITS])).get(
                    PREFIX_HITS, 0
                )
            steps = tail.wait_for(expected, timeout=10.0)
            if expected is not None and steps.total_tokens < expected:
                warnings.warn(
                    f"{log_path}: the engine's step log holds {steps.total_tokens} tokens, "
                    f"fewer than the {expected} the workload needs (prompt + output - 1 per "
                    "request, less prefix-cache hits); was the server started with "
                    "--enable-logging-iteration-details?",
                    stacklevel=3,
                )
        # read once the log settled: preemption recomputes logged late are counted too
        delta = _delta(before, counters(url, headers, _COUNTERS))
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
        send_lag, read_lag, lagged = client_lag(load, self.max_send_lag)
        if lagged is not None:
            notes.append(lagged)
        health = client_health(send_lag, read_lag, lagged, cpus)
        self.last_trial = LiveTrial(
            number=number,
            config=config,
            url=url,
            served_model=served,
            vllm_version=version,
            log_path=log_path,
            command=server.shown_command if server else (),
            startup_seconds=startup,
            load=load,
            steps=steps,
            preemptions=delta.get(PREEMPTIONS),
            send_lag=send_lag,
            read_lag=read_lag,
            client_lagged=lagged is not None,
            client_lag_reason=lagged,
            prefix_cache_hits=delta.get(PREFIX_HITS),
            prefix_cache_queries=delta.get(PREFIX_QUERIES),
            prefix_cache_reset=reset,
            aborted=load.aborted,
            cpus=cpus,
            notes=tuple(notes),
        )
        where = [f"attached {url}"] if server is None else []
        where += [f"log {log_path}"] if log_path is not None else []
        source = f"{self.name}(vllm {version or '?'}, {', '.join(where)})"
        return _measurement(source, workload, load, steps, delta.get(PREEMPTIONS), health)

    def _check_stall(
        self, load: LoadResult, config: ServingConfig, log_path: Path | None, what: str
    ) -> None:
        if load.stalled is not None:
            raise stall_error(self._failure(f"{load.stalled} during {what}", config, log_path))

    def _check_failures(
        self, load: LoadResult, config: ServingConfig, log_path: Path | None
    ) -> None:
        failed = [r for r in load.failed if not r.cut]
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


# --- helpers -------------------------------------------------------------------------------------
def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """How much each counter known both times grew."""
    return {k: after[k] - before[k] for k in after if k in before}


def _scheduled_tokens(workload: Workload) -> int:
    """Tokens vLLM schedules for a workload without preemption: every prompt token and every
    output token but the last of each request (the last sampled token is never fed back)."""
    return workload.total_prompt_tokens + workload.total_output_tokens - len(workload)


def _measurement(
    source: str,
    workload: Workload,
    load: LoadResult,
    steps: StepLog | None,
    preemptions: int | None,
    client: ClientHealth | None = None,
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
    arrival = workload.arrival
    if workload.is_closed_loop:  # when each request was actually sent, on the workload's clock
        arrival = np.array([r.sent for r in reqs]) + load.time_offset
    duration = load.duration
    if load.aborted is not None and load.aborted_at is not None:  # the run lasted till then
        duration = max(duration, load.aborted_at - load.first_send, 1e-6)
    return Measurement(
        source=source,
        time_unit="s",
        arrival=arrival,
        prompt_tokens=workload.prompt_tokens,
        output_tokens=[r.output_tokens for r in reqs],
        ttft=[r.ttft for r in reqs],
        e2e=[r.e2e for r in reqs],
        itl_values=itl,
        itl_counts=np.ones(len(itl), dtype=np.int64),
        duration=duration,
        preemptions=preemptions or 0,
        failed_requests=sum(1 for r in load.failed if not r.cut),
        aborted=load.aborted,
        client=client,
        **fields,
    )
