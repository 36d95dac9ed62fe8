"""What a backend measured: per-request latencies and the engine's per-step record."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BeforeValidator, Field, PlainSerializer, model_validator

from tuner.core._errors import BackendError
from tuner.core._model import FrozenModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _as_array(dtype: type) -> Any:
    def convert(v: Any) -> npt.NDArray[Any]:
        a: npt.NDArray[Any] = np.array(v, dtype=dtype, copy=True)
        if a.ndim != 1:
            raise ValueError(f"must be a 1-D array, got shape {a.shape}")
        a.setflags(write=False)
        return a

    return convert


Floats = Annotated[
    Any, BeforeValidator(_as_array(np.float64)), PlainSerializer(lambda a: a.tolist())
]
Ints = Annotated[Any, BeforeValidator(_as_array(np.int64)), PlainSerializer(lambda a: a.tolist())]

TimeUnit = Literal["step", "s"]


class ClientHealth(FrozenModel):
    """How well a live load client kept to its schedule during one run (seconds).

    On a busy machine the client competes for the CPU with the server it measures, and part
    of a latency tail can be the client's own delay: a request sent late (``send_lag``: actual
    send minus scheduled time), a token read late (``read_lag``: how late the client's event
    loop woke up, sampled every 5 ms). ``lagged`` says why a run is not to be trusted.

    Example:
        >>> ClientHealth(send_lag_max=0.2, lagged="client lagged: ...").trusted
        False
    """

    send_lag_p50: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Median lateness of the sends."""
    send_lag_p99: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """99th percentile of the sends' lateness."""
    send_lag_max: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """The latest send's lateness."""
    read_lag_p99: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """99th percentile of the event loop's lateness (how late a token may have been read)."""
    read_lag_max: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """The event loop's worst lateness."""
    lagged: str | None = None
    """Why the run lagged beyond the client's threshold (``max_send_lag``), None if it did not:
    its latencies then hold some of the client's own delay."""
    cpus: str | None = None
    """How the CPU cores were split between the client and the server (None: not pinned)."""

    @property
    def trusted(self) -> bool:
        """Whether the client kept within its threshold."""
        return self.lagged is None


