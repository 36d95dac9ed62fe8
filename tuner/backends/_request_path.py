"""The request path: the time a request spends outside the engine's steps, on its way in and
its tokens' way out (HTTP parsing, tokenization, the API server -> engine hop; detokenization,
streaming).

A step-level backend sees only the engine: a request reaches it the moment it arrives and its
tokens leave at the end of their step. A :class:`RequestPath` moves both: the engine sees a
request ``arrival_fixed + arrival_per_prompt_token x prompt`` seconds after the client sent it,
and the client receives every token ``delivery`` seconds after its step ended. It is fitted
from a live run (:func:`~tuner.backends.simulator.fit_request_path`) and applied by
:class:`~tuner.backends.SimulatorBackend` (both exported by ``tuner.backends.simulator``).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from tuner.core import FrozenModel, Measurement, Workload


class RequestPath(FrozenModel):
    """Delays outside the engine's steps, in seconds (all 0: the engine alone).

    Example:
        >>> from tuner.core import Request
        >>> w = Workload([Request(arrival=0, prompt_tokens=100, output_tokens=3)])
        >>> RequestPath(arrival_fixed=0.002, arrival_per_prompt_token=1e-5).engine_arrivals(w)
        [0.003]
    """

    arrival_fixed: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Seconds from the client's send to the engine's first chance to schedule the request."""
    arrival_per_prompt_token: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """More seconds on the way in per prompt token (tokenization, transfer)."""
    server_time: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Seconds the API server spends on each request before the engine can see it, one
    request at a time in the order they were sent: a burst queues in the API server (on a
    loaded CPU, where it shares cores with the engine, this is what bounds throughput)."""
    delivery: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Seconds from the end of a token's step to the client receiving it."""
    first_token_delivery: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    """Seconds from the end of a request's first token's step to the client receiving it, if
    that differs from :attr:`delivery` (an API server that falls behind merges the first
    tokens of a stream; the client's first token can then come with its last). None: the same
    as ``delivery``. The client's first token never comes after its last."""

    @property
    def is_zero(self) -> bool:
        """Whether every delay is 0 (the engine's own times)."""
        return (
            self.arrival_fixed == 0
            and self.arrival_per_prompt_token == 0
            and self.server_time == 0
            and self.delivery == 0
            and not self.first_token_delivery
        )

    @property
    def first_delivery(self) -> float:
        """The delivery delay of a request's first token."""
        return self.delivery if self.first_token_delivery is None else self.first_token_delivery

    def inbound(self, workload: Workload) -> np.ndarray:
        """Each request's delay on the way in (seconds), in workload order: its fixed and
        per-prompt-token delay, then its wait for the API server (:attr:`server_time` per
        request, in the order sent)."""
        own = self.arrival_fixed + self.arrival_per_prompt_token * workload.prompt_tokens
        if self.server_time == 0:
            return np.asarray(own, dtype=np.float64)
        sent = workload.arrival
        seen = np.empty(len(sent))
        free = -np.inf
        for i in np.argsort(sent, kind="stable").tolist():
            free = max(sent[i] + own[i], free + self.server_time)
            seen[i] = free
        return seen - sent

    def engine_arrivals(self, workload: Workload) -> list[float]:
        """When the engine sees each request (workload order)."""
        return [round(float(t), 12) for t in workload.arrival + self.inbound(workload)]

    def engine_workload(self, workload: Workload) -> Workload:
        """The workload as the engine sees it: every arrival delayed by its inbound time (an
        open-loop workload; a closed-loop one is returned as it is -- its sends depend on the
        finishes)."""
        if workload.is_closed_loop or (
            self.arrival_fixed == 0 and self.arrival_per_prompt_token == 0 and self.server_time == 0
        ):
            return workload
        return Workload.from_arrays(
            workload.arrival + self.inbound(workload),
            workload.prompt_tokens,
            workload.output_tokens,
            workload.hash_ids,
            hash_chunk_size=workload.hash_chunk_size,
        )

    def client_view(self, m: Measurement, workload: Workload) -> Measurement:
        """``m`` (measured on :meth:`engine_workload`) as the client sees it: latencies from
        the client's send to the client's receipt. Inter-token gaps are unchanged (every token
        is delayed alike); the engine's steps keep their own clock."""
        if self.is_zero:
            return m
        inbound = 0.0 if workload.is_closed_loop else self.inbound(workload)
        arrival = m.arrival - inbound
        e2e = m.e2e + inbound + self.delivery
        fields = dict(m)
        fields.update(
            arrival=arrival,
            ttft=np.minimum(m.ttft + inbound + self.first_delivery, e2e),
            e2e=e2e,
            duration=float(np.max(arrival + e2e) - np.min(arrival)),
        )
        return Measurement(**fields)
