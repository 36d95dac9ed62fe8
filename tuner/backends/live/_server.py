"""The live backend: a real ``vllm serve`` per configuration, loaded with the workload over HTTP.

Layout of the per-study folder (``workdir``)::

    trial-000.log       the server's output for trial 0 (command, environment, vLLM's log)
    trial-001.log       ...
    logging.json        the logging config that timestamps every server log line
    cache/, config/     vLLM, torch-inductor and triton caches (shared by the study's trials)
    run/trial-NNN/      TMPDIR and ZMQ sockets of a running trial (deleted when it stops; when
                        that path is too long for a Unix socket, a short folder in the system
                        temp dir instead, deleted likewise)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.backends._base import Backend, check_fits
from tuner.backends.live._load import LoadResult, replay
from tuner.backends.live._process import (
    LOG_TAIL_LINES,
    ServerProcess,
    failure_reason,
    find_vllm,
    free_port,
    http_get,
    log_tail,
)
from tuner.backends.live._steplog import StepLog, parse_step_log
from tuner.core._config import ServingConfig
from tuner.core._errors import BackendError, ConfigError, ServerStartError, TrialTimeout
from tuner.core._measurement import Measurement
from tuner.core._workload import Workload

_WARMUP = Workload.from_arrays([0.0], [16], [4])
_WARMUP_SALT = 999_983
_KNOB_FLAGS = frozenset(
    {
        "--max-num-batched-tokens", "--max-num-seqs", "--long-prefill-token-threshold",
        "--enable-chunked-prefill", "--no-enable-chunked-prefill", "--block-size",
        "--max-model-len", "--async-scheduling", "--no-async-scheduling",
        "--num-gpu-blocks-override",
    }
)  # fmt: skip
_OWNED_FLAGS = frozenset({"--host", "--port"})
_PREFIX_FLAGS = frozenset({"--enable-prefix-caching", "--no-enable-prefix-caching"})
_ITERATION_FLAG = "--enable-logging-iteration-details"
# Longest run folder: vLLM's socket paths add "/" + a 36-character uuid, within 107 bytes, and
# Python's multiprocessing adds about as much in TMPDIR.
_MAX_RUN_DIR = 64
_LOG_FORMAT = "%(created).6f %(levelname)s %(process)d [%(filename)s:%(lineno)d] %(message)s"


# --- the backend -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiveTrial:
    """What the live backend knows about one evaluated trial, beyond the Measurement.

    Attributes:
        number: The backend's trial counter (the ``NNN`` of ``trial-NNN.log``).
        config: The configuration served.
        url: The server's base URL.
        served_model: The model name the server reported (``GET /v1/models``).
        vllm_version: The server's version (``GET /version``), if it said.
        log_path: The server's log (None in attach mode without ``attach_log``).
        command: The command line run (empty in attach mode).
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


