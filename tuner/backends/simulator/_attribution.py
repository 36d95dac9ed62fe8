"""What a live step log cannot say, attributed from the client's times: each step's attention
work, and the request path (the time spent outside the engine's steps).

vLLM's iteration log gives each step's prefill tokens, decode tokens and sequences, not the
context lengths its attention read; the client knows each request's send, first-token and
last-token times. Together, on one clock (the live backend puts the steps on the workload's):

* **Delivery** (engine -> client, per token): a token reaches the client some time after the
  end of the step that made it; the median gap between a first or last token's receipt and the
  latest step end before it.
* **Decode context** of step ``s``: the requests decoding in it are those whose first token
  left the engine before ``s`` started and whose last one did not; each one's context is its
  prompt plus the tokens it has (interpolated evenly between its first and last token). Their
  mean context times the step's exact decode count is the estimate.
* **Prefill pairs** of step ``s``: the step's prefill tokens are handed to the prompts in FCFS
  order (vLLM serves running requests first, oldest first, then admits in arrival order), so a
  chunk's offset in its prompt is known; without preemption this is exact when one prompt is
  chunked at a time.
* **Inbound** (arrival -> engine): the step that ran a request's first chunk is known from the
  same FCFS hand-out; for a request that arrived after the previous step ended, that step's
  start minus the arrival is the time to reach the engine (exactly, when the engine was idle;
  an upper bound otherwise). A non-negative fit of ``fixed + per prompt token`` over them.

For a simulator's measurement (no request path) the delivery and inbound delays come out 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from tuner.backends._request_path import RequestPath
from tuner.backends.simulator._nnls import nonnegative_least_squares
from tuner.core import Measurement

FloatArray = npt.NDArray[np.float64]


class Steps(NamedTuple):
    """A measurement's per-step record (a live iteration log, or a simulator's steps)."""

    start: FloatArray
    end: FloatArray
    tokens: npt.NDArray[np.int64]
    prefill: npt.NDArray[np.int64]
    seqs: npt.NDArray[np.int64]

    @property
    def decode(self) -> FloatArray:
        return (self.tokens - self.prefill).astype(np.float64)


def steps_of(m: Measurement) -> Steps | None:
    """``m``'s per-step times and token counts, or None if it did not record them all."""
    if (
        m.step_start is None
        or m.step_end is None
        or m.step_tokens is None
        or m.step_prefill_tokens is None
        or m.step_seqs is None
    ):
        return None
    return Steps(m.step_start, m.step_end, m.step_tokens, m.step_prefill_tokens, m.step_seqs)


def delivery_delay(m: Measurement, steps: Steps) -> float:
    """The median gap from a step's end to the receipt of a token it made (seconds, >= 0)."""
    end = np.sort(steps.end)
    got = np.concatenate([m.arrival + m.ttft, m.arrival + m.e2e])
    got = got[np.isfinite(got)]
    idx = np.searchsorted(end, got + 1e-12, side="right") - 1
    gaps = got[idx >= 0] - end[idx[idx >= 0]]
    return max(0.0, float(np.median(gaps))) if len(gaps) else 0.0


def first_chunk_steps(m: Measurement, steps: Steps) -> npt.NDArray[np.int64]:
    """The step that ran each request's first prefill chunk (FCFS hand-out), workload order;
    -1 where the log ran out."""
    order = np.lexsort((np.arange(len(m.arrival)), m.arrival))
    todo = _prompt_work(m)[order]
    before = np.concatenate([[0], np.cumsum(todo)[:-1]])
    done = np.cumsum(steps.prefill)
    first = np.searchsorted(done, before, side="right")
    first[first >= len(done)] = -1
    out = np.empty(len(order), dtype=np.int64)
    out[order] = first
    return out


def _prompt_work(m: Measurement) -> npt.NDArray[np.int64]:
    prompt = np.asarray(m.prompt_tokens, dtype=np.int64)
    if m.cached_tokens is not None:
        prompt = prompt - np.minimum(np.asarray(m.cached_tokens, dtype=np.int64), prompt - 1)
    return prompt


