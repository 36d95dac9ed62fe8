"""The prompts a replay sends: token ids, distinct per request, or built from a trace's hash ids.

A request without hash ids gets a prompt no other request shares (:func:`prompt_token_ids`), so
prefix caching never hits. A request with hash ids (``Request.hash_ids``, vllm bench's
``timed_trace`` chunk hashes, ``Workload.hash_chunk_size`` tokens per id) gets them expanded the
way ``vllm bench serve``'s ``TimedTrace`` expands them: each id becomes ``chunk`` tokens (the last
one fewer when the prompt ends inside it), the same id always the same tokens, so requests that
share a run of leading ids share that prefix exactly as in the trace and vLLM's prefix cache hits
as it would in production. Hash ids are read with ``getattr``, so a workload without them (or a
tuner from before they existed) sends distinct prompts.

Two differences from vllm bench, on purpose: the tokens of an id are seeded by a stable hash of
(salt, id, size), not Python's per-process ``hash()``, so a replay is reproducible; and a prompt
is always ``prompt_tokens`` long -- ids that cover fewer tokens are followed by tokens private to
the request (vllm bench would send a shorter prompt), ids that cover more are cut.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from tuner.core import Workload

#: Prompt token ids are drawn from [low, high): ids that every real vocabulary has and that are
#: not special tokens in common tokenizers (and the tiny model's 2048-token vocabulary).
DEFAULT_TOKEN_RANGE = (100, 1000)
DEFAULT_CHUNK = 16  # vllm bench's --timed-trace-chunk-hash-size default
_KEY_TOKENS = 4  # leading tokens that encode (salt, request id): distinct prompts, no cache hit


def _check_range(token_range: tuple[int, int]) -> tuple[int, int]:
    low, high = token_range
    if high - low < 2 or low < 0:
        raise ValueError(f"token_range={token_range!r}: need 0 <= low < high - 1")
    return low, high


def prompt_token_ids(
    request_id: int,
    length: int,
    *,
    salt: int = 0,
    token_range: tuple[int, int] = DEFAULT_TOKEN_RANGE,
) -> list[int]:
    """A prompt of ``length`` token ids, distinct for each (salt, request id).

    The first four tokens spell out ``(salt, request_id)`` in base ``high - low``, least
    significant digit first, so two prompts of one replay (or of replays with different salts)
    never share a first KV block and prefix caching never hits; the rest are pseudo-random,
    seeded by the same pair.

    Example:
        >>> a, b = prompt_token_ids(0, 32), prompt_token_ids(1, 32)
        >>> len(a), a[:4] != b[:4], all(100 <= t < 1000 for t in a + b)
        (32, True, True)
    """
    low, high = _check_range(token_range)
    span = high - low
    if length < 1:
        raise ValueError(f"prompt length must be >= 1, got {length}")
    key = (salt % 1_000_003) * 1_000_003 + request_id
    head = []
    k = key
    for _ in range(min(_KEY_TOKENS, length)):
        head.append(low + k % span)
        k //= span
    rng = random.Random(key)
    return head + [low + rng.randrange(span) for _ in range(length - len(head))]


def _chunk_tokens(salt: int, hash_id: int, size: int, token_range: tuple[int, int]) -> list[int]:
    low, high = token_range
    digest = hashlib.blake2b(f"{salt}:{hash_id}:{size}".encode(), digest_size=8).digest()
    rng = random.Random(int.from_bytes(digest, "little"))
    return [low + rng.randrange(high - low) for _ in range(size)]


def hashed_prompt(
    request_id: int,
    length: int,
    hash_ids: Sequence[int],
    *,
    chunk: int = DEFAULT_CHUNK,
    salt: int = 0,
    token_range: tuple[int, int] = DEFAULT_TOKEN_RANGE,
) -> list[int]:
    """A prompt of ``length`` token ids built from a trace's ``hash_ids``, ``chunk`` per id.

    Example:
        >>> a = hashed_prompt(0, 40, [7, 8, 9], chunk=16)
        >>> b = hashed_prompt(1, 40, [7, 8, 5], chunk=16)
        >>> len(a), a[:32] == b[:32], a[32:] == b[32:]
        (40, True, False)
    """
    token_range = _check_range(token_range)
    if chunk < 1:
        raise ValueError(f"hash_chunk_size must be >= 1, got {chunk}")
    out: list[int] = []
    left = length
    for h in hash_ids:
        if left <= 0:
            break
        size = min(chunk, left)
        out += _chunk_tokens(salt, int(h), size, token_range)
        left -= size
    if left > 0:  # the ids cover fewer tokens than the prompt: a tail of its own
        out += prompt_token_ids(request_id, left, salt=salt, token_range=token_range)
    return out


def workload_hash_ids(workload: Workload) -> list[tuple[int, ...]]:
    """Each request's hash ids, in id order (empty where the request or tuner has none)."""
    return list(workload.hash_ids or [()] * len(workload))


def hash_chunk_size(workload: Workload) -> int:
    """Tokens per hash id of ``workload`` (``Workload.hash_chunk_size``)."""
    return workload.hash_chunk_size


def shares_prefix(workload: Workload) -> bool:
    """Whether two requests of ``workload`` start with the same hash id (share a prefix).

    Example:
        >>> from tuner import Workload
        >>> shares_prefix(Workload.from_arrays([0.0, 1.0], [8, 8], [1, 1]))
        False
    """
    return workload.shares_prefixes


def workload_prompts(
    workload: Workload, *, salt: int = 0, token_range: tuple[int, int] = DEFAULT_TOKEN_RANGE
) -> list[list[int]]:
    """The prompt of every request of ``workload``, in id order (see the module docstring)."""
    chunk = hash_chunk_size(workload)
    lengths = workload.prompt_tokens.tolist()
    ids = workload_hash_ids(workload) if len(workload) else []
    return [
        hashed_prompt(i, n, ids[i], chunk=chunk, salt=salt, token_range=token_range)
        if ids[i]
        else prompt_token_ids(i, n, salt=salt, token_range=token_range)
        for i, n in enumerate(lengths)
    ]
