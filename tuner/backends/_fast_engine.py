"""The reference engine's semantics, fast: decoding requests kept implicitly, dull stretches
skipped.

Two ideas make the cost grow with the number of *events* (arrivals, prompt chunks, first and
last tokens) instead of steps x running requests:

* **A pool of implicit decoders.** In a step that serves every running request in full (the
  budget covers them all and the KV cache has room -- the common case), every decoding request
  gets exactly one token, whatever the order. Such requests are not touched one by one: a
  counter ``G`` of these uniform steps tells each one's progress (``computed = c0 + G - g0``),
  a heap keyed by the value of ``G`` at which each finishes yields the finishes, and, with a
  limited KV cache, a count of decoders per ``(c0 - g0) mod block_size`` gives how many cross
  into a new block at each step. Any other step (the budget runs out, a preemption is due) is
  run by the reference engine after the pool is made explicit again.
* **Jumps.** When the next steps are identical (the same requests each getting the same tokens,
  no admission possible, no arrival, no prompt completed, no finish, enough KV blocks), the
  whole stretch is recorded at once.

``tests/test_simulator.py`` checks on random workloads that both engines give the same schedule;
the fidelity suite checks this engine against vLLM's own scheduler.
"""

from __future__ import annotations

import heapq

import numpy as np

from tuner.backends._engine import Engine, Req
from tuner.backends._timeline import Timeline
from tuner.core._config import ServingConfig
from tuner.core._errors import BackendError
from tuner.core._workload import Workload


