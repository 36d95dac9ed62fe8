"""VLLMServerBackend: the lifecycle and every fault on a fake ``vllm`` (seconds, no vLLM), then
the real thing on a tiny random Llama (marked ``vllm``; about four server starts in all)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.test_load import (
    ERROR_TOKENS,
    NEVER_TOKENS,
    REFUSED_BUDGET,
    STALL_TOKENS,
    fake_vllm,
    hashed_workload,
)
from tuner import (
    BackendError,
    ConfigError,
    ConfigRefused,
    Loop,
    SearchSpace,
    ServerStartError,
    ServingConfig,
    Trial,
    TrialTimeout,
    TuningResult,
    Workload,
)
from tuner.backends import AttachedServerBackend, VLLMServerBackend
from tuner.backends.live._process import _group_members, find_vllm
from tuner.core import HARDWARE_KNOBS, KNOB_FLAGS
from tuner.search import GridSearch

FAKE_SCRIPT = Path(__file__).with_name("test_load.py")
CONFIG = ServingConfig(
    max_num_batched_tokens=256, max_num_seqs=8, max_model_len=1024, block_size=128
)
SMALL = Workload.from_arrays([0.0, 0.0, 0.05, 0.1, 0.1], [40, 7, 90, 12, 30], [5, 1, 12, 4, 6])
_GROUP = re.compile(r"^# tuner: server pid (\d+), process group (\d+),", re.MULTILINE)


def server_groups(log_paths: list[Path]) -> list[int]:
    """The process groups of the servers started for these trial logs."""
    return [int(m.group(2)) for p in log_paths for m in _GROUP.finditer(p.read_text())]


def assert_no_server_left(log_paths: list[Path]) -> None:
    groups = server_groups(log_paths)
    assert groups, "no server was started"
    for pgid in groups:
        assert _group_members(pgid) == [], f"process group {pgid} still has processes"


def tmp_entries() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


@pytest.fixture
def fake_exe(tmp_path: Path) -> str:
    """A stand-in `vllm` command that runs the fake server of test_load.py."""
    exe = tmp_path / "bin" / "vllm"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_SCRIPT}" "$@"\n')
    exe.chmod(0o755)
    return str(exe)


def fake_backend(
    fake_exe: str, workdir: Path | None, mode: str = "ok", **kwargs: object
) -> VLLMServerBackend:
    return VLLMServerBackend(
        "fake-model",
        vllm_executable=fake_exe,
        workdir=workdir,
        startup_timeout=30,
        env={"FAKE_VLLM_MODE": mode},
        **kwargs,  # type: ignore[arg-type]
    )


# --- lifecycle on the fake ---------------------------------------------------------------------
def test_a_trial_is_measured_from_the_stream_and_the_step_log(
    fake_exe: str, tmp_path: Path
) -> None:
    with fake_backend(fake_exe, tmp_path / "study") as backend:
        m = backend.evaluate(CONFIG, SMALL)
        trial = backend.last_trial
    assert trial is not None and trial.log_path is not None
    assert m.time_unit == "s" and m.failed_requests == 0
    assert m.output_tokens.tolist() == SMALL.output_tokens.tolist()
    assert m.arrival.tolist() == SMALL.arrival.tolist()
    assert (m.ttft > 0).all() and (m.e2e >= m.ttft).all()
    assert len(m.itl_values) == SMALL.total_output_tokens - len(SMALL)
    assert (m.itl_counts == 1).all()
    assert m.duration == pytest.approx(trial.load.duration)
    # The fake schedules like vLLM: every prompt token, every output token but the last.
    assert m.step_tokens.sum() == SMALL.total_prompt_tokens + SMALL.total_output_tokens - 5
    assert m.step_seqs is not None and m.step_start is not None and m.step_end is not None
    assert m.step_prefill_tokens.sum() == SMALL.total_prompt_tokens
    assert (np.diff(m.step_start) > 0).all()
    # Steps are on the workload's clock: the first starts after the first arrival.
    assert m.step_start[0] >= SMALL.arrival.min() - 0.05
    assert str(trial.log_path) in m.source and trial.log_path.name == "trial-000.log"
    assert backend.log_paths == [trial.log_path]
    assert trial.startup_seconds is not None and trial.startup_seconds > 0
    assert trial.served_model == "fake-model" and trial.vllm_version == "0.0-fake"
    assert_no_server_left(backend.log_paths)


def test_the_server_gets_loopback_a_free_port_and_folders_inside_the_workdir(
    fake_exe: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "study"
    with fake_backend(fake_exe, workdir) as backend:
        backend.evaluate(CONFIG, SMALL[:1])
        log = backend.log_paths[0].read_text()
    command = re.search(r"^# tuner: command: (.*)$", log, re.MULTILINE)
    assert command is not None
    args = command.group(1).split()
    assert args[1:3] == ["serve", "fake-model"]
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert "--enable-logging-iteration-details" in args
    assert "--no-enable-prefix-caching" in args
    # Prefix caching is decided with the workload; deployment knobs at vLLM's defaults are left
    # to vLLM (a CPU server never sees --gpu-memory-utilization).
    knobs = [k for k in KNOB_FLAGS if k != "enable_prefix_caching" and k not in HARDWARE_KNOBS]
    assert " ".join(CONFIG.to_vllm_args(knobs)) in command.group(1)
    assert "--gpu-memory-utilization" not in args and "--no-enforce-eager" not in args
    got = dict(re.findall(r"^fake vllm env (\w+)=(.*)$", log, re.MULTILINE))
    run_dir = got["TMPDIR"]
    assert got["VLLM_RPC_BASE_PATH"] == run_dir
    assert len(run_dir) + 37 < 107  # vLLM's "<base>/<uuid4>" sockets fit a Unix socket path
    if len(str(workdir / "run" / "trial-000")) <= 64:
        assert run_dir == str(workdir / "run" / "trial-000")
    assert not Path(run_dir).exists()  # the trial's temp folder is gone
    assert got["VLLM_CACHE_ROOT"].startswith(str(workdir))
    assert got["HF_HUB_OFFLINE"] == "1" and got["VLLM_NO_USAGE_STATS"] == "1"
    assert got["VLLM_HOST_IP"] == "127.0.0.1"
    assert backend.log_paths[0].exists()  # a given workdir is kept, logs included


def test_describe_names_the_model_arguments_and_environment_not_the_workdir(
    fake_exe: str, tmp_path: Path
) -> None:
    a = VLLMServerBackend(
        "m",
        vllm_executable=fake_exe,
        server_args=["--enforce-eager"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
        workdir=tmp_path / "a",
    )
    b = VLLMServerBackend(
        "m",
        vllm_executable=fake_exe,
        server_args=["--enforce-eager"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
        workdir=tmp_path / "b",
    )
    assert a.describe() == b.describe() == "vllm-server(m --enforce-eager VLLM_CPU_KVCACHE_SPACE=1)"


def test_user_server_args_come_first_and_their_prefix_caching_choice_is_kept(
    fake_exe: str,
) -> None:
    server_args = ["--enforce-eager", "--enable-prefix-caching"]
    backend = VLLMServerBackend("m", vllm_executable=fake_exe, server_args=server_args)
    args = backend.server_command(CONFIG, 4321)
    assert args[3:5] == ["--enforce-eager", "--enable-prefix-caching"]
    assert "--no-enable-prefix-caching" not in args
    assert args[-3:] == ["--port", "4321", "--enable-logging-iteration-details"]


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("--max-num-seqs=4", "ServingConfig knob"),
        ("--max_num_batched_tokens", "ServingConfig"),
        ("--block-size", "ServingConfig"),
        ("--port", "free port"),
        ("--host", "127.0.0.1"),
    ],
)
def test_server_args_that_set_a_knob_or_the_address_are_refused(
    fake_exe: str, arg: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        VLLMServerBackend("m", vllm_executable=fake_exe, server_args=[arg, "1"])


def test_the_default_workdir_is_temporary_and_nothing_is_left_in_tmp(
    fake_exe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "tmp"  # a temp dir of its own: other runs on the machine use /tmp too
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    before = {e.name for e in private.iterdir()}
    backend = fake_backend(fake_exe, None)
    backend.evaluate(CONFIG, SMALL[:2])
    workdir = backend.workdir
    assert workdir.parent == Path(tempfile.gettempdir()) and workdir.name.startswith("tuner-live-")
    groups = server_groups(backend.log_paths)
    backend.close()
    backend.close()  # idempotent
    assert not workdir.exists()
    assert not {e.name for e in private.iterdir()} - before
    assert groups and all(_group_members(g) == [] for g in groups)


def test_a_request_that_does_not_fit_max_model_len_fails_before_any_server_starts(
    fake_exe: str, tmp_path: Path
) -> None:
    too_long = Workload.from_arrays([0.0], [1000], [100])
    with fake_backend(fake_exe, tmp_path) as backend, pytest.raises(ConfigRefused, match="max_mo"):
        backend.evaluate(CONFIG, too_long)
    assert backend.log_paths == []


# --- faults on the fake ------------------------------------------------------------------------
def test_a_server_that_exits_before_health_is_a_start_error_with_reason_and_log_tail(
    fake_exe: str, tmp_path: Path
) -> None:
    backend = fake_backend(fake_exe, tmp_path, mode="crash")
    with backend, pytest.raises(ServerStartError) as info:
        backend.evaluate(CONFIG, SMALL)
    msg = str(info.value)
    first = msg.splitlines()[0]
    assert first.startswith("ValueError: fake refusal")  # vLLM's reason first, then what failed
    assert "(vllm serve exited with code 3 after" in first and "before it was healthy" in first
    assert msg.splitlines()[1] == f"config: {CONFIG.describe()}"
    assert "last 30 lines of" in msg and "trial-000.log" in msg
    assert "fake vllm crash: serving fake-model" in msg  # the tail itself
    assert_no_server_left(backend.log_paths)


def test_a_server_never_healthy_is_killed_with_its_children_after_startup_timeout(
    fake_exe: str, tmp_path: Path
) -> None:
    backend = VLLMServerBackend(
        "fake-model",
        vllm_executable=fake_exe,
        workdir=tmp_path,
        startup_timeout=2,
        env={"FAKE_VLLM_MODE": "hang"},
    )
    t0 = time.monotonic()
    with backend, pytest.raises(ServerStartError, match=r"not healthy after 2 s"):
        backend.evaluate(CONFIG, SMALL)
    assert time.monotonic() - t0 < 30
    assert_no_server_left(backend.log_paths)  # the fake's `sleep` child went with it


def test_a_server_dying_mid_trial_is_a_backend_error(fake_exe: str, tmp_path: Path) -> None:
    backend = fake_backend(fake_exe, tmp_path, mode="die")
    with backend, pytest.raises(BackendError) as info:
        backend.evaluate(CONFIG, SMALL)
    assert not isinstance(info.value, ServerStartError)
    assert "fake vllm: dying on purpose" in str(info.value)
    assert_no_server_left(backend.log_paths)


def test_requests_that_time_out_fail_the_trial_with_trial_timeout(
    fake_exe: str, tmp_path: Path
) -> None:
    w = Workload.from_arrays([0.0, 0.0], [8, 8], [3, STALL_TOKENS])
    backend = fake_backend(fake_exe, tmp_path, request_timeout=1.0)
    with backend, pytest.raises(TrialTimeout, match=r"1 of 2 requests failed.*timed out after 1 s"):
        backend.evaluate(CONFIG, w)
    assert_no_server_left(backend.log_paths)


def test_failed_requests_up_to_max_failed_requests_are_recorded_with_nan_latency(
    fake_exe: str, tmp_path: Path
) -> None:
    w = Workload.from_arrays([0.0, 0.0, 0.0], [8, 8, 8], [3, ERROR_TOKENS, 4])
    backend = fake_backend(fake_exe, tmp_path)
    with backend, pytest.raises(BackendError, match="HTTP 400"):
        backend.evaluate(CONFIG, w)
    with fake_backend(fake_exe, tmp_path, max_failed_requests=1) as backend:
        m = backend.evaluate(CONFIG, w)
    assert m.failed_requests == 1
    assert math.isnan(m.ttft[1]) and math.isnan(m.e2e[1]) and m.output_tokens[1] == 0
    assert not math.isnan(m.ttft[0]) and m.output_tokens.tolist() == [3, 0, 4]


def test_the_loop_records_a_refused_config_as_failed_and_goes_on(
    fake_exe: str, tmp_path: Path
) -> None:
    space = SearchSpace({"max_num_batched_tokens": [REFUSED_BUDGET, 64]}, base=CONFIG)
    seen: list[Trial] = []
    backend = fake_backend(fake_exe, tmp_path)
    result = Loop(backend, GridSearch(), slos=["ttft.p99 <= 5s"], on_trial=seen.append).run(
        space, SMALL
    )
    refused, ok = result.trials
    assert not refused.ok and "ServerStartError" in (refused.error or "")
    assert "fake refusal" in (refused.error or "")
    assert ok.ok and ok.feasible and result.best is ok
    assert seen == list(result.trials)
    assert_no_server_left(backend.log_paths)


def test_a_missing_vllm_is_an_error_naming_both_places_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BackendError) as info:
        VLLMServerBackend("m")
    msg = str(info.value)
    assert str(tmp_path / "venv" / "bin" / "vllm") in msg and "not on PATH" in msg
    assert "vllm_executable" in msg and "install" in msg.lower()
    with pytest.raises(BackendError, match="not an executable"):
        find_vllm(tmp_path / "nope")


def test_tuner_live_tunes_on_the_server_and_prints_the_trials_and_chosen_flags(
    fake_exe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from tuner.cli import _live

    parser = argparse.ArgumentParser(prog="tuner")
    _live.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "live",
            "--model",
            "fake-model",
            "--vllm-executable",
            fake_exe,
            "--budgets",
            f"{REFUSED_BUDGET},64",
            "--thresholds",
            "0",
            "--requests",
            "6",
            "--rate",
            "50",
            "--slo",
            "ttft.p99 <= 5s",
            "--workdir",
            str(tmp_path / "study"),
        ]
    )
    assert args.func(args) == 0
    captured = capsys.readouterr()
    out, progress = captured.out, captured.err
    assert f"live 1/2 trial 0: max_num_batched_tokens={REFUSED_BUDGET}: FAILED" in progress
    assert "fake refusal" in progress
    assert "live 2/2 trial 1: max_num_batched_tokens=64: output_throughput" in progress
    assert "chosen: ServingConfig(max_num_batched_tokens=64)" in out
    assert "vllm serve <model> --max-num-batched-tokens 64 " in out
    records = [json.loads(line) for line in (tmp_path / "study" / "trials.jsonl").open()]
    assert [r["number"] for r in records if "number" in r] == [0, 1]
    assert (tmp_path / "study" / "report.md").exists()
    assert_no_server_left(sorted((tmp_path / "study" / "live").glob("trial-*.log")))


# --- attach mode ---------------------------------------------------------------------------------
def test_an_attached_backend_is_described_by_its_url_without_a_trailing_slash() -> None:
    attached = AttachedServerBackend("http://127.0.0.1:8000/")
    assert attached.describe() == "vllm-server(attached http://127.0.0.1:8000)"
    assert attached.url == "http://127.0.0.1:8000" and attached.config is None


def test_an_attached_backend_refuses_a_config_that_differs_before_any_request() -> None:
    # Nothing listens on this URL: the refusal comes before the server is asked anything.
    backend = AttachedServerBackend("http://127.0.0.1:9/", config=CONFIG)
    with pytest.raises(ConfigError) as info:
        backend.evaluate(CONFIG.replace(max_num_seqs=4, max_num_batched_tokens=64), SMALL)
    msg = str(info.value)
    assert msg.startswith(
        "attach mode measures the server already running at http://127.0.0.1:9, whose flags "
        "tuner cannot change"
    )
    assert f"({CONFIG.describe()})" in msg
    assert "this trial changes max_num_batched_tokens, max_num_seqs." in msg
    assert "omit attach_url" in msg and backend.last_trial is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": ""}, "give the server's base URL"),
        ({"url": None}, "give the server's base URL"),
        ({"config": "x"}, "expected a ServingConfig"),
        ({"request_timeout": 0}, "request_timeout = 0"),
        ({"max_failed_requests": -1}, "max_failed_requests = -1"),
    ],
)
def test_an_attached_backend_refuses_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1:8000", **kwargs}
    with pytest.raises(ConfigError, match=match):
        AttachedServerBackend(**args)  # type: ignore[arg-type]


def test_attach_mode_measures_a_running_server_and_refuses_other_configs(tmp_path: Path) -> None:
    import logging

    log_file = tmp_path / "server.log"
    log = logging.getLogger("fake.attached")
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(created).6f %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with fake_vllm(log=log) as fake:
            backend = AttachedServerBackend(fake.url, config=CONFIG, log=log_file)
            m = backend.evaluate(CONFIG, SMALL)
            m2 = backend.evaluate(CONFIG, SMALL)
            with pytest.raises(ConfigError, match=r"attach mode.*max_num_batched_tokens"):
                backend.evaluate(CONFIG.replace(max_num_batched_tokens=64), SMALL)
            with pytest.raises(ConfigError, match="serves max_model_len=1024"):
                AttachedServerBackend(fake.url).evaluate(CONFIG.replace(max_model_len=2048), SMALL)
            bodies = fake.bodies
    finally:
        log.removeHandler(handler)
        handler.close()
    assert m.failed_requests == 0 and m2.failed_requests == 0
    expected = SMALL.total_prompt_tokens + SMALL.total_output_tokens - len(SMALL)
    assert m.step_tokens.sum() == expected and m2.step_tokens.sum() == expected
    assert fake.url in m.source
    # 2 warm-ups + 2 x 5 requests, all with distinct prompts (no prefix-cache hit between runs)
    assert len(bodies) == 12
    assert len({tuple(b["prompt"][:4]) for b in bodies}) == 12  # type: ignore[index]


def test_attach_mode_adopts_the_first_config_when_none_is_declared() -> None:
    with fake_vllm() as fake:
        backend = AttachedServerBackend(fake.url, warmup=False)
        backend.evaluate(CONFIG, SMALL[:1])
        assert backend.config == CONFIG
        with pytest.raises(ConfigError, match="omit attach_url"):
            backend.evaluate(CONFIG.replace(max_num_seqs=4), SMALL[:1])


# --- stalls, client lag, prefix caching -------------------------------------------------------
def test_a_healthy_server_that_streams_nothing_fails_the_trial_as_stalled_and_is_replaced(
    fake_exe: str, tmp_path: Path
) -> None:
    stuck = Workload.from_arrays([0.0, 0.0, 0.1], [8, 8, 8], [NEVER_TOKENS] * 3)
    with fake_backend(fake_exe, tmp_path, stall_timeout=1.0, request_timeout=120) as backend:
        t0 = time.monotonic()
        with pytest.raises(TrialTimeout) as info:
            backend.evaluate(CONFIG, stuck)
        assert time.monotonic() - t0 < 30  # not the 120 s request timeout
        m = backend.evaluate(CONFIG, SMALL)  # the next trial: a fresh server
    first = str(info.value).splitlines()[0]
    assert first == "stalled: no token for 1 s with 3 requests outstanding during the load"
    assert "last 30 lines of" in str(info.value)
    assert m.failed_requests == 0
    groups = server_groups(backend.log_paths)
    assert len(backend.log_paths) == 2 and len(set(groups)) == 2
    assert_no_server_left(backend.log_paths)


def test_a_client_that_fell_behind_its_schedule_is_flagged_with_the_reason(
    fake_exe: str, tmp_path: Path
) -> None:
    with fake_backend(fake_exe, tmp_path, max_send_lag=1e-9) as backend:
        backend.evaluate(CONFIG, SMALL)
        trial = backend.last_trial
    assert trial is not None and trial.client_lagged
    assert trial.client_lag_reason is not None
    assert trial.client_lag_reason.startswith("client lagged: ")
    assert "max_send_lag=1e-09 s" in trial.client_lag_reason
    assert trial.send_lag.p50 <= trial.send_lag.p99 <= trial.send_lag.max
    assert trial.send_lag.max == pytest.approx(float(trial.load.send_lag.max()))
    with fake_backend(fake_exe, tmp_path / "b") as backend:
        backend.evaluate(CONFIG, SMALL)
        calm = backend.last_trial
    assert calm is not None and calm.read_lag.max >= 0
    assert calm.client_lagged == (calm.client_lag_reason is not None)


def test_prefix_caching_stays_on_only_for_a_workload_that_shares_prefixes(
    fake_exe: str,
) -> None:
    backend = VLLMServerBackend("m", vllm_executable=fake_exe)
    shared = hashed_workload([0.0, 0.1], [32, 32], [2, 2], [(1, 2), (1, 3)])
    distinct = hashed_workload([0.0, 0.1], [32, 32], [2, 2], [(1, 2), (4, 3)])
    on = backend.server_command(CONFIG, 1, shared)
    assert "--no-enable-prefix-caching" not in on and "--enable-prompt-tokens-details" in on
    assert "--no-enable-prefix-caching" in backend.server_command(CONFIG, 1, distinct)
    assert "--no-enable-prefix-caching" in backend.server_command(CONFIG, 1, SMALL)
    assert "--no-enable-prefix-caching" in backend.server_command(CONFIG, 1)


def test_an_attached_server_has_its_prefix_cache_reset_before_each_load_or_says_it_could_not() -> (
    None
):
    with fake_vllm(dev_mode=True) as fake:
        backend = AttachedServerBackend(base_url=fake.url)
        backend.evaluate(CONFIG, SMALL)
        backend.evaluate(CONFIG, SMALL)
        assert fake.resets == 2 and backend.last_trial is not None
        assert backend.last_trial.prefix_cache_reset is True
    with fake_vllm() as fake:  # no VLLM_SERVER_DEV_MODE: 404
        backend = AttachedServerBackend(fake.url)
        m = backend.evaluate(CONFIG, SMALL)
        trial = backend.last_trial
    assert m.failed_requests == 0 and trial is not None
    assert trial.prefix_cache_reset is False
    assert any("HTTP 404" in n and "VLLM_SERVER_DEV_MODE=1" in n for n in trial.notes)


# --- Ctrl-C --------------------------------------------------------------------------------
def _interrupt_mid_trial(script: str, log_path: Path, min_steps: int, timeout: float) -> str:
    """Run ``script`` in a child Python, SIGINT it once ``log_path`` shows ``min_steps`` engine
    steps, and return its stderr (after checking it exited)."""
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            text = log_path.read_text() if log_path.exists() else ""
            if text.count("Iteration(") >= min_steps:
                break
            assert child.poll() is None, f"the study ended early: {child.stderr.read()}"  # type: ignore[union-attr]
            time.sleep(0.1)
        else:
            pytest.fail(f"no engine step in {log_path} after {timeout} s")
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode != 0
    return err


def test_ctrl_c_mid_trial_stops_the_server_group(fake_exe: str, tmp_path: Path) -> None:
    workdir = tmp_path / "study"
    script = textwrap.dedent(f"""
        from tuner import ServingConfig, Workload
        from tuner.backends import VLLMServerBackend
        backend = VLLMServerBackend("fake-model", vllm_executable={fake_exe!r},
                                    workdir={str(workdir)!r}, env={{"FAKE_VLLM_MODE": "slow"}})
        w = Workload.from_arrays([i * 0.05 for i in range(100)], [16] * 100, [100] * 100)
        backend.evaluate(ServingConfig(**{CONFIG.model_dump()!r}), w)
    """)
    err = _interrupt_mid_trial(script, workdir / "trial-000.log", min_steps=10, timeout=60)
    assert "KeyboardInterrupt" in err
    assert_no_server_left([workdir / "trial-000.log"])
    run_dir = re.search(
        r"^fake vllm env TMPDIR=(.*)$", (workdir / "trial-000.log").read_text(), re.MULTILINE
    )
    assert run_dir is not None and not Path(run_dir.group(1)).exists()


# --- the real thing ------------------------------------------------------------------------------
LIVE_SERVER_ARGS = ["--enforce-eager", "--dtype", "bfloat16"]
LIVE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
LIVE_BASE = ServingConfig(max_num_seqs=8, block_size=128, max_model_len=1024)
# 24 requests of 200 prompt tokens at 8 req/s: ~3 s of load per trial.
LIVE_WORKLOAD = Workload.from_arrays(
    np.cumsum(np.random.default_rng(1).exponential(1 / 8, 24)), [200] * 24, [12] * 24
)
LIVE_SLOS = ["ttft.p99 <= 5s", "max_step_tokens <= 128"]


@pytest.fixture(scope="module")
def study(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TuningResult, VLLMServerBackend, set[str]]]:
    """One live study, shared by the tests below: 2 budgets x 2 max_model_len, where
    max_model_len=8192 exceeds the tiny model's 4096 positions and vLLM refuses it."""
    before = tmp_entries()
    backend = VLLMServerBackend(
        tiny_model,
        server_args=LIVE_SERVER_ARGS,
        env=LIVE_ENV,
        workdir=tmp_path_factory.mktemp("study"),
        startup_timeout=300,
        request_timeout=60,
    )
    space = SearchSpace(
        {"max_model_len": [8192, 1024], "max_num_batched_tokens": [64, 256]}, base=LIVE_BASE
    )
    result = Loop(backend, GridSearch(), slos=LIVE_SLOS).run(space, LIVE_WORKLOAD)
    yield result, backend, before


