"""Trace files: vllm bench serve's ``timed_trace`` JSONL and the CSV form."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner import Workload, WorkloadError
from tuner.core._arrivals import Uniform

from .strategies import workloads

HEADER = "arrival,prompt_tokens,output_tokens\n"
tmp_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

arrivals = st.floats(0, 1e12, allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, 5e-324, 1e-300, 0.1, 1 / 3, 2**53 + 0.0, 1e15 + 0.3]
)


@st.composite
def awkward_workloads(draw: st.DrawFn, max_tokens: int = 10_000_000) -> Workload:
    n = draw(st.integers(1, 20))
    tokens = st.integers(1, max_tokens)
    return Workload.from_arrays(
        draw(st.lists(arrivals, min_size=n, max_size=n)),
        draw(st.lists(tokens, min_size=n, max_size=n)),
        draw(st.lists(tokens, min_size=n, max_size=n)),
    )


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*mean gap between arrivals")
@tmp_ok
@given(w=workloads() | awkward_workloads(max_tokens=20_000))  # hash_ids grow with the prompt
def test_jsonl_round_trip_is_exact(tmp_path: Path, w: Workload) -> None:
    p = tmp_path / "w.jsonl"
    w.to_jsonl(p)
    back = Workload.from_jsonl(p)
    assert back.arrival.tobytes() == w.arrival.tobytes()
    assert back.prompt_tokens.tolist() == w.prompt_tokens.tolist()
    assert back.output_tokens.tolist() == w.output_tokens.tolist()
    # The ids written for prompts without any are fresh: the prompts still share nothing.
    assert not back.shares_prefixes
    assert Workload.from_jsonl(p) == back  # and a workload with hash ids round-trips exactly
    back.to_jsonl(p)
    assert Workload.from_jsonl(p) == back


@pytest.mark.filterwarnings("ignore:.*mean gap between arrivals")
@tmp_ok
@given(w=workloads() | awkward_workloads())
def test_csv_round_trip_is_exact(tmp_path: Path, w: Workload) -> None:
    p = tmp_path / "w.csv"
    w.to_csv(p)
    back = Workload.from_csv(p)
    assert back == w
    assert back.arrival.tobytes() == w.arrival.tobytes()


def test_round_trip_keeps_file_order_for_unsorted_arrivals(tmp_path: Path) -> None:
    w = Workload.from_arrays([3.0, 0.5, 2.0], [10, 20, 30], [1, 2, 3])
    w.to_jsonl(tmp_path / "w.jsonl")
    w.to_csv(tmp_path / "w.csv")
    for back in (Workload.from_jsonl(tmp_path / "w.jsonl"), Workload.from_csv(tmp_path / "w.csv")):
        assert back.prompt_tokens.tolist() == [10, 20, 30]
        assert back.schedule_order.tolist() == [1, 2, 0]


# --- the JSONL vllm bench reads -------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [16, 1, 7, 512])
def test_jsonl_hash_ids_cover_every_prompt_token_and_never_repeat(
    tmp_path: Path, chunk_size: int
) -> None:
    w = Workload.poisson(5.0, 200, Uniform(300, 0.95), 8, seed=1)
    p = tmp_path / "w.jsonl"
    w.to_jsonl(p, chunk_size=chunk_size)
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert {tuple(r) for r in rows} == {("timestamp", "input_length", "output_length", "hash_ids")}
    seen: list[int] = []
    for r, n in zip(rows, w.prompt_tokens.tolist(), strict=True):
        assert len(r["hash_ids"]) == math.ceil(n / chunk_size)
        seen += r["hash_ids"]
    assert len(seen) == len(set(seen))  # distinct ids: no request shares a prefix block


def test_jsonl_reader_keeps_hash_ids_and_ignores_other_keys(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(
        '{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [1]}\n'
        '{"input_length": 7, "output_length": 3, "timestamp": 2.5, "session": "x"}'
    )  # no final newline, an integer timestamp, keys in any order, a line without hash ids
    w = Workload.from_jsonl(p)
    assert w.arrival.tolist() == [0.0, 2.5]
    assert w.prompt_tokens.tolist() == [100, 7]
    assert w.output_tokens.tolist() == [5, 3]
    assert w.hash_ids == ((1,), ())


def test_jsonl_reader_names_the_line_of_bad_hash_ids(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(
        '{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [1]}\n'
        '{"timestamp": 1, "input_length": 10, "output_length": 5, "hash_ids": 4}\n'
    )
    with pytest.raises(WorkloadError, match=r"t\.jsonl:2: field 'hash_ids' = 4: must be a list"):
        Workload.from_jsonl(p)


def test_jsonl_reader_takes_vllm_label_and_multiplier_options(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"ts_ms": 1500, "in": 64, "out": 4}\n{"ts_ms": 2250, "in": 8, "out": 2}\n')
    w = Workload.from_jsonl(
        p,
        sec_multiplier=0.001,
        label_timestamp="ts_ms",
        label_input_length="in",
        label_output_length="out",
    )
    assert w.arrival.tolist() == [1500 * 0.001, 2250 * 0.001]  # vLLM: float(ts) * multiplier
    assert w.prompt_tokens.tolist() == [64, 8]
    with pytest.raises(WorkloadError, match=r"sec_multiplier=0\): must be a finite number > 0"):
        Workload.from_jsonl(p, sec_multiplier=0)


# --- malformed input ------------------------------------------------------------------------

GOOD = '{"timestamp": 0.5, "input_length": 10, "output_length": 2}'
TAIL = '"input_length": 9, "output_length": 2}'


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ('{"timestamp": 0.5, "input_length": 10', r"not valid JSON: .*\(column \d+\)"),
        ("[0.5, 10, 2]", r"expected a JSON object, got list"),
        ("", r"blank line"),
        ('{"timestamp": 1, "output_length": 2}', r"missing field 'input_length'"),
        ('{"input_length": 1, "output_length": 2}', r"missing field 'timestamp'"),
        ('{"timestamp": 1, "input_length": 9}', r"missing field 'output_length'"),
        ('{"timestamp": "1", ' + TAIL, r"'timestamp' = '1'"),
        ('{"timestamp": true, ' + TAIL, r"'timestamp' = True"),
        ('{"timestamp": null, ' + TAIL, r"'timestamp' = None"),
        ('{"timestamp": -0.1, ' + TAIL, r"'timestamp' = -0.1: .*>= 0"),
        ('{"timestamp": NaN, ' + TAIL, r"'timestamp' = nan: must be"),
        ('{"timestamp": Infinity, ' + TAIL, r"'timestamp' = inf"),
        ('{"timestamp": 1e400, ' + TAIL, r"'timestamp' = inf"),
        ('{"timestamp": 1, "input_length": 0, "output_length": 2}', r"'input_length' = 0: .*\[1, "),
        ('{"timestamp": 1, "input_length": -5, "output_length": 2}', r"'input_length' = -5"),
        ('{"timestamp": 1, "input_length": 9.0, "output_length": 2}', r"'input_length' = 9\.0"),
        ('{"timestamp": 1, "input_length": "9", "output_length": 2}', r"'input_length' = '9'"),
        ('{"timestamp": 1, "input_length": 9, "output_length": 0}', r"'output_length' = 0"),
        ('{"timestamp": 1, "input_length": 9, "output_length": false}', r"'output_length' = Fal"),
        ('{"timestamp": 1, "input_length": 99999999, "output_length": 2}', r"'input_length' = 9"),
    ],
)
def test_malformed_jsonl_line_names_file_line_and_field(
    tmp_path: Path, bad: str, pattern: str
) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(f"{GOOD}\n{GOOD}\n{bad}\n{GOOD}\n")
    with pytest.raises(WorkloadError, match=rf"^{re.escape(str(p))}:3: .*{pattern}"):
        Workload.from_jsonl(p)


@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        ("0.5,10", r"expected 3 fields arrival,prompt_tokens,output_tokens, got 2"),
        ("0.5,10,2,7", r"expected 3 fields .* got 4"),
        (",10,2", r"field 'arrival' = '': must be a number"),
        ("abc,10,2", r"field 'arrival' = 'abc': must be a number"),
        ("-1,10,2", r"field 'arrival' = -1\.0: must be finite and >= 0"),
        ("nan,10,2", r"field 'arrival' = nan: must be finite"),
        ("inf,10,2", r"field 'arrival' = inf: must be finite"),
        ("0.5,10.0,2", r"field 'prompt_tokens' = '10\.0': must be an integer in \[1, 10000000\]"),
        ("0.5,0,2", r"field 'prompt_tokens' = 0: must be an integer"),
        ("0.5,10,-2", r"field 'output_tokens' = -2: must be an integer"),
        ("0.5,10,x", r"field 'output_tokens' = 'x'"),
        ("", r"blank line"),
    ],
)
def test_malformed_csv_row_names_file_line_and_field(
    tmp_path: Path, bad: str, pattern: str
) -> None:
    p = tmp_path / "t.csv"
    p.write_text(f"{HEADER}0.5,10,2\n{bad}\n0.5,10,2\n")
    with pytest.raises(WorkloadError, match=rf"^{re.escape(str(p))}:3: {pattern}"):
        Workload.from_csv(p)


@pytest.mark.parametrize(
    "header", ["arrival,prompt,output", "prompt_tokens,arrival,output_tokens", "0.5,10,2"]
)
def test_csv_with_a_wrong_header_is_an_error(tmp_path: Path, header: str) -> None:
    p = tmp_path / "t.csv"
    p.write_text(f"{header}\n0.5,10,2\n")
    at = re.escape(str(p))
    with pytest.raises(WorkloadError, match=rf"^{at}:1: field 'header' = '{header}': must be"):
        Workload.from_csv(p)


def test_csv_accepts_crlf_spaces_and_a_byte_order_mark(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes(b"\xef\xbb\xbfarrival, prompt_tokens, output_tokens\r\n 0.5, 10, 2\r\n")
    assert Workload.from_csv(p)[0].prompt_tokens == 10


@pytest.mark.parametrize(
    ("name", "text", "read"),
    [
        ("e.jsonl", "", Workload.from_jsonl),
        ("e.csv", "", Workload.from_csv),
        ("h.csv", HEADER, Workload.from_csv),
    ],
)
def test_empty_trace_is_an_error(tmp_path: Path, name: str, text: str, read: Any) -> None:
    p = tmp_path / name
    p.write_text(text)
    at = re.escape(str(p))
    with pytest.raises(WorkloadError, match=rf"^{at}: empty trace file, needs at least one"):
        read(p)


def test_missing_file_is_a_workload_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"nope\.jsonl: cannot read trace file"):
        Workload.from_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(WorkloadError, match=r"nope\.csv: cannot read trace file"):
        Workload.from_csv(str(tmp_path / "nope.csv"))


def test_to_jsonl_rejects_a_bad_chunk_size(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"chunk_size=0\): must be an integer >= 1"):
        Workload.from_arrays([0.0], [5], [1]).to_jsonl(tmp_path / "w.jsonl", chunk_size=0)


# --- against vLLM's own reader (runs where vLLM is installed) -------------------------------


class _FakeTokenizer:
    all_special_ids = (0,)

    def get_vocab(self) -> dict[str, int]:
        return {f"t{i}": i for i in range(1000)}


@pytest.mark.vllm
def test_vllm_timed_trace_replays_our_jsonl_exactly(tmp_path: Path) -> None:
    from vllm.benchmarks.datasets.datasets import TimedTrace

    w = Workload.poisson(3.0, 60, Uniform(200, 0.9), Uniform(20, 0.5), seed=4)
    p = tmp_path / "w.jsonl"
    w.to_jsonl(p)
    labels = {
        f"timed_trace_label_{k}": v
        for k, v in [
            ("timestamp", "timestamp"),
            ("input_length", "input_length"),
            ("output_length", "output_length"),
            ("hash_ids", "hash_ids"),
        ]
    }
    samples = TimedTrace(dataset_path=str(p), random_seed=0, **labels).sample(
        tokenizer=_FakeTokenizer(), num_requests=len(w)
    )
    assert [s.timestamp for s in samples] == w.arrival.tolist()
    assert [s.prompt_len for s in samples] == w.prompt_tokens.tolist()
    assert [s.expected_output_len for s in samples] == w.output_tokens.tolist()
    first_blocks = {tuple(s.prompt[:16]) for s in samples}
    assert len(first_blocks) == len(w)  # no two prompts share a first block: no prefix hits


@pytest.mark.vllm
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 50),
    mean=st.integers(1, 5000),
    ratio=st.floats(0, 0.99),
    seed=st.integers(0, 2**32),
)
def test_uniform_matches_vllm_get_sampling_params(
    n: int, mean: int, ratio: float, seed: int
) -> None:
    from vllm.benchmarks.datasets.utils import get_sampling_params

    class Tok:
        vocab_size = 1000

        def num_special_tokens_to_add(self) -> int:
            return 0

    prompt_mean = max(mean, 1 + int(1 / (1 - ratio)))  # vLLM refuses a prompt bound below 1
    rng = np.random.default_rng(seed)
    ins, outs, _ = get_sampling_params(rng, n, ratio, prompt_mean, mean, Tok())
    w = Workload.poisson(1.0, n, Uniform(prompt_mean, ratio), Uniform(mean, ratio), seed=seed)
    assert w.prompt_tokens.tolist() == ins.tolist()
    assert w.output_tokens.tolist() == outs.tolist()
