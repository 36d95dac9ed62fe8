"""The started live backend: a real ``vllm serve`` per configuration, loaded over HTTP.

This module owns the server's lifecycle for a trial: its command line, environment and folders,
the start, the wait for health and the stop; the measurement itself is
:class:`~tuner.backends.live._measure.LiveBackend`'s.

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
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuner.backends.live._command import (
    DETAILS_FLAG,
    ITERATION_FLAG,
    PREFIX_FLAGS,
    SHOWN_ENV,
    check_server_args,
    flag_name,
    logging_setup,
    model_arg,
    trial_run_dir,
)
from tuner.backends.live._errors import HTTP_ERRORS
from tuner.backends.live._measure import LiveBackend
from tuner.backends.live._process import (
    ServerProcess,
    find_vllm,
    free_port,
    http_get,
    private_file,
)
from tuner.backends.live._prompts import shares_prefix
from tuner.backends.live._secrets import Scrubber, redact_args, redact_env, secret_values
from tuner.backends.live._settings import ServerSettings
from tuner.core import (
    HARDWARE_KNOBS,
    KNOB_FLAGS,
    Measurement,
    ServerStartError,
    ServingConfig,
    Workload,
)
from tuner.objectives import AbortRule


class VLLMServerBackend(LiveBackend):
    """Measures each configuration on a real ``vllm serve``, loaded with the workload's schedule.

    Per :meth:`evaluate`: start ``vllm serve <model>`` with ``server_args``, the configuration's
    flags (:meth:`ServingConfig.to_vllm_args`), ``--enable-logging-iteration-details`` and
    ``--no-enable-prefix-caching`` unless the workload shares prefixes (see
    :meth:`server_command`), on 127.0.0.1 and a free port,
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
    ``startup_timeout``; :class:`TrialTimeout` if requests time out or the server stalls (no
    token for ``stall_timeout`` seconds with requests outstanding); :class:`BackendError` if
    requests fail or the server dies mid-trial. Each message has the reason and the last 30 lines
    of the server log. More than ``max_failed_requests`` failed requests fail the trial, because
    failed requests have no latency and would otherwise flatter the configuration.

    To measure a server that is already running, use
    :class:`~tuner.backends.AttachedServerBackend`.

    Args:
        model: A local model folder or a hub name, as ``vllm serve`` takes it.
        settings: :class:`ServerSettings` (``server_args``, ``env``, ``startup_timeout``,
            ``request_timeout``, ``warmup``, ``max_failed_requests``, ``stop_timeout``,
            ``vllm_executable``, ``api_key_env``/``api_key``, ``headers``, ``max_send_lag``,
            ``stall_timeout``), or give its fields as keywords. Secret-looking values (of
            ``env``, ``server_args``, the environment) are never written anywhere. ``env`` goes over
            ``os.environ`` and overrides tuner's defaults (``HF_HUB_OFFLINE=1``,
            ``VLLM_NO_USAGE_STATS=1``, caches in ``workdir``, ``VLLM_HOST_IP=127.0.0.1``, the
            timestamping logging config).
        workdir: The per-study folder (created, kept); default a temporary folder removed by
            :meth:`close`, logs included.

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

    def __init__(
        self,
        model: str | os.PathLike[str],
        settings: ServerSettings | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        **changes: Any,
    ) -> None:
        self.settings = ServerSettings.build(settings, changes)
        super().__init__(self.settings, self.settings.cpu_pinning)
        self.model = model_arg(model)
        self.server_args = tuple(check_server_args(self.settings.server_args))
        self.startup_timeout = self.settings.startup_timeout
        self.stop_timeout = self.settings.stop_timeout
        self.env = dict(self.settings.env)
        self.vllm_executable = find_vllm(self.settings.vllm_executable)
        server_env = {**os.environ, **self.env}
        #: The key the client sends: the settings' own, else the one the server will demand.
        self.api_key = self.settings.resolved_api_key() or server_env.get("VLLM_API_KEY") or None
        self.scrubber = Scrubber(secret_values(server_env, self.server_args, self.api_key))
        self._given_workdir = Path(workdir).expanduser().resolve() if workdir else None
        self._workdir: Path | None = None
        self._server: ServerProcess | None = None
        #: Log file of every trial started, in order (kept in ``workdir``).
        self.log_paths: list[Path] = []

    # --- public ---------------------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """The per-study folder (created on first use)."""
        if self._workdir is None:
            if self._given_workdir is not None:
                if not self._given_workdir.exists():
                    self._given_workdir.mkdir(parents=True, mode=0o700)
                self._workdir = self._given_workdir
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="tuner-live-"))
            existing = sorted(self._workdir.glob("trial-*.log"))
            self._trials = max(self._trials, len(existing))
        return self._workdir

    def describe(self) -> str:
        """The model, server arguments and environment: what a study's trials were measured on,
        stable across runs so that a trial log can be resumed."""
        parts = [self.model, *redact_args(self.server_args)]
        parts += [f"{k}={v}" for k, v in sorted(redact_env(self.env).items())]
        return f"{self.name}({' '.join(parts)})"

    def server_command(
        self, config: ServingConfig, port: int, workload: Workload | None = None
    ) -> list[str]:
        """The ``vllm serve`` command line for ``config`` on ``port`` (serving ``workload``).

        Prefix caching stays on (vLLM's default) unless ``server_args`` or the configuration say
        otherwise, or the workload shares no prefix (no two requests start with the same hash
        id), where it is turned off so that the step log counts every prompt token.
        """
        # Prefix caching is decided below (it also depends on the workload). Deployment knobs
        # (memory, TP, dtypes, eager) only when set away from vLLM's default, so server_args
        # such as --enforce-eager keep working and a CPU server sees no GPU flag.
        fields = ServingConfig.model_fields
        knob_args = config.to_vllm_args(
            k
            for k in KNOB_FLAGS
            if k != "enable_prefix_caching"
            and (k not in HARDWARE_KNOBS or getattr(config, k) != fields[k].default)
        )
        args = [
            self.vllm_executable,
            "serve",
            self.model,
            *self.server_args,
            *knob_args,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        flags = {flag_name(a) for a in [*self.server_args, *knob_args]}
        if ITERATION_FLAG not in flags:
            args.append(ITERATION_FLAG)
        if not flags & PREFIX_FLAGS:
            caching = config.enable_prefix_caching
            if not caching or workload is None or not shares_prefix(workload):
                args.append("--no-enable-prefix-caching")
            elif DETAILS_FLAG not in flags:
                args.append(DETAILS_FLAG)
        return args

    def _headers(self) -> dict[str, str]:
        return self.settings.request_headers(self.api_key)

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        """Serve ``config``, replay ``workload`` against it, stop the server, return the figures.

        Raises:
            ConfigError: a request does not fit ``max_model_len``.
            ServerStartError: vLLM refused the configuration, died or never became healthy.
            TrialTimeout: more than ``max_failed_requests`` requests, some timed out.
            BackendError: more than ``max_failed_requests`` requests failed, or the server died.
        """
        with self.session(config) as measure:
            return measure(workload)

    @contextmanager
    def session(
        self, config: ServingConfig, abort: AbortRule | None = None
    ) -> Iterator[Callable[[Workload], Measurement]]:
        """One server for ``config``, started at the first workload and kept for the next
        ones (a capacity search's loads, repeats), stopped on the way out. The prefix cache is
        reset before every load after the first, so one load does not warm the next. With
        ``abort`` (the Loop's rule), a load stops once an SLO is provably lost and its partial
        measurement has ``aborted`` set; the server stays up for the next load."""
        number = self._trials
        self._trials += 1
        log_path = self.workdir / f"trial-{number:03d}.log"
        run_dir = trial_run_dir(self.workdir, number)
        running: list[tuple[ServerProcess, str, float]] = []

        def measure(workload: Workload) -> Measurement:
            self._check_request(config, workload)
            if not running:
                self.log_paths.append(log_path)
                running.append(self._start(config, log_path, run_dir, workload))
                server, url, startup = running[0]
                return self._measure(
                    number, config, workload, url, log_path, server, startup, abort=abort
                )
            server, url, _ = running[0]
            return self._measure(
                number, config, workload, url, log_path, server, None, reset_cache=True, abort=abort
            )

        try:
            yield measure
        finally:
            self._server = None
            for server, _, _ in running:
                server.stop()
            shutil.rmtree(run_dir, ignore_errors=True)

    def cancel(self) -> None:
        """Stop the running server (a trial past its time limit): its evaluation then fails."""
        server = self._server
        if server is not None:
            server.stop()

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
            with private_file(logging_config, "wb") as f:
                f.write(json.dumps(logging_setup(self.env)).encode("utf-8"))
        for folder in ("cache", "config"):  # vLLM's and torch's caches: the owner's only
            (wd / folder).mkdir(mode=0o700, exist_ok=True)
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
        self, config: ServingConfig, log_path: Path, run_dir: Path, workload: Workload
    ) -> tuple[ServerProcess, str, float]:
        env = self._env(run_dir)
        for attempt in range(3):
            port = free_port()
            command = self.server_command(config, port, workload)
            with private_file(log_path) as f:
                shown = redact_env({k: env[k] for k in sorted(env) if k.startswith(SHOWN_ENV)})
                header = (
                    f"# tuner: {config.describe()}\n"
                    f"# tuner: command: {' '.join(redact_args(command))}\n"
                    f"# tuner: env: {shown}\n"
                )
                f.write(header.encode("utf-8"))
            server = ServerProcess(
                command, env=env, log_path=log_path, stop_timeout=self.stop_timeout
            )
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
                raise ServerStartError(
                    self._failure(
                        f"vllm serve exited with code {code} after {took:.1f} s, before it was "
                        "healthy",
                        config,
                        server.log_path,
                        cause=True,
                    )
                )
            try:
                status, _ = http_get(f"{url}/health", timeout=2.0)
            except HTTP_ERRORS:
                status = 0
            if status == 200:
                if not server.members():  # pragma: no cover - someone else's server answered
                    raise ServerStartError(
                        self._failure(
                            "a server answered on the port but ours is gone",
                            config,
                            server.log_path,
                        )
                    )
                return time.monotonic() - server.started
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    self._failure(
                        f"vllm serve was not healthy after {self.startup_timeout:g} s (startup_"
                        f"timeout); raise it if the model is large or compiling",
                        config,
                        server.log_path,
                    )
                )
            time.sleep(0.25)


# --- helpers -------------------------------------------------------------------------------------