@pytest.mark.vllm
def test_live_trials_measure_every_request_exactly(
    study: tuple[TuningResult, VLLMServerBackend, set[str]],
) -> None:
    result, _, _ = study
    measured = [t for t in result.trials if t.ok]
    assert len(measured) == 2
    for t in measured:
        m = t.measurement
        assert m is not None and m.failed_requests == 0 and m.time_unit == "s"
        assert m.output_tokens.tolist() == LIVE_WORKLOAD.output_tokens.tolist()
        assert (m.ttft > 0).all() and (m.e2e >= m.ttft).all()
        assert len(m.itl_values) == LIVE_WORKLOAD.total_output_tokens - len(LIVE_WORKLOAD)
        assert m.duration > LIVE_WORKLOAD.arrival.max() - LIVE_WORKLOAD.arrival.min()
        assert "vllm 0.32" in m.source and ".log" in m.source


@pytest.mark.vllm
def test_live_step_log_holds_every_prompt_token_and_every_output_token_but_the_last(
    study: tuple[TuningResult, VLLMServerBackend, set[str]],
) -> None:
    result, _, _ = study
    for t in result.trials:
        if not t.ok:
            continue
        m = t.measurement
        assert m is not None and m.step_tokens is not None
        # vLLM schedules each prompt token once and feeds back every sampled token but the
        # last: sum(step_tokens) == prompt + output - n exactly (no preemption, no cache hit).
        assert m.preemptions == 0
        expected = (
            LIVE_WORKLOAD.total_prompt_tokens
            + LIVE_WORKLOAD.total_output_tokens
            - len(LIVE_WORKLOAD)
        )
        assert int(m.step_tokens.sum()) == expected
        assert int(m.step_prefill_tokens.sum()) == LIVE_WORKLOAD.total_prompt_tokens
        assert m.max_step_tokens <= t.config.max_num_batched_tokens
        assert (m.step_seqs <= t.config.max_num_seqs).all()
        assert (np.diff(m.step_start) > 0).all() and (m.step_end > m.step_start).all()
        assert m.step_start[0] >= LIVE_WORKLOAD.arrival.min()


