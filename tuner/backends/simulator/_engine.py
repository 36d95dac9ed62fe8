"""vLLM 0.32's ``Scheduler.schedule()``, step by step: the simulator's reference engine.

This module holds the scheduling semantics and nothing else; every step is simulated one by one
(see ``_fast_engine`` for the same semantics with stretches of identical steps skipped). The
rules, as read from vLLM 0.32's ``vllm/v1/core/sched/scheduler.py``:

* RUNNING pass first, oldest admission first, while the global token budget lasts: a decode
  takes 1 token, a partial prefill the rest of its prompt (a preempted request: prompt and
  outputs so far), capped per request by ``long_prefill_token_threshold`` -- which vLLM 0.32
  skips when only one request is eligible (running + waiting == 1; the seed lab capped a lone
  request, vLLM does not).
* When the KV cache cannot hold a running request's new tokens, the most recently admitted
  running request is preempted (recompute: all its blocks freed, back to the FRONT of waiting);
  a request that has to preempt itself ends the running pass.
* WAITING pass only in a step that preempted nothing: admit in FCFS order while the budget
  lasts and fewer than ``max_num_seqs`` run; with chunked prefill off, a prompt that does not fit
  the remaining budget stops all admissions (head-of-line block); a request is admitted only if
  the KV cache can hold its whole current sequence (``scheduler_reserve_full_isl``).
* A request holds ``ceil(computed / block_size)`` blocks; block 0 is reserved.
* A request samples one token in the step that completes its prompt (the first token) and one
  per decode step after; it finishes with exactly its output length (``ignore_eos``).
* Async scheduling (vLLM's ``AsyncScheduler`` under ``EngineCore.step_with_batch_queue``,
  a batch queue of 2: each step is scheduled before the previous step's output is applied).
  A request whose last token is being sampled has ``num_output_placeholders`` > 0 and is
  skipped by the next ``schedule()``, but it is still in ``running``: it keeps its slot and
  blocks until the output is applied after that ``schedule()`` call (then it frees them and,
  closed loop, its user's next request becomes due -- seen by the step after), and it can be
  chosen as the preemption victim if it was admitted last (a preemption that frees its blocks
  at once; its token is delivered anyway). Every other request schedules exactly as in sync
  mode (placeholders make up for the tokens not yet applied).
* Clock: a step starts when the previous one ends; a request arriving at ``t`` is first seen by
  the first step starting at or after ``t``; an idle engine jumps to the next arrival.
* Closed loop (``workload.user``): a user's first request arrives at its ``arrival``; when a
  request gets its last token at the end of a step (time ``t``), its user's next request
  arrives at ``t + think_time`` (with no think time: seen by the very next step). Requests due
  by a step are queued in order of arrival, then request id, as in open loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from tuner.backends._arrivals import Arrivals
from tuner.backends._timeline import Timeline
from tuner.core import BackendError, ServingConfig, Workload


class Req:
    """Scheduler-side state of one request."""

    __slots__ = (
        "blocks",
        "c0",
        "computed",
        "e0",
        "emitted",
        "g0",
        "id",
        "lazy",
        "length",
        "output",
        "prompt",
        "seq",
    )
    c0: int  # fast engine only (see __init__)
    e0: int
    g0: int

    def __init__(self, rid: int, prompt: int, output: int) -> None:
        self.id = rid
        self.prompt = prompt
        self.output = output
        self.computed = 0  # tokens whose KV is computed (vLLM's num_computed_tokens)
        self.emitted = 0  # output tokens sampled so far
        self.length = prompt  # prompt + tokens sampled so far (vLLM's num_tokens)
        self.blocks = 0  # KV blocks held
        self.seq = 0  # when last admitted (running is in this order)
        # Fast engine only: a decoding request kept implicitly (see _fast_engine); its c0, e0
        # and g0 are set when it becomes one.
        self.lazy = False


class Knobs:
    """The scheduler settings the engines read on every step, as plain attributes (a pydantic
    model's attribute reads cost three times as much, and these are read millions of times)."""

    __slots__ = (
        "async_scheduling",
        "enable_chunked_prefill",
        "long_prefill_token_threshold",
        "max_num_batched_tokens",
        "max_num_seqs",
    )

    def __init__(self, config: ServingConfig) -> None:
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.max_num_seqs = config.max_num_seqs
        self.long_prefill_token_threshold = config.long_prefill_token_threshold
        self.enable_chunked_prefill = config.enable_chunked_prefill
        self.async_scheduling = config.async_scheduling


class Engine:
    """Simulates every step, one by one, into a :class:`Timeline`."""

    def __init__(self, config: ServingConfig, workload: Workload, timeline: Timeline) -> None:
        self.cfg = Knobs(config)
        self.tl = timeline
        prompts = workload.prompt_tokens.tolist()
        outputs = workload.output_tokens.tolist()
        self.reqs = list(map(Req, range(len(prompts)), prompts, outputs))
        self.order: list[int] = workload.schedule_order.tolist()
        self.arrival: list[float] = workload.arrival.tolist()
        self.running: list[Req] = []
        self.waiting: deque[Req] = deque()
        # Async scheduling: the requests that finished in the last step and when; those still
        # holding their slot and blocks (not preempted since) are ``finishing``.
        self.finishing: list[Req] = []
        self.just_finished: list[Req] = []
        self.finished_at = 0.0
        self.admissions = 0
        self.bs = config.block_size
        cap = config.num_kv_blocks
        self.kv_limited = cap is not None
        self.free_blocks = 0 if cap is None else cap - 1  # block 0 is reserved
        self.last_emitted: list[Req] = []  # requests that got a token in the last step
        # Closed loop: the requests due to arrive, fed by every finish.
        self.due = Arrivals(workload) if workload.user is not None else None

    def _free(self, r: Req) -> None:
        self.free_blocks += r.blocks
        r.blocks = 0

    # --- the engine loop -----------------------------------------------------------------------
    def run(self) -> None:
        """Simulate until every request has finished."""
        if self.due is not None:
            self._run_closed(self.due)
            return
        arrivals = [self.arrival[i] for i in self.order]  # in the order they arrive
        incoming = [self.reqs[i] for i in self.order]
        arrivals.append(float("inf"))  # a sentinel: nothing more arrives
        waiting = self.waiting
        n = len(incoming)
        pending = done = 0
        now = arrivals[0]
        advance = self._advance
        while done < n:
            while arrivals[pending] <= now:
                waiting.append(incoming[pending])
                pending += 1
            if not waiting and not self.just_finished and not self.running:
                now = arrivals[pending]
                continue
            now, finished = advance(now, arrivals[pending] if pending < n else None)
            done += finished

    def _run_closed(self, due: Arrivals) -> None:
        """:meth:`run` for a closed-loop workload: arrivals come from :attr:`due`, which every
        finish feeds (:meth:`_finished`)."""
        waiting, reqs, tl = self.waiting, self.reqs, self.tl
        n = len(reqs)
        done = 0
        now = due.first_time()
        while done < n:
            for i, t in due.pop_until(now):
                tl.arrived(i, t)
                waiting.append(reqs[i])
            if not waiting and not self.just_finished and not self.running:
                now = due.first_time()
                continue
            now, finished = self._advance(now, due.next_time())
            done += finished

    def _finished(self, done: Iterable[Req], end: float) -> None:
        """Closed loop: ``done`` got their last token at ``end``; their users send their next
        requests a think time later."""
        if self.due is not None:
            self.due.finished([r.id for r in done], end)

    def _advance(self, now: float, next_arrival: float | None) -> tuple[float, int]:
        """Move the engine forward from ``now`` (one step here; a fast engine may record many
        at once, never past ``next_arrival``). Returns the new time and how many finished."""
        return self._step(now)

    def _admit(self, budget: int, thr: int) -> list[tuple[Req, int]]:
        """The WAITING pass: admit in FCFS order while the budget lasts and fewer than
        ``max_num_seqs`` run (finishing requests still hold their slot); chunked prefill off
        blocks at the first prompt that does not fit; a request needs room in the KV cache for
        its whole current sequence. Returns the admitted requests and their tokens."""
        cfg, running, waiting = self.cfg, self.running, self.waiting
        kv, bs = self.kv_limited, self.bs
        admitted: list[tuple[Req, int]] = []
        while budget > 0 and waiting:
            if len(running) + len(self.finishing) >= cfg.max_num_seqs:
                break
            r = waiting[0]
            n = r.length - r.computed
            if 0 < thr < n:
                n = thr
            if not cfg.enable_chunked_prefill and n > budget:
                break
            if n > budget:
                n = budget
            if kv:
                if -(-r.length // bs) > self.free_blocks:
                    break
                need = -(-(r.computed + n) // bs)
                self.free_blocks -= need
                r.blocks += need
            waiting.popleft()
            running.append(r)
            r.seq = self.admissions
            self.admissions += 1
            admitted.append((r, n))
            budget -= n
        return admitted

    @staticmethod
    def _compute(scheduled: Iterable[tuple[Req, int]]) -> tuple[int, int, list[int], list[Req]]:
        """The model step: each scheduled request computes its tokens; one that completes its
        current sequence samples one token (its first after the last prefill chunk). Returns the
        prefill and decode tokens, the ids that got a token and the requests that finished."""
        prefill = decode = 0
        emitted: list[int] = []
        finished: list[Req] = []
        for r, n in scheduled:
            if r.emitted and r.computed == r.length - 1:
                decode += n
            else:
                prefill += n
            r.computed += n
            if r.computed == r.length:
                r.emitted += 1
                r.length += 1
                emitted.append(r.id)
                if r.emitted == r.output:
                    finished.append(r)
        return prefill, decode, emitted, finished

    @staticmethod
    def _attention(scheduled: Iterable[tuple[Req, int]]) -> tuple[int, int]:
        """The attention work of a step, before :meth:`_compute` runs it: the decode context
        (each decoder's computed tokens plus its new one) and the prefill (query, key) pairs
        (see :class:`~tuner.backends.CostModel`). Read only by context-aware cost models."""
        context = pairs = 0
        for r, n in scheduled:
            c = r.computed
            if r.emitted and c == r.length - 1:
                context += c + 1
            else:
                pairs += n * c + n * (n + 1) // 2
        return context, pairs

    def _step(self, now: float) -> tuple[float, int]:
        """One ``schedule()`` + model step + ``update_from_output()``.

        Returns the new time and how many requests finished.
        """
        cfg = self.cfg
        running, waiting, finishing = self.running, self.waiting, self.finishing
        kv = self.kv_limited
        bs = self.bs
        budget = cfg.max_num_batched_tokens
        eligible = len(running) + len(finishing) + len(waiting)
        thr = cfg.long_prefill_token_threshold if eligible > 1 else 0
        scheduled: list[tuple[Req, int]] = []
        preempted = False

        # RUNNING pass, oldest admission first.
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            n = r.length - r.computed
            if 0 < thr < n:
                n = thr
            if n > budget:
                n = budget
            if kv:
                need = -(-(r.computed + n) // bs) - r.blocks
                placed = True
                while need > self.free_blocks:
                    victim = self._victim()
                    self._free(victim)
                    victim.computed = 0
                    if victim.emitted < victim.output:  # else it finishes when applied
                        waiting.appendleft(victim)
                    self.tl.preempted(victim.id)
                    preempted = True
                    if victim is r:
                        placed = False
                        break
                if not placed:
                    break
                self.free_blocks -= need
                r.blocks += need
            scheduled.append((r, n))
            budget -= n
            i += 1

        # WAITING pass, only in a step that preempted nothing.
        if not preempted:
            scheduled += self._admit(budget, thr)

        released = self._release()

        if not scheduled:
            if released:  # the freed slots and blocks are usable by the next schedule()
                self.last_emitted = []  # nobody got a token (the fast engine reads it)
                return now, 0
            raise BackendError(
                "simulator stalled: a step scheduled no token while requests wait "
                f"(running={len(running)}, waiting={len(waiting)})"
            )

        context, pairs = self._attention(scheduled) if self.tl.context else (0, 0)
        prefill, decode, emitted, finished = self._compute(scheduled)
        end = self.tl.step(now, prefill, decode, len(scheduled), emitted, 0, context, pairs)
        self.last_emitted = [self.reqs[i] for i in emitted]

        if finished:
            self.running = [r for r in running if r.emitted < r.output]
            self._done(finished, end)
        return end, len(finished)

    # --- finishing -----------------------------------------------------------------------------
    def _done(self, finished: list[Req], end: float) -> None:
        """``finished`` got their last token in the step ending at ``end`` (already out of
        ``running``): sync, they leave now; async, when the next step is scheduled."""
        if self.cfg.async_scheduling:
            self.finishing.extend(finished)
            self.just_finished.extend(finished)
            self.finished_at = end
        else:
            for r in finished:
                self._free(r)
            self._finished(finished, end)

    def _release(self) -> bool:
        """Async scheduling, once a step is scheduled: the previous step's output is applied,
        so the requests that finished in it free their slots and blocks, and their users send
        their next requests. Returns whether any did."""
        done = self.just_finished
        if not done:
            return False
        for r in self.finishing:
            self._free(r)
        self.finishing.clear()
        self._finished(done, self.finished_at)
        self.just_finished = []
        return True

    def _victim(self) -> Req:
        """The request to preempt: the most recently admitted of ``running`` and, async, of
        the requests still finishing (vLLM keeps those in its running queue)."""
        running, finishing = self.running, self.finishing
        if finishing:
            last = max(finishing, key=lambda r: r.seq)
            if not running or last.seq > running[-1].seq:
                finishing.remove(last)
                return last
        return running.pop()
