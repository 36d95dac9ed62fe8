"""Flags safe to paste: only what the study tuned or set on purpose, for the target device; and
best.yaml that vLLM's own config parser reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tuner import ConfigError, ServingConfig
from tuner.hardware import Target
from tuner.report import write_report
from tuner.studies import load_study, run_study

STUDY = """
name: rec
workload:
  poisson: {rate: 6, requests: 120, prompt_len: 256, output_len: 32, seed: 0}
space:
  base: BASE
  knobs: {max_num_batched_tokens: [256, 1024], max_num_seqs: [16, 64]}
slos: ["ttft.p99 <= 2s"]
backend:
  simulator: {step_cost: {fixed: 0.005, per_prefill_token: 3.0e-5, per_decode_token: 1.0e-4}}
TARGET
"""


def run(tmp_path: Path, base: str = "{}", target: str = ""):  # type: ignore[no-untyped-def]
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "rec.yaml"
    p.write_text(STUDY.replace("BASE", base).replace("TARGET", target))
    spec, root = load_study(p)
    outcome = run_study(spec, root, tmp_path / "out")
    write_report(outcome)
    return outcome


@pytest.mark.parametrize("target", ["", "target: {gpu: h100}", "target: {gpu: NVIDIA L4}"])
def test_pasted_flags_for_a_gpu_never_carry_tuner_assumptions(tmp_path: Path, target: str) -> None:
    outcome = run(tmp_path, target=target)
    line = outcome.vllm_serve()
    assert line.startswith("vllm serve <model> --max-num-batched-tokens ")
    assert "--max-num-seqs" in line  # tuned
    for assumption in ("--no-async-scheduling", "--block-size", "--max-model-len",
                       "--num-gpu-blocks-override", "--long-prefill-token-threshold"):  # fmt: skip
        assert assumption not in line


def test_a_knob_set_on_purpose_is_kept_when_it_differs_from_the_target_default(
    tmp_path: Path,
) -> None:
    outcome = run(
        tmp_path, base="{block_size: 32, max_model_len: 4096}", target="target: {gpu: h100}"
    )
    line = outcome.vllm_serve()
    assert "--block-size 32" in line and "--max-model-len 4096" in line


def test_a_target_starts_unset_knobs_at_vllms_defaults_there(tmp_path: Path) -> None:
    gpu = run(tmp_path / "gpu", target="target: {gpu: h100}")
    assert gpu.space.base.async_scheduling is True and gpu.space.base.block_size == 16
    cpu = run(tmp_path / "cpu", target="target: {device: cpu}")
    assert cpu.space.base.async_scheduling is False and cpu.space.base.block_size == 128
    assert cpu.target.describe() == "CPU"


def test_best_yaml_and_json_hold_the_recommended_knobs(tmp_path: Path) -> None:
    outcome = run(tmp_path, target="target: {gpu: h100}")
    best = outcome.best
    assert best is not None
    data = yaml.safe_load((tmp_path / "out" / "best.yaml").read_text())
    assert data == best.config.to_vllm_config(outcome.recommended_knobs())
    assert set(data) == {"max-num-batched-tokens", "max-num-seqs"}
    record = json.loads((tmp_path / "out" / "best.json").read_text())
    assert record["vllm_serve"] == outcome.vllm_serve()
    assert record["config"] == best.config.model_dump(mode="json")


def test_no_recommendation_files_without_a_winner(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text(STUDY.replace("BASE", "{}").replace("TARGET", "").replace("<= 2s", "<= 1ms"))
    spec, root = load_study(p)
    write_report(run_study(spec, root, tmp_path / "out"))
    assert not (tmp_path / "out" / "best.yaml").exists()


def test_an_unknown_gpu_lists_the_closest_names() -> None:
    with pytest.raises(ConfigError, match="h100"):
        Target(gpu="h10")


def test_the_baseline_is_vllms_rule_for_the_target() -> None:
    base = ServingConfig(max_model_len=4096)
    knobs = ["max_num_batched_tokens", "max_num_seqs"]
    assert Target(gpu="h100").vllm_defaults(base, knobs).max_num_batched_tokens == 8192
    assert Target(gpu="l4").vllm_defaults(base, knobs).max_num_seqs == 256
    assert Target(device="cpu").vllm_defaults(base, knobs).max_num_batched_tokens == 2048


@pytest.mark.vllm
def test_vllm_serve_reads_best_yaml_with_its_own_config_parser(tmp_path: Path) -> None:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    outcome = run(
        tmp_path,
        base="{block_size: 32, enable_chunked_prefill: true}",
        target="target: {gpu: h100}",
    )
    best = outcome.best
    assert best is not None
    parser = make_arg_parser(FlexibleArgumentParser())
    args = parser.parse_args(["/models/m", "--config", str(tmp_path / "out" / "best.yaml")])
    assert args.max_num_batched_tokens == best.config.max_num_batched_tokens
    assert args.max_num_seqs == best.config.max_num_seqs
    assert args.block_size == 32


def test_each_trial_is_also_a_vllm_bench_result_and_a_summary_row(tmp_path: Path) -> None:
    import csv

    outcome = run(tmp_path, target="target: {gpu: h100}")
    out = tmp_path / "out"
    results = sorted((out / "bench").glob("trial-*.json"))
    assert len(results) == len(outcome.trials)
    r = json.loads(results[0].read_text())
    t = outcome.trials[0]
    assert t.measurement is not None
    assert r["p99_ttft_ms"] == pytest.approx(t.values["ttft.p99"] * 1000)
    for key in ("mean_itl_ms", "median_tpot_ms", "p99_e2el_ms", "request_throughput",
                "output_throughput", "completed", "total_input_tokens"):  # fmt: skip
        assert key in r
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == len(outcome.trials)
    assert {"trial", "max_num_batched_tokens", "max_num_seqs", "feasible", "ttft.p99"} <= set(
        rows[0]
    )
