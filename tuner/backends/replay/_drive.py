"""Driving a vLLM scheduler step by step on a clock: the engine loops of the replay.

Two loops, as vLLM 0.32's ``EngineCore`` runs its scheduler (``vllm/v1/engine/core.py``):

* **sync** (``EngineCore.step``): ``schedule()``, the model step, ``update_from_output()``;
* **async** (``EngineCore.step_with_batch_queue`` with a batch queue of 2, over vLLM's
  ``AsyncScheduler``): the next batch is scheduled before the previous one's output is applied
  (its requests carry ``num_output_placeholders`` meanwhile), and outputs are applied oldest
  first; a batch that scheduled nothing goes through the queue too.

Both share the clock: requests due by ``now`` are added before each ``schedule()`` call (a step
starts when the previous one ends; on the unit step clock, a request arriving at ``t`` is seen
by the step starting at ``t``), and an idle engine jumps to the next arrival. Sampled tokens
are a dummy id, never EOS, one per request whose scheduled tokens reach the end of its
sequence.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

from tuner.backends._arrivals import Arrivals
from tuner.backends._timeline import Timeline
from tuner.core import BackendError, Workload

SAMPLED_TOKEN = 3  # neither BOS nor EOS, nor in any generated prompt (the simulator mirrors it)


class _Batch(NamedTuple):
    """A scheduled batch whose output is still to be applied."""

    out: Any  # vLLM's SchedulerOutput
    ids: list[str]  # the scheduled request ids, in order
    sampled: list[list[int]]  # the token each one samples ([] mid-prompt)
    finished: list[int]  # the ids that get their last token from it
    end: float  # when its step ends


class _StepWork:
    """What one scheduled step does, request by request: its prefill and decode tokens, the
    decoders' context and the prefill chunks' attention pairs (the cost model's inputs), and
    which requests sample a token."""

    def __init__(self) -> None:
        self.prefill = self.decode = self.context = self.pairs = self.seqs = 0
        self.emitted: list[int] = []
        self.sampled: list[list[int]] = []

    def add(self, rid: str, n: int, before: int, done: int, prompt: int, samples: bool) -> None:
        """Request ``rid`` (a ``prompt``-token prompt) runs ``n`` tokens after ``before``
        computed ones, with ``done`` output tokens sampled before this step; ``samples``:
        whether it samples one now."""
        self.seqs += 1
        if done >= 1 and before == prompt + done - 1:
            self.decode += n
            self.context += before + n
        else:
            self.prefill += n
            self.pairs += n * before + n * (n + 1) // 2
        if samples:
            self.emitted.append(int(rid))
        self.sampled.append([SAMPLED_TOKEN] if samples else [])

    def record(self, timeline: Timeline, now: float) -> float:
        """Record the step on ``timeline`` from ``now``; returns its end."""
        return timeline.step(
            now, self.prefill, self.decode, self.seqs, self.emitted, 0, self.context, self.pairs
        )


class Driver:
    """One replay: feeds ``workload``'s requests to ``scheduler`` and records every step."""

    def __init__(
        self, vllm: Any, scheduler: Any, workload: Workload, timeline: Timeline, block_hasher: Any
    ) -> None:
        self.v = vllm
        self.scheduler = scheduler
        self.workload = workload
        self.timeline = timeline
        self.block_hasher = block_hasher
        self.output: list[int] = workload.output_tokens.tolist()
        self.admitted = [False] * len(workload)
        self.due = Arrivals(workload)

    def _add_due(self, now: float) -> None:
        """Add the requests due by ``now`` to the scheduler, in order."""
        v, w = self.v, self.workload
        for i, t in self.due.pop_until(now):
            self.timeline.arrived(i, t)
            self.scheduler.add_request(
                v.Request(
                    request_id=str(i),
                    prompt_token_ids=w.prompt_token_ids(i),
                    sampling_params=v.SamplingParams(max_tokens=self.output[i], ignore_eos=True),
                    pooling_params=None,
                    arrival_time=t,
                    block_hasher=self.block_hasher,
                )
            )

    def _note_admitted(self, out: Any) -> None:
        for new in out.scheduled_new_reqs:  # first scheduled: its prefix-cache hit
            rid = int(new.req_id)
            if not self.admitted[rid]:
                self.admitted[rid] = True
                self.timeline.cached(rid, new.num_computed_tokens)

    def _stalled(self, now: float) -> BackendError:
        running, waiting = self.scheduler.get_request_counts()
        return BackendError(
            f"scheduler stalled at t={now:g}: it scheduled no token with {running} "
            f"running and {waiting} waiting request(s)"
        )

    def _apply(self, batch: _Batch) -> None:
        """``update_from_output()`` with the batch's sampled tokens."""
        v = self.v
        self.scheduler.update_from_output(
            batch.out,
            v.ModelRunnerOutput(
                req_ids=batch.ids,
                req_id_to_index={rid: k for k, rid in enumerate(batch.ids)},
                sampled_token_ids=batch.sampled,
            ),
        )

    # --- sync: EngineCore.step ------------------------------------------------------------------
    def run_sync(self) -> None:
        scheduler, timeline, due = self.scheduler, self.timeline, self.due
        now = due.first_time()
        while True:
            self._add_due(now)
            running, waiting = scheduler.get_request_counts()
            if running == 0 and waiting == 0:
                if due.exhausted:
                    return
                now = due.first_time()
                continue
            out = scheduler.schedule()
            self._note_admitted(out)
            if out.total_num_scheduled_tokens == 0:
                raise self._stalled(now)
            work = _StepWork()
            ids = list(out.num_scheduled_tokens)
            for rid in ids:
                n = out.num_scheduled_tokens[rid]
                r = scheduler.requests[rid]
                # schedule() already advanced num_computed_tokens by n
                work.add(
                    rid,
                    n,
                    r.num_computed_tokens - n,
                    r.num_output_tokens,
                    r.num_prompt_tokens,
                    r.num_computed_tokens >= r.num_tokens,
                )
            now = work.record(timeline, now)
            emitted, sampled = work.emitted, work.sampled
            due.finished([i for i in emitted if timeline.emitted(i) == self.output[i]], now)
            self._apply(_Batch(out, ids, sampled, [], now))
            for rid in out.preempted_req_ids:
                timeline.preempted(int(rid))

    # --- async: EngineCore.step_with_batch_queue, a queue of 2 ----------------------------------
    def run_async(self) -> None:
        scheduler, due = self.scheduler, self.due
        queue: deque[_Batch] = deque()  # newest first, as EngineCore's batch_queue
        now = due.first_time()
        while True:
            self._add_due(now)
            if scheduler.has_requests():
                out = scheduler.schedule()
                self._note_admitted(out)
                executed = out.total_num_scheduled_tokens > 0
                if not executed and not any(b.ids for b in queue):
                    running, waiting = scheduler.get_request_counts()
                    if running or waiting:  # nothing in flight either: it never moves on
                        raise self._stalled(now)
                batch = self._record_async(out, now) if executed else _Batch(out, [], [], [], now)
                for rid in out.preempted_req_ids:
                    self.timeline.preempted(int(rid))
                now = batch.end
                queue.appendleft(batch)
                if len(queue) < 2 and (executed or scheduler.has_requests()):
                    continue  # the queue is not full: schedule the next batch first
            elif not queue:
                if due.exhausted:
                    return
                now = due.first_time()
                continue
            batch = queue.pop()  # block on the oldest batch, then apply its output
            self._apply(batch)
            due.finished(batch.finished, batch.end)

    def _record_async(self, out: Any, now: float) -> _Batch:
        """Record an executed batch's step as soon as it is scheduled: under
        ``AsyncScheduler`` a scheduled request samples a token unless it is mid-prompt
        (``is_prefill_chunk``), and every sampled token is delivered, even to a request
        preempted meanwhile (vLLM delivers such stale output). Its placeholders already
        count the token it samples now."""
        scheduler, timeline = self.scheduler, self.timeline
        work = _StepWork()
        ids = list(out.num_scheduled_tokens)
        for rid in ids:
            n = out.num_scheduled_tokens[rid]
            r = scheduler.requests[rid]
            samples = not r.is_prefill_chunk
            done = r.num_output_tokens + r.num_output_placeholders - samples  # sampled before
            work.add(rid, n, r.num_computed_tokens - n, done, r.num_prompt_tokens, samples)
        end = work.record(timeline, now)
        emitted, sampled = work.emitted, work.sampled
        finished = [i for i in emitted if timeline.emitted(i) == self.output[i]]
        return _Batch(out, ids, sampled, finished, end)
