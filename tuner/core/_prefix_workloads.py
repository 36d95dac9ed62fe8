"""Workloads whose prompts share prefixes: a system prompt, multi-turn conversations.

Both are expressed as hash ids (``vllm bench serve``'s timed_trace chunks, see
:mod:`tuner.core._prompts`): a chunk of ``chunk_size`` tokens is shared by two prompts when they
carry the same id at the same position. A shared part that does not end on a chunk boundary is
shared up to its last whole chunk (the chunk it ends in mixes it with what follows).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from tuner.core._arrivals import (
    LengthSpec,
    _check_params,
    arrival_times,
    as_length_distribution,
    sample_workload_arrays,
)
from tuner.core._errors import WorkloadError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
HashIds = tuple[int, ...]
Arrays = tuple[FloatArray, IntArray, IntArray, list[HashIds]]

__all__ = ["multi_turn_arrays", "shared_prefix_arrays"]


class _Ids:
    """Fresh hash ids, counted up from 0."""

    def __init__(self) -> None:
        self.next = 0

    def take(self, k: int) -> HashIds:
        out = tuple(range(self.next, self.next + k))
        self.next += k
        return out


def _check_tokens(where: str, name: str, value: object, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise WorkloadError(f"{where}({name}={value!r}): must be an integer >= {low}")
    return int(value)


def _check_chunk(where: str, chunk_size: object) -> int:
    return _check_tokens(where, "hash_chunk_size", chunk_size, low=1)


def _extend(
    ids: HashIds, shared_tokens: int, total_tokens: int, chunk: int, fresh: _Ids
) -> HashIds:
    """The ids of a prompt of ``total_tokens`` whose first ``shared_tokens`` are those named by
    ``ids``: the whole chunks among them are kept, the rest gets fresh ids."""
    keep = ids[: min(shared_tokens, total_tokens) // chunk]
    return keep + fresh.take(math.ceil(total_tokens / chunk) - len(keep))


def shared_prefix_arrays(
    rate: float,
    n: int,
    prompt_len: LengthSpec,
    output_len: LengthSpec,
    prefix_tokens: int,
    *,
    fraction: float,
    num_prefixes: int,
    burstiness: float,
    seed: int,
    chunk_size: int,
) -> Arrays:
    """See :meth:`tuner.Workload.shared_prefix`."""
    where = "Workload.shared_prefix"
    prefix_tokens = _check_tokens(where, "prefix_tokens", prefix_tokens, low=1)
    num_prefixes = _check_tokens(where, "num_prefixes", num_prefixes, low=1)
    chunk_size = _check_chunk(where, chunk_size)
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 <= fraction <= 1
    ):
        raise WorkloadError(f"{where}(fraction={fraction!r}): must be a number in [0, 1]")
    a, p, o = sample_workload_arrays(where, rate, n, prompt_len, output_len, burstiness, seed)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1,)))
    with_prefix = rng.random(len(a)) < fraction
    which = rng.integers(0, num_prefixes, len(a))
    fresh = _Ids()
    systems = [fresh.take(math.ceil(prefix_tokens / chunk_size)) for _ in range(num_prefixes)]
    prompts = np.where(with_prefix, p + prefix_tokens, p)
    hashes = []
    for i, total in enumerate(prompts.tolist()):
        if with_prefix[i]:
            hashes.append(_extend(systems[which[i]], prefix_tokens, total, chunk_size, fresh))
        else:
            hashes.append(fresh.take(math.ceil(total / chunk_size)))
    return a, prompts.astype(np.int64), o, hashes


def _conversations(
    starts: FloatArray,
    turns: int,
    think_time: float,
    user: IntArray,
    answer: IntArray,
    system_tokens: int,
    chunk: int,
    rng: np.random.Generator,
) -> Iterator[tuple[float, int, int, HashIds]]:
    fresh = _Ids()
    system = fresh.take(system_tokens // chunk)
    k = 0
    for start in starts.tolist():
        t = start
        ids: HashIds = system
        shared = before = system_tokens  # tokens the next prompt repeats; tokens before its text
        for turn in range(turns):
            total = before + int(user[k])
            ids = _extend(ids, shared, total, chunk, fresh)
            yield t, total, int(answer[k]), ids
            # The next prompt repeats this one, then the answer: the answer's tokens are new
            # text to the trace (a replay's answers are the model's own tokens).
            shared, before = total, total + int(answer[k])
            k += 1
            if turn + 1 < turns:
                t += float(rng.exponential(think_time)) if think_time > 0 else 0.0


def multi_turn_arrays(
    conversations: int,
    turns: int,
    rate: float,
    user_len: LengthSpec,
    answer_len: LengthSpec,
    *,
    think_time: float,
    system_prompt_tokens: int,
    seed: int,
    chunk_size: int,
) -> Arrays:
    """See :meth:`tuner.Workload.multi_turn`."""
    where = "Workload.multi_turn"
    turns = _check_tokens(where, "turns", turns, low=1)
    system_prompt_tokens = _check_tokens(where, "system_prompt_tokens", system_prompt_tokens)
    chunk_size = _check_chunk(where, chunk_size)
    if (
        isinstance(think_time, bool)
        or not isinstance(think_time, (int, float))
        or not (math.isfinite(think_time) and think_time >= 0)
    ):
        raise WorkloadError(f"{where}(think_time={think_time!r}): must be a finite number >= 0")
    _check_params(where, rate, conversations, 1.0, seed)
    n = int(conversations) * turns
    lengths = np.random.default_rng(int(seed))
    user = as_length_distribution(user_len, f"{where}(user_len)").sample(n, lengths)
    answer = as_length_distribution(answer_len, f"{where}(answer_len)").sample(n, lengths)
    starts = arrival_times(
        float(rate),
        int(conversations),
        1.0,
        np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0,))),
    )
    think = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2,)))
    rows = list(
        _conversations(
            starts, turns, float(think_time), user, answer, system_prompt_tokens, chunk_size, think
        )
    )
    order = sorted(range(n), key=lambda i: rows[i][0])  # stable: a conversation keeps its order
    return (
        np.array([rows[i][0] for i in order], dtype=np.float64),
        np.array([rows[i][1] for i in order], dtype=np.int64),
        np.array([rows[i][2] for i in order], dtype=np.int64),
        [rows[i][3] for i in order],
    )
