"""``tuner run --dry-run``: the space's size, the combinations vLLM refuses, the commands it
would run and an estimated cost -- and nothing run, written or built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tuner.cli import main

STUDY = {
    "name": "dry",
    "workload": {"poisson": {"rate": 2, "requests": 40, "prompt_len": 128, "output_len": 16}},
    "space": {
        "base": {"max_model_len": 1024},
        "knobs": {
            "max_num_batched_tokens": [64, 128, 256, 512],
            "max_num_seqs": [4, 8],
            "long_prefill_token_threshold": [0, 100000],  # above max_model_len: refused
        },
        "skip_invalid": True,
    },
    "objective": {"maximize": "capacity"},
    "slos": ["ttft.p99 <= 1s"],
    "search": {"grid": {}},
}
LIVE = {"live": {"model": "some-org/some-model", "server_args": ["--dtype", "bfloat16"]}}
SIM = {"simulator": {"step_cost": {"fixed": 0.005, "per_decode_token": 1e-4}}}


def dry(tmp_path: Path, capsys: pytest.CaptureFixture[str], **changes: object) -> str:
    study = {**STUDY, "output": str(tmp_path / "out"), **changes}
    path = tmp_path / "dry.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    assert main(["run", str(path), "--dry-run"]) == 0
    assert not (tmp_path / "out").exists()
    return capsys.readouterr().out


def test_a_live_dry_run_shows_the_space_the_refusals_the_commands_and_the_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dry(tmp_path, capsys, backend=LIVE)
    lines = out.splitlines()
    assert lines[0] == (
        "study 'dry': 8 configurations (8 more refused) over max_num_batched_tokens, "
        "max_num_seqs, long_prefill_token_threshold"
    )
    refused = [line for line in lines if line.startswith("  refused by vLLM: ")]
    assert len(refused) == 8 and "{" not in out and "ServingConfig" not in out
    assert refused[0] == (
        "  refused by vLLM: max_num_batched_tokens=64, max_num_seqs=4, "
        "long_prefill_token_threshold=100000: long_prefill_token_threshold (100000) must be "
        "<= max_model_len (1024)"
    )
    assert "workload: 40 requests over " in out and " s (mean " in out
    # "vllm" where vLLM is not installed, else the path of the one that would run
    commands = [
        re.sub(r"^\S*/vllm ", "vllm ", line.strip()) for line in lines if line.startswith("  ")
    ]
    commands = [c for c in commands if c.startswith("vllm serve ")]
    assert len(commands) == 3
    for command in commands:
        assert command.startswith("vllm serve some-org/some-model --dtype bfloat16 ")
        assert "--port <port>" in command and "--max-num-batched-tokens" in command
    assert "(3 of the 8 configurations in the space)" in out
    cost = re.search(r"estimated cost: 8 server starts \(~30 s each\) and 56 loads of ~\d+ s", out)
    assert cost is not None and out.rstrip().endswith("minutes")


def test_a_simulator_dry_run_says_nothing_is_refused_and_what_it_would_simulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = {"base": {"max_model_len": 1024}, "knobs": {"max_num_seqs": [4, 8, 16]}}
    out = dry(tmp_path, capsys, backend=SIM, space=space)
    assert out.startswith("study 'dry': 3 configurations over max_num_seqs\n")
    assert "  refused by vLLM: none of the combinations\n" in out
    assert "would run: simulations of vLLM 0.32's scheduler in this process" in out
    assert re.search(
        r"estimated cost: up to 21 simulations of ~[\d.e-]+ s: [\d.e-]+ s at most", out
    )


def test_a_two_tier_dry_run_plans_both_tiers_and_builds_no_tiny_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = {"live": {"tiny_model": "tiny", "server_args": ["--enforce-eager"]}}
    two_tier = {"top_k": 2, "margin": 0.2, "cheap": SIM, "expensive": tiny}
    out = dry(tmp_path, capsys, two_tier=two_tier, objective={"maximize": "output_throughput"})
    assert not (tmp_path / "tiny").exists()
    cheap, expensive = out.split("cheap tier:\n")[1].split("expensive tier: ")
    assert "simulations of vLLM" in cheap and "estimated cost: up to 8 simulations" in cheap
    assert expensive.startswith("the shortlist, at most 4 configurations (the best 2 and up to 2")
    assert f"vllm serve {tmp_path / 'tiny'} --enforce-eager" in expensive
    assert "estimated cost: 4 server starts" in expensive