@pytest.mark.vllm
def test_live_grid_picks_the_best_config_that_meets_every_slo(
    study: tuple[TuningResult, VLLMServerBackend, set[str]],
) -> None:
    result, _, _ = study
    best = result.best
    assert best.feasible and best.config.max_num_batched_tokens == 64
    assert best.values["max_step_tokens"] <= 128 and best.values["ttft.p99"] <= 5
    (big,) = [t for t in result.trials if t.ok and t.config.max_num_batched_tokens == 256]
    assert not big.feasible  # 200-token prompts fill a 256-token budget: steps of > 128 tokens
    # the step SLO is what rules it out (the TTFT one may miss too under the confident rule
    # when the machine is busy: it is judged on its interval's far end)
    assert "max_step_tokens <= 128" in [v.slo for v in big.violations]


@pytest.mark.vllm
def test_live_refused_config_is_a_failed_trial_with_vllms_reason(
    study: tuple[TuningResult, VLLMServerBackend, set[str]],
) -> None:
    result, _, _ = study
    refused = [t for t in result.trials if t.config.max_model_len == 8192]
    assert len(refused) == 2 and all(not t.ok for t in refused)
    for t in refused:
        assert t.error is not None
        first = t.error.splitlines()[0]
        assert first.startswith("ServerStartError: ValidationError:")  # vLLM's own reason first
        assert "User-specified max_model_len (8192) is greater than" in first
        assert "(vllm serve exited with code" in first
        assert "last 30 lines" in t.error
    assert result.trials[-1].ok  # the Loop went on after the refusals


