"""Prefix caching: workloads with hash ids, their prompts, traces and the simulator's cache.

Exactness against vLLM's own scheduler is in tests/test_fidelity.py (the prefix case kinds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tuner import Request, SearchSpace, ServingConfig, Workload, WorkloadError
from tuner.backends import CostModel, SimulatorBackend
from tuner.backends._timeline import Timeline
from tuner.backends.simulator._engine import Engine
from tuner.backends.simulator._prefix_engine import PrefixEngine
from tuner.fidelity import CACHE_CASE_KINDS, cases, schedule_differences
from tuner.objectives import metric_value
from tuner.studies._run import build_workload
from tuner.studies._workload_spec import WorkloadSpec
from tuner.tuning import fingerprint

CFG = ServingConfig(max_num_batched_tokens=256, max_num_seqs=8, max_model_len=1024, block_size=16)


def same_prompts(n: int, length: int, gap: float = 10.0) -> Workload:
    ids = tuple(range(-(-length // 16)))
    return Workload(
        [
            Request(arrival=i * gap, prompt_tokens=length, output_tokens=4, hash_ids=ids)
            for i in range(n)
        ]
    )


# --- prompts -------------------------------------------------------------------------------------
def test_equal_hash_ids_give_equal_tokens_and_partial_chunks_differ() -> None:
    w = Workload(
        [
            Request(arrival=0, prompt_tokens=40, output_tokens=1, hash_ids=(1, 2, 3)),
            Request(arrival=0, prompt_tokens=36, output_tokens=1, hash_ids=(1, 2, 3)),
            Request(arrival=0, prompt_tokens=40, output_tokens=1, hash_ids=(1, 9, 3)),
        ]
    )
    a, b, c = (w.prompt_token_ids(i) for i in range(3))
    assert len(a) == 40 and len(b) == 36
    assert a[:32] == b[:32] and a[32:36] != b[32:]  # chunk 3 is 8 tokens in a, 4 in b
    assert a[:16] == c[:16] and a[16:32] != c[16:32]
    assert all(4 <= t < 32000 for t in a)
    assert w.prompt_token_ids(0) == a  # deterministic
    small = w.prompt_token_ids(0, vocab_size=2048)  # a small model's vocabulary: same sharing
    assert (
        all(4 <= t < 2048 for t in small)
        and small[:32] == w.prompt_token_ids(1, vocab_size=2048)[:32]
    )


def test_prompts_without_hash_ids_share_nothing() -> None:
    w = Workload.from_arrays([0, 0], [64, 64], [1, 1])
    assert w.hash_ids is None and not w.shares_prefixes
    assert w.prompt_token_ids(0)[:16] != w.prompt_token_ids(1)[:16]
    short = Workload([Request(arrival=0, prompt_tokens=40, output_tokens=1, hash_ids=(5,))])
    assert len(short.prompt_token_ids(0)) == 40  # too few ids: the rest is its own


def test_hash_ids_survive_views_and_make_a_different_workload() -> None:
    w = Workload.shared_prefix(1.0, 6, prompt_len=20, output_len=4, prefix_tokens=48, seed=3)
    assert w.shares_prefixes and w.hash_ids is not None
    assert w.head(0.5).hash_ids == tuple(w.hash_ids[i] for i in sorted(w.schedule_order[:3]))
    assert w[1:3].hash_ids == w.hash_ids[1:3]
    assert [r.hash_ids for r in w] == list(w.hash_ids)
    plain = Workload.from_arrays(w.arrival, w.prompt_tokens, w.output_tokens)
    assert plain != w
    space = SearchSpace({"max_num_seqs": [4]})
    assert fingerprint(plain, space, "o", [], "b") != fingerprint(w, space, "o", [], "b")


def test_bad_hash_ids_are_named() -> None:
    with pytest.raises(WorkloadError, match="hash_ids"):
        Request(arrival=0, prompt_tokens=4, output_tokens=1, hash_ids=(1, -2))
    with pytest.raises(WorkloadError, match="hash_chunk_size"):
        Workload([Request(arrival=0, prompt_tokens=4, output_tokens=1)], hash_chunk_size=0)


# --- traces ------------------------------------------------------------------------------------
def test_traces_keep_hash_ids(tmp_path: Path) -> None:
    w = Workload.multi_turn(3, 3, 0.5, user_len=30, answer_len=10, think_time=4)
    w.to_jsonl(tmp_path / "w.jsonl")
    w.to_csv(tmp_path / "w.csv")
    assert Workload.from_jsonl(tmp_path / "w.jsonl") == w
    assert Workload.from_csv(tmp_path / "w.csv") == w


def test_a_mooncake_trace_reads_with_milliseconds_and_512_token_chunks(tmp_path: Path) -> None:
    p = tmp_path / "mooncake.jsonl"
    p.write_text(
        '{"timestamp": 0, "input_length": 700, "output_length": 10, "hash_ids": [0, 1]}\n'
        '{"timestamp": 1500, "input_length": 600, "output_length": 5, "hash_ids": [0, 2]}\n'
    )
    with pytest.warns(UserWarning, match="time_unit='ms'"):
        Workload.from_jsonl(p)
    w = Workload.from_jsonl(p, time_unit="ms", hash_chunk_size=512)
    assert w.arrival.tolist() == [0.0, 1.5]
    assert w.hash_chunk_size == 512 and w.shares_prefixes
    assert w.prompt_token_ids(0)[:512] == w.prompt_token_ids(1)[:512]
    with pytest.raises(WorkloadError, match="time_unit='h'"):
        Workload.from_jsonl(p, time_unit="h")  # type: ignore[arg-type]


def test_study_workloads_take_trace_options_and_prefix_generators(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"timestamp": 2000, "input_length": 30, "output_length": 2, "hash_ids": [4]}\n')
    spec = WorkloadSpec(trace={"path": "t.jsonl", "time_unit": "ms", "hash_chunk_size": 32})
    w = build_workload(spec, tmp_path)
    assert w.arrival.tolist() == [2.0] and w.hash_chunk_size == 32
    assert build_workload(WorkloadSpec(trace="t.jsonl"), tmp_path).arrival.tolist() == [2000.0]
    mt = build_workload(
        WorkloadSpec(multi_turn={"conversations": 2, "turns": 3, "rate": 1, "user_len": 20}),
        tmp_path,
    )
    assert len(mt) == 6 and mt.shares_prefixes
    sp = build_workload(
        WorkloadSpec(
            poisson={"rate": 1, "requests": 5, "prompt_len": 10, "output_len": 2},
            shared_prefix={"tokens": 64},
        ),
        tmp_path,
    )
    assert sp.prompt_tokens.tolist() == [74] * 5 and sp.shares_prefixes


# --- the simulator's cache ---------------------------------------------------------------------
def test_a_repeated_prompt_hits_every_full_block_but_the_last_token() -> None:
    for length in (64, 70):
        m = SimulatorBackend().evaluate(CFG, same_prompts(3, length))
        hit = (length - 1) // 16 * 16
        assert m.cached_tokens.tolist() == [0, hit, hit]
        assert m.step_prefill_tokens.tolist()[:1] == [length]
        assert metric_value(m, "prefix_cache_hit_rate") == pytest.approx(2 * hit / (3 * length))
        assert metric_value(m, "prefix_cache_hit_requests") == pytest.approx(2 / 3)


def test_caching_off_or_distinct_prompts_hit_nothing() -> None:
    w = same_prompts(3, 64)
    off = SimulatorBackend().evaluate(CFG.replace(enable_prefix_caching=False), w)
    assert off.cached_tokens.tolist() == [0, 0, 0]
    distinct = Workload.from_arrays(w.arrival, w.prompt_tokens, w.output_tokens)
    plain = SimulatorBackend().evaluate(CFG, distinct)
    assert schedule_differences(plain, off) == []
    assert plain.cached_tokens.sum() == 0


def test_a_shared_system_prompt_cuts_prefill_and_ttft() -> None:
    w = Workload.shared_prefix(0.5, 20, prompt_len=50, output_len=10, prefix_tokens=400, seed=1)
    on = SimulatorBackend().evaluate(CFG, w)
    off = SimulatorBackend().evaluate(CFG.replace(enable_prefix_caching=False), w)
    assert on.step_prefill_tokens.sum() < off.step_prefill_tokens.sum()
    assert metric_value(on, "ttft_steps.mean") <= metric_value(off, "ttft_steps.mean")
    assert metric_value(on, "prefix_cache_hit_rate") > 0.5


def test_both_engines_agree_on_prefix_workloads() -> None:
    for c in [c for c in cases(60, seed=5) if c.kind in CACHE_CASE_KINDS]:
        fast = SimulatorBackend().evaluate(c.config, c.workload)
        slow = SimulatorBackend(fast_forward=False).evaluate(c.config, c.workload)
        assert schedule_differences(fast, slow) == [], c.describe()


def test_the_block_engine_equals_the_count_engine_when_nothing_can_hit() -> None:
    rng = np.random.default_rng(0)
    n = 40
    w = Workload.from_arrays(
        np.sort(rng.uniform(0, 100, n)), rng.integers(1, 300, n), rng.integers(1, 60, n)
    )
    cfg = CFG.replace(num_kv_blocks=400, max_model_len=512)
    a, b = (Timeline(w, CostModel(), "x") for _ in range(2))
    Engine(cfg, w, a).run()
    PrefixEngine(cfg, w, b).run()
    assert not a.any_preempted
    assert schedule_differences(a.build(), b.build()) == []


def test_prefix_caching_is_a_vllm_flag() -> None:
    assert "--enable-prefix-caching" in ServingConfig().to_vllm_args()
    assert "--no-enable-prefix-caching" in CFG.replace(enable_prefix_caching=False).to_vllm_args()
