"""A two-tier study against a real vLLM (the tiny CPU model), CI-sized: the report carries the
cheap-versus-live table and a calibration fitted to the live step log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.cli import main

STUDY = """
name: live-two-tier
workload:
  poisson: {rate: 4, requests: 16, prompt_len: "uniform:128:0.5", output_len: 12, seed: 0}
space:
  base: {max_model_len: 1024, block_size: 128, max_num_seqs: 4}
  knobs:
    max_num_batched_tokens: [64, 256]
objective: {maximize: output_throughput, tie_break: ttft.p99, tie_tolerance: 0.05}
slos: ["ttft.p99 <= 10s"]
two_tier:
  top_k: 1
  margin: 0.0
  cheap: {simulator: {step_cost: {fixed: 0.005, per_prefill_token: 2.0e-5}}}
  expensive:
    live:
      model: MODEL
      server_args: ["--dtype", "bfloat16", "--enforce-eager"]
      env: {VLLM_CPU_KVCACHE_SPACE: "1"}
      startup_timeout: 300
search: {grid: {}}
output: OUT
"""


@pytest.mark.vllm
def test_a_two_tier_study_on_a_live_cpu_vllm_reports_cheap_against_live(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "study.yaml"
    out = tmp_path / "out"
    study.write_text(STUDY.replace("MODEL", str(tiny_model)).replace("OUT", str(out)))
    assert main(["run", str(study)]) == 0
    assert "chosen: ServingConfig(" in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "## Cheap tier against live measurements" in md
    assert "were measured by the expensive backend" in md
    rows = [line for line in md.splitlines() if "| output_throughput |" in line]
    assert rows, "the cheap-vs-live table has a row per shortlisted config and metric"
    assert "Cost model fitted to" in md and (out / "calibration.json").exists()
    assert "-> vllm-server(" in md  # the answer came from the live server
    logs = list((out / "live").glob("trial-*.log"))
    assert len(logs) == 1  # top_k=1: one live trial, not the whole grid


CAPACITY_STUDY = """
name: live-capacity
workload:
  poisson: {rate: 2, requests: 10, prompt_len: 64, output_len: 8, seed: 0}
space:
  base: {max_model_len: 1024, block_size: 128}
  knobs:
    max_num_seqs: [1, 8]
objective: {maximize: capacity, low: 0.5, high: 32, rel_tol: 0.2, shortcut: false}
slos: ["ttft.p99 <= 1s"]
backend:
  live:
    model: MODEL
    server_args: ["--dtype", "bfloat16", "--enforce-eager"]
    env: {VLLM_CPU_KVCACHE_SPACE: "1"}
    startup_timeout: 300
search: {grid: {}}
output: OUT
"""


@pytest.mark.vllm
def test_a_live_capacity_study_probes_every_load_of_a_configuration_on_one_server(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = tmp_path / "cap.yaml"
    out = tmp_path / "out"
    study.write_text(CAPACITY_STUDY.replace("MODEL", str(tiny_model)).replace("OUT", str(out)))
    code = main(["run", str(study)])
    printed = capsys.readouterr().out
    assert code in (0, 3), printed
    logs = sorted((out / "live").glob("trial-*.log"))
    assert len(logs) == 2  # one server per configuration, whatever the number of loads
    records = [line for line in (out / "trials.jsonl").read_text().splitlines()[1:]]
    assert len(records) == 2
    import json

    trials = [json.loads(r) for r in records]
    assert all(len(t["load_points"]) >= 2 for t in trials), "several loads per server"
    md = (out / "report.md").read_text()
    assert "## Capacity" in md
    # tuner's own live run is enough to calibrate the simulator for this model and machine
    assert sorted(p.name for p in (out / "measurements").iterdir()) == [
        "trial-000.json",
        "trial-001.json",
    ]
    assert main(["calibrate", "--study", str(out), "-o", str(tmp_path / "cal.json")]) == 0
    from tuner.backends.simulator import Calibration

    cal = Calibration.load(tmp_path / "cal.json")
    assert cal.steps >= 10 and cal.held_out is not None and cal.held_out.runs == 2
    assert cal.request_path.arrival_fixed + cal.request_path.delivery > 0
