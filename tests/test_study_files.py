"""Bad study files: every problem names the file, the line, the key path and what is allowed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tuner import ConfigError
from tuner.studies import load_study

GOOD = """\
name: s
workload:
  poisson: {rate: 8, requests: 20, prompt_len: 64, output_len: 8, seed: 0}
space:
  base: {max_model_len: 2048}
  knobs:
    max_num_seqs: [4, 16]
backend:
  simulator: {step_cost: {fixed: 0.005}}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_study(path)
    return str(e.value)


def test_the_good_file_loads(tmp_path: Path) -> None:
    spec, root = load_study(write(tmp_path, GOOD))
    assert spec.space.base.max_model_len == 2048 and root == tmp_path


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "slos: ['ttft.p99 <= 1s']\nslos: []\n")
    assert f"{p}:11: slos: key 'slos' given twice (first on line 10)" in error(p)


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    lol = ", ".join(['"lol"'] * 9)
    rows = [f"a0: &a0 [{lol}]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)
    ]
    p = write(tmp_path, "\n".join(rows) + "\n")
    t0 = time.perf_counter()
    msg = error(p)
    assert time.perf_counter() - t0 < 1.0
    assert f"{p}:2: not valid YAML: anchors and aliases (*name) are not allowed" in msg


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes(GOOD.encode() + "description: caf\xe9\n".encode("latin-1"))
    assert f"{p}:10: not UTF-8 text" in error(p)


def test_a_bad_base_value_names_its_line_and_key_path(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("base: {max_model_len: 2048}", "base: {max_model_len: -1}"))
    assert f"{p}:5: space.base.max_model_len: Input should be greater than or equal to 2" in (
        error(p)
    )


def test_a_bad_knob_value_names_its_line_and_index(tmp_path: Path) -> None:
    p = write(
        tmp_path, GOOD.replace("max_num_seqs: [4, 16]", "max_num_seqs:\n      - 4\n      - -16")
    )
    assert (
        f"{p}:9: space.knobs.max_num_seqs[1]: Input should be greater than or equal to 1 "
        "(got -16)" in error(p)
    )


def test_a_misspelt_section_key_suggests_the_closest(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "budget: {max_trails: 3}\n")
    assert f"{p}:10: budget.max_trails: unknown key 'max_trails' (did you mean 'max_trials'?)" in (
        error(p)
    )


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("storage: Sqlite://x.db", "storage: not an Optuna storage URL"),
        ("workers: 0", "workers: Input should be greater than or equal to 1"),
    ],
)
def test_storage_must_be_a_url_or_a_journal_path_and_workers_positive(
    tmp_path: Path, line: str, match: str
) -> None:
    p = write(tmp_path, GOOD + line + "\n")
    msg = error(p)
    assert f"{p}:10: {match}" in msg


@pytest.mark.parametrize(
    ("output", "match"),
    [
        ("'runs/{nam}'", "unknown placeholder {nam}"),
        ("'runs/{'", "unbalanced brace"),
        ("'runs/{name.__class__}'", r"unknown placeholder \{name.__class__\}"),
        ("x" * 1100, "at most 1024 characters"),
    ],
)
def test_a_bad_output_pattern_is_refused_before_any_trial(
    tmp_path: Path, output: str, match: str
) -> None:
    p = write(tmp_path, GOOD + f"output: {output}\n")
    with pytest.raises(ConfigError, match=match):
        load_study(p)


def test_output_expands_home_and_fills_only_the_name(tmp_path: Path) -> None:
    spec, _ = load_study(write(tmp_path, GOOD + "output: '~/runs/{name}'\n"))
    assert spec.output_folder() == Path.home() / "runs" / "s"


def test_an_output_that_is_a_file_or_unwritable_is_refused_before_any_trial(tmp_path: Path) -> None:
    from tuner.studies import run_study

    spec, root = load_study(write(tmp_path, GOOD))
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        run_study(spec, root, afile)
    with pytest.raises(ConfigError, match="cannot write there"):  # a folder under a file
        run_study(spec, root, afile / "out")


