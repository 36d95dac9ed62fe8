"""The reference engine with vLLM 0.32's prefix cache (``enable_prefix_caching``).

Same scheduling as :class:`~tuner.backends.simulator._engine.Engine`, with the KV cache kept
block for block (:class:`~tuner.backends.simulator._block_pool.BlockPool`), as read from
``vllm/v1/core/kv_cache_manager.py``, ``single_type_kv_cache_manager.py`` and
``sched/scheduler.py``:

* **Hashes.** A request's full blocks (prompt, then the tokens it has sampled) are hashed in a
  chain: a block's hash covers its tokens and its parent's hash. Prompts are the workload's
  :meth:`~tuner.Workload.prompt_token_ids`; every sampled token is the replay backend's dummy
  token (3), which no generated prompt contains. A request without hash ids shares nothing, so
  its blocks get hashes of their own without building its tokens.
* **Lookup** (``get_computed_blocks``), only for a request that has computed nothing (new, or
  preempted): the longest run of its block hashes found in the cache, at most
  ``(num_tokens - 1) // block_size`` blocks (the last token is always recomputed, to sample).
  The hit becomes its computed tokens; the prefill continues from there.
* **Admission** needs room for the whole sequence: ``ceil(num_tokens / block_size)`` blocks,
  minus the hit blocks, plus the hit blocks that are free now (touching them takes them out of
  the free queue). Hit blocks are shared: touched (reference counted), then new blocks are
  popped from the front of the free queue.
* **Caching** happens when blocks are scheduled, not when they are computed: every block that a
  step's tokens fill (up to the request's known tokens) is cached at once, so a request admitted
  later in the same step can already hit it. Under async scheduling the token sampled in the
  previous step is not known yet (its output is applied after this ``schedule()`` call), and
  ``AsyncScheduler`` caches up to it only then -- unless the request was preempted meanwhile:
  a request preempted right after its token completed a block finds one block fewer.
* **Freeing** (finish, preemption) walks the request's blocks last to first: unhashed blocks to
  the front of the free queue, hashed ones to the back, where they stay cached until popped.
  A preempted request looks itself up again when readmitted.
* ``cached_tokens`` is the hit of a request's first admission (vLLM's ``num_cached_tokens``).

With ``num_kv_blocks=None`` (no KV pressure modelled) nothing is ever evicted: a hit is any run
of blocks scheduled before (the replay sizes vLLM's pool so that this holds there too).
"""

from __future__ import annotations

import numpy as np

from tuner.backends._timeline import Timeline
from tuner.backends.simulator._block_pool import BlockPool
from tuner.backends.simulator._engine import Engine, Req
from tuner.core import BackendError, ServingConfig, Workload

SAMPLED_TOKEN = 3
"""The token every sampled position holds (the replay backend's ``_SAMPLED_TOKEN``)."""
_OWN = -0x51ED270B  # the root of the hashes of a request that shares nothing


