"""The live tier's settings, declared once: the constructors, the study file's ``backend.live``
section and ``tuner live``'s flags all read these fields."""

from __future__ import annotations

from pydantic import Field

from tuner.core import Settings


class LoadSettings(Settings):
    """How a live backend loads a server (started by tuner or attached to)."""

    _owner = "VLLMServerBackend"

    request_timeout: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    """Seconds one request may take before it counts as failed."""
    warmup: bool = True
    """Send one short request before the measured load (compiles kernels, fills caches)."""
    max_failed_requests: int = Field(default=0, ge=0)
    """Failed requests a trial tolerates before it fails (0 = every request must succeed)."""


class AttachedSettings(LoadSettings):
    """How :class:`AttachedServerBackend` loads a server that is already running."""

    _owner = "AttachedServerBackend"


class ServerSettings(LoadSettings):
    """How :class:`VLLMServerBackend` starts and stops a ``vllm serve`` per configuration."""

    server_args: list[str] = Field(default_factory=list)
    """More ``vllm serve`` flags (use the = form for values, e.g. ``--dtype=bfloat16``); the
    knobs tuner searches and --host/--port are refused here."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment of the server, e.g. ``{VLLM_CPU_KVCACHE_SPACE: "1"}`` on CPU."""
    startup_timeout: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    """Seconds to wait for a started server to answer /health."""
    stop_timeout: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    """Seconds to wait for a server to exit after SIGTERM before it is killed."""
    vllm_executable: str | None = Field(default=None, min_length=1)
    """The ``vllm`` command (default: next to this Python, else on PATH)."""
