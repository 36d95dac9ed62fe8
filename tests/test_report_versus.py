"""The report's winner against vLLM's defaults: the SLO metrics' distributions side by side,
measured on the same workload by the same backend -- or, when the study did not measure the
defaults, a sentence saying so instead of numbers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tuner.backends import CostModel
from tuner.core import ServingConfig, SLOResult, Trial, TrialStatus
from tuner.objectives import SLO, Objective, metric_value
from tuner.report import _figures, study_yaml, write_report
from tuner.report._capacity import _label
from tuner.report._document import Table, to_html
from tuner.report._units import cost_text, knobs_text, quantity
from tuner.studies import StudyOutcome, build_backend, run_study
from tuner.studies._baseline import compare_with_defaults
from tuner.studies._spec import build_spec

HEADING = "## The winner against vLLM's defaults"


def spec_of(tmp_path: Path, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "versus",
        "workload": {
            "poisson": {
                "rate": 8,
                "requests": 120,
                "prompt_len": "uniform:300:0.5",
                "output_len": 24,
                "seed": 0,
            }
        },
        "space": {
            "base": {"max_model_len": 2048},
            "knobs": {"max_num_batched_tokens": [128, 512, 2048], "max_num_seqs": [4, 32]},
        },
        "objective": {"maximize": "output_throughput"},
        "slos": ["ttft.p99 <= 500ms", "itl.p90 <= 40ms", "max_step_tokens <= 4096"],
        "backend": {
            "simulator": {
                "step_cost": {"fixed": 0.005, "per_prefill_token": 3.0e-5, "per_decode_token": 1e-4}
            }
        },
        "output": str(tmp_path / "out"),
    }
    data.update(changes)
    return data


def run(tmp_path: Path, **changes: object) -> StudyOutcome:
    return run_study(build_spec(spec_of(tmp_path, **changes)), tmp_path)


def section(md: str) -> str:
    assert HEADING in md, "the report has no winner-against-defaults section"
    return md.split(HEADING)[1].split("\n## ")[0]


def rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_the_report_sets_the_winners_slo_distributions_beside_the_defaults(
    tmp_path: Path,
) -> None:
    o = run(tmp_path)
    md_path, _ = write_report(o)
    text = section(md_path.read_text())
    best, defaults = o.best, o.baseline_config()
    assert best is not None and best.config != defaults
    # The numbers are the simulator's on the study's workload, recomputed here independently.
    assert o.spec.backend is not None
    sim = build_backend(o.spec.backend, tmp_path, tmp_path / "w")
    mine, theirs = sim.evaluate(best.config, o.workload), sim.evaluate(defaults, o.workload)
    table = rows(text)
    assert [r[:2] for r in table] == [
        ["ttft.p99 <= 500ms", "winner"],
        ["", "vLLM's defaults"],
        ["itl.p90 <= 40ms", "winner"],
        ["", "vLLM's defaults"],
        ["max_step_tokens <= 4096", "winner"],
        ["", "vLLM's defaults"],
    ]
    for i, (metric, unit) in enumerate((("ttft", "s"), ("itl", "s"))):
        for row, m in zip(table[2 * i : 2 * i + 2], (mine, theirs), strict=True):
            want = [quantity(metric_value(m, f"{metric}.{s}"), unit) for s in STATS]
            assert row[2:6] == want
            assert all(cell.endswith(" ms") or cell.endswith(" s") for cell in row[2:7])
    for row, m in zip(table[4:], (mine, theirs), strict=True):
        assert row[2:6] == ["-"] * 4  # a single figure, not a distribution
        assert row[6] == quantity(metric_value(m, "max_step_tokens"), "tokens")
        assert row[6].endswith(" tokens")
    for slo, pair in zip(o.slos, (table[0:2], table[2:4], table[4:6]), strict=True):
        for row, m in zip(pair, (mine, theirs), strict=True):
            assert row[7] == ("yes" if slo.satisfied_by(slo.value(m)) else "**no**")
    assert "both measured by the simulator on the study's workload (120 requests" in text
    assert "![latency distributions: winner against vLLM's defaults](versus_defaults.png)" in text
    assert (o.folder / "versus_defaults.png").read_bytes()[:4] == b"\x89PNG"


STATS = ("p50", "p90", "p99", "max")


def test_a_defaults_miss_is_named_with_its_value(tmp_path: Path) -> None:
    o = run(tmp_path, slos=["itl.p99 <= 150ms"])
    vs = o.versus_defaults
    assert vs is not None and vs.winner is not None and vs.defaults is not None
    md_path, _ = write_report(o)
    text = section(md_path.read_text())
    for who, m, verb in (("winner", vs.winner, "keeps"), ("vLLM's defaults", vs.defaults, "keep")):
        value = metric_value(m, "itl.p99")
        if value <= 0.150:
            assert f"{who} {verb} every SLO" in text
        else:
            assert f"itl.p99 <= 150ms ({quantity(value, 's')})" in text


def test_without_a_simulator_the_report_says_the_defaults_were_not_measured(
    tmp_path: Path,
) -> None:
    o = run(tmp_path)  # the defaults (max_num_seqs 128) are not in this space
    o.versus_defaults = compare_with_defaults(o, None)
    md_path, _ = write_report(o)
    text = section(md_path.read_text())
    assert "This study did not measure vLLM's defaults: they were not among its trials" in text
    assert "| winner |" not in text and "versus_defaults.png" not in text


def test_defaults_among_the_trials_are_compared_from_those_trials(tmp_path: Path) -> None:
    space = {
        "base": {"max_model_len": 2048},
        "knobs": {"max_num_batched_tokens": [128, 2048], "max_num_seqs": [128]},
    }
    # small steps (128 tokens) keep the gaps between tokens short: the defaults (2048) lose
    o = run(tmp_path, space=space, objective={"minimize": "itl.p99"}, slos=["ttft.p99 <= 100s"])
    vs = compare_with_defaults(o, None)
    assert vs is not None and vs.missing is None
    ran = next(t for t in o.trials if t.config == o.baseline_config())
    assert vs.defaults is ran.measurement and vs.winner is not None
    assert o.best is not None and vs.winner is o.best.measurement
    assert "both trials of this study" in vs.how


def test_a_capacity_study_compares_both_on_the_workload_as_written(tmp_path: Path) -> None:
    o = run(
        tmp_path,
        objective={"maximize": "capacity", "rel_tol": 0.1, "max_probes": 8},
        slos=["ttft.p99 <= 500ms"],
        search={"grid": {}},
    )
    vs, best = o.versus_defaults, o.best
    assert vs is not None and vs.winner is not None and vs.defaults is not None
    assert best is not None and best.measurement is not None
    # the winner's own measurement is at its capacity: not the load the defaults ran at
    assert len(best.measurement.arrival) == len(vs.winner.arrival)
    assert not np.array_equal(best.measurement.arrival, vs.winner.arrival)
    assert np.array_equal(vs.winner.arrival, o.workload.arrival)
    assert np.array_equal(vs.defaults.arrival, o.workload.arrival)
    assert "not at each one's capacity" in vs.how
    # and the step timelines plotted side by side are the same pair
    assert o.timelines == {"winner": vs.winner, "vLLM defaults": vs.defaults}


def test_a_winner_that_is_the_defaults_says_so(tmp_path: Path) -> None:
    space = {"base": {"max_model_len": 2048}, "knobs": {"max_num_seqs": [4, 128]}}
    o = run(tmp_path, space=space, slos=["ttft.p99 <= 100s"])
    assert o.best is not None and o.best.config == o.baseline_config()
    md_path, _ = write_report(o)
    assert "The winner is vLLM's defaults on this target" in section(md_path.read_text())


def test_no_python_repr_and_no_unitless_latency_in_the_report(tmp_path: Path) -> None:
    o = run(tmp_path)
    md = write_report(o)[0].read_text()
    assert "ServingConfig(" not in md and "CostModel(" not in md
    assert (
        "Backend: simulator(vllm 0.32, step time 5 ms + 30 us per prefill token + 100 us per "
        "decode token). 6 trials in "
    ) in md
    at_winner = md.split("### SLOs at the winner")[1].split("\n## ")[0]
    for row in rows(at_winner):
        if row[0].startswith(("ttft", "itl")):
            assert all(c.split(" (")[0].endswith((" ms", " s")) for c in row[1:4]), row


def test_the_study_file_in_the_report_keeps_one_setting_a_line(tmp_path: Path) -> None:
    spec = build_spec(spec_of(tmp_path, description=("a long description " * 12).strip()))
    text = study_yaml(spec)
    assert yaml.safe_load(text) == spec.model_dump(mode="json", exclude_none=True)
    assert "\n    max_num_seqs: [4, 32]\n" in text  # a list of values stays on its line
    assert "\n  base:\n    max_num_batched_tokens: 2048\n" in text  # a mapping, a line a key
    assert "description: a long description a long" in text and text.count("\n  a long") == 0


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.0335, "s", "33.5 ms"),
        (27.91, "s", "27.9 s"),
        (1234.4, "s", "1,234 s"),
        (2e-5, "s", "20 us"),
        (0.0, "s", "0 s"),
        (math.nan, "s", "-"),
        (14.37, "req/s", "14.37 req/s"),
        (512.0, "tokens", "512 tokens"),
        (3.0, "", "3"),
    ],
)
def test_quantities_carry_their_unit(value: float, unit: str, text: str) -> None:
    assert quantity(value, unit) == text


def test_knobs_read_without_the_class_name(tmp_path: Path) -> None:
    o = run(tmp_path)
    best = o.best
    assert best is not None
    assert knobs_text(best.config, o.space.base) == f"max_num_seqs={best.config.max_num_seqs}"
    assert knobs_text(o.space.base, o.space.base) == "the base"


def test_the_unit_step_clock_is_named_not_printed() -> None:
    assert (
        cost_text(f"simulator(vllm 0.32, {CostModel()!r})")
        == "simulator(vllm 0.32, the unit step clock)"
    )


def test_a_long_legend_label_is_cut_between_knobs(tmp_path: Path) -> None:
    o = run(tmp_path)
    config = ServingConfig(
        max_num_batched_tokens=512,
        max_num_seqs=64,
        long_prefill_token_threshold=256,
        block_size=32,
        max_model_len=2048,
    )
    t = Trial(number=7, config=config, status=TrialStatus.FAILED, error="x")
    label = _label(t, None, o)
    assert label.startswith("#7 max_num_batched_tokens=512, max_num_seqs=64") and label.endswith(
        ", ..."
    )
    knobs = label.removeprefix("#7 ").removesuffix(", ...").split(", ")
    assert all(re.fullmatch(r"[a-z_]+=\w+", k) for k in knobs), knobs


def test_a_capacity_trial_table_bounds_what_it_did_not_measure(tmp_path: Path) -> None:
    o = run(
        tmp_path,
        objective={"maximize": "capacity", "rel_tol": 0.1, "max_probes": 8},
        slos=["ttft.p99 <= 300ms"],
    )
    md = write_report(o)[0].read_text()
    trials = md.split("\n## Trials\n")[1].split("\n## ")[0]
    table = rows(trials)
    header = next(line for line in trials.splitlines() if line.startswith("| #"))
    head = [c.strip() for c in header.strip("|").split("|")]
    col = head.index("capacity (req/s)")
    by_number = {t.number: t for t in o.trials}
    assert any(row[col].startswith("< ") for row in table)  # the shortcut: failed at the best's
    for row in table:
        t = by_number[int(row[0].split()[0])]
        if t.feasible:
            assert re.fullmatch(r"(>= )?\d[\d.]*", row[col]), row
        else:
            assert re.fullmatch(r"< \d[\d.]*", row[col]), row
    assert "Each trial's latencies are at its capacity" in trials
    assert re.search(r"; \d{1,3}(,\d{3})+ prompt and \d[\d,]* output tokens", md)


def test_the_chosen_trial_heads_the_trial_table_even_from_inside_a_tie(tmp_path: Path) -> None:
    o = run(tmp_path, objective={"maximize": "output_throughput", "tie_break": "ttft.p99"})
    best = o.best
    assert best is not None
    md = write_report(o)[0].read_text()
    table = rows(md.split("\n## Trials\n")[1].split("\n## ")[0])
    assert table[0][0] == f"{best.number} (chosen)"
    assert sum(row[0].endswith("(chosen)") for row in table) == 1 and len(table) == 6


def test_a_trade_off_of_one_point_is_not_drawn(tmp_path: Path) -> None:
    slo = SLO.parse("itl.p99 <= 40ms")
    objective = run(tmp_path).objective  # maximize output_throughput

    def trial(n: int, tput: float, itl: float) -> Trial:
        r = SLOResult(slo=slo.text, value=itl, limit=0.04, ok=itl <= 0.04, margin=0.04 - itl)
        return Trial(
            number=n,
            config=ServingConfig(max_num_seqs=4 + n),
            status=TrialStatus.COMPLETE,
            values={"output_throughput": tput, "itl.p99": itl},
            slo_results=(r,),
        )

    same = [trial(0, 100.0, 0.03), trial(1, 100.0, 0.03)]
    assert _figures.tradeoff(same, objective, slo, tmp_path / "one.png", same[0]) is None
    two = [trial(0, 100.0, 0.03), trial(1, 120.0, 0.035)]
    png = _figures.tradeoff(two, objective, slo, tmp_path / "two.png", two[1])
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"


def test_html_tables_align_numbers_right_and_let_text_and_long_names_wrap() -> None:
    table = Table(
        ["config", "max_num_seqs", "ttft.p99", "feasible"],
        [["the base", "4", "33.5 ms", "yes"], ["max_num_seqs=8", "8", "< 14.37", "no (x)"]],
    )
    page = to_html([table], "t")
    assert '<th class="text">config</th><th>max_<wbr>num_<wbr>seqs</th><th>ttft.p99</th>' in page
    assert '<td>33.5 ms</td><td class="text">yes</td>' in page
    assert '<td>&lt; 14.37</td><td class="text">no (x)</td>' in page
    slo = to_html([Table(["feasible"], [["no (ttft.p99 <= 1s, itl.p99 <= 40ms)"]])], "t")
    assert "no (ttft.p99&nbsp;&lt;=&nbsp;1s, itl.p99&nbsp;&lt;=&nbsp;40ms)" in slo  # one line each


def test_an_objectives_settings_read_as_words_not_python() -> None:
    text = Objective.capacity(rel_tol=0.2, shortcut=False, gpu_hour_price=2.5).text
    assert "shortcut off" in text and "gpu_hour_price $2.5" in text and "rel_tol 0.2" in text
    assert "False" not in text and "True" not in text


@pytest.mark.parametrize(
    ("users", "words"), [(1, "40 requests from 1 user)"), (4, "from 4 users)")]
)
def test_a_closed_loop_comparison_names_its_users(tmp_path: Path, users: int, words: str) -> None:
    workload = {"closed_loop": {"users": users, "requests": 40, "prompt_len": 64, "output_len": 8}}
    o = run(tmp_path, workload=workload, slos=["ttft.p99 <= 10s"])
    vs = o.versus_defaults
    assert vs is not None and words in vs.how