class FastEngine(Engine):
    """Same schedule as :class:`Engine`, at a cost proportional to the number of events."""

    def __init__(self, config: ServingConfig, workload: Workload, timeline: Timeline) -> None:
        super().__init__(config, workload, timeline)
        self.G = 0  # uniform steps so far: steps in which every pool member got one token
        self.pool_n = 0
        self.heap: list[tuple[int, int, Req]] = []  # (G at which it finishes, id, request)
        self.bucket = [0] * self.bs  # pool members per (c0 - g0) mod block_size (KV only)
        self.pool_blocks = 0  # KV blocks held by pool members
        self.explicit: list[Req] = []  # running requests outside the pool, admission order

    # --- the pool ------------------------------------------------------------------------------
    def _lazify(self, r: Req) -> None:
        r.lazy = True
        r.c0, r.e0, r.g0 = r.computed, r.emitted, self.G
        heapq.heappush(self.heap, (self.G + r.output - r.emitted, r.id, r))
        self.pool_n += 1
        if self.kv_limited:
            self.bucket[(r.c0 - r.g0) % self.bs] += 1
            self.pool_blocks += r.blocks

    def _settle(self, r: Req, last_emit: float) -> None:
        """Make a pool member explicit again (its state as of the latest step)."""
        k = self.G - r.g0
        r.computed = r.c0 + k
        r.emitted = r.e0 + k
        r.length = r.prompt + r.emitted
        r.lazy = False
        self.pool_n -= 1
        if self.kv_limited:
            r.blocks = -(-r.computed // self.bs)
            self.bucket[(r.c0 - r.g0) % self.bs] -= 1
            self.pool_blocks -= r.blocks
        self.tl.settle(r.id, r.emitted, last_emit)

    def _pool_growth(self, j: int) -> int:
        """New KV blocks the pool needs over the next ``j`` uniform steps: every member crosses
        into a new block once every ``block_size`` steps, members with ``(c0 - g0) % bs ==
        key`` at the steps ``t`` with ``(key + t) % bs == 0``."""
        bs, g, bucket = self.bs, self.G, self.bucket
        if bs == 1:
            return self.pool_n * j
        q, r = divmod(j, bs)
        return self.pool_n * q + sum(bucket[(-g - d) % bs] for d in range(r))

    # --- the engine loop -----------------------------------------------------------------------
    def _advance(self, now: float, next_arrival: float | None) -> tuple[float, int]:
        """A stretch of identical steps if one starts here, else one uniform step, else one
        step of the reference engine."""
        jumped = self._jump(now, next_arrival)
        if jumped is not None:
            return jumped, 0
        stepped = self._uniform_step(now)
        return stepped if stepped is not None else self._reference_step(now)

    def _reference_step(self, now: float) -> tuple[float, int]:
        """Run one step with the reference engine, the pool made explicit first."""
        for _, _, r in self.heap:
            self._settle(r, now)
        self.heap.clear()
        end, finished = self._step(now)
        for r in self.last_emitted:
            if r.emitted < r.output:
                self._lazify(r)
        self.explicit = [r for r in self.running if not r.lazy]
        return end, finished

    def _uniform_step(self, now: float) -> tuple[float, int] | None:
        """One step that serves every running request in full, or None if this step is not
        one (the budget or the KV cache falls short) and must run on the reference engine."""
        cfg = self.cfg
        running, waiting, finishing = self.running, self.waiting, self.finishing
        explicit = self.explicit
        eligible = len(running) + len(finishing) + len(waiting)
        thr = cfg.long_prefill_token_threshold if eligible > 1 else 0
        pool_n = self.pool_n
        plan: list[int] = []
        need = pool_n
        for r in explicit:
            n = r.length - r.computed
            if 0 < thr < n:
                n = thr
            plan.append(n)
            need += n
        budget = cfg.max_num_batched_tokens - need
        if budget < 0:
            return None
        kv = self.kv_limited
        bs = self.bs
        if kv:
            grow = self.bucket[(-self.G) % bs] if pool_n else 0
            grows = [
                -(-(r.computed + n) // bs) - r.blocks
                for r, n in zip(explicit, plan, strict=True)
            ]
            total = grow + sum(grows)
            if total > self.free_blocks:
                return None
            self.free_blocks -= total
            self.pool_blocks += grow
            for r, g in zip(explicit, grows, strict=True):
                r.blocks += g

        # WAITING pass (nothing was preempted), as in the reference engine.
        served = list(explicit)
        for r, n in self._admit(budget, thr):
            served.append(r)
            plan.append(n)

        released = bool(finishing)
        if released:
            for r in finishing:
                self._free(r)
            finishing.clear()
        if not served and not pool_n:
            if released:
                return now, 0
            raise BackendError(
                "simulator stalled: a step scheduled no token while requests wait "
                f"(running={len(running)}, waiting={len(waiting)})"
            )

        prefill, decode, emitted, done = self._compute(zip(served, plan, strict=True))
        decode += pool_n
        self.G += 1
        end = self.tl.step(now, prefill, decode, pool_n + len(served), emitted, lazy=pool_n)
        heap = self.heap
        while heap and heap[0][0] <= self.G:
            r = heapq.heappop(heap)[2]
            self._settle(r, end)
            done.append(r)
        for i in emitted:  # decoders from now on: into the pool
            r = self.reqs[i]
            if r.emitted < r.output:
                self._lazify(r)
        if done:
            gone = set(done)
            self.running = [r for r in running if r not in gone]
            for r in done:
                if cfg.async_scheduling:
                    finishing.append(r)
                else:
                    self._free(r)
        self.explicit = [r for r in served if not r.lazy and r.emitted < r.output]
        return end, len(done)

    def _jump(self, now: float, next_arrival: float | None) -> float | None:
        """Record the identical steps from ``now`` up to (not including) the next event: an
        arrival, a prompt's last chunk, a request's last token, or a KV shortfall. Returns the
        new time, or None when not even one step can be skipped."""
        if self.finishing or (not self.pool_n and not self.explicit):
            return None
        cfg = self.cfg
        waiting, explicit = self.waiting, self.explicit
        thr = cfg.long_prefill_token_threshold if len(self.running) + len(waiting) > 1 else 0
        budget = cfg.max_num_batched_tokens - self.pool_n
        k = (self.heap[0][0] - self.G - 1) if self.heap else 1 << 62
        plan: list[int] = []
        for r in explicit:
            n = r.length - r.computed
            if r.emitted and n == 1:
                return None  # a decoder not yet in the pool: it joins after its next token
            if 0 < thr < n:
                n = thr
            if r.computed + n >= r.length:
                return None  # this step completes the prompt: the first token is an event
            plan.append(n)
            budget -= n
            k = min(k, -(-(r.length - r.computed) // n) - 1)
        if budget < 0 or k < 1:
            return None
        kv = self.kv_limited
        bs = self.bs
        if waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            # Would the head of the queue be admitted? (Admission only gets harder while the
            # stretch lasts: the budget left is constant and free KV blocks only shrink.)
            head = waiting[0]
            n = head.length - head.computed
            if 0 < thr < n:
                n = thr
            blocked = not cfg.enable_chunked_prefill and n > budget
            if not blocked and kv:
                grow = self.bucket[(-self.G) % bs] + sum(
                    -(-(r.computed + p) // bs) - r.blocks
                    for r, p in zip(explicit, plan, strict=True)
                )
                blocked = -(-head.length // bs) > self.free_blocks - grow
            if not blocked:
                return None
        prefill = sum(plan)
        decode = self.pool_n
        seqs = decode + len(explicit)
        dur = self.tl.cost_model.step_time(prefill, decode, seqs)
        if next_arrival is not None:  # the cheap bound first: it often ends the stretch
            k = steps_before(now, dur, k, next_arrival)
            if k < 1:
                return None
        if kv:
            k = self._kv_steps(plan, k)
            if k < 1:
                return None
        end = self.tl.run(now, k, prefill, decode, seqs, (), lazy=decode)
        if kv:
            growth = self._pool_growth(k)
            self.pool_blocks += growth
            self.free_blocks -= growth
        self.G += k
        for r, n in zip(explicit, plan, strict=True):
            r.computed += n * k
            if kv:
                nb = -(-r.computed // bs)
                self.free_blocks -= nb - r.blocks
                r.blocks = nb
        return end

    def _kv_steps(self, plan: list[int], k: int) -> int:
        """The most steps (<= k) of ``plan`` the free KV blocks allow without a preemption."""
        explicit = self.explicit
        bs = self.bs
        free = self.free_blocks

        def fits(j: int) -> bool:
            need = self._pool_growth(j)
            for r, n in zip(explicit, plan, strict=True):
                need += -(-(r.computed + n * j) // bs) - r.blocks
            return need <= free

        if fits(k):
            return k
        lo, hi = 0, k  # fits(lo) holds (nothing grows), fits(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        return lo


def steps_before(now: float, dur: float, k: int, t: float) -> int:
    """How many of ``k`` back-to-back steps of length ``dur`` from ``now`` start before ``t``,
    with the start times added up exactly as a step-by-step run adds them."""
    if k <= 64:
        start = now
        for i in range(k):
            if start >= t:
                return i
            start += dur
        return k
    starts = np.cumsum(np.concatenate(([now], np.full(k - 1, dur))))
    return int(np.searchsorted(starts, t, side="left"))
