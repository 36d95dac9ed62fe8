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
  no admission possible, no arrival, no prompt completed, enough KV blocks), the whole stretch
  is recorded at once (one Timeline record), up to and including the step in which the next
  pool member gets its last token: that step is like the others, the request leaves after it.

Each step is planned once (``_advance``): the plan says whether a stretch starts here, or this
step is uniform, or it needs the reference engine.

``tests/test_simulator.py`` checks on random workloads that both engines give the same schedule;
the fidelity suite checks this engine against vLLM's own scheduler.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from heapq import heappop, heappush
from itertools import accumulate, repeat

from tuner.backends._timeline import Timeline
from tuner.backends.simulator._engine import Engine, Req
from tuner.core import BackendError, ServingConfig, Workload


class FastEngine(Engine):
    """Same schedule as :class:`Engine`, at a cost proportional to the number of events."""

    def __init__(self, config: ServingConfig, workload: Workload, timeline: Timeline) -> None:
        super().__init__(config, workload, timeline)
        self.G = 0  # uniform steps so far: steps in which every pool member got one token
        self.pool_n = 0
        self.pool_ctx = 0  # sum of c0 - g0 over the pool (a member decodes at c0 - g0 + G + 1)
        self.heap: list[tuple[int, int, Req]] = []  # (G at which it finishes, id, request)
        self.bucket = [0] * self.bs  # pool members per (c0 - g0) mod block_size (KV only)
        self.explicit: list[Req] = []  # running requests outside the pool, admission order

    # --- the pool ------------------------------------------------------------------------------
    def _lazify(self, r: Req) -> None:
        g, c0, e0 = self.G, r.computed, r.emitted
        r.lazy = True
        r.c0, r.e0, r.g0 = c0, e0, g
        heappush(self.heap, (g + r.output - e0, r.id, r))
        self.pool_n += 1
        self.pool_ctx += r.c0 - r.g0
        if self.kv_limited:
            self.bucket[(c0 - g) % self.bs] += 1

    def _settle(self, r: Req, last_emit: float) -> None:
        """Make a pool member explicit again (its state as of the latest step)."""
        g0 = r.g0
        k = self.G - g0
        computed = r.c0 + k
        emitted = r.e0 + k
        r.computed = computed
        r.emitted = emitted
        r.length = r.prompt + emitted
        r.lazy = False
        self.pool_n -= 1
        self.pool_ctx -= r.c0 - r.g0
        if self.kv_limited:
            bs = self.bs
            r.blocks = (computed + bs - 1) // bs
            self.bucket[(r.c0 - g0) % bs] -= 1
        self.tl.settle(r.id, emitted, last_emit)

    def _pool_growth(self, j: int) -> int:
        """New KV blocks the pool needs over the next ``j`` uniform steps: every member crosses
        into a new block once every ``block_size`` steps, members with ``(c0 - g0) % bs ==
        key`` at the steps ``t`` with ``(key + t) % bs == 0``."""
        bs = self.bs
        q, rem = divmod(j, bs)
        growth = self.pool_n * q
        if rem:
            a = -self.G % bs  # the keys crossing at steps 0, 1, ..., rem - 1: a, a - 1, ...
            lo = a - rem + 1
            bucket = self.bucket
            growth += (
                sum(bucket[lo : a + 1]) if lo >= 0 else sum(bucket[: a + 1]) + sum(bucket[lo:])
            )
        return growth

    def _retire(self, end: float, done: list[Req]) -> int:
        """After a step ending at ``end``: settle the pool members that got their last token
        in it, then let ``done`` (and them) go. Returns how many finished."""
        heap, g = self.heap, self.G
        while heap and heap[0][0] <= g:
            r = heappop(heap)[2]
            self._settle(r, end)
            done.append(r)
        if done:
            running = self.running
            for r in done:
                running.remove(r)
            self._done(done, end)  # async: slot and blocks held through the next schedule
        return len(done)

    # --- the engine loop -----------------------------------------------------------------------
    def _advance(self, now: float, next_arrival: float | None) -> tuple[float, int]:
        """Plan the step starting at ``now`` once, then record the stretch of identical steps
        that starts here if there is one, else this step alone: uniformly if it serves every
        running request in full, else on the reference engine."""
        cfg = self.cfg
        waiting, finishing, explicit = self.waiting, self.finishing, self.explicit
        pool_n = self.pool_n
        thr = 0  # the prefill cap (read only for explicit or waiting requests)
        if (explicit or waiting) and len(self.running) + len(finishing) + len(waiting) > 1:
            thr = cfg.long_prefill_token_threshold
        # k: how many identical steps could be recorded at once from here, up to and including
        # the one in which the next pool member finishes (0: this very step is an event).
        if finishing or not (pool_n or explicit):
            k = 0
        else:
            heap = self.heap
            k = heap[0][0] - self.G if heap else _NEVER
        kv, bs = self.kv_limited, self.bs
        # step_grow: new KV blocks of the whole step (the pool's: the members crossing into a
        # new block at this step).
        step_grow = self.bucket[-self.G % bs] if kv and pool_n else 0
        plan: list[int] = []  # tokens of each explicit request in this step
        grows: list[int] = []  # new KV blocks of each explicit request in this step
        prefill = 0  # sum(plan)
        for r in explicit:
            rest = r.length - r.computed
            if 0 < thr < rest:
                n = thr
                chunks = (rest - 1) // thr  # chunks before the one that completes the prompt
                if chunks < k:
                    k = chunks
            else:  # completes its sequence in this step: a first token or a decoder's next
                n = rest
                k = 0
            plan.append(n)
            prefill += n
            if kv:
                g = (r.computed + n + bs - 1) // bs - r.blocks
                grows.append(g)
                step_grow += g
        budget = cfg.max_num_batched_tokens - pool_n - prefill
        if budget < 0 or step_grow > self.free_blocks:  # short of budget; a preemption is due
            return self._reference_step(now)
        if k and waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            # Would the head of the queue be admitted? Then this step is an event. (Admission
            # only gets harder while a stretch lasts: the budget left is constant and free KV
            # blocks only shrink.)
            head = waiting[0]
            n = head.length - head.computed
            if 0 < thr < n:
                n = thr
            blocked = not cfg.enable_chunked_prefill and n > budget
            if not blocked and kv:
                blocked = (head.length + bs - 1) // bs > self.free_blocks - step_grow
            if not blocked:
                k = 0
        if k:
            jumped = self._jump(now, next_arrival, k, plan, prefill)
            if jumped is not None:
                return jumped
        return self._uniform_step(now, plan, budget, thr, grows, step_grow)

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

    def _uniform_step(
        self, now: float, plan: list[int], budget: int, thr: int, grows: list[int], step_grow: int
    ) -> tuple[float, int]:
        """One step that serves every running request in full (``plan``: the explicit ones'
        tokens, ``budget``: what is left for admissions; ``grows``: the explicit ones' new KV
        blocks, ``step_grow``: the whole step's, known to fit)."""
        waiting, explicit = self.waiting, self.explicit
        pool_n = self.pool_n
        if self.kv_limited:
            self.free_blocks -= step_grow
            for r, g in zip(explicit, grows, strict=True):
                r.blocks += g

        # WAITING pass (nothing was preempted), as in the reference engine.
        served = explicit.copy()
        if waiting:
            for r, n in self._admit(budget, thr):
                served.append(r)
                plan.append(n)

        released = self._release()
        if not served and not pool_n:
            if released:
                return now, 0
            raise BackendError(
                "simulator stalled: a step scheduled no token while requests wait "
                f"(running={len(self.running)}, waiting={len(waiting)})"
            )

        context = pairs = 0
        if self.tl.context:  # the pool's members decode at c0 - g0 + G + 1 each
            context, pairs = self._attention(zip(served, plan, strict=True))
            context += self.pool_ctx + pool_n * (self.G + 1)
        prefill, decode, emitted, done = self._compute(zip(served, plan, strict=True))
        g = self.G + 1
        self.G = g
        end = self.tl.step(
            now, prefill, decode + pool_n, pool_n + len(served), emitted, pool_n, context, pairs
        )
        if emitted:
            reqs = self.reqs
            for i in emitted:  # decoders from now on: into the pool
                r = reqs[i]
                if r.emitted < r.output:
                    self._lazify(r)
        heap = self.heap
        finished = self._retire(end, done) if done or (heap and heap[0][0] <= g) else 0
        # Still explicit: the requests that got no token, mid-prompt (one that got a token
        # went into the pool, or finished).
        if emitted:
            served = [r for r in served if not r.lazy and r.emitted < r.output]
        self.explicit = served
        return end, finished

    def _jump(
        self, now: float, next_arrival: float | None, k: int, plan: list[int], prefill: int
    ) -> tuple[float, int] | None:
        """Record up to ``k`` identical steps from ``now`` (``plan``: the explicit requests'
        tokens in each, ``prefill``: their sum), stopping before the next arrival and before a
        KV shortfall. Returns the new time and how many finished (in the last step), or None
        when not even one step can be recorded this way."""
        explicit = self.explicit
        decode = self.pool_n
        seqs = decode + len(explicit)
        tl = self.tl
        context = pairs = growth_pairs = 0
        if tl.context:  # steps differ: each decoder's context and each chunk's offset grow
            context = self.pool_ctx + decode * (self.G + 1)
            for r, n in zip(explicit, plan, strict=True):
                pairs += n * r.computed + n * (n + 1) // 2
                growth_pairs += n * n
            timer = tl.step_time
            bounds = varying_step_bounds(
                now,
                lambda j: timer(
                    prefill, decode, seqs, context + j * decode, pairs + j * growth_pairs
                ),
                k,
                next_arrival,
            )
        else:
            bounds = step_bounds(now, tl.step_time(prefill, decode, seqs), k, next_arrival)
        k = len(bounds) - 1
        if k < 1:
            return None
        if self.kv_limited:
            growth = self._pool_growth(k) if decode else 0
            if growth + (self._explicit_growth(plan, k) if explicit else 0) > self.free_blocks:
                # A shortfall within the stretch: stop before it.
                k, growth = self._kv_steps(plan, k)
                if k < 1:
                    return None
                del bounds[k + 1 :]
            bs = self.bs
            free = self.free_blocks - growth
            for r, n in zip(explicit, plan, strict=True):
                c = r.computed + n * k
                r.computed = c
                nb = (c + bs - 1) // bs
                free -= nb - r.blocks
                r.blocks = nb
            self.free_blocks = free
        else:
            for r, n in zip(explicit, plan, strict=True):
                r.computed += n * k
        end = tl.run(bounds, prefill, decode, seqs, decode, context, pairs, decode, growth_pairs)
        g = self.G + k
        self.G = g
        heap = self.heap
        if heap and heap[0][0] <= g:
            return end, self._retire(end, [])
        return end, 0

    def _explicit_growth(self, plan: list[int], j: int) -> int:
        """The new KV blocks the explicit requests need over ``j`` steps of ``plan``."""
        bs = self.bs
        need = 0
        for r, n in zip(self.explicit, plan, strict=True):
            need += (r.computed + n * j + bs - 1) // bs - r.blocks
        return need

    def _kv_steps(self, plan: list[int], k: int) -> tuple[int, int]:
        """The most steps (< k) of ``plan`` the free KV blocks allow without a preemption (they
        fall short within ``k``), and the pool's new blocks over them."""
        free = self.free_blocks
        lo, hi = 0, k  # fits at lo (nothing grows), not at hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._pool_growth(mid) + self._explicit_growth(plan, mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo, self._pool_growth(lo)


