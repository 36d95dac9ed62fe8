"""Recording an engine's steps on a clock and turning them into a :class:`Measurement`.

Shared by every step-level backend (the simulator and the real-scheduler replay), so that the
same schedule always yields the same measurement, to the bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from tuner.backends._cost import CostModel
from tuner.core._measurement import Measurement
from tuner.core._workload import Workload


class Timeline:
    """Collects executed steps and token emissions, then builds a ``Measurement``.

    Tokens are emitted at the end of the step that produced them; a request's first token comes
    from the step that ran its last prefill chunk. Plain Python lists keep the per-step cost low
    (a step touches only the requests it served).
    """

    def __init__(self, workload: Workload, cost_model: CostModel, source: str) -> None:
        self.workload = workload
        self.cost_model = cost_model
        self.source = source
        n = len(workload)
        self._output: list[int] = workload.output_tokens.tolist()
        self._tokens: list[int] = []
        self._seqs: list[int] = []
        self._prefill: list[int] = []
        self._start: list[float] = []
        self._end: list[float] = []
        self._first_step = [-1] * n
        self._finish_step = [-1] * n
        self._first_time = [float("nan")] * n
        self._finish_time = [float("nan")] * n
        self._last_emit = [float("nan")] * n
        self._emitted = [0] * n
        self._preempt = [0] * n
        self._itl_values: list[float] = []
        self._itl_counts: list[int] = []

    @property
    def num_steps(self) -> int:
        return len(self._tokens)

    def step(
        self,
        start: float,
        prefill_tokens: int,
        decode_tokens: int,
        num_seqs: int,
        emitted: Iterable[int],
        lazy: int = 0,
    ) -> float:
        """Record one executed step; ``emitted`` are the ids that got a token. Returns its end.

        ``lazy`` more requests got a token too without being named: decoding requests whose
        previous token came at the end of the previous step (the fast engine keeps them
        implicitly and reports them through :meth:`settle`)."""
        dur = self.cost_model.step_time(prefill_tokens, decode_tokens, num_seqs)
        end = start + dur
        idx = len(self._tokens)
        self._tokens.append(prefill_tokens + decode_tokens)
        self._prefill.append(prefill_tokens)
        self._seqs.append(num_seqs)
        self._start.append(start)
        self._end.append(end)
        # Inlined per-request bookkeeping (the hot path of every step-level backend).
        emitted_so_far, last_emit = self._emitted, self._last_emit
        itl_values, itl_counts = self._itl_values, self._itl_counts
        for i in emitted:
            if emitted_so_far[i] == 0:
                self._first_step[i] = idx
                self._first_time[i] = end
            else:
                itl_values.append(end - last_emit[i])
                itl_counts.append(1)
            emitted_so_far[i] += 1
            last_emit[i] = end
            if emitted_so_far[i] >= self._output[i]:
                self._finish_step[i] = idx
                self._finish_time[i] = end
        if lazy:
            itl_values.append(end - start)
            itl_counts.append(lazy)
        return end

    def run(
        self,
        start: float,
        k: int,
        prefill_tokens: int,
        decode_tokens: int,
        num_seqs: int,
        ids: Sequence[int],
        lazy: int = 0,
    ) -> float:
        """Record ``k`` identical steps in which each of ``ids`` (decoding requests) gets one
        token per step and none gets its first or last token; prefill chunks emit nothing.
        Returns the end of the last step. ``lazy``: as in :meth:`step`.

        Step boundaries are accumulated exactly as ``k`` calls of :meth:`step` would add them,
        so a run and the same steps recorded one by one give bit-identical times."""
        dur = self.cost_model.step_time(prefill_tokens, decode_tokens, num_seqs)
        if k <= 64:  # the same sums, without numpy's overhead on short stretches
            bounds = [start]
            for _ in range(k):
                bounds.append(bounds[-1] + dur)
        else:
            bounds = np.cumsum(np.concatenate(([start], np.full(k, dur)))).tolist()
        self._tokens.extend([prefill_tokens + decode_tokens] * k)
        self._prefill.extend([prefill_tokens] * k)
        self._seqs.extend([num_seqs] * k)
        self._start.extend(bounds[:k])
        self._end.extend(bounds[1:])
        first_end, end = bounds[1], bounds[k]
        emitted_so_far, last_emit = self._emitted, self._last_emit
        gaps = [first_end - last_emit[i] for i in ids]  # every id has emitted before a run
        self._itl_values.extend(gaps)
        self._itl_counts.extend([1] * len(gaps))
        if k > 1 and ids:
            self._itl_values.append(dur)
            self._itl_counts.append(len(ids) * (k - 1))
        for i in ids:
            emitted_so_far[i] += k
            last_emit[i] = end
        if lazy:
            self._itl_values.append(first_end - start)
            self._itl_counts.append(lazy)
            if k > 1:
                self._itl_values.append(dur)
                self._itl_counts.append(lazy * (k - 1))
        return float(end)

    def settle(self, request_id: int, emitted: int, last_emit: float) -> None:
        """Bring an implicitly kept request's record up to date: ``emitted`` tokens so far,
        the last at ``last_emit`` (the end of the latest step); finishes it if that was all."""
        self._emitted[request_id] = emitted
        self._last_emit[request_id] = last_emit
        if emitted >= self._output[request_id]:
            self._finish_step[request_id] = len(self._tokens) - 1
            self._finish_time[request_id] = last_emit

    def preempted(self, request_id: int) -> None:
        """Note that a request was preempted (its KV freed, to be recomputed)."""
        self._preempt[request_id] += 1

    def emitted(self, request_id: int) -> int:
        """Tokens delivered to a request so far."""
        return self._emitted[request_id]

    def build(self) -> Measurement:
        """The measurement of everything recorded (every request must have finished)."""
        w = self.workload
        finish_step = np.array(self._finish_step, dtype=np.int64)
        unfinished = np.flatnonzero(finish_step < 0)
        if len(unfinished):
            raise RuntimeError(
                f"{self.source}: {len(unfinished)} request(s) never finished "
                f"(first: id {unfinished[0]})"
            )
        start = np.array(self._start, dtype=np.float64)
        first_step = np.array(self._first_step, dtype=np.int64)
        finish_time = np.array(self._finish_time)
        # The first step that could see a request: the first one starting at or after arrival.
        seen = np.searchsorted(start, w.arrival, side="left")
        preempt = np.array(self._preempt, dtype=np.int64)
        return Measurement(
            source=self.source,
            time_unit=self.cost_model.time_unit,
            arrival=w.arrival,
            prompt_tokens=w.prompt_tokens,
            output_tokens=self._emitted,
            ttft=np.array(self._first_time) - w.arrival,
            e2e=finish_time - w.arrival,
            itl_values=self._itl_values,
            itl_counts=self._itl_counts,
            ttft_steps=first_step - seen,
            first_token_step=first_step,
            finish_step=finish_step,
            preemptions_per_request=preempt,
            step_tokens=self._tokens,
            step_prefill_tokens=self._prefill,
            step_seqs=self._seqs,
            step_start=start,
            step_end=self._end,
            duration=float(finish_time.max() - w.arrival.min()),
            preemptions=int(preempt.sum()),
        )
