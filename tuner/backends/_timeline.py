"""Recording an engine's steps on a clock and turning them into a :class:`Measurement`.

Shared by every step-level backend (the simulator and the real-scheduler replay), so that the
same schedule always yields the same measurement, to the bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from tuner.backends._cost import CostModel
from tuner.core._measurement import Measurement
from tuner.core._workload import Workload


class Timeline:
    """Collects executed steps and token emissions, then builds a ``Measurement``.

    Tokens are emitted at the end of the step that produced them. A request's first token comes
    from the step that ran its last prefill chunk.
    """

    def __init__(self, workload: Workload, cost_model: CostModel, source: str) -> None:
        self.workload = workload
        self.cost_model = cost_model
        self.source = source
        n = len(workload)
        self._tokens: list[np.ndarray] = []
        self._seqs: list[np.ndarray] = []
        self._start: list[np.ndarray] = []
        self._dur: list[np.ndarray] = []
        self._n_steps = 0
        self._first_step = np.full(n, -1, dtype=np.int64)
        self._finish_step = np.full(n, -1, dtype=np.int64)
        self._first_time = np.full(n, np.nan)
        self._finish_time = np.full(n, np.nan)
        self._last_emit = np.full(n, np.nan)
        self._emitted = np.zeros(n, dtype=np.int64)
        self._preempt = np.zeros(n, dtype=np.int64)
        self._itl_values: list[np.ndarray] = []
        self._itl_counts: list[np.ndarray] = []

    @property
    def num_steps(self) -> int:
        return self._n_steps

    def step(
        self,
        start: float,
        prefill_tokens: int,
        decode_tokens: int,
        num_seqs: int,
        emitted: Iterable[int],
    ) -> float:
        """Record one executed step; ``emitted`` are the ids that got a token. Returns its end."""
        dur = self.cost_model.step_time(prefill_tokens, decode_tokens, num_seqs)
        end = start + dur
        idx = self._n_steps
        self._tokens.append(np.array([prefill_tokens + decode_tokens], dtype=np.int64))
        self._seqs.append(np.array([num_seqs], dtype=np.int64))
        self._start.append(np.array([start]))
        self._dur.append(np.array([dur]))
        self._n_steps += 1
        ids = np.fromiter(emitted, dtype=np.int64)
        if len(ids):
            self._emit(ids, idx, end, end, dur, 1)
        return end

    def run(
        self, start: float, k: int, decode_tokens: int, num_seqs: int, ids: np.ndarray
    ) -> float:
        """Record ``k`` identical decode-only steps in which each of ``ids`` gets one token
        per step and none gets its first or last token. Returns the end of the last one.

        Step boundaries are accumulated exactly as ``k`` calls of :meth:`step` would add them,
        so a run and the same steps recorded one by one give bit-identical times."""
        dur = self.cost_model.step_time(0, decode_tokens, num_seqs)
        bounds = np.cumsum(np.concatenate(([start], np.full(k, dur))))
        idx = self._n_steps
        self._tokens.append(np.full(k, decode_tokens, dtype=np.int64))
        self._seqs.append(np.full(k, num_seqs, dtype=np.int64))
        self._start.append(bounds[:k])
        self._dur.append(np.full(k, dur))
        self._n_steps += k
        end = float(bounds[k])
        if len(ids):
            self._emit(ids, idx + k - 1, float(bounds[1]), end, dur, k)
        return end

    def _emit(
        self, ids: np.ndarray, last_idx: int, first_time: float, end: float, dur: float, k: int
    ) -> None:
        """``ids`` each got one token at the end of each of ``k`` steps of length ``dur``,
        the first ending at ``first_time``, the last (index ``last_idx``) at ``end``."""
        fresh = self._emitted[ids] == 0
        new = ids[fresh]
        old = ids[~fresh]
        if len(new):
            self._first_step[new] = last_idx - (k - 1)
            self._first_time[new] = first_time
        if len(old):
            gaps = first_time - self._last_emit[old]
            self._itl_values.append(gaps)
            self._itl_counts.append(np.ones(len(old), dtype=np.int64))
        if k > 1:
            self._itl_values.append(np.array([dur]))
            self._itl_counts.append(np.array([len(ids) * (k - 1)], dtype=np.int64))
        self._emitted[ids] += k
        self._last_emit[ids] = end
        done = ids[self._emitted[ids] >= self.workload.output_tokens[ids]]
        if len(done):
            self._finish_step[done] = last_idx
            self._finish_time[done] = end

    def preempted(self, request_id: int) -> None:
        """Note that a request was preempted (its KV freed, to be recomputed)."""
        self._preempt[request_id] += 1

    def emitted(self, request_id: int) -> int:
        """Tokens delivered to a request so far."""
        return int(self._emitted[request_id])

    def build(self) -> Measurement:
        """The measurement of everything recorded (every request must have finished)."""
        w = self.workload
        unfinished = np.flatnonzero(self._finish_step < 0)
        if len(unfinished):
            raise RuntimeError(
                f"{self.source}: {len(unfinished)} request(s) never finished "
                f"(first: id {unfinished[0]})"
            )
        tokens = np.concatenate(self._tokens) if self._tokens else np.zeros(0, np.int64)
        seqs = np.concatenate(self._seqs) if self._seqs else np.zeros(0, np.int64)
        start = np.concatenate(self._start) if self._start else np.zeros(0)
        end = start + (np.concatenate(self._dur) if self._dur else np.zeros(0))
        # The first step that could see a request: the first one starting at or after arrival.
        seen = np.searchsorted(start, w.arrival, side="left")
        itl_v = np.concatenate(self._itl_values) if self._itl_values else np.zeros(0)
        itl_c = (
            np.concatenate(self._itl_counts) if self._itl_counts else np.zeros(0, np.int64)
        )
        return Measurement(
            source=self.source,
            time_unit=self.cost_model.time_unit,
            arrival=w.arrival,
            prompt_tokens=w.prompt_tokens,
            output_tokens=self._emitted,
            ttft=self._first_time - w.arrival,
            e2e=self._finish_time - w.arrival,
            itl_values=itl_v,
            itl_counts=itl_c,
            ttft_steps=self._first_step - seen,
            first_token_step=self._first_step,
            finish_step=self._finish_step,
            preemptions_per_request=self._preempt,
            step_tokens=tokens,
            step_seqs=seqs,
            step_start=start,
            step_end=end,
            duration=float(self._finish_time.max() - w.arrival.min()),
            preemptions=int(self._preempt.sum()),
        )
