"""The ``workload`` section of a study file (and the base of every section)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuner.core import Request

__all__ = ["Arrivals", "ClosedLoop", "MultiTurn", "SharedPrefix", "TraceFile", "WorkloadSpec"]


class _Spec(BaseModel):
    """Base of every study-file section: frozen, unknown keys are errors. (Plain pydantic, so
    that :func:`load_study` sees the path of every nested error and can give its line.)"""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_attribute_docstrings=True, strict=True
    )


class SharedPrefix(_Spec):
    """A system prompt before some prompts: ``{tokens: 512, fraction: 0.8}``."""

    tokens: int = Field(ge=1, le=10_000_000)
    """The system prompt's length (shared up to its last whole chunk)."""
    fraction: float = Field(default=1.0, ge=0, le=1)
    """The fraction of requests that start with it."""
    prompts: int = Field(default=1, ge=1)
    """How many different system prompts (each request draws one)."""
    hash_chunk_size: int = Field(default=16, ge=1)
    """Tokens per hash id."""


class Arrivals(_Spec):
    """A synthetic workload with vllm bench serve's arrivals and lengths."""

    rate: float = Field(gt=0)
    """Requests per second (per step on the unit clock); .inf sends all at once."""
    requests: int = Field(ge=1, le=10_000_000)
    """How many requests."""
    prompt_len: int | str = 512
    """N, 'uniform:MEAN:RANGE_RATIO' or 'lognormal:MEAN:SIGMA[:MAX]'."""
    output_len: int | str = 128
    """As prompt_len."""
    seed: int = 0
    """Seed of arrivals and lengths."""
    burstiness: float = Field(default=1.0, gt=0)
    """1 = Poisson; < 1 burstier; > 1 more regular (gamma-distributed gaps)."""


class MultiTurn(_Spec):
    """Chat conversations, each turn repeating the previous prompt and answer
    (Workload.multi_turn)."""

    conversations: int = Field(ge=1, le=10_000_000)
    """How many conversations."""
    turns: int = Field(ge=1, le=10_000)
    """Turns per conversation."""
    rate: float = Field(gt=0)
    """Conversations starting per second (Poisson)."""
    user_len: int | str = 128
    """New user text per turn: N, 'uniform:MEAN:RANGE_RATIO' or 'lognormal:MEAN:SIGMA[:MAX]'."""
    answer_len: int | str = 128
    """Each turn's output, as user_len."""
    think_time: float = Field(default=0.0, ge=0)
    """Mean seconds from one turn's arrival to the next (exponential)."""
    system_prompt_tokens: int = Field(default=0, ge=0)
    """A system prompt every conversation starts with."""
    seed: int = 0
    """Seed of arrivals, lengths and think times."""
    hash_chunk_size: int = Field(default=16, ge=1)
    """Tokens per hash id."""


class ClosedLoop(_Spec):
    """Concurrent users, each sending its next request when its previous one finished
    (Workload.closed_loop): ``{users: 8, requests: 200, prompt_len: 512, output_len: 128}``."""

    users: int = Field(ge=1, le=1_000_000)
    """Concurrent users (a capacity search in mode concurrency starts here)."""
    requests: int = Field(ge=1, le=10_000_000)
    """How many requests in all (request i is sent by user i % users)."""
    prompt_len: int | str = 512
    """N, 'uniform:MEAN:RANGE_RATIO' or 'lognormal:MEAN:SIGMA[:MAX]'."""
    output_len: int | str = 128
    """As prompt_len."""
    think_time: float = Field(default=0.0, ge=0)
    """Seconds (steps on the unit clock) from a response's last token to the user's next
    request."""
    ramp: float = Field(default=0.0, ge=0)
    """Users start evenly spread over this many seconds (0: all at once)."""
    seed: int = Field(default=0, ge=0)
    """Seed of the lengths (the same as poisson's with this seed)."""


class TraceFile(_Spec):
    """A trace file with reading options:
    ``{path: t.jsonl, time_unit: ms, hash_chunk_size: 512}``."""

    path: str
    """timed_trace JSONL (.jsonl) or CSV (.csv), relative to the study file."""
    time_unit: Literal["s", "ms", "us"] = "s"
    """The timestamps' unit (Mooncake and AIPerf traces: ms)."""
    hash_chunk_size: int = Field(default=16, ge=1)
    """Tokens per hash id (vllm bench's --timed-trace-chunk-hash-size; Mooncake: 512)."""


class WorkloadSpec(_Spec):
    """Exactly one of ``poisson``, ``multi_turn``, ``closed_loop``, ``trace`` or
    ``requests``."""

    poisson: Arrivals | None = None
    """Generated arrivals (gamma when burstiness != 1)."""
    closed_loop: ClosedLoop | None = None
    """Generated closed-loop users (for ``objective: {maximize: capacity, mode:
    concurrency}``)."""
    multi_turn: MultiTurn | None = None
    """Generated multi-turn conversations."""
    shared_prefix: SharedPrefix | None = None
    """With ``poisson``: a system prompt before some of the prompts (Workload.shared_prefix)."""
    trace: str | TraceFile | None = None
    """A trace file: timed_trace JSONL (.jsonl) or CSV (.csv), relative to the study file; or
    ``{path: ..., time_unit: ms, hash_chunk_size: 512}``."""
    requests: list[Request] | None = Field(default=None, min_length=1)
    """The requests themselves: ``[{arrival: 0, prompt_tokens: 8, output_tokens: 24}, ...]``."""
    head: float = Field(default=1.0, gt=0, le=1)
    """Use only this fraction of the requests (by arrival)."""
    rate: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Offer the requests at this mean rate (a trace's arrivals scaled, ``Workload.at_rate``;
    a generated workload's own rate replaced)."""
    speedup: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    """Replay the arrivals this many times faster (2 = twice the rate)."""
    oversized: Literal["error", "drop", "clip"] = "error"
    """Requests longer than the space's smallest ``max_model_len`` (vLLM refuses them):
    ``error`` before any trial runs, naming how many and the longest; ``drop`` them; or
    ``clip`` their output (then prompt) to fit."""

    @model_validator(mode="after")
    def _one(self) -> WorkloadSpec:
        kinds = ("poisson", "multi_turn", "closed_loop", "trace", "requests")
        given = [k for k in kinds if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'poisson', 'multi_turn', 'closed_loop', 'trace' or "
                f"'requests' (got {given or 'none'})"
            )
        if self.shared_prefix is not None and self.poisson is None:
            raise ValueError("'shared_prefix' goes with 'poisson' (the requests it prefixes)")
        if self.rate is not None and self.speedup is not None:
            raise ValueError("give 'rate' or 'speedup', not both")
        return self
