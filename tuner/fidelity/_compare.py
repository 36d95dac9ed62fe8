"""Fidelity: does a cheap backend schedule exactly like a reference one, step for step?

Random cases (workload + configuration) of the kinds that stress different scheduler paths are
run through two backends -- typically the simulator against vLLM's own scheduler -- and the
schedules are compared: per-step tokens, each request's first-token and finish steps,
preemptions and prefix-cache hits. Any difference is a simulator bug to fix, not a tolerance to
widen. The prefix kinds give prompts shared prefixes (hash ids) with prefix caching on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tuner.backends import Backend
from tuner.core import ConfigError, Measurement, ServingConfig, Workload

CACHE_CASE_KINDS = (
    "system_prompt",
    "multi_turn",
    "identical_prompts",
    "prefix_blocks",
    "prefix_pressure",
)
"""Kinds whose prompts share prefixes: a system prompt; conversations; the same prompt again
and again; shared prefixes longer and shorter than a block (chunks of 1-40 tokens against
blocks of 4-32); the same under KV pressure (eviction, preemption, shared blocks)."""
CLOSED_CASE_KINDS = ("closed_loop", "closed_think", "closed_pressure", "closed_prefix")
"""Closed-loop kinds (each user sends its next request when its previous one finished): no
think time; think times and staggered starts; KV pressure (preemption); a shared system prompt
with prefix caching."""
ASYNC_CASE_KINDS = (
    "async_burst",
    "async_poisson",
    "async_pressure",
    "async_closed",
    "async_prefix",
)
"""Async-scheduling kinds (vLLM's ``AsyncScheduler``, a batch queue of 2): bursts; Poisson
arrivals; KV pressure with preemption (of requests whose last token is in flight, too);
closed loop under KV pressure; shared prefixes under KV pressure (eviction, preempted requests
finding their own blocks). Each is shaped like its sync kind (:data:`_ASYNC_SHAPE`)."""
CASE_KINDS = (
    "burst",
    "poisson",
    "long_short",
    "single",
    "kv_pressure",
    "no_chunking",
    *CACHE_CASE_KINDS,
    *CLOSED_CASE_KINDS,
    *ASYNC_CASE_KINDS,
)
"""The kinds of random case, each aimed at a scheduler path."""
_ASYNC_SHAPE = {
    "async_burst": "burst",
    "async_poisson": "poisson",
    "async_pressure": "kv_pressure",
    "async_closed": "closed_pressure",
    "async_prefix": "prefix_pressure",
}

_MAX_MODEL_LEN = 512


@dataclass(frozen=True)
class FidelityCase:
    """One workload under one configuration, reproducible from ``(kind, seed)``."""

    kind: str
    seed: int
    config: ServingConfig
    workload: Workload

    def describe(self) -> str:
        w = self.workload
        users = f" from {w.users} closed-loop users" if w.users is not None else ""
        return (
            f"{self.kind}#{self.seed}: {len(w)} requests{users} "
            f"(prompts {w.prompt_tokens.min()}-{w.prompt_tokens.max()}, outputs "
            f"{w.output_tokens.min()}-{w.output_tokens.max()}), "
            f"{self.config.describe(ServingConfig())}"
        )


def random_case(kind: str, seed: int) -> FidelityCase:
    """A random case of the given kind; the same ``(kind, seed)`` always gives the same case."""
    if kind not in CASE_KINDS:
        raise ConfigError(f"fidelity case kind {kind!r}: allowed: {', '.join(CASE_KINDS)}")
    rng = np.random.default_rng([CASE_KINDS.index(kind), seed])
    shape = _ASYNC_SHAPE.get(kind, kind)
    if shape in CACHE_CASE_KINDS or shape == "closed_prefix":
        config, workload = _prefix_case(shape, rng)
    else:
        config, workload = _plain_case(shape, rng)
    if kind in ASYNC_CASE_KINDS:
        config = config.replace(async_scheduling=True)
    return FidelityCase(kind, seed, config, workload)


def _plain_case(kind: str, rng: np.random.Generator) -> tuple[ServingConfig, Workload]:
    """A case whose prompts share nothing."""
    pressure = kind in ("kv_pressure", "closed_pressure")
    n = {"single": 1, "kv_pressure": int(rng.integers(4, 14))}.get(kind, int(rng.integers(2, 16)))
    if kind == "poisson":
        gaps = rng.exponential(rng.uniform(0.3, 6.0), n)
        arrival = np.cumsum(gaps) - gaps[0]
    elif kind == "burst":
        arrival = rng.choice([0.0, 0.0, 5.0, 17.0], n)
    else:
        arrival = np.sort(rng.integers(0, 30, n)).astype(np.float64)
    if kind == "long_short":
        long = rng.random(n) < 0.4
        prompt = np.where(long, rng.integers(200, 460, n), rng.integers(1, 17, n))
    else:
        prompt = rng.integers(1, 300, n)
    output = rng.integers(1, 48, n)
    seqs = int(rng.integers(1, 17))
    block_size = int(rng.choice([4, 16, 32]))
    chunked = kind != "no_chunking"
    budget = (
        int(rng.integers(max(seqs, 8), 600))
        if chunked
        else int(rng.integers(_MAX_MODEL_LEN, _MAX_MODEL_LEN + 400))
    )
    min_blocks = -(-_MAX_MODEL_LEN // block_size) + 1
    kv: int | None
    if pressure:
        kv = int(rng.integers(min_blocks, int(min_blocks * 1.6) + 1))
    else:
        kv = None if rng.random() < 0.5 else int(rng.integers(min_blocks, min_blocks * 6))
    config = ServingConfig(
        max_num_batched_tokens=budget,
        max_num_seqs=seqs,
        long_prefill_token_threshold=int(rng.choice([0, 0, 1, 8, 32, 100])),
        enable_chunked_prefill=chunked,
        num_kv_blocks=kv,
        block_size=block_size,
        max_model_len=_MAX_MODEL_LEN,
    )
    workload = Workload.from_arrays(arrival, prompt, output)
    if kind in CLOSED_CASE_KINDS:
        workload = _closed_loop(kind, workload, rng)
    return config, workload


def _closed_loop(kind: str, workload: Workload, rng: np.random.Generator) -> Workload:
    """``workload``'s requests sent closed loop by 1-6 users: ``closed_think`` with think
    times (on and off the unit clock's integers) and users starting over a ramp."""
    users = int(rng.integers(1, 7))
    if kind != "closed_think":
        return workload.at_concurrency(users)
    n = len(workload)
    think = np.where(rng.random(n) < 0.5, rng.integers(0, 6, n), rng.uniform(0, 8, n))
    ramp = workload.at_concurrency(users, ramp=float(rng.uniform(0, 10)))
    return Workload.from_arrays(
        ramp.arrival, ramp.prompt_tokens, ramp.output_tokens, user=ramp.user, think_time=think
    )


def _prefix_workload(kind: str, rng: np.random.Generator, chunk: int) -> Workload:
    seed = int(rng.integers(0, 2**31))
    if kind == "multi_turn":
        return Workload.multi_turn(
            int(rng.integers(1, 6)),
            int(rng.integers(2, 5)),
            float(rng.uniform(0.05, 1.0)),
            user_len=int(rng.integers(1, 60)),
            answer_len=int(rng.integers(1, 30)),
            think_time=float(rng.uniform(0, 40)),
            system_prompt_tokens=int(rng.choice([0, 0, 8, 50])),
            seed=seed,
            hash_chunk_size=chunk,
        )
    n = int(rng.integers(2, 16))
    if kind == "identical_prompts":
        arrival = np.sort(rng.integers(0, 40, n)).astype(np.float64)
        length = int(rng.integers(1, 200))
        ids = tuple(range(-(-length // chunk)))
        lengths = np.full(n, length)
        outputs = rng.integers(1, 40, n)
        return Workload.from_arrays(arrival, lengths, outputs, [ids] * n, hash_chunk_size=chunk)
    pressure = kind == "prefix_pressure"  # more prompts, more prefixes: some get evicted
    return Workload.shared_prefix(
        float(rng.uniform(0.1, 2.0)),
        int(rng.integers(8, 25)) if pressure else n,
        prompt_len=int(rng.integers(1, 120)),
        output_len=int(rng.integers(1, 40)),
        prefix_tokens=int(rng.integers(50, 300) if pressure else rng.integers(1, 200)),
        fraction=float(rng.choice([1.0, 0.8, 0.5])),
        num_prefixes=int(rng.integers(2, 6) if pressure else rng.integers(1, 3)),
        seed=seed,
        hash_chunk_size=chunk,
    )


def _prefix_case(kind: str, rng: np.random.Generator) -> tuple[ServingConfig, Workload]:
    """A case whose prompts share prefixes, with prefix caching on."""
    block_size = int(rng.choice([4, 16, 32]))
    chunk = int(rng.choice([1, 3, 16, 40])) if kind == "prefix_blocks" else 16
    workload = _prefix_workload(kind, rng, chunk)
    if kind == "closed_prefix":
        workload = workload.at_concurrency(int(rng.integers(1, 7)))
    longest = int((workload.prompt_tokens + workload.output_tokens).max())
    max_model_len = max(_MAX_MODEL_LEN, longest)
    min_blocks = -(-max_model_len // block_size) + 1
    kv: int | None
    if kind == "prefix_pressure":
        kv = int(rng.integers(min_blocks, int(min_blocks * 1.6) + 1))
    else:
        kv = None if rng.random() < 0.4 else int(rng.integers(min_blocks, min_blocks * 4))
    seqs = int(rng.integers(1, 17))
    config = ServingConfig(
        max_num_batched_tokens=int(rng.integers(max(seqs, 8), 600)),
        max_num_seqs=seqs,
        long_prefill_token_threshold=int(rng.choice([0, 0, 1, 8, 32, 100])),
        num_kv_blocks=kv,
        block_size=block_size,
        max_model_len=max_model_len,
        enable_prefix_caching=True,
    )
    return config, workload


def cases(n: int, seed: int = 0) -> list[FidelityCase]:
    """``n`` cases cycling through every kind, reproducible from ``seed``."""
    return [random_case(CASE_KINDS[i % len(CASE_KINDS)], seed * 1_000_003 + i) for i in range(n)]


def schedule_differences(a: Measurement, b: Measurement) -> list[str]:
    """How two measurements' schedules differ (empty when they agree token for token)."""
    out: list[str] = []
    names = (
        "arrival",  # closed loop: when each request was actually sent
        "step_tokens",
        "step_prefill_tokens",
        "first_token_step",
        "finish_step",
        "preemptions_per_request",
        "cached_tokens",
    )
    for name in names:
        x, y = getattr(a, name), getattr(b, name)
        if name == "cached_tokens" and (x is None or y is None):
            continue  # compared where both backends see the prefix cache
        if x is None or y is None:
            out.append(f"{name}: missing in {a.source if x is None else b.source}")
            continue
        if len(x) != len(y):
            out.append(f"{name}: {len(x)} entries vs {len(y)}")
            first = next((i for i in range(min(len(x), len(y))) if x[i] != y[i]), None)
            if first is not None:
                out[-1] += f"; first difference at [{first}]: {x[first]} vs {y[first]}"
            continue
        diff = np.flatnonzero(np.asarray(x) != np.asarray(y))
        if len(diff):
            i = int(diff[0])
            out.append(
                f"{name}: {len(diff)} differ; first at [{i}]: {x[i]} ({a.source}) vs "
                f"{y[i]} ({b.source})"
            )
    return out


@dataclass
class FidelityReport:
    """Agreement of a candidate backend with a reference over many cases."""

    results: list[tuple[FidelityCase, list[str]]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def disagreements(self) -> list[tuple[FidelityCase, list[str]]]:
        return [(c, d) for c, d in self.results if d]

    @property
    def agreed(self) -> int:
        return self.total - len(self.disagreements)

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """Kind -> (agreed, total)."""
        out: dict[str, tuple[int, int]] = {}
        for c, d in self.results:
            ok, tot = out.get(c.kind, (0, 0))
            out[c.kind] = (ok + (not d), tot + 1)
        return out


def run_fidelity(
    reference: Backend,
    candidate: Backend,
    case_list: Sequence[FidelityCase],
    on_case: Callable[[FidelityCase, list[str]], None] | None = None,
) -> FidelityReport:
    """Run every case through both backends and compare their schedules."""
    report = FidelityReport()
    for case in case_list:
        ref = reference.evaluate(case.config, case.workload)
        got = candidate.evaluate(case.config, case.workload)
        diffs = schedule_differences(got, ref)
        report.results.append((case, diffs))
        if on_case is not None:
            on_case(case, diffs)
    return report