class VLLMServerBackend(Backend):
    """Measures each configuration on a real ``vllm serve``, loaded with the workload's schedule.

    Per :meth:`evaluate`: start ``vllm serve <model>`` with ``server_args``, the configuration's
    flags (:meth:`ServingConfig.to_vllm_args`), ``--enable-logging-iteration-details`` and, unless
    ``server_args`` says otherwise, ``--no-enable-prefix-caching``, on 127.0.0.1 and a free port,
    in its own process group; wait for ``GET /health`` = 200; send one warm-up request; replay the
    workload open loop (:func:`tuner.backends.live._load.replay`); read the engine's steps from the
    log; stop the whole process group (SIGTERM, then SIGKILL) on every way out -- success,
    error, timeout, Ctrl-C -- with an atexit safety net (and, on Linux, the server gets SIGTERM
    if the tuner process is killed). The server's caches, temporary files and sockets live in
    ``workdir``; nothing is left in /tmp.

    The :class:`Measurement` is in seconds: TTFT, E2E and ITL as the client saw them, measured
    from each request's send (as ``vllm bench serve`` does); ``step_tokens``,
    ``step_prefill_tokens``, ``step_seqs``, ``step_start`` and ``step_end`` from vLLM's iteration
    log, so step SLOs such as ``max_step_tokens <= 512`` hold live too (``step_end -
    step_start`` is vLLM's "iteration elapsed time", the model's execution; see
    :func:`~tuner.backends.live._steplog.step_times`). ``ttft_steps`` is not available live: the log
    does not say which request a step served. The trial's log path is in ``measurement.source``
    and :attr:`last_trial`.

    vLLM's CPU backend refuses ``block_size=16`` (ServingConfig's default, vLLM's GPU default):
    on CPU use a multiple of 32, e.g. 128 (the CPU default).

    Failures raise (and the :class:`~tuner.Loop` records the trial as failed, then goes on):
    :class:`ServerStartError` if vLLM refuses the configuration, dies or is not healthy within
    ``startup_timeout``; :class:`TrialTimeout` if requests time out; :class:`BackendError` if
    requests fail or the server dies mid-trial. Each message has the reason and the last 30 lines
    of the server log. More than ``max_failed_requests`` failed requests fail the trial, because
    failed requests have no latency and would otherwise flatter the configuration.

    Attach mode (``attach_url``) measures a server that is already running: no lifecycle, and
    since tuner cannot change its flags, every evaluated config must equal ``attached_config``
    (by default the first config evaluated): a search over server knobs raises
    :class:`ConfigError` for each config that differs.

    Args:
        model: A local model folder or a hub name, as ``vllm serve`` takes it.
        server_args: More ``vllm serve`` flags (e.g. ``["--enforce-eager", "--dtype",
            "bfloat16"]``). Knobs of :class:`ServingConfig`, ``--host`` and ``--port`` are
            refused here: set them in the config or the search space.
        vllm_executable: The ``vllm`` command; default ``vllm`` next to ``sys.executable``, else
            on PATH.
        workdir: The per-study folder (created, kept); default a temporary folder removed by
            :meth:`close`, logs included.
        startup_timeout: Seconds to wait for ``/health`` = 200.
        request_timeout: Seconds a request may take from its send to its last token.
        env: Environment variables for the server, over ``os.environ``; they also override
            tuner's defaults (``HF_HUB_OFFLINE=1``, ``VLLM_NO_USAGE_STATS=1``, caches in
            ``workdir``, ``VLLM_HOST_IP=127.0.0.1``, the timestamping logging config).
        attach_url: Measure the server at this URL instead of starting one.
        attached_config: In attach mode, the configuration the running server was started with.
        attach_log: In attach mode, the running server's log file (started with
            ``--enable-logging-iteration-details``), to read its steps from.
        warmup: Send one small request before the load (the first request of a fresh server
            pays one-off costs).
        max_failed_requests: Failed requests tolerated before the trial fails.
        stop_timeout: Seconds between SIGTERM and SIGKILL when stopping the server.

    Example:
        >>> from tuner import Loop, SearchSpace, ServingConfig, Workload
        >>> from tuner.backends import VLLMServerBackend
        >>> from tuner.search import GridSearch
        >>> backend = VLLMServerBackend("/models/tiny", server_args=["--enforce-eager"],
        ...                             env={"VLLM_CPU_KVCACHE_SPACE": "1"})  # doctest: +SKIP
        >>> space = SearchSpace({"max_num_batched_tokens": [64, 256]},
        ...                     base=ServingConfig(max_num_seqs=8, block_size=128,
        ...                                        max_model_len=1024))
        >>> workload = Workload.poisson(10, 30, prompt_len=64, output_len=16)
        >>> result = Loop(backend, GridSearch(), slos=["ttft.p99 <= 2s"]).run(
        ...     space, workload)  # doctest: +SKIP
    """

    name = "vllm-server"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        server_args: Sequence[str] = (),
        vllm_executable: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 600.0,
        request_timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
        attach_url: str | None = None,
        attached_config: ServingConfig | None = None,
        attach_log: str | os.PathLike[str] | None = None,
        warmup: bool = True,
        max_failed_requests: int = 0,
        stop_timeout: float = 30.0,
    ) -> None:
        for name, value in (("startup_timeout", startup_timeout),
                            ("request_timeout", request_timeout),
                            ("stop_timeout", stop_timeout)):  # fmt: skip
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"VLLMServerBackend.{name} = {value!r}: must be a number > 0")
        if not isinstance(max_failed_requests, int) or max_failed_requests < 0:
            raise ConfigError(
                f"VLLMServerBackend.max_failed_requests = {max_failed_requests!r}: "
                "must be an integer >= 0"
            )
        if attached_config is not None and not isinstance(attached_config, ServingConfig):
            raise ConfigError(
                f"VLLMServerBackend.attached_config: expected a ServingConfig, "
                f"got {attached_config!r}"
            )
        if attach_url is None and (attached_config is not None or attach_log is not None):
            raise ConfigError(
                "VLLMServerBackend: attached_config and attach_log only apply with attach_url"
            )
        self.model = _model_arg(model)
        self.server_args = tuple(_check_server_args(server_args))
        self.startup_timeout = float(startup_timeout)
        self.request_timeout = float(request_timeout)
        self.stop_timeout = float(stop_timeout)
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.attach_url = attach_url.rstrip("/") if attach_url else None
        self.attached_config = attached_config
        self.attach_log = Path(attach_log) if attach_log is not None else None
        self.warmup = warmup
        self.max_failed_requests = max_failed_requests
        self.vllm_executable = None if attach_url else find_vllm(vllm_executable)
        self._given_workdir = Path(workdir).expanduser().resolve() if workdir else None
        self._workdir: Path | None = None
        self._trials = 0
        self._salt = secrets.randbelow(1 << 30)
        self._server: ServerProcess | None = None
        #: Log file of every trial started, in order (kept in ``workdir``).
        self.log_paths: list[Path] = []
        #: Details of the last successful trial (log path, startup time, load record, steps).
        self.last_trial: LiveTrial | None = None

    # --- public ---------------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """The per-study folder (created on first use)."""
        if self._workdir is None:
            if self._given_workdir is not None:
                self._given_workdir.mkdir(parents=True, exist_ok=True)
                self._workdir = self._given_workdir
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="tuner-live-"))
            existing = sorted(self._workdir.glob("trial-*.log"))
            self._trials = max(self._trials, len(existing))
        return self._workdir

    def describe(self) -> str:
        """The model, server arguments and environment (or the attached URL): what a study's
        trials were measured on, stable across runs so that a trial log can be resumed."""
        if self.attach_url is not None:
            return f"{self.name}(attached {self.attach_url})"
        parts = [self.model, *self.server_args]
        parts += [f"{k}={v}" for k, v in sorted(self.env.items())]
        return f"{self.name}({' '.join(parts)})"

    def server_command(self, config: ServingConfig, port: int) -> list[str]:
        """The ``vllm serve`` command line for ``config`` on ``port``."""
        if self.vllm_executable is None:
            raise ConfigError("attach mode starts no server: there is no command line")
        args = [self.vllm_executable, "serve", self.model, *self.server_args,
                *config.to_vllm_args(), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        flags = {_flag_name(a) for a in self.server_args}
        if _ITERATION_FLAG not in flags:
            args.append(_ITERATION_FLAG)
        if not flags & _PREFIX_FLAGS:
            args.append("--no-enable-prefix-caching")
        return args

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        """Serve ``config``, replay ``workload`` against it, stop the server, return the figures.

        Raises:
            ConfigError: a request does not fit ``max_model_len``, or (attach mode) the config
                differs from the running server's.
            ServerStartError: vLLM refused the configuration, died or never became healthy.
            TrialTimeout: more than ``max_failed_requests`` requests, some timed out.
            BackendError: more than ``max_failed_requests`` requests failed, or the server died.
        """
        if not isinstance(config, ServingConfig):
            raise ConfigError(f"evaluate(config=...): expected a ServingConfig, got {config!r}")
        _check_fits(config, workload)
        if self.attach_url is not None:
            return self._evaluate_attached(config, workload)
        number = self._trials
        self._trials += 1
        log_path = self.workdir / f"trial-{number:03d}.log"
        self.log_paths.append(log_path)
        run_dir = _run_dir(self.workdir, number)
        try:
            server, url, startup = self._start(config, log_path, run_dir)
            try:
                return self._measure(number, config, workload, url, log_path, server, startup)
            finally:
                self._server = None
                server.stop()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def close(self) -> None:
        """Stop a running server and delete the temporary workdir (idempotent).

        A ``workdir`` given by the user is kept, logs and caches included.
        """
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._trials = 0
            self.log_paths = []

    # --- lifecycle -------------------------------------------------------------------------------
    def _env(self, run_dir: Path) -> dict[str, str]:
        wd = self.workdir
        logging_config = wd / "logging.json"
        if not logging_config.exists():
            logging_config.write_text(json.dumps(_logging_config(self.env)), encoding="utf-8")
        defaults = {
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "VLLM_HOST_IP": "127.0.0.1",
            "VLLM_CACHE_ROOT": str(wd / "cache" / "vllm"),
            "VLLM_CONFIG_ROOT": str(wd / "config" / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(wd / "cache" / "torchinductor"),
            "TRITON_CACHE_DIR": str(wd / "cache" / "triton"),
            "VLLM_LOGGING_CONFIG_PATH": str(logging_config),
            "VLLM_LOGGING_COLOR": "0",
        }
        env = {**os.environ, **defaults, **self.env}
        env.update(TMPDIR=str(run_dir), VLLM_RPC_BASE_PATH=str(run_dir), PYTHONUNBUFFERED="1")
        return env

    def _start(
        self, config: ServingConfig, log_path: Path, run_dir: Path
    ) -> tuple[ServerProcess, str, float]:
        env = self._env(run_dir)
        for attempt in range(3):
            port = free_port()
            command = self.server_command(config, port)
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(f"# tuner: {config.describe()}\n# tuner: command: {' '.join(command)}\n")
                shown = {k: env[k] for k in sorted(env) if k.startswith(("VLLM_", "HF_"))}
                f.write(f"# tuner: env: {shown}\n")
            server = ServerProcess(command, env=env, log_path=log_path,
                                   stop_timeout=self.stop_timeout)  # fmt: skip
            self._server = server
            url = f"http://127.0.0.1:{port}"
            try:
                startup = self._wait_healthy(server, url, config)
            except ServerStartError as e:
                self._server = None
                server.stop()
                if attempt < 2 and "address already in use" in str(e).lower():
                    continue  # another process took the port between our check and vLLM's bind
                raise
            except BaseException:
                self._server = None
                server.stop()
                raise
            return server, url, startup
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_healthy(self, server: ServerProcess, url: str, config: ServingConfig) -> float:
        deadline = server.started + self.startup_timeout
        while True:
            code = server.returncode
            if code is not None:
                took = time.monotonic() - server.started
                raise ServerStartError(self._failure(
                    f"vllm serve exited with code {code} after {took:.1f} s, before it was "
                    "healthy", config, server.log_path, cause=True))  # fmt: skip
            try:
                status, _ = http_get(f"{url}/health", timeout=2.0)
            except (OSError, ValueError):
                status = 0
            if status == 200:
                if not server.members():  # pragma: no cover - someone else's server answered
                    raise ServerStartError(self._failure(
                        "a server answered on the port but ours is gone", config,
                        server.log_path))  # fmt: skip
                return time.monotonic() - server.started
            if time.monotonic() >= deadline:
                raise ServerStartError(self._failure(
                    f"vllm serve was not healthy after {self.startup_timeout:g} s (startup_"
                    f"timeout); raise it if the model is large or compiling", config,
                    server.log_path))  # fmt: skip
            time.sleep(0.25)

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
            warm = replay(url, served, _WARMUP, request_timeout=self.request_timeout,
                          salt=_WARMUP_SALT + number)  # fmt: skip
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
        load = replay(url, served, workload, request_timeout=self.request_timeout,
                      salt=self._salt + number)  # fmt: skip
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
            raise BackendError(self._failure(
                f"vllm serve exited with code {server.returncode} during the trial",
                config, log_path, cause=True))  # fmt: skip
        self._check_failures(load, config, log_path)
        preemptions = (
            preempted_after - preempted_before
            if preempted_after is not None and preempted_before is not None
            else None
        )
        self.last_trial = LiveTrial(
            number=number, config=config, url=url, served_model=served, vllm_version=version,
            log_path=log_path, command=server.command if server else (),
            startup_seconds=startup, load=load, steps=steps, preemptions=preemptions,
        )  # fmt: skip
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
        error = TrialTimeout if any(r.timed_out for r in failed) else BackendError
        raise error(self._failure(what, config, log_path))

    # --- attach mode ---------------------------------------------------------------------------
    def _evaluate_attached(self, config: ServingConfig, workload: Workload) -> Measurement:
        url = self.attach_url
        if url is None:  # pragma: no cover - checked by the caller
            raise ConfigError("attach mode needs attach_url")
        if self.attached_config is None:
            self.attached_config = config
        if config != self.attached_config:
            differ = [
                k for k, v in config.model_dump().items()
                if getattr(self.attached_config, k) != v
            ]  # fmt: skip
            raise ConfigError(
                f"attach mode measures the server already running at {url}, whose flags tuner "
                f"cannot change, so every trial must use its configuration "
                f"({self.attached_config.describe()}); this trial changes {', '.join(differ)}. "
                "To search over server knobs let tuner start the servers (omit attach_url); "
                "to measure the running server, search a space with no dimension over its "
                "knobs and pass its flags as attached_config"
            )
        number = self._trials
        self._trials += 1
        return self._measure(number, config, workload, url, self.attach_log, None, None)


# --- helpers -------------------------------------------------------------------------------------
def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0].replace("_", "-") if arg.startswith("--") else arg


def _check_server_args(server_args: Sequence[str]) -> list[str]:
    if isinstance(server_args, (str, bytes)):
        raise ConfigError(
            f"VLLMServerBackend.server_args = {server_args!r}: must be a list of arguments, "
            "e.g. ['--enforce-eager', '--dtype', 'bfloat16']"
        )
    args = [str(a) for a in server_args]
    for a in args:
        name = _flag_name(a)
        if name in _KNOB_FLAGS:
            raise ConfigError(
                f"VLLMServerBackend.server_args sets {name}, a ServingConfig knob: set it in the "
                "config (or the SearchSpace base) so that every trial records it"
            )
        if name in _OWNED_FLAGS:
            raise ConfigError(
                f"VLLMServerBackend.server_args sets {name}: the backend serves on 127.0.0.1 "
                "and a free port of its choosing; remove it"
            )
    return args


def _model_arg(model: str | os.PathLike[str]) -> str:
    text = os.fspath(model)
    if not text:
        raise ConfigError("VLLMServerBackend.model: give a model folder or a hub name")
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def _run_dir(workdir: Path, number: int) -> Path:
    """A fresh folder for the trial's TMPDIR and ZMQ sockets: ``workdir/run/trial-NNN``, or a
    short folder in the system temp dir when that path is too long for a Unix socket (vLLM
    binds ``<VLLM_RPC_BASE_PATH>/<uuid4>``, and a socket path holds at most 107 bytes)."""
    run_dir = workdir / "run" / f"trial-{number:03d}"
    if len(os.fsencode(run_dir)) <= _MAX_RUN_DIR:
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        return run_dir
    return Path(tempfile.mkdtemp(prefix=f"tuner-{number:03d}-"))


def _check_fits(config: ServingConfig, workload: Workload) -> None:
    if not isinstance(workload, Workload):
        raise ConfigError(f"evaluate(workload=...): expected a Workload, got {workload!r}")
    check_fits(config, workload)


def _scheduled_tokens(workload: Workload) -> int:
    """Tokens vLLM schedules for a workload without preemption: every prompt token and every
    output token but the last of each request (the last sampled token is never fed back)."""
    return workload.total_prompt_tokens + workload.total_output_tokens - len(workload)


def _logging_config(env: Mapping[str, str]) -> dict[str, Any]:
    level = env.get("VLLM_LOGGING_LEVEL", os.environ.get("VLLM_LOGGING_LEVEL", "INFO")).upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"tuner": {"format": _LOG_FORMAT}},
        "handlers": {
            "tuner": {
                "class": "logging.StreamHandler",
                "formatter": "tuner",
                "level": "DEBUG",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "vllm": {"handlers": ["tuner"], "level": level, "propagate": False},
            # the iteration-details lines are INFO: keep them whatever the level
            "vllm.v1.metrics.loggers": {"level": "INFO"},
        },
    }


def _served_model(url: str) -> tuple[str, int | None]:
    try:
        status, body = http_get(f"{url}/v1/models", timeout=10.0)
        data = json.loads(body) if status == 200 else None
        first = data["data"][0] if data else None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise BackendError(f"GET {url}/v1/models failed: {e}") from e
    if not isinstance(first, dict) or "id" not in first:
        raise BackendError(f"GET {url}/v1/models: no model in the answer (HTTP {status})")
    max_len = first.get("max_model_len")
    return str(first["id"]), int(max_len) if isinstance(max_len, int) else None


def _server_version(url: str) -> str | None:
    try:
        status, body = http_get(f"{url}/version", timeout=5.0)
        return str(json.loads(body)["version"]) if status == 200 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


_PREEMPTIONS = re.compile(r"^vllm:num_preemptions(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+]+)\s*$")


def _preemptions(url: str) -> int | None:
    """The server's preemption counter (``/metrics``), summed over engines; None if unknown."""
    try:
        status, body = http_get(f"{url}/metrics", timeout=5.0)
    except OSError:
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