def prefill_pairs_per_step(m: Measurement, steps: Steps) -> FloatArray:
    """Each step's prefill (query, key) pairs, the prompts chunked in FCFS order."""
    order = np.lexsort((np.arange(len(m.arrival)), m.arrival))
    work = _prompt_work(m)[order].tolist()
    base = (np.asarray(m.prompt_tokens, dtype=np.int64) - _prompt_work(m))[order].tolist()
    pairs = np.zeros(len(steps.prefill))
    i, offset = 0, 0
    for s, tokens in enumerate(steps.prefill.tolist()):
        total = 0
        while tokens > 0 and i < len(work):
            n = min(tokens, work[i] - offset)
            c = base[i] + offset
            total += n * c + n * (n + 1) // 2
            tokens -= n
            offset += n
            if offset >= work[i]:
                i, offset = i + 1, 0
        if tokens > 0:  # recomputation after a preemption: an unknown offset, taken as 0
            total += tokens * (tokens + 1) // 2
        pairs[s] = total
    return pairs


def decode_context_per_step(m: Measurement, steps: Steps, delivery: float) -> FloatArray:
    """Each step's decode context (estimated: see the module docstring)."""
    first = m.arrival + m.ttft - delivery
    last = m.arrival + m.e2e - delivery
    out = np.asarray(m.output_tokens, dtype=np.float64)
    prompt = np.asarray(m.prompt_tokens, dtype=np.float64)
    decode = steps.decode
    start = steps.start
    mean_prompt = float(prompt.mean()) if len(prompt) else 0.0
    context = np.zeros(len(start))
    for lo in range(0, len(start), 512):  # steps x requests, a block of steps at a time
        s = start[lo : lo + 512, None] + 1e-9
        active = (first[None, :] <= s) & (last[None, :] > s) & (out[None, :] > 1)
        span = np.maximum(last - first, 1e-12)
        have = 1.0 + (out - 1.0) * np.clip((s - first[None, :]) / span[None, :], 0.0, 1.0)
        ctx = np.where(active, prompt[None, :] + np.floor(have), 0.0)
        n = active.sum(axis=1)
        mean = np.where(n > 0, ctx.sum(axis=1) / np.maximum(n, 1), mean_prompt + 1.0)
        context[lo : lo + 512] = mean * decode[lo : lo + 512]
    return context


def inbound_samples(m: Measurement, steps: Steps) -> tuple[FloatArray, FloatArray]:
    """(prompt tokens, seconds from arrival to the start of the step that ran the request's
    first chunk) for the requests that arrived after the previous step had ended."""
    f = first_chunk_steps(m, steps)
    ok = f >= 0
    prev_end = np.where(f > 0, steps.end[np.maximum(f - 1, 0)], -np.inf)
    ok &= m.arrival >= prev_end
    delay = steps.start[np.maximum(f, 0)] - m.arrival
    ok &= delay >= 0
    prompt = np.asarray(m.prompt_tokens, dtype=np.float64)
    return prompt[ok], delay[ok]


def fit_request_path(measurements: Sequence[Measurement]) -> RequestPath:
    """The request path of live runs with a step log (all delays 0 if none has one).

    The inbound fit drops samples more than three median absolute deviations above the first
    fit and fits again (a request that found the engine busy waited for more than the path)."""
    logged = [(m, s) for m in measurements if (s := steps_of(m)) is not None]
    if not logged:
        return RequestPath()
    delivery = _measurable(float(np.median([delivery_delay(m, s) for m, s in logged])))
    samples = [inbound_samples(m, s) for m, s in logged]
    prompt = np.concatenate([p for p, _ in samples])
    delay = np.concatenate([d for _, d in samples])
    if len(delay) < 2:
        return RequestPath(delivery=delivery)
    x = np.column_stack([np.ones(len(prompt)), prompt / max(float(prompt.max()), 1.0)])
    coef, _ = nonnegative_least_squares(x, delay)
    resid = delay - x @ coef
    mad = float(np.median(np.abs(resid - np.median(resid)))) or 1e-9
    keep = resid <= 3 * mad
    if keep.sum() >= 2 and not keep.all():
        coef, _ = nonnegative_least_squares(x[keep], delay[keep])
    return RequestPath(
        arrival_fixed=_measurable(float(coef[0])),
        arrival_per_prompt_token=_measurable(float(coef[1])) / max(float(prompt.max()), 1.0),
        delivery=delivery,
    )


def _measurable(seconds: float) -> float:
    """``seconds``, or 0 below 0.1 us (float rounding of a simulator's exact times)."""
    return seconds if seconds >= 1e-7 else 0.0