class Measurement(FrozenModel):
    """One run of a workload under one configuration, as every backend reports it.

    Per-request arrays are in workload (request id) order. Times are in ``time_unit``: ``"step"``
    on the unit step clock (every step lasts 1), ``"s"`` for seconds. Step-level arrays are
    filled by backends that see the engine's steps (simulator, scheduler replay, a live server's
    iteration log); they are indexed by *executed* step (steps that scheduled at least one token).

    Metrics (percentiles, throughput, goodput, ...) are computed from a measurement in
    :mod:`tuner.objectives`, once, the same way for every backend.
    """

    _error_class = BackendError

    source: str = Field(min_length=1)
    """Which backend produced this, e.g. ``"simulator(vllm 0.32)"``."""
    time_unit: TimeUnit = "s"
    """Unit of every time field: ``"step"`` (unit step clock) or ``"s"`` (seconds)."""

    # --- per request, in workload order ------------------------------------------------------
    arrival: Floats
    """When each request arrived."""
    prompt_tokens: Ints
    """Prompt length of each request."""
    output_tokens: Ints
    """Output tokens each request received."""
    ttft: Floats
    """Time to first token: arrival to the end of the step (or chunk) that delivered it."""
    e2e: Floats
    """End-to-end latency: arrival to the last token."""
    itl_values: Floats = Field(default_factory=lambda: np.zeros(0))
    """Inter-token latency samples of all requests (gaps between consecutive tokens)..."""
    itl_counts: Ints = Field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """... each sample's multiplicity (runs of equal gaps are stored once)."""
    ttft_steps: Ints | None = None
    """Steps a request waited for its first token: index of the step that emitted it minus the
    index of the first step that could see the request (0 on an idle engine)."""
    first_token_step: Ints | None = None
    """Index (into the executed steps) of the step that emitted each request's first token."""
    finish_step: Ints | None = None
    """Index of the step that emitted each request's last token."""
    preemptions_per_request: Ints | None = None
    """How many times each request was preempted (recomputed from scratch)."""
    cached_tokens: Ints | None = None
    """Prompt tokens each request found in the prefix cache when first scheduled (vLLM's
    ``num_cached_tokens``, the ``prompt_tokens_details.cached_tokens`` of its usage; hits after
    a preemption are not counted); None when the backend could not see it."""

    # --- per executed step ------------------------------------------------------------------
    step_tokens: Ints | None = None
    """Tokens scheduled in each executed step (prefill chunks + decodes)."""
    step_prefill_tokens: Ints | None = None
    """Of each step's tokens, how many were prompt (prefill or recompute) tokens; the rest
    were decode tokens. Used to fit a CostModel to a live server's step times."""
    step_seqs: Ints | None = None
    """Requests scheduled in each executed step (the batch size)."""
    step_start: Floats | None = None
    """When each executed step started."""
    step_end: Floats | None = None
    """When each executed step ended."""

    # --- engine-level ---------------------------------------------------------------------------
    duration: float = Field(ge=0, allow_inf_nan=False)
    """From the first arrival to the last token. (``vllm bench serve`` counts from the moment
    it starts sending, one inter-arrival gap earlier; the difference vanishes with many
    requests, and this definition is immune to traces whose timestamps start late.)"""
    preemptions: int = Field(default=0, ge=0)
    """Preemptions (recompute) during the run."""
    failed_requests: int = Field(default=0, ge=0)
    """Requests that errored (live backends); their latencies are NaN."""
    aborted: str | None = None
    """Set by a backend that stopped the run early because its ``AbortRule`` proved an SLO
    lost: the rule's reason (``"ttft.p99 <= 2s lost (...)"``). The per-request arrays then
    cover the requests as far as they got (NaN for what never came)."""
    client: ClientHealth | None = None
    """Live backends: how well the load client kept to the schedule, and how the cores were
    split (None for backends without a load client)."""

    @model_validator(mode="after")
    def _check_shapes(self) -> Measurement:
        n = len(self.arrival)
        per_request = {
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "ttft": self.ttft,
            "e2e": self.e2e,
            "ttft_steps": self.ttft_steps,
            "first_token_step": self.first_token_step,
            "finish_step": self.finish_step,
            "preemptions_per_request": self.preemptions_per_request,
            "cached_tokens": self.cached_tokens,
        }
        for name, arr in per_request.items():
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries, expected one per request ({n})")
        if len(self.itl_values) != len(self.itl_counts):
            raise ValueError("itl_values and itl_counts must have the same length")
        step_arrays = (
            self.step_tokens,
            self.step_prefill_tokens,
            self.step_seqs,
            self.step_start,
            self.step_end,
        )
        steps = [a for a in step_arrays if a is not None]
        if steps and len({len(a) for a in steps}) != 1:
            raise ValueError(
                "step_tokens, step_prefill_tokens, step_seqs, step_start and step_end must have "
                "the same length"
            )
        return self

    # --- derived engine-level figures -----------------------------------------------------------
    @property
    def num_requests(self) -> int:
        return len(self.arrival)

    @property
    def has_steps(self) -> bool:
        """Whether the backend recorded the engine's steps."""
        return self.step_tokens is not None

    @property
    def max_step_tokens(self) -> int:
        """The largest number of tokens scheduled in one step."""
        return int(self._steps().max(initial=0))

    @property
    def total_steps(self) -> int:
        """Number of steps that scheduled any token."""
        return len(self._steps())

    @property
    def total_output_tokens(self) -> int:
        return int(self.output_tokens.sum())

    @property
    def total_prompt_tokens(self) -> int:
        return int(self.prompt_tokens.sum())

    @property
    def tpot(self) -> FloatArray:
        """Time per output token after the first: (e2e - ttft) / (output - 1); NaN for 1 token."""
        out = self.output_tokens.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = (self.e2e - self.ttft) / (out - 1)
        return np.where(out > 1, t, np.nan)

    @property
    def output_throughput(self) -> float:
        """Output tokens per time unit over the run."""
        return self.total_output_tokens / self.duration if self.duration > 0 else float("inf")

    @property
    def request_throughput(self) -> float:
        """Completed requests per time unit over the run."""
        done = self.num_requests - self.failed_requests
        return done / self.duration if self.duration > 0 else float("inf")

    @property
    def total_token_throughput(self) -> float:
        """Prompt + output tokens per time unit over the run."""
        total = self.total_prompt_tokens + self.total_output_tokens
        return total / self.duration if self.duration > 0 else float("inf")

    def _steps(self) -> IntArray:
        if self.step_tokens is None:
            raise BackendError(
                f"{self.source} did not record the engine's steps; step metrics "
                "(max_step_tokens, total_steps, ttft_steps) are not available"
            )
        return self.step_tokens  # type: ignore[no-any-return]

    def summary(self) -> dict[str, Any]:
        """A small JSON-ready dict of headline figures (for trial records)."""
        out: dict[str, Any] = {
            "source": self.source,
            "time_unit": self.time_unit,
            "requests": self.num_requests,
            "duration": self.duration,
            "output_throughput": self.output_throughput,
            "preemptions": self.preemptions,
            "failed_requests": self.failed_requests,
        }
        if self.has_steps:
            out["total_steps"] = self.total_steps
            out["max_step_tokens"] = self.max_step_tokens
        return out
