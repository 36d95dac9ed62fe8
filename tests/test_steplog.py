"""The parser of vLLM's iteration-details log, on lines captured from a real vLLM 0.32 server."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuner.backends.live._steplog import parse_step_line, parse_step_log, step_times

# Captured from `vllm serve` (vLLM 0.32.0, CPU, tiny Llama) run by VLLMServerBackend, whose
# logging config prefixes each line with the Unix time it was logged.
CAPTURED = """\
1795419668.468499 INFO 15450 [loggers.py:199] Engine 000: Iteration(0): 1 context requests, 16 context tokens, 0 generation requests, 0 generation tokens, iteration elapsed time: 47.73 ms, CPU KV cache usage: 0.0%
1795419668.639930 INFO 15450 [loggers.py:199] Engine 000: Iteration(4): 1 context requests, 64 context tokens, 0 generation requests, 0 generation tokens, iteration elapsed time: 20.32 ms, CPU KV cache usage: 0.0%
1795419668.693592 INFO 15450 [loggers.py:199] Engine 000: Iteration(12): 1 context requests, 64 context tokens, 1 generation requests, 1 generation tokens, iteration elapsed time: 9.82 ms, CPU KV cache usage: 0.0%
1795419668.737837 INFO 15450 [loggers.py:199] Engine 000: Iteration(19): 0 context requests, 0 context tokens, 2 generation requests, 2 generation tokens, iteration elapsed time: 3.61 ms, CPU KV cache usage: 0.0%
1795419668.743751 INFO 15450 [loggers.py:199] Engine 000: Iteration(20): 0 context requests, 0 context tokens, 1 generation requests, 1 generation tokens, iteration elapsed time: 2.90 ms, CPU KV cache usage: 0.0%
1795419668.749716 INFO 15450 [loggers.py:199] Engine 000: Iteration(21): 0 context requests, 0 context tokens, 1 generation requests, 1 generation tokens, iteration elapsed time: 4.04 ms, CPU KV cache usage: 0.0%
1795419668.837714 INFO 15450 [loggers.py:199] Engine 000: Iteration(31): 1 context requests, 64 context tokens, 2 generation requests, 2 generation tokens, iteration elapsed time: 9.68 ms, CPU KV cache usage: 0.0%
"""  # noqa: E501 - real log lines, verbatim
# Captured from a `vllm serve` with vLLM's own default log format (no sub-second log time); the
# budget is 256 tokens, so a step mixes prefill chunks of two prompts with a decode.
DEFAULT_FORMAT = (
    "(APIServer pid=20883) INFO 11-23 07:59:42 [loggers.py:199] Engine 000: Iteration(4076): "
    "2 context requests, 255 context tokens, 1 generation requests, 1 generation tokens, "
    "iteration elapsed time: 32.30 ms, CPU KV cache usage: 0.0%"
)


def test_a_captured_line_gives_tokens_requests_elapsed_time_and_log_time() -> None:
    line = CAPTURED.splitlines()[6]
    r = parse_step_line(line)
    assert r is not None
    assert (r.index, r.engine) == (31, 0)
    assert (r.context_requests, r.context_tokens) == (1, 64)
    assert (r.generation_requests, r.generation_tokens) == (2, 2)
    assert (r.tokens, r.seqs) == (66, 3)
    assert r.elapsed == pytest.approx(0.00968)
    assert r.logged_at == pytest.approx(1795419668.837714)
    assert r.kv_cache_usage == 0.0


def test_vllms_default_format_parses_without_a_log_time() -> None:
    r = parse_step_line(DEFAULT_FORMAT)
    assert r is not None
    assert (r.tokens, r.seqs, r.index) == (256, 3, 4076)
    assert r.elapsed == pytest.approx(0.0323)
    assert r.logged_at is None
    assert r.kv_cache_usage == 0.0
    assert not parse_step_log([DEFAULT_FORMAT]).has_times


def test_colored_lines_and_other_engines_parse() -> None:
    colored = "\x1b[32mINFO\x1b[0m " + DEFAULT_FORMAT.replace("Engine 000", "Engine 002")
    r = parse_step_line(colored)
    assert r is not None and r.engine == 2 and r.tokens == 256


def test_other_lines_dummy_and_empty_steps_are_not_steps() -> None:
    assert parse_step_line("1795419668.4 INFO 1 [entry.py:140] Starting vLLM server") is None
    dummy = DEFAULT_FORMAT.replace(
        "2 context requests, 255 context tokens, 1 generation requests, 1 generation tokens, "
        "iteration elapsed time: 32.30 ms",
        "0 context requests, 0 context tokens, 0 generation requests, 0 generation tokens, "
        "iteration elapsed time: 0.00 ms (dummy)",
    )
    assert "(dummy)" in dummy
    assert parse_step_line(dummy) is None
    empty = DEFAULT_FORMAT.replace("2 context requests, 255", "0 context requests, 0").replace(
        "1 generation requests, 1", "0 generation requests, 0"
    )
    assert parse_step_line(empty) is None


def test_a_stretch_of_log_gives_per_step_arrays_in_log_order() -> None:
    lines = ["1795419668.0 INFO 1 [api_server.py:1] something else", *CAPTURED.splitlines()]
    log = parse_step_log(lines)
    assert len(log) == 7
    assert log.tokens.tolist() == [16, 64, 65, 2, 1, 1, 66]
    assert log.seqs.tolist() == [1, 1, 2, 2, 1, 1, 3]
    assert log.prefill_tokens.tolist() == [16, 64, 64, 0, 0, 0, 64]
    assert log.total_tokens == 215
    assert log.engines == (0,)
    assert log.has_times
    # gaps in the iteration counter: 0 -> 4 -> 12 -> 19, 20, 21 -> 31
    assert log.missing == 3 + 7 + 6 + 9


def test_step_times_put_steps_end_to_end_on_the_logged_times() -> None:
    log = parse_step_log(CAPTURED.splitlines())
    origin = 1795419668.0
    start, end = log.times(origin)
    assert np.allclose(end - start, log.elapsed)
    assert np.all(np.diff(start) > 0)
    assert np.all(start[1:] >= end[:-1] - 1e-9)  # no overlap
    logged = np.array([s.logged_at for s in log.steps]) - origin
    assert np.all(end <= logged + 1e-9)  # a step ends before it is logged
    assert end[-1] == pytest.approx(logged[-1])


def test_step_times_pull_back_a_step_logged_late() -> None:
    # Logged in one burst at 10.0 (the API server was busy): the steps still line up one after
    # another, the last ending when it was logged.
    start, end = step_times([10.0, 10.0, 10.0], [0.1, 0.2, 0.3])
    assert start.tolist() == pytest.approx([9.4, 9.5, 9.7])
    assert end.tolist() == pytest.approx([9.5, 9.7, 10.0])


def test_times_need_a_log_time_on_every_line() -> None:
    with pytest.raises(ValueError, match="logged"):
        parse_step_log([DEFAULT_FORMAT]).times()
    with pytest.raises(ValueError, match="equal length"):
        step_times([1.0, 2.0], [0.1])


@given(
    st.lists(
        st.tuples(st.floats(0, 5, allow_nan=False), st.floats(1e-4, 0.5, allow_nan=False)),
        min_size=1,
        max_size=40,
    )
)
def test_step_times_never_overlap_and_never_end_after_their_log_time(
    rows: list[tuple[float, float]],
) -> None:
    logged = np.cumsum([r[0] for r in rows])  # logged times never go back
    elapsed = np.array([r[1] for r in rows])
    start, end = step_times(logged, elapsed)
    assert np.allclose(end - start, elapsed)
    assert np.all(end <= logged + 1e-9)
    assert np.all(start[1:] >= end[:-1] - 1e-9)
    assert np.all(np.diff(start) > 0)
