"""The live tier's settings, declared once: the constructors, the study file's ``backend.live``
section and ``tuner live``'s flags all read these fields.

Secrets stay out of every dump: ``api_key`` is a :class:`~pydantic.SecretStr` (shown and dumped
to JSON as ``**********``), and the JSON form of ``headers``, ``env`` and ``server_args`` -- the
one a study report prints -- has every secret-looking value redacted
(:mod:`tuner.backends.live._secrets`).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr, field_serializer, model_validator

from tuner.backends.live._secrets import REDACTED, is_secret_name, redact_args, redact_env
from tuner.core import ConfigError, Settings

_REDACTED_FIELDS = frozenset({"headers", "env", "server_args"})


class LoadSettings(Settings):
    """How a live backend loads a server (started by tuner or attached to)."""

    _owner = "VLLMServerBackend"

    request_timeout: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    """Seconds one request may take before it counts as failed."""
    warmup: bool = True
    """Send one short request before the measured load (compiles kernels, fills caches)."""
    max_failed_requests: int = Field(default=0, ge=0)
    """Failed requests a trial tolerates before it fails (0 = every request must succeed)."""
    api_key: SecretStr | None = None
    """API key sent as ``Authorization: Bearer KEY`` (vllm serve --api-key); never written
    anywhere. Prefer api_key_env, which keeps it out of files and command lines."""
    api_key_env: str | None = Field(default=None, min_length=1)
    """Name of the environment variable that holds the API key (e.g. VLLM_API_KEY)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """More HTTP headers for every request to the server (secret-looking values are never
    written out)."""
    max_send_lag: float = Field(default=0.05, gt=0, allow_inf_nan=False)
    """Seconds the load client may fall behind (sending a request late, or reading tokens late
    on a busy event loop) before the trial is flagged client_lagged."""
    stall_timeout: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    """Seconds without any token, while requests are outstanding, after which the server counts
    as stalled and the trial fails (the server is stopped; the next trial starts a fresh one)."""

    @model_validator(mode="after")
    def _one_key(self) -> LoadSettings:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self

    @field_serializer("headers", when_used="json")
    def _headers_json(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: REDACTED if is_secret_name(k) else v for k, v in headers.items()}

    def __repr_args__(self) -> Any:
        """The fields for ``repr``, with the secret-looking values redacted as in JSON dumps."""
        shown = self.model_dump(mode="json")
        for name, value in super().__repr_args__():
            yield name, shown[name] if name in _REDACTED_FIELDS and name is not None else value

    def resolved_api_key(self) -> str | None:
        """The API key: ``api_key``, or the value of ``api_key_env`` (ConfigError if unset)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"{self._owner}.api_key_env = {self.api_key_env!r}: that environment variable "
                "is not set (or empty); export it, or give api_key"
            )
        return value

    def request_headers(self, api_key: str | None = None) -> dict[str, str]:
        """The headers sent with every request: ``headers``, then the API key's bearer."""
        key = api_key if api_key is not None else self.resolved_api_key()
        return {**self.headers, **({"Authorization": f"Bearer {key}"} if key else {})}


class AttachedSettings(LoadSettings):
    """How :class:`AttachedServerBackend` loads a server that is already running."""

    _owner = "AttachedServerBackend"

    base_url: str | None = Field(default=None, min_length=1)
    """Base URL of the running server, e.g. http://127.0.0.1:8000 (instead of the url
    argument)."""


class ServerSettings(LoadSettings):
    """How :class:`VLLMServerBackend` starts and stops a ``vllm serve`` per configuration."""

    server_args: list[str] = Field(default_factory=list)
    """More ``vllm serve`` flags (use the = form for values, e.g. ``--dtype=bfloat16``); the
    knobs tuner searches and --host/--port are refused here."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment of the server, e.g. ``{VLLM_CPU_KVCACHE_SPACE: "1"}`` on CPU (secret-looking
    values, e.g. HF_TOKEN, are never written out)."""
    startup_timeout: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    """Seconds to wait for a started server to answer /health."""
    stop_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    """Seconds to wait for a server to exit after SIGTERM before it is killed."""
    vllm_executable: str | None = Field(default=None, min_length=1)
    """The ``vllm`` command (default: next to this Python, else on PATH)."""
    cpu_pinning: Literal["auto", "on", "off"] = "auto"
    """Pin the load client to a core of its own and the server's processes to the others
    while a load runs: auto (only with at least 4 usable cores), on (even on 2), off."""

    @field_serializer("env", when_used="json")
    def _env_json(self, env: dict[str, str]) -> dict[str, str]:
        return redact_env(env)

    @field_serializer("server_args", when_used="json")
    def _args_json(self, server_args: list[str]) -> list[str]:
        return redact_args(server_args)
