"""The load client on a real CPU vLLM (marked ``vllm``; one server start in all): its figures
agree with ``vllm bench serve`` on the same trace and server, and a trace whose requests share
hash ids hits vLLM's prefix cache, as vLLM's own counters say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.test_load import hashed_workload
from tuner import ServingConfig, Workload
from tuner.backends import AttachedServerBackend, VLLMServerBackend
from tuner.backends.live._command import trial_run_dir as _run_dir

pytestmark = pytest.mark.vllm
CONFIG = ServingConfig(
    max_num_seqs=8, block_size=128, max_model_len=1024, max_num_batched_tokens=256
)
# 16 requests of 512 prompt tokens: the first 384 (24 chunks of 16, 3 blocks of 128) shared.
SHARED = hashed_workload(
    [i * 0.25 for i in range(16)],
    [512] * 16,
    [4] * 16,
    [tuple(range(24)) + tuple(1000 + 8 * i + k for k in range(8)) for i in range(16)],
)


@pytest.fixture(scope="module")
def server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, Path]]:
    """One ``vllm serve`` with prefix caching on and its dev routes (``/reset_prefix_cache``),
    started as VLLMServerBackend starts its servers: (url, log, workdir)."""
    workdir = tmp_path_factory.mktemp("attached")
    starter = VLLMServerBackend(
        tiny_model,
        server_args=["--enforce-eager", "--dtype", "bfloat16"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_SERVER_DEV_MODE": "1"},
        workdir=workdir,
        startup_timeout=300,
    )
    log = workdir / "server.log"
    run_dir = _run_dir(starter.workdir, 0)
    process, url, _ = starter._start(CONFIG, log, run_dir, SHARED)
    try:
        yield url, log, workdir
    finally:
        process.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_a_trace_with_shared_hash_ids_hits_vllms_prefix_cache(
    server: tuple[str, Path, Path],
) -> None:
    url, log, _ = server
    backend = AttachedServerBackend(url, config=CONFIG, log=log, request_timeout=60)
    m = backend.evaluate(CONFIG, SHARED)
    trial = backend.last_trial
    assert trial is not None and m.failed_requests == 0
    assert trial.prefix_cache_reset is True  # VLLM_SERVER_DEV_MODE=1 serves the route
    assert trial.prefix_cache_hits is not None and trial.prefix_cache_hits > 0
    rate = trial.prefix_cache_hit_rate
    assert rate is not None and 0.3 < rate < 0.75  # at most 15 of 16 x 384 of 512 tokens
    cached = [r.cached_tokens for r in trial.load.requests]
    assert cached[0] == 0 and max(c or 0 for c in cached) >= 384  # usage.prompt_tokens_details
    assert sum(c or 0 for c in cached) == trial.prefix_cache_hits
    # the engine scheduled only what the cache did not hold
    assert m.step_prefill_tokens is not None
    assert int(m.step_prefill_tokens.sum()) == SHARED.total_prompt_tokens - trial.prefix_cache_hits


def test_the_load_client_agrees_with_vllm_bench_serve_on_the_same_trace(
    server: tuple[str, Path, Path], tiny_model: Path, tmp_path: Path
) -> None:
    url, _, workdir = server
    rng = np.random.default_rng(7)
    trace = Workload.from_arrays(np.cumsum(rng.exponential(0.1, 30)), [64] * 30, [16] * 30)
    backend = AttachedServerBackend(url, config=CONFIG, request_timeout=60)
    m = backend.evaluate(CONFIG, trace)
    trial = backend.last_trial
    assert trial is not None and m.failed_requests == 0 and not trial.load.stalled
    # vllm bench times a request from its own send; tuner's Measurement from the scheduled
    # arrival (the client's lateness included, as an open-loop SLO sees it). Compare like with
    # like: tuner's per-request records are timed from the send too.
    sent_ttft = [r.ttft for r in trial.load.requests]
    tuner = {
        "median_ttft_ms": float(np.median(sent_ttft)) * 1000,
        "median_itl_ms": float(np.median(m.itl_values)) * 1000,
        "median_tpot_ms": float(np.median((m.e2e - m.ttft) / (m.output_tokens - 1))) * 1000,
        "median_e2el_ms": float(np.median([r.e2e for r in trial.load.requests])) * 1000,
        "output_throughput": float(m.output_tokens.sum()) / m.duration,
    }
    trace.to_jsonl(tmp_path / "trace.jsonl")
    vllm = str(Path(sys.executable).with_name("vllm"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": str(workdir / "cache")}
    subprocess.run(
        [
            *[vllm, "bench", "serve", "--backend", "vllm", "--base-url", url],
            *["--model", trial.served_model, "--tokenizer", str(tiny_model)],
            *["--dataset-name", "timed_trace", "--dataset-path", str(tmp_path / "trace.jsonl")],
            *["--num-prompts", "30", "--save-result", "--result-dir", str(tmp_path)],
            *["--result-filename", "bench.json", "--disable-tqdm"],
            *["--percentile-metrics", "ttft,tpot,itl,e2el"],
        ],
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["completed"] == 30
    shown = {k: (round(tuner[k], 2), round(float(bench[k]), 2)) for k in tuner}
    print(f"\ncross-check tuner vs vllm bench serve: {shown}")
    (Path(os.environ.get("TUNER_CROSSCHECK_OUT", tmp_path)) / "crosscheck.json").write_text(
        json.dumps(shown)
    )
    # 2 shared cores: generous bounds, in both directions. (On this tiny model the API server
    # often delivers a request's tokens in one read, so both tools see a median ITL of ~0.)
    for k in ("median_ttft_ms", "median_itl_ms", "median_tpot_ms", "median_e2el_ms"):
        a, b = tuner[k], float(bench[k])
        assert abs(a - b) <= max(10.0, 0.6 * max(a, b)), (k, a, b)
    a, b = tuner["output_throughput"], float(bench["output_throughput"])
    assert abs(a - b) <= 0.15 * max(a, b), ("output_throughput", a, b)


def test_closed_loop_users_wait_for_their_responses_on_a_real_vllm(
    server: tuple[str, Path, Path],
) -> None:
    # 2 users x 3 requests: each next request sent 50 ms after the previous one's last token.
    w = Workload.closed_loop(2, 6, prompt_len=64, output_len=8, think_time=0.05, seed=1)
    url, log, _ = server
    backend = AttachedServerBackend(url, config=CONFIG, log=log, request_timeout=60)
    m = backend.evaluate(CONFIG, w)
    trial = backend.last_trial
    assert trial is not None and m.failed_requests == 0
    reqs = trial.load.requests
    for i in range(4):  # request i + 2 is the same user's next one
        assert reqs[i + 2].sent >= reqs[i].token_times[-1] + 0.05 - 1e-3
    sent = np.array([r.sent for r in reqs]) + trial.load.time_offset
    assert m.arrival.tolist() == sent.tolist() and (m.arrival[2:] > w.arrival[2:]).all()
    assert m.output_tokens.tolist() == [8] * 6
    assert m.step_tokens is not None  # the engine's step log: every token was scheduled
    assert int(m.step_tokens.sum()) == w.total_prompt_tokens + w.total_output_tokens - 6