class PrefixEngine(Engine):
    """:class:`Engine` with the prefix cache; every step simulated one by one."""

    def __init__(self, config: ServingConfig, workload: Workload, timeline: Timeline) -> None:
        super().__init__(config, workload, timeline)
        n = len(self.reqs)
        self.workload = workload
        self.pool = BlockPool(config.num_kv_blocks) if config.num_kv_blocks is not None else None
        self.ever_cached: set[int] = set()  # without a pool: every hash scheduled so far
        self.table: list[list[int]] = [[] for _ in range(n)]  # block ids, in token order
        self.ncached = [0] * n  # how many of a request's blocks are cached
        self.admitted_once = [False] * n
        self.hashes: list[list[int]] = [[] for _ in range(n)]
        self.tokens: list[np.ndarray | None] = [None] * n
        ids = workload.hash_ids
        self.own = [True] * n if ids is None else [not h for h in ids]

    # --- block hashes --------------------------------------------------------------------------
    def _hashes(self, r: Req, count: int) -> list[int]:
        """The first ``count`` block hashes of ``r`` (its known tokens must fill them)."""
        hs = self.hashes[r.id]
        have = len(hs)
        if have >= count:
            return hs
        if self.own[r.id]:
            hs.extend(hash((_OWN, r.id, j)) for j in range(have, count))
            return hs
        toks = self.tokens[r.id]
        if toks is None:
            toks = self.tokens[r.id] = self.workload.prompt_token_array(r.id)
        bs, p = self.bs, len(toks)
        parent = hs[-1] if hs else None
        for j in range(have, count):
            lo, hi = j * bs, (j + 1) * bs
            if hi <= p:
                block = toks[lo:hi].tobytes()
            else:  # reaches into the sampled tokens
                sampled = np.full(hi - max(lo, p), SAMPLED_TOKEN, dtype=np.int64)
                block = np.concatenate([toks[lo:p] if lo < p else toks[:0], sampled]).tobytes()
            parent = hash((parent, block))
            hs.append(parent)
        return hs

    def _cache(self, r: Req, tokens: int) -> None:
        """``cache_blocks``: cache ``r``'s blocks that its first ``tokens`` tokens fill."""
        full = tokens // self.bs
        done = self.ncached[r.id]
        if done >= full:
            return
        hs = self._hashes(r, full)
        if self.pool is not None:
            table, pool = self.table[r.id], self.pool
            for j in range(done, full):
                pool.cache(table[j], hs[j])
        else:
            self.ever_cached.update(hs[done:full])
        self.ncached[r.id] = full

    def _lookup(self, r: Req) -> list[int]:
        """``get_computed_blocks``: the blocks of ``r``'s longest cached prefix (without a pool,
        placeholders: only their number counts)."""
        most = (r.length - 1) // self.bs
        if most <= 0:
            return []
        hs = self._hashes(r, most)
        hit: list[int] = []
        if self.pool is not None:
            lookup = self.pool.lookup
            for j in range(most):
                b = lookup(hs[j])
                if b is None:
                    break
                hit.append(b)
        else:
            seen = self.ever_cached
            for j in range(most):
                if hs[j] not in seen:
                    break
                hit.append(0)
        return hit

    def _free(self, r: Req) -> None:
        if self.pool is not None:
            self.pool.free(reversed(self.table[r.id]))
        self.table[r.id] = []
        self.ncached[r.id] = 0
        r.blocks = 0

    # --- one step ------------------------------------------------------------------------------
    def _admit(self, budget: int, thr: int) -> list[tuple[Req, int]]:
        """The WAITING pass of :meth:`Engine._admit`, with a prefix-cache lookup first."""
        cfg, running, waiting = self.cfg, self.running, self.waiting
        pool, bs = self.pool, self.bs
        admitted: list[tuple[Req, int]] = []
        while budget > 0 and waiting:
            if len(running) + len(self.finishing) >= cfg.max_num_seqs:
                break
            r = waiting[0]
            hit = self._lookup(r)
            computed = len(hit) * bs
            n = r.length - computed
            if 0 < thr < n:
                n = thr
            if not cfg.enable_chunked_prefill and n > budget:
                break
            if n > budget:
                n = budget
            if pool is not None:
                need = -(-r.length // bs) - len(hit) + pool.evictable(hit)
                if need > pool.num_free:
                    break
                pool.touch(hit)
                hit += pool.popleft_n(-(-(computed + n) // bs) - len(hit))
                self.table[r.id] = hit
            self.ncached[r.id] = computed // bs
            r.computed = computed
            if not self.admitted_once[r.id]:
                self.admitted_once[r.id] = True
                self.tl.cached(r.id, computed)
            waiting.popleft()
            running.append(r)
            r.seq = self.admissions
            self.admissions += 1
            admitted.append((r, n))
            budget -= n
            self._cache(r, min(computed + n, r.length))
        return admitted

    def _step(self, now: float) -> tuple[float, int]:
        """:meth:`Engine._step` with blocks allocated, shared and cached one by one."""
        cfg = self.cfg
        running, waiting, finishing = self.running, self.waiting, self.finishing
        pool, bs = self.pool, self.bs
        # Async: the requests whose token from the last step is not applied yet (vLLM caches
        # their blocks up to it only once it is).
        in_flight = self.last_emitted if cfg.async_scheduling else []
        lagging = set(in_flight)
        budget = cfg.max_num_batched_tokens
        eligible = len(running) + len(finishing) + len(waiting)
        thr = cfg.long_prefill_token_threshold if eligible > 1 else 0
        scheduled: list[tuple[Req, int]] = []
        preempted = False

        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            n = r.length - r.computed
            if 0 < thr < n:
                n = thr
            if n > budget:
                n = budget
            if pool is not None:
                table = self.table[r.id]
                need = -(-(r.computed + n) // bs) - len(table)
                placed = True
                while need > pool.num_free:
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
                if need > 0:
                    table += pool.popleft_n(need)
            self._cache(r, min(r.computed + n, r.length - (r in lagging)))
            scheduled.append((r, n))
            budget -= n
            i += 1

        if not preempted:
            scheduled += self._admit(budget, thr)

        for r in in_flight:  # the last step's output applied: its tokens' blocks cached
            if r.computed:  # not preempted meanwhile
                self._cache(r, r.computed)
        released = self._release()

        if not scheduled:
            if released:
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
