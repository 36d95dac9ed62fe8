"""Recording an engine's steps on a clock and turning them into a :class:`Measurement`.

Shared by every step-level backend (the simulator and the real-scheduler replay), so that the
same schedule always yields the same measurement, to the bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from tuner.backends._cost import CostModel
from tuner.core import Measurement, Workload


class Timeline:
    """Collects executed steps and token emissions, then builds a ``Measurement``.

    Tokens are emitted at the end of the step that produced them; a request's first token comes
    from the step that ran its last prefill chunk. Plain Python lists keep the per-step cost low
    (a step touches only the requests it served).
    """

    def __init__(self, workload: Workload, cost_model: CostModel, source: str) -> None:
        self.workload = workload
        self.cost_model = cost_model
        self.step_time = cost_model.timer()
        #: Whether step times depend on context lengths: then every step's decode context and
        #: prefill pairs (see CostModel) are recorded too, and the engines must pass them.
        self.context = cost_model.uses_context
        self._decode_context: list[int] = []
        self._prefill_pairs: list[int] = []
        self.source = source
        n = len(workload)
        self._output: list[int] = workload.output_tokens.tolist()
        # One record per step, or per run of identical steps: (how many, prefill tokens,
        # decode tokens, sequences, implicitly kept decoders); then the start of every step.
        # build() derives the rest: a step's end is its start plus its duration (the same float
        # operations), and each implicit decoder's gap in a step is that step's duration.
        self._num_steps = 0
        self._records: list[int] = []  # flat: five numbers per record
        self._start: list[float] = []
        self._first_step = [-1] * n
        self._finish_step = [-1] * n
        self._first_time = [float("nan")] * n
        self._finish_time = [float("nan")] * n
        self._last_emit = [float("nan")] * n
        self._emitted = [0] * n
        self._preempt = [0] * n
        self._preemptions = 0
        self._cached = [0] * n
        self._itl_values: list[float] = []  # gaps of the requests named in step()
        # Closed loop: when each request was actually sent (it waits for its user's previous).
        self._arrival: list[float] | None = (
            workload.arrival.tolist() if workload.is_closed_loop else None
        )

    @property
    def num_steps(self) -> int:
        return self._num_steps

    def step(
        self,
        start: float,
        prefill_tokens: int,
        decode_tokens: int,
        num_seqs: int,
        emitted: Iterable[int],
        lazy: int = 0,
        decode_context: int = 0,
        prefill_pairs: int = 0,
    ) -> float:
        """Record one executed step; ``emitted`` are the ids that got a token. Returns its end.

        ``lazy`` more requests got a token too without being named: decoding requests whose
        previous token came at the end of the previous step (the fast engine keeps them
        implicitly and reports them through :meth:`settle`). ``decode_context`` and
        ``prefill_pairs`` are the step's attention work (read only when :attr:`context`)."""
        if self.context:
            self._decode_context.append(decode_context)
            self._prefill_pairs.append(prefill_pairs)
        end: float = start + self.step_time(
            prefill_tokens, decode_tokens, num_seqs, decode_context, prefill_pairs
        )
        idx = self._num_steps
        self._num_steps = idx + 1
        self._records.extend((1, prefill_tokens, decode_tokens, num_seqs, lazy))
        self._start.append(start)
        # Inlined per-request bookkeeping (the hot path of every step-level backend).
        emitted_so_far, last_emit = self._emitted, self._last_emit
        itl_values = self._itl_values
        for i in emitted:
            if emitted_so_far[i] == 0:
                self._first_step[i] = idx
                self._first_time[i] = end
            else:
                itl_values.append(end - last_emit[i])
            emitted_so_far[i] += 1
            last_emit[i] = end
            if emitted_so_far[i] >= self._output[i]:
                self._finish_step[i] = idx
                self._finish_time[i] = end
        return end

    def run(
        self,
        bounds: Sequence[float],
        prefill_tokens: int,
        decode_tokens: int,
        num_seqs: int,
        lazy: int = 0,
        decode_context: int = 0,
        prefill_pairs: int = 0,
        context_growth: int = 0,
        pairs_growth: int = 0,
    ) -> float:
        """Record ``len(bounds) - 1`` identical steps, back to back: ``bounds`` holds the start
        of each, then the end of the last, added up exactly as a step-by-step run adds them
        (see ``_fast_engine.step_bounds``). The steps only extend prefill chunks and give the
        ``lazy`` implicitly kept decoders one token each (as in :meth:`step`): no request gets
        its first or last token. With :attr:`context`, step ``j`` of them has the decode
        context ``decode_context + j * context_growth`` and the prefill pairs ``prefill_pairs
        + j * pairs_growth``. Returns the end of the last step."""
        k = len(bounds) - 1
        if self.context:
            self._decode_context.extend(_series(decode_context, context_growth, k))
            self._prefill_pairs.extend(_series(prefill_pairs, pairs_growth, k))
        self._num_steps += k
        self._records.extend((k, prefill_tokens, decode_tokens, num_seqs, lazy))
        start = self._start
        start.extend(bounds)
        return start.pop()  # the end of the last step, not a start

    def settle(self, request_id: int, emitted: int, last_emit: float) -> None:
        """Bring an implicitly kept request's record up to date: ``emitted`` tokens so far,
        the last at ``last_emit`` (the end of the latest step); finishes it if that was all."""
        self._emitted[request_id] = emitted
        self._last_emit[request_id] = last_emit
        if emitted >= self._output[request_id]:
            self._finish_step[request_id] = self._num_steps - 1
            self._finish_time[request_id] = last_emit

    def arrived(self, request_id: int, time: float) -> None:
        """Note when a closed-loop request was actually sent (its user's previous request's
        last token plus the think time); latencies are measured from it."""
        if self._arrival is not None:
            self._arrival[request_id] = time

    def preempted(self, request_id: int) -> None:
        """Note that a request was preempted (its KV freed, to be recomputed)."""
        self._preempt[request_id] += 1
        self._preemptions += 1

    @property
    def any_preempted(self) -> bool:
        """Whether any request was preempted so far."""
        return self._preemptions > 0

    def cached(self, request_id: int, tokens: int) -> None:
        """Note the prompt tokens a request found in the prefix cache when first scheduled."""
        self._cached[request_id] = tokens

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
        records = np.array(self._records, dtype=np.int64).reshape(-1, 5)
        counts = records[:, 0]
        prefill, decode, seqs, lazy = (np.repeat(records[:, i], counts) for i in range(1, 5))
        # The same sum, term by term, as step() and run() made: bit-identical ends.
        if self.context:
            end = start + self.step_time(
                prefill,
                decode,
                seqs,
                np.array(self._decode_context, dtype=np.int64),
                np.array(self._prefill_pairs, dtype=np.int64),
            )
        else:
            end = start + self.step_time(prefill, decode, seqs)
        # Explicit gaps first, then each step's duration once per implicit decoder in it.
        itl_values = np.concatenate([self._itl_values, (end - start)[lazy > 0]])
        itl_counts = np.concatenate([np.ones(len(self._itl_values), np.int64), lazy[lazy > 0]])
        first_step = np.array(self._first_step, dtype=np.int64)
        finish_time = np.array(self._finish_time)
        arrival = w.arrival if self._arrival is None else np.array(self._arrival)
        # The first step that could see a request: the first one starting at or after arrival.
        seen = np.searchsorted(start, arrival, side="left")
        preempt = np.array(self._preempt, dtype=np.int64)
        return Measurement(
            source=self.source,
            time_unit=self.cost_model.time_unit,
            arrival=arrival,
            prompt_tokens=w.prompt_tokens,
            output_tokens=self._emitted,
            ttft=np.array(self._first_time) - arrival,
            e2e=finish_time - arrival,
            itl_values=itl_values,
            itl_counts=itl_counts,
            ttft_steps=first_step - seen,
            first_token_step=first_step,
            finish_step=finish_step,
            preemptions_per_request=preempt,
            cached_tokens=np.array(self._cached, dtype=np.int64),
            step_tokens=prefill + decode,
            step_prefill_tokens=prefill,
            step_seqs=seqs,
            step_start=start,
            step_end=end,
            duration=float(finish_time.max() - arrival.min()),
            preemptions=self._preemptions,
        )


def _series(first: int, growth: int, k: int) -> list[int]:
    """``first, first + growth, ..., first + (k - 1) * growth``."""
    return [first + j * growth for j in range(k)]
