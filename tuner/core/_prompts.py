"""Prompt contents from hash ids, as ``vllm bench serve`` builds ``timed_trace`` prompts.

vllm bench (``TimedTrace._expand_prompt`` in ``vllm/benchmarks/datasets/datasets.py``, vLLM
0.32) expands each hash id of a request into a chunk of ``--timed-trace-chunk-hash-size`` tokens
(16 by default; the last chunk holds what is left of the prompt), drawn from a seed made of the
id and the chunk's length. So equal ids at the start of two prompts give equal token prefixes,
and a chunk's tokens depend on its id *and* its length (a partial last chunk is not a prefix of
the full chunk with the same id). Ids beyond the prompt's length are ignored.

Here the tokens come from a fixed integer hash (splitmix64) of the id, the chunk length and the
position, so they are the same in every process (vllm bench's own draw uses Python's salted
``hash`` and the tokenizer's vocabulary, so its token values differ from run to run; only the
sharing structure is what both agree on). Token ids lie in ``[VOCAB_LOW, VOCAB_SIZE)``: ids
below 4 are left for special tokens and for the replay's sampled token. A prompt with too few
hash ids (or none) is completed with tokens unique to the request, so it shares nothing beyond
its ids (vllm bench would send a shorter prompt instead; ``Workload.to_jsonl`` writes fresh ids
for the rest).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]

VOCAB_LOW = 4
"""The smallest token id of a generated prompt."""
VOCAB_SIZE = 32000
"""One more than the largest token id of a generated prompt (Llama-2's vocabulary size)."""

_U64 = np.uint64
_CHUNK_SALT = _U64(0x243F6A8885A308D3)
_FILL_SALT = _U64(0x13198A2E03707344)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser, elementwise (wrapping uint64 arithmetic)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    out: npt.NDArray[np.uint64] = x ^ (x >> _U64(31))
    return out


def _tokens(seeds: npt.NDArray[np.uint64], sizes: IntArray, vocab_size: int) -> IntArray:
    """``sizes[k]`` tokens drawn from ``seeds[k]``, for each k, concatenated."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(sizes) - sizes
    offset = np.arange(total, dtype=np.uint64) - np.repeat(starts.astype(np.uint64), sizes)
    with np.errstate(over="ignore"):
        h = _mix(np.repeat(seeds, sizes) + offset)
    span = _U64(vocab_size - VOCAB_LOW)
    out: IntArray = (h % span).astype(np.int64) + VOCAB_LOW
    return out


def chunk_lengths(prompt_tokens: int, num_ids: int, chunk_size: int) -> list[int]:
    """The length of the chunk each hash id expands to (vllm bench's rule: a full chunk while
    the prompt has that many tokens left, then the rest; ids past the prompt expand to none)."""
    sizes = []
    left = prompt_tokens
    for _ in range(num_ids):
        if left <= 0:
            break
        size = chunk_size if left >= chunk_size else left
        sizes.append(size)
        left -= size
    return sizes


def prompt_tokens(
    prompt_tokens: int,
    hash_ids: Sequence[int],
    chunk_size: int,
    request_index: int,
    vocab_size: int = VOCAB_SIZE,
) -> IntArray:
    """The token ids of one prompt of ``prompt_tokens`` tokens (see the module docstring), in
    ``[VOCAB_LOW, vocab_size)`` (a smaller model's vocabulary gives other token values, but
    the same sharing: equal chunks stay equal, different ones differ but for collisions of
    ``(vocab_size - 4) ** -tokens``).

    Example:
        >>> a = prompt_tokens(20, [7, 8], 16, request_index=0)
        >>> b = prompt_tokens(40, [7, 9, 10], 16, request_index=1)
        >>> len(a), bool((a[:16] == b[:16]).all()), bool((a[16:] == b[16:20]).any())
        (20, True, False)
    """
    sizes = chunk_lengths(prompt_tokens, len(hash_ids), chunk_size)
    ids = np.array(hash_ids[: len(sizes)], dtype=np.uint64)
    with np.errstate(over="ignore"):
        seeds = _mix(_mix(ids ^ _CHUNK_SALT) ^ np.array(sizes, dtype=np.uint64))
    out = _tokens(seeds, np.array(sizes, dtype=np.int64), vocab_size)
    rest = prompt_tokens - len(out)
    if rest > 0:  # no ids left: tokens of this request alone
        with np.errstate(over="ignore"):
            seed = _mix(np.array([request_index], dtype=np.uint64) ^ _FILL_SALT)
            seed = _mix(seed ^ _U64(len(out)))
        out = np.concatenate([out, _tokens(seed, np.array([rest], dtype=np.int64), vocab_size)])
    return out
