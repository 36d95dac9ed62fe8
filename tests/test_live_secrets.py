"""Secrets never written: API keys and tokens stay out of every file tuner writes for a live
study (trial logs, trials.jsonl, the report), out of failure messages, and out of dumps of the
settings; the files it writes are its owner's only."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from tests.test_load import REFUSED_BUDGET, fake_vllm
from tests.test_server import CONFIG, SMALL, fake_backend, fake_exe  # noqa: F401 - a fixture
from tuner import BackendError, ConfigError
from tuner.backends import AttachedServerBackend
from tuner.backends.live import ServerSettings
from tuner.backends.live._secrets import Scrubber, is_secret_name, redact_args, redact_env

HF = "hf_UNIQUEtoken9f3a71"
KEY = "vk-UNIQUEkey55e0c2"


def test_names_that_look_secret_and_knob_names_that_do_not() -> None:
    secret = ["HF_TOKEN", "VLLM_API_KEY", "AWS_SECRET_ACCESS_KEY", "--api-key", "Authorization"]
    plain = ["HF_HOME", "VLLM_CPU_KVCACHE_SPACE", "--max-num-batched-tokens", "--tokenizer"]
    assert all(is_secret_name(n) for n in secret)
    assert not any(is_secret_name(n) for n in [*plain, "--long-prefill-token-threshold"])
    assert redact_env({"HF_TOKEN": HF, "HF_HOME": "/h"}) == {
        "HF_TOKEN": "<redacted>",
        "HF_HOME": "/h",
    }
    assert redact_args(["--api-key", KEY, f"--hf-token={HF}"]) == [
        "--api-key",
        "<redacted>",
        "--hf-token=<redacted>",
    ]
    assert Scrubber({HF, "x"}).scrub(f"a {HF} x") == "a <redacted> x"  # too short: kept


def test_settings_dumps_never_hold_the_api_key_or_secret_env_values() -> None:
    s = ServerSettings(
        api_key=KEY,
        headers={"X-Api-Key": KEY, "X-Team": "t"},
        env={"HF_TOKEN": HF, "VLLM_CPU_KVCACHE_SPACE": "1"},
        server_args=[f"--api-key={KEY}"],
    )
    dumped = json.dumps(s.model_dump(mode="json"))
    assert KEY not in dumped and HF not in dumped and KEY not in repr(s)
    assert '"X-Team": "t"' in dumped and '"VLLM_CPU_KVCACHE_SPACE": "1"' in dumped
    assert s.resolved_api_key() == KEY  # the value itself is still there to send
    assert ServerSettings.build(s, {}).resolved_api_key() == KEY
    with pytest.raises(ConfigError, match="not both"):
        ServerSettings(api_key=KEY, api_key_env="VLLM_API_KEY")


def test_api_key_env_names_the_variable_that_holds_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_KEY", KEY)
    with fake_vllm(api_key=KEY) as fake:
        m = AttachedServerBackend(fake.url, api_key_env="MY_KEY").evaluate(CONFIG, SMALL)
        assert m.failed_requests == 0
        with pytest.raises(BackendError, match="401") as info:
            AttachedServerBackend(fake.url).evaluate(CONFIG, SMALL)
    assert KEY not in str(info.value)
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(ConfigError, match="api_key_env = 'MY_KEY'"):
        AttachedServerBackend("http://127.0.0.1:9", api_key_env="MY_KEY")


def test_a_leaky_server_log_reaches_no_failure_message_in_clear(
    fake_exe: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF)
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    backend = fake_backend(fake_exe, tmp_path, mode="leak")
    with backend, pytest.raises(BackendError) as info:
        backend.evaluate(CONFIG, SMALL)
    msg = str(info.value)
    assert "fake vllm: using token <redacted>" in msg and "bad key <redacted>" in msg
    assert HF not in msg and KEY not in msg


def test_no_file_of_a_live_study_holds_a_secret_and_none_is_world_readable(
    fake_exe: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tuner.cli import _live

    monkeypatch.setenv("HF_TOKEN", HF)
    monkeypatch.setenv("VLLM_API_KEY", KEY)  # the started servers demand it; the client sends it
    parser = argparse.ArgumentParser(prog="tuner")
    _live.add_parser(parser.add_subparsers())
    study = tmp_path / "study"
    args = parser.parse_args(
        [
            *["live", "--model", "fake-model", "--vllm-executable", fake_exe],
            *["--budgets", f"{REFUSED_BUDGET},64", "--thresholds", "0", "--requests", "4"],
            *["--rate", "50", "--slo", "ttft.p99 <= 5s", "--workdir", str(study)],
            *["--env", f"MY_SERVICE_TOKEN={HF}x"],
        ]
    )
    assert args.func(args) == 0
    records = [json.loads(line) for line in (study / "trials.jsonl").open()]
    assert [r.get("error") is None for r in records if "number" in r] == [False, True]
    files = [p for p in study.rglob("*") if p.is_file()]
    logs = [p for p in files if p.name.startswith("trial-") and p.suffix == ".log"]
    assert len(logs) == 2 and (study / "report.md") in files
    for path in files:
        text = path.read_bytes()
        assert HF.encode() not in text and KEY.encode() not in text, path
    for log in logs:
        assert "HF_TOKEN': '<redacted>'" in log.read_text()
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((study / "live").stat().st_mode) == 0o700
    assert stat.S_IMODE((study / "live" / "logging.json").stat().st_mode) == 0o600