@pytest.mark.vllm
def test_live_study_leaves_no_process_and_no_file_in_tmp(
    study: tuple[TuningResult, VLLMServerBackend, set[str]],
) -> None:
    _, backend, before = study
    assert len(backend.log_paths) == 4
    assert_no_server_left(backend.log_paths)
    new = tmp_entries() - before
    leaks = {e for e in new if re.search(r"vllm|torch|triton|^tuner-|^[0-9a-f]{8}-", e)}
    assert not leaks, f"left in /tmp: {sorted(leaks)}"
    run = backend.workdir / "run"
    assert not run.exists() or not list(run.iterdir())  # every trial's temp folder is gone


@pytest.mark.vllm
def test_live_ctrl_c_mid_trial_leaves_no_vllm_process(tiny_model: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "study"
    script = textwrap.dedent(f"""
        from tuner import ServingConfig, Workload
        from tuner.backends import VLLMServerBackend
        backend = VLLMServerBackend({str(tiny_model)!r}, server_args={LIVE_SERVER_ARGS!r},
                                    env={LIVE_ENV!r}, workdir={str(workdir)!r},
                                    startup_timeout=300)
        w = Workload.from_arrays([i * 0.1 for i in range(300)], [64] * 300, [64] * 300)
        backend.evaluate(ServingConfig(**{LIVE_BASE.model_dump()!r}), w)
    """)
    log = workdir / "trial-000.log"
    err = _interrupt_mid_trial(script, log, min_steps=20, timeout=300)
    assert "KeyboardInterrupt" in err
    assert_no_server_left([log])
    assert not [c for c in _cmdlines() if str(tiny_model) in c or "VLLM::" in c]


def _cmdlines() -> list[str]:
    """Command lines of every live process (psutil-free)."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                out.append(Path(entry.path, "cmdline").read_text().replace("\0", " "))
            except OSError:
                continue
    return out