def test_the_markdown_report_escapes_html_in_user_strings(tmp_path: Path) -> None:
    from tuner.report import write_report
    from tuner.studies import run_study

    evil = GOOD.replace("name: s\n", "name: s\ndescription: '<script>alert(1)</script> & co'\n")
    spec, root = load_study(write(tmp_path, evil))
    md, page = write_report(run_study(spec, root, tmp_path / "out"))
    text = md.read_text()
    assert "&lt;script>alert(1)&lt;/script> & co" in text
    body = [
        line for line in text.splitlines() if "alert" in line and not line.startswith("description")
    ]
    assert all("<script>" not in line for line in body)
    assert "<script>" not in page.read_text()


def test_a_bool_is_not_a_number_anywhere_in_a_study_file(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("requests: 20", "requests: true"))
    assert f"{p}:3: workload.poisson.requests: Input should be a valid integer (got True)" in (
        error(p)
    )


def _trace(tmp_path: Path, lengths: list[tuple[int, int]]) -> Path:
    import json

    p = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 1000 * i, "input_length": a, "output_length": b}
        for i, (a, b) in enumerate(lengths)
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


TRACE_STUDY = """\
name: t
workload:
  trace: {path: t.jsonl, time_unit: ms}
  EXTRA
space:
  base: {max_model_len: 512}
  knobs: {max_num_seqs: [4, 16]}
slos: ["ttft.p99 <= 10s"]
backend:
  simulator: {step_cost: {fixed: 0.005}}
"""


@pytest.mark.parametrize(
    ("extra", "n", "longest"), [("oversized: drop", 2, 300), ("oversized: clip", 3, 512)]
)
def test_oversized_requests_are_dropped_or_clipped_as_asked(
    tmp_path: Path, extra: str, n: int, longest: int
) -> None:
    from tuner.studies import run_study

    _trace(tmp_path, [(100, 10), (600, 50), (280, 20)])
    spec, root = load_study(write(tmp_path, TRACE_STUDY.replace("EXTRA", extra)))
    outcome = run_study(spec, root, tmp_path / "out")
    assert len(outcome.workload) == n
    assert outcome.workload.max_sequence_tokens == longest
    assert outcome.workload_note is not None and "1 of 3 requests" in outcome.workload_note


def test_oversized_requests_are_an_error_before_any_trial_by_default(tmp_path: Path) -> None:
    from tuner.studies import run_study

    _trace(tmp_path, [(100, 10), (600, 50), (900, 20)])
    spec, root = load_study(write(tmp_path, TRACE_STUDY.replace("EXTRA", "")))
    with pytest.raises(ConfigError, match=r"2 of 3 requests are longer than max_model_len \(512\)"):
        run_study(spec, root, tmp_path / "out")
    assert not (tmp_path / "out" / "trials.jsonl").exists()


@pytest.mark.parametrize(("extra", "rate"), [("rate: 4", 4.0), ("speedup: 2", 2 * 3 / 2)])
def test_a_trace_is_rescaled_by_rate_or_speedup(tmp_path: Path, extra: str, rate: float) -> None:
    from tuner.studies import run_study

    _trace(tmp_path, [(100, 10), (200, 10), (300, 10)])  # 3 requests over 2 s: 1.5 req/s
    spec, root = load_study(write(tmp_path, TRACE_STUDY.replace("EXTRA", extra)))
    outcome = run_study(spec, root, tmp_path / "out")
    assert outcome.workload.rate == pytest.approx(rate)
    assert outcome.workload_summary.mean_rate == pytest.approx(rate)


def test_every_run_reports_the_workload_summary(tmp_path: Path) -> None:
    from tuner.report import write_report
    from tuner.studies import run_study

    spec, root = load_study(write(tmp_path, GOOD))
    md, _ = write_report(run_study(spec, root, tmp_path / "out"))
    text = md.read_text()
    assert "Workload: 20 requests over " in text and "burstiness (CV of gaps)" in text
