"""Adversarial input: each probe that once slipped through (or crashed) pinned to a named error.

Every test asserts the exact error class and that the message names the field (or file:line)
and the value given.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest

from tuner import (
    SLO,
    ConfigError,
    Request,
    SearchSpace,
    ServingConfig,
    SLOError,
    Trial,
    Workload,
    WorkloadError,
)
from tuner.core._space import MAX_CONFIGS
from tuner.core._trial import TrialStatus
from tuner.objectives import MetricRef, parse_slos
from tuner.objectives._metrics import DISTRIBUTIONS, SCALARS

# --- probe 4: a bool is not an integer; a fraction is not a token count -----------------------


def test_serving_config_refuses_a_bool_for_an_integer_knob() -> None:
    with pytest.raises(
        ConfigError, match=(r"ServingConfig\.max_num_seqs = True: must be an integer, not a bool")
    ):
        ServingConfig(max_num_seqs=True)


def test_request_refuses_a_bool_for_a_token_count() -> None:
    with pytest.raises(
        WorkloadError, match=(r"Request\.prompt_tokens = True: must be an integer, not a bool")
    ):
        Request(arrival=0, prompt_tokens=True, output_tokens=1)


def test_request_refuses_a_bool_for_its_arrival() -> None:
    with pytest.raises(
        WorkloadError, match=(r"Request\.arrival = False: must be a number, not a bool")
    ):
        Request(arrival=False, prompt_tokens=1, output_tokens=1)


def test_a_nested_config_refuses_a_bool_too() -> None:
    with pytest.raises(
        ConfigError, match=(r"Trial\.config\.max_num_seqs = True: must be an integer, not a bool")
    ):
        Trial(number=0, config={"max_num_seqs": True}, status=TrialStatus.FAILED, error="x")


def test_from_arrays_refuses_bool_arrays() -> None:
    with pytest.raises(
        WorkloadError,
        match=(r"requests\[0\]\.prompt_tokens = True: must be an integer, not a bool"),
    ):
        Workload.from_arrays([0.0, 1.0], [True, False], [1, 1])


def test_from_arrays_refuses_a_bool_among_integers_in_a_list() -> None:
    with pytest.raises(
        WorkloadError,
        match=(r"requests\[1\]\.output_tokens = True: must be an integer, not a bool"),
    ):
        Workload.from_arrays([0.0, 1.0], [4, 4], [1, True])


def test_from_arrays_refuses_a_bool_arrival_array() -> None:
    with pytest.raises(
        WorkloadError, match=(r"requests\[0\]\.arrival = True: must be a number, not a bool")
    ):
        Workload.from_arrays([True], [4], [1])


def test_a_fractional_float_is_refused_for_an_integer_knob() -> None:
    with pytest.raises(ConfigError, match=r"ServingConfig\.max_num_seqs = 8\.5: .*fractional part"):
        ServingConfig(max_num_seqs=8.5)


def test_a_whole_float_is_taken_as_its_integer() -> None:
    cfg = ServingConfig(max_num_seqs=8.0)
    assert cfg.max_num_seqs == 8 and type(cfg.max_num_seqs) is int


def test_from_arrays_refuses_a_fractional_token_count() -> None:
    with pytest.raises(
        WorkloadError, match=(r"requests\[1\]\.prompt_tokens = 2\.5: .*fractional part")
    ):
        Workload.from_arrays([0.0, 1.0], [2.0, 2.5], [1, 1])


def test_head_refuses_a_bool_fraction() -> None:
    w = Workload.from_arrays([0.0, 1.0], [4, 4], [1, 1])
    with pytest.raises(WorkloadError, match=r"head\(fraction=True\): fraction must be in \(0, 1\]"):
        w.head(True)


# --- probe 5: values that repeat once converted ------------------------------------------------


def test_search_space_refuses_values_equal_after_conversion() -> None:
    with pytest.raises(
        ConfigError,
        match=(r"SearchSpace\['max_num_seqs'\] = \[8, 8\.0\]: values repeat once converted"),
    ):
        SearchSpace({"max_num_seqs": [8, 8.0]})


def test_search_space_refuses_true_and_1_for_a_bool_knob() -> None:
    with pytest.raises(
        ConfigError, match=(r"SearchSpace\['enable_chunked_prefill'\] = \[True, 1\]: values repeat")
    ):
        SearchSpace({"enable_chunked_prefill": [True, 1]})


def test_search_space_refuses_a_bool_for_an_integer_knob() -> None:
    with pytest.raises(
        ConfigError,
        match=(
            r"SearchSpace\['max_num_seqs'\]: value True is not allowed: "
            r"must be an integer, not a bool"
        ),
    ):
        SearchSpace({"max_num_seqs": [True, 1]})


def test_search_space_holds_the_converted_values() -> None:
    space = SearchSpace({"max_num_seqs": [4.0, 8]}, base=ServingConfig())
    assert space.dimensions == {"max_num_seqs": (4, 8)}
    assert [type(c.max_num_seqs) for c in space] == [int, int]


def test_search_space_checks_each_value_without_the_cross_field_rules() -> None:
    # 16 < max_num_seqs=128 alone, but 16 with max_num_seqs=8 is valid: judged per combination.
    space = SearchSpace(
        {"max_num_batched_tokens": [16, 256], "max_num_seqs": [8, 128]}, skip_invalid=True
    )
    assert len(space) == 3


# --- probe 6: a space too big to build ---------------------------------------------------------


def test_search_space_too_large_is_refused_before_it_is_built() -> None:
    dims = {
        "max_num_batched_tokens": list(range(1000, 1100)),
        "max_num_seqs": list(range(1, 101)),
        "block_size": list(range(1, 1001)),
    }
    with pytest.raises(ConfigError, match=r"(?s)10,000,000 configurations.*1,000,000.*TPESearch"):
        SearchSpace(dims)
    assert MAX_CONFIGS == 1_000_000


# --- probe 7: frozen models --------------------------------------------------------------------


def test_assigning_to_a_frozen_config_is_a_config_error_pointing_to_replace() -> None:
    cfg = ServingConfig()
    with pytest.raises(
        ConfigError,
        match=(r"ServingConfig\.max_num_seqs = 3: .*frozen.*\.replace\(max_num_seqs=\.\.\.\)"),
    ):
        cfg.max_num_seqs = 3  # type: ignore[misc]
    assert cfg.max_num_seqs == 128


def test_every_model_is_frozen_with_the_same_error() -> None:
    r = Request(arrival=0, prompt_tokens=4, output_tokens=1)
    with pytest.raises(
        ConfigError, match=(r"Request\.arrival = 2: .*frozen.*\.replace\(arrival=\.\.\.\)")
    ):
        r.arrival = 2  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"Request\.prompt_tokens: .*frozen"):
        del r.prompt_tokens
    with pytest.raises(
        ConfigError, match=(r"Request\.colour = 'red': .*frozen and has no such field")
    ):
        r.colour = "red"  # type: ignore[attr-defined]


def test_replace_gives_a_validated_copy_for_every_model() -> None:
    r = Request(arrival=0, prompt_tokens=4, output_tokens=1)
    assert r.replace(arrival=2.5) == Request(arrival=2.5, prompt_tokens=4, output_tokens=1)
    with pytest.raises(WorkloadError, match=r"Request\.prompt_tokens = 0"):
        r.replace(prompt_tokens=0)


# --- probe 8: from_arrays has Request's bounds and messages ------------------------------------


def test_from_arrays_names_a_string_element() -> None:
    with pytest.raises(WorkloadError, match=r"requests\[0\]\.arrival = 'a': .*valid number"):
        Workload.from_arrays(["a"], [1], [1])


def test_from_arrays_refuses_a_huge_float_length_without_a_numpy_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            WorkloadError,
            match=(r"requests\[0\]\.prompt_tokens = 1e\+20: .*less than or equal to 10000000"),
        ):
            Workload.from_arrays([0.0], [1e20], [1])


def test_from_arrays_caps_lengths_like_request_and_traces() -> None:
    with pytest.raises(
        WorkloadError,
        match=(r"requests\[0\]\.output_tokens = 1000000000000: .*less than or equal to 10000000"),
    ):
        Workload.from_arrays([0.0], [1], [10**12])
    with pytest.raises(
        WorkloadError,
        match=(r"Request\.output_tokens = 1000000000000: .*less than or equal to 10000000"),
    ):
        Request(arrival=0, prompt_tokens=1, output_tokens=10**12)


def test_from_arrays_names_an_integer_too_large_for_int64() -> None:
    with pytest.raises(
        WorkloadError, match=(r"requests\[1\]\.prompt_tokens = 10{30}: .*less than or equal")
    ):
        Workload.from_arrays([0.0, 0.0], [1, 10**30], [1, 1])


def test_from_arrays_refuses_a_ragged_array_by_name() -> None:
    with pytest.raises(WorkloadError, match=r"workload\.arrival: not a 1-D array of numbers"):
        Workload.from_arrays([[0.0], [1.0, 2.0]], [1, 1], [1, 1])


# --- probe 11: NaN and inf ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["arrival", "prompt_tokens", "output_tokens"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_request_refuses_nan_and_inf(field: str, value: float) -> None:
    row: dict[str, float] = {"arrival": 0.0, "prompt_tokens": 4, "output_tokens": 1, field: value}
    pattern = rf"Request\.{field} = {re.escape(repr(value))}: Input should be a finite number"
    with pytest.raises(WorkloadError, match=pattern):
        Request(**row)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["arrival", "prompt_tokens", "output_tokens"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_from_arrays_refuses_nan_and_inf(field: str, value: float) -> None:
    cols: dict[str, list[float]] = {
        "arrival": [0.0, 1.0],
        "prompt_tokens": [4, 4],
        "output_tokens": [1, 1],
    }
    cols[field][1] = value
    pattern = rf"requests\[1\]\.{field} = {re.escape(repr(value))}: Input should be a finite number"
    with pytest.raises(WorkloadError, match=pattern):
        Workload.from_arrays(cols["arrival"], cols["prompt_tokens"], cols["output_tokens"])


# --- probe 9: hostile trace files ---------------------------------------------------------------

_ROW = '{"timestamp": 0, "input_length": 8, "output_length": 2}\n'
_HEADER = "arrival,prompt_tokens,output_tokens\n"


def test_a_csv_field_over_the_csv_limit_is_a_workload_error_at_its_line(tmp_path: Path) -> None:
    p = tmp_path / "big.csv"
    p.write_text(_HEADER + "0,8,2\n" + '0,"' + "x" * 200_000 + '",2\n')
    with pytest.raises(
        WorkloadError, match=(rf"^{re.escape(str(p))}:3: not a readable CSV row: field larger")
    ):
        Workload.from_csv(p)


def test_deeply_nested_json_is_a_workload_error_at_its_line(tmp_path: Path) -> None:
    p = tmp_path / "nested.jsonl"
    p.write_text(_ROW + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(WorkloadError, match=rf"^{re.escape(str(p))}:2: JSON nested too deeply"):
        Workload.from_jsonl(p)


def test_a_5000_digit_json_number_is_a_workload_error_at_its_line(tmp_path: Path) -> None:
    p = tmp_path / "digits.jsonl"
    digits = "1" * 5000
    p.write_text(_ROW + f'{{"timestamp": 0, "input_length": {digits}, "output_length": 1}}\n')
    with pytest.raises(
        WorkloadError,
        match=(rf"^{re.escape(str(p))}:2: a number is too long to read: .*5000 digits"),
    ):
        Workload.from_jsonl(p)


def test_a_5000_digit_csv_number_is_named_and_shortened(tmp_path: Path) -> None:
    p = tmp_path / "digits.csv"
    p.write_text(_HEADER + "0," + "1" * 5000 + ",1\n")
    with pytest.raises(
        WorkloadError,
        match=(
            rf"^{re.escape(str(p))}:2: field 'prompt_tokens' = "
            rf"'1+\.\.\.\(5002 characters\): must be an integer"
        ),
    ) as e:
        Workload.from_csv(p)
    assert len(str(e.value)) < 300


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_trace_that_is_not_utf8_names_the_file_and_line(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"latin1.{suffix}"
    first = _ROW if suffix == "jsonl" else _HEADER
    p.write_bytes(first.encode() + b"0,8,2 caf\xe9\n")
    read = Workload.from_jsonl if suffix == "jsonl" else Workload.from_csv
    with pytest.raises(
        WorkloadError, match=(rf"^{re.escape(str(p))}:2: not a UTF-8 text file: byte 0xe9")
    ):
        read(p)


def test_a_directory_given_as_a_trace_names_it(tmp_path: Path) -> None:
    with pytest.raises(
        WorkloadError, match=(rf"^{re.escape(str(tmp_path))}: cannot read trace file: .*directory")
    ):
        Workload.from_jsonl(tmp_path)


# --- probe 10: negative limits on metrics that are never negative ------------------------------


@pytest.mark.parametrize(
    ("text", "noun"),
    [
        ("ttft.p99 <= -1s", "a latency"),
        ("e2e.mean <= -200ms", "a latency"),
        ("preemptions <= -1", "a count"),
        ("ttft_steps.max <= -2", "a number of steps"),
        ("max_step_tokens <= -64", "a number of tokens"),
        ("output_throughput <= -5", "a throughput"),
        ("goodput(ttft:1s) <= -1", "a throughput"),
    ],
)
def test_a_negative_limit_on_a_nonnegative_metric_is_refused_at_parse_time(
    text: str, noun: str
) -> None:
    with pytest.raises(
        SLOError,
        match=(
            rf"'{re.escape(text)}': the limit is negative, but .* is {noun}, never negative, "
            r"so this SLO can never be met"
        ),
    ):
        SLO.parse(text)


def test_a_negative_floor_is_refused_as_constraining_nothing() -> None:
    with pytest.raises(
        SLOError,
        match=(
            r"'output_throughput >= -5': the limit is negative.*always holds and constrains nothing"
        ),
    ):
        SLO.parse("output_throughput >= -5")


def test_strictly_below_zero_is_refused_and_at_most_zero_is_kept() -> None:
    with pytest.raises(SLOError, match=r"'preemptions < 0': .*never < 0.*'<= 0'"):
        SLO.parse("preemptions < 0")
    assert SLO.parse("preemptions <= 0").limit == 0


def test_a_negative_limit_is_refused_in_an_slo_list_and_when_built_directly() -> None:
    with pytest.raises(SLOError, match=r"slos\[1\]: .*'preemptions <= -1': the limit is negative"):
        parse_slos(["ttft.p99 <= 1s", "preemptions <= -1"])
    with pytest.raises(SLOError, match=r"'e2e\.max <= -3': the limit is negative"):
        SLO(metric="e2e.max", limit=-3)


def test_every_metric_is_declared_nonnegative() -> None:
    names = [f"{n}.p50" for n in DISTRIBUTIONS] + list(SCALARS) + ["goodput(ttft:1s)"]
    assert all(MetricRef.parse(n).nonnegative for n in names)
