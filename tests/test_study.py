"""Study files, `tuner run`, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner import ConfigError
from tuner.backends import AttachedServerBackend, Calibration
from tuner.cli import main
from tuner.studies._spec import load_study

EXAMPLES = sorted(Path(__file__).parent.parent.glob("examples/*.yaml"))

SMALL = """
name: small
workload:
  poisson: {rate: 8, requests: 120, prompt_len: "uniform:300:0.5", output_len: 24, seed: 0}
space:
  base: {max_model_len: 2048}
  knobs:
    max_num_batched_tokens: [128, 512, 2048]
    max_num_seqs: [4, 32]
objective: {maximize: output_throughput, tie_break: ttft.p99, tie_tolerance: 0.005}
slos: [SLOS]
backend:
  simulator:
    step_cost: {fixed: 0.005, per_prefill_token: 3.0e-5, per_decode_token: 1.0e-4}
output: OUT
"""


def study(tmp_path: Path, slos: str = '"ttft.p99 <= 500ms", "max_step_tokens <= 512"') -> Path:
    p = tmp_path / "small.yaml"
    p.write_text(SMALL.replace("SLOS", slos).replace("OUT", str(tmp_path / "out")))
    return p


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_study_is_valid(path: Path) -> None:
    spec, _ = load_study(path)
    assert spec.name == path.stem.replace("_", "-") or spec.name


def test_run_writes_the_report_the_plots_and_the_trial_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(study(tmp_path))]) == 0
    out = tmp_path / "out"
    # 512 and 2048 tokens schedule alike here (prompts are shorter): the tie goes to the
    # configuration that changes the fewest knobs from vLLM's defaults (2048 is the default)
    assert "chosen: ServingConfig(max_num_seqs=32)" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "vllm serve <model> --max-num-batched-tokens 2048" in md
    assert "fewest knobs changed from vLLM's defaults" in md
    at_winner = md.split("### SLOs at the winner")[1].split("\n## ")[0]
    slo_rows = [row for row in at_winner.splitlines() if row.startswith(("| ttft.p99", "| max_"))]
    assert [row.endswith("| yes |") for row in slo_rows] == [False, True]  # the binding SLO
    assert md.count("(chosen)") == 1
    assert "![objective vs binding SLO metric](tradeoff.png)" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # self-contained
    assert "<table>" in html and 'src="tradeoff.png"' not in html
    for png in ("tradeoff.png", "timeline.png", "versus_defaults.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    lines = (out / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 6 and json.loads(lines[0])["format"] == "tuner-trial-log/1"


def test_an_infeasible_study_is_reported_loudly_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(study(tmp_path, '"ttft.p99 <= 1ms"'))]) == 3
    assert "INFEASIBLE" in capsys.readouterr().out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## INFEASIBLE: no configuration meets the SLOs" in md
    assert "refuses to recommend" in md and "vllm serve <model>" not in md


def test_rerunning_a_study_does_not_re_evaluate(tmp_path: Path) -> None:
    path = study(tmp_path)
    assert main(["run", str(path)]) == 0
    log = tmp_path / "out" / "trials.jsonl"
    before = log.read_text()
    assert main(["run", str(path)]) == 0
    assert log.read_text() == before  # every trial answered from the log


def test_errors_point_to_the_key_and_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\n"
        "workload:\n"
        "  poisson: {rate: 8, requests: 10}\n"
        "space:\n"
        "  knobs:\n"
        "    max_num_seq: [4]\n"
        "backend:\n"
        "  simulator:\n"
        "    step_cost: {fixed: -1}\n"
        "search: {grid: {}, tpe: {}}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_study(bad)
    msg = str(e.value)
    assert (
        f"{bad}:6: space.knobs.max_num_seq: unknown key 'max_num_seq' (did you mean "
        "'max_num_seqs'?)" in msg
    )
    assert f"{bad}:9: backend.simulator.step_cost.fixed: Input should be greater than" in msg
    assert f"{bad}:10: search: give exactly one of grid, random, tpe, halving" in msg


def test_a_misspelt_search_setting_names_the_line_and_the_closest_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        SMALL.replace("SLOS", "").replace("OUT", "out") + "search:\n  tpe: {n_trails: 6, seed: 0}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_study(bad)
    line = bad.read_text().splitlines().index("  tpe: {n_trails: 6, seed: 0}") + 1
    assert (
        f"{bad}:{line}: search.tpe.n_trails: unknown key 'n_trails' (did you mean "
        "'n_trials'?)" in str(e.value)
    )


def test_bad_yaml_and_missing_files_are_clear(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nworkload: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_study(broken)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_study(tmp_path / "nope.yaml")


def test_a_two_tier_study_reports_cheap_against_expensive(tmp_path: Path) -> None:
    p = tmp_path / "tt.yaml"
    p.write_text(
        SMALL.replace("SLOS", '"ttft.p99 <= 500ms"')
        .replace("OUT", str(tmp_path / "tt"))
        .replace(
            "backend:\n  simulator:\n    step_cost: {fixed: 0.005, per_prefill_token: "
            "3.0e-5, per_decode_token: 1.0e-4}",
            "two_tier:\n  top_k: 2\n  cheap: {simulator: {step_cost: {fixed: 0.01}}}\n"
            "  expensive:\n    simulator:\n      step_cost: {fixed: 0.005, "
            "per_prefill_token: 3.0e-5, per_decode_token: 1.0e-4}",
        )
    )
    assert main(["run", str(p)]) == 0
    md = (tmp_path / "tt" / "report.md").read_text()
    assert "## Cheap tier against live measurements" in md
    assert "| metric | mean abs error before | after calibration |" in md
    assert "calibration.json" in md and (tmp_path / "tt" / "calibration.json").exists()
    cal = Calibration.load(tmp_path / "tt" / "calibration.json")
    assert cal.max_seqs is not None
    # The space allows 32 sequences: fitted on narrower batches, the report says so.
    assert ("the cost of wider batches is extrapolated" in md) == (cal.max_seqs < 32)


def test_a_live_backend_with_attach_url_measures_the_running_server(tmp_path: Path) -> None:
    from tuner.studies._run import build_backend
    from tuner.studies._spec import BackendSpec

    spec = BackendSpec.model_validate(
        {"live": {"attach_url": "http://127.0.0.1:8000/", "request_timeout": 7}}
    )
    backend = build_backend(spec, tmp_path, tmp_path / "work")
    assert isinstance(backend, AttachedServerBackend)
    assert backend.url == "http://127.0.0.1:8000" and backend.request_timeout == 7
    assert backend.describe() == "vllm-server(attached http://127.0.0.1:8000)"


def test_dry_run_prints_the_plan_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = study(tmp_path)
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 configurations over max_num_batched_tokens, max_num_seqs" in out
    assert "estimated cost:" in out
    assert not (tmp_path / "out").exists()