_NEVER = 1 << 62  # no request in the pool: no finish bounds a stretch


def step_bounds(now: float, dur: float, k: int, t: float | None) -> list[float]:
    """The boundaries of up to ``k`` back-to-back steps of length ``dur`` from ``now``, those
    that start before ``t`` (all ``k`` if ``t`` is None): the start of each, then the end of the
    last. They are added up exactly as a step-by-step run adds them, so both give bit-identical
    times."""
    if t is None or dur <= 0:  # all k
        if k > _SHORT:
            return list(accumulate(repeat(dur, k), initial=now))
        t, n = _INF, k
    else:
        n = int((t - now) / dur) + 2  # a few more than start before t
        if n > k:
            n = k
    if n <= _SHORT:  # a short stretch (the usual case): one by one, while they start before t
        bounds = [now]
        x = now
        for _ in range(k):
            if x >= t:
                break
            x += dur
            bounds.append(x)
        return bounds
    while True:
        bounds = list(accumulate(repeat(dur, n), initial=now))
        before = bisect_left(bounds, t, 0, n)
        if before < n or n == k:
            del bounds[before + 1 :]
            return bounds
        n = min(k, 2 * n)  # rounding made the estimate short (never in practice)


_SHORT = 16  # up to this many steps, a loop here is faster than accumulate()
_INF = float("inf")


def varying_step_bounds(
    now: float, duration: Callable[[int], float], k: int, t: float | None
) -> list[float]:
    """:func:`step_bounds` for steps whose durations differ (``duration(j)``: the ``j``-th's,
    from 0): the same additions, one step after another, as a step-by-step run makes."""
    bounds = [now]
    end = now
    for j in range(k):
        if t is not None and end >= t:
            break
        end = end + duration(j)
        bounds.append(end)
    return bounds
