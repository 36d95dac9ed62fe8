"""The attached live backend: measure a ``vllm serve`` that is already running.

No lifecycle: tuner neither starts nor stops the server, and cannot change its flags, so this
module's one rule is which configurations it will measure (the one the server runs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuner.backends.live._measure import LiveBackend
from tuner.backends.live._secrets import Scrubber, secret_values
from tuner.backends.live._settings import AttachedSettings
from tuner.core import ConfigError, Measurement, ServingConfig, Workload
from tuner.objectives import AbortRule


class AttachedServerBackend(LiveBackend):
    """Measures the ``vllm serve`` already running at ``url``, loaded with the workload's schedule.

    Each :meth:`evaluate` measures like :class:`~tuner.backends.VLLMServerBackend` (the checks of
    what the server serves, one warm-up request, the open-loop load, the engine's steps when
    ``log`` is given, the failure policy), but nothing is started or stopped. Since tuner cannot
    change the running server's flags, every evaluated config must equal ``config`` (by default
    the first config evaluated): a search over server knobs raises :class:`ConfigError` for each
    config that differs.

    Before each measured load the server's prefix cache is emptied (``POST
    /reset_prefix_cache``) so that one trial does not warm the next; vLLM serves that route only
    with ``VLLM_SERVER_DEV_MODE=1``, and a server without it is measured anyway, with a note in
    :attr:`last_trial` (``prefix_cache_reset=False``). A secured server (``vllm serve
    --api-key``) takes ``api_key_env`` (or ``api_key``), sent as ``Authorization: Bearer``.

    Args:
        url: The running server's base URL, e.g. ``http://127.0.0.1:8000`` (or give
            ``base_url`` in the settings).
        config: The configuration the running server was started with (default: the first
            config evaluated).
        log: The running server's log file (started with
            ``--enable-logging-iteration-details`` and timestamped log lines), to read its steps
            from; without it the measurement has no step figures.
        request_timeout: Seconds a request may take from its send to its last token.
        warmup: Send one small request before the load.
        max_failed_requests: Failed requests tolerated before the trial fails.

    Example:
        >>> from tuner import ServingConfig, Workload
        >>> from tuner.backends import AttachedServerBackend
        >>> config = ServingConfig(max_num_batched_tokens=2048, max_num_seqs=256,
        ...                        max_model_len=8192)
        >>> backend = AttachedServerBackend("http://127.0.0.1:8000", config=config)
        >>> backend.describe()
        'vllm-server(attached http://127.0.0.1:8000)'
        >>> workload = Workload.poisson(10, 30, prompt_len=64, output_len=16)
        >>> m = backend.evaluate(config, workload)  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str | None = None,
        config: ServingConfig | None = None,
        log: str | os.PathLike[str] | None = None,
        settings: AttachedSettings | None = None,
        **changes: Any,
    ) -> None:
        self.settings = AttachedSettings.build(settings, changes)
        url = url if url is not None else self.settings.base_url
        if not isinstance(url, str) or not url:
            raise ConfigError(f"AttachedServerBackend.url = {url!r}: give the server's base URL")
        if config is not None and not isinstance(config, ServingConfig):
            raise ConfigError(
                f"AttachedServerBackend.config: expected a ServingConfig, got {config!r}"
            )
        super().__init__(self.settings)
        self.api_key = self.settings.resolved_api_key()
        self.scrubber = Scrubber(secret_values(self.settings.headers, (), self.api_key))
        self.url = url.rstrip("/")
        #: The configuration the running server serves (set by the first evaluate if not given).
        self.config = config
        self.log = Path(log) if log is not None else None

    def describe(self) -> str:
        """The attached URL: what a study's trials were measured on, stable across runs so that
        a trial log can be resumed."""
        return f"{self.name}(attached {self.url})"

    @contextmanager
    def session(
        self, config: ServingConfig, abort: AbortRule | None = None
    ) -> Iterator[Callable[[Workload], Measurement]]:
        """Measure workloads on the running server; with ``abort`` (the Loop's rule) a load
        stops once an SLO is provably lost (the measurement then has ``aborted`` set)."""
        yield lambda workload: self._evaluate(config, workload, abort)

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        """Replay ``workload`` against the running server, return the figures.

        Raises:
            ConfigError: a request does not fit ``max_model_len``, or the config differs from
                the running server's.
            TrialTimeout: more than ``max_failed_requests`` requests, some timed out.
            BackendError: more than ``max_failed_requests`` requests failed, or a query of the
                server failed.
        """
        return self._evaluate(config, workload, None)

    def _evaluate(
        self, config: ServingConfig, workload: Workload, abort: AbortRule | None
    ) -> Measurement:
        self._check_request(config, workload)
        if self.config is None:
            self.config = config
        if config != self.config:
            differ = [k for k, v in config.model_dump().items() if getattr(self.config, k) != v]
            raise ConfigError(
                f"attach mode measures the server already running at {self.url}, whose flags "
                f"tuner cannot change, so every trial must use its configuration "
                f"({self.config.describe()}); this trial changes {', '.join(differ)}. "
                "To search over server knobs let tuner start the servers (omit attach_url); "
                "to measure the running server, search a space with no dimension over its "
                "knobs and pass its flags as attached_config"
            )
        number = self._trials
        self._trials += 1
        return self._measure(
            number, config, workload, self.url, self.log, None, None, reset_cache=True, abort=abort
        )

    def _headers(self) -> dict[str, str]:
        return self.settings.request_headers(self.api_key)
