"""vLLM 0.32's KV block pool with prefix caching, block for block.

Mirrors ``BlockPool``, ``BlockHashToBlockMap`` and ``FreeKVCacheBlockQueue`` in
``vllm/v1/core/block_pool.py`` and ``kv_cache_utils.py`` for one full-attention group whose
hash block size is the block size (so no partial-block entries):

* Block 0 is the null block, never free. The free queue starts as blocks 1..n-1 in order.
* Allocation pops from the FRONT of the free queue; a popped block that still has a hash is
  evicted from the cache then (the least recently freed cached block goes first).
* A cache hit *touches* its blocks: one more reference, and a block that was free (reference
  count 0) leaves the free queue wherever it is.
* Freeing a request walks its blocks from the last to the first; a block whose count drops to 0
  goes to the FRONT of the queue if it has no hash (reused first) or to the BACK if it has one
  (kept for later hits, evicted last), each group in that walking order.
* The cache maps a hash to every block holding it, oldest first; a lookup takes the oldest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["BlockPool"]


class BlockPool:
    """Reference counts, hashes and the free queue (a doubly linked list over block ids)."""

    __slots__ = ("_head", "_next", "_prev", "_tail", "cached", "hash", "num_free", "ref")

    def __init__(self, num_blocks: int) -> None:
        n = num_blocks
        self._head, self._tail = n, n + 1  # sentinels
        self._next = [i + 1 for i in range(n + 2)]
        self._prev = [i - 1 for i in range(n + 2)]
        # Free: 1..n-1 (block 0 is the null block).
        self._next[self._head] = 1 if n > 1 else self._tail
        self._prev[1 if n > 1 else self._tail] = self._head
        self._next[n - 1] = self._tail
        self._prev[self._tail] = n - 1 if n > 1 else self._head
        self.num_free = n - 1
        self.ref = [0] * n
        self.hash: list[int | None] = [None] * n
        self.cached: dict[int, list[int]] = {}

    # --- the free queue ------------------------------------------------------------------------
    def _unlink(self, b: int) -> None:
        p, q = self._prev[b], self._next[b]
        self._next[p] = q
        self._prev[q] = p
        self.num_free -= 1

    def _insert_after(self, at: int, blocks: Sequence[int]) -> None:
        nxt, prv = self._next, self._prev
        end = nxt[at]
        for b in blocks:
            nxt[at] = b
            prv[b] = at
            at = b
        nxt[at] = end
        prv[end] = at
        self.num_free += len(blocks)

    def popleft_n(self, k: int) -> list[int]:
        """Allocate ``k`` blocks from the front (evicting their cached hashes)."""
        out = []
        nxt = self._next
        for _ in range(k):
            b = nxt[self._head]
            self._unlink(b)
            h = self.hash[b]
            if h is not None:
                holders = self.cached[h]
                holders.remove(b)
                if not holders:
                    del self.cached[h]
                self.hash[b] = None
            self.ref[b] = 1
            out.append(b)
        return out

    # --- references ----------------------------------------------------------------------------
    def touch(self, blocks: Iterable[int]) -> None:
        """A cache hit: one more reference each; free ones leave the free queue."""
        ref = self.ref
        for b in blocks:
            if ref[b] == 0:
                self._unlink(b)
            ref[b] += 1

    def free(self, blocks_last_first: Iterable[int]) -> None:
        """Drop one reference of each block (a request's blocks, last first)."""
        first: list[int] = []
        last: list[int] = []
        ref, hashes = self.ref, self.hash
        for b in blocks_last_first:
            ref[b] -= 1
            if ref[b] == 0:
                (first if hashes[b] is None else last).append(b)
        if first:
            self._insert_after(self._head, first)
        if last:
            self._insert_after(self._prev[self._tail], last)

    def evictable(self, blocks: Iterable[int]) -> int:
        """How many of ``blocks`` are free (a hit on them takes them out of the free queue)."""
        ref = self.ref
        return sum(1 for b in blocks if ref[b] == 0)

    # --- the cache -----------------------------------------------------------------------------
    def cache(self, block: int, h: int) -> None:
        """Record that ``block`` (a freshly allocated, now full block) holds hash ``h``."""
        if self.hash[block] == h:
            return
        self.hash[block] = h
        self.cached.setdefault(h, []).append(block)

    def lookup(self, h: int) -> int | None:
        """The oldest block holding hash ``h``, or None."""
        holders = self.cached.get(h)
        return holders[0] if holders else None
