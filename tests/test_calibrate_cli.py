"""``tuner calibrate``: a calibration from a server log plus a ``vllm bench serve`` detailed
result, or from a live study's saved measurements; bad files are refused with the file, line
or field named (exit status 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tuner import Measurement, ServingConfig, Trial, TrialStatus, Workload
from tuner.backends import CostModel, SimulatorBackend
from tuner.backends.simulator import Calibration, RequestPath
from tuner.cli import main
from tuner.core import ClientHealth
from tuner.studies import save_measurement

TRUE = CostModel(fixed=0.004, per_prefill_token=2e-5, per_sequence=3e-4, time_unit="s")
T0 = 1_796_000_000.0  # the server's Unix clock at the benchmark's first step
CONFIG = ServingConfig(max_num_batched_tokens=256, max_num_seqs=8, max_model_len=1024)


def simulated(config: ServingConfig, seed: int) -> tuple[Workload, Measurement]:
    rng = np.random.default_rng(seed)
    w = Workload.from_arrays(
        np.cumsum(rng.exponential(0.05, 60)), rng.integers(32, 400, 60), rng.integers(4, 80, 60)
    )
    return w, SimulatorBackend(TRUE).evaluate(config, w)


def write_run(folder: Path, config: ServingConfig, seed: int = 0) -> tuple[Path, Path]:
    """A server log (timestamped iteration lines after a warm-up step) and a detailed bench
    result, made from a simulated run."""
    w, m = simulated(config, seed)
    assert m.step_start is not None and m.step_end is not None and m.step_tokens is not None
    assert m.step_prefill_tokens is not None and m.step_seqs is not None
    args = {k: getattr(config, k) for k in ("max_num_batched_tokens", "max_num_seqs")}
    lines = [
        f"{T0 - 60:.6f} INFO 1 [api_utils.py:286] non-default args: {args!r}",
        f"{T0 - 30:.6f} INFO 1 [loggers.py:199] Engine 000: Iteration(0): 1 context requests, "
        "16 context tokens, 0 generation requests, 0 generation tokens, iteration elapsed "
        "time: 5.00 ms, CPU KV cache usage: 0.0%",
    ]
    for i in range(len(m.step_tokens)):
        p, t = int(m.step_prefill_tokens[i]), int(m.step_tokens[i])
        seqs = int(m.step_seqs[i])
        ctx = seqs - (t - p)
        elapsed = 1000 * (m.step_end[i] - m.step_start[i])
        lines.append(
            f"{T0 + m.step_end[i]:.6f} INFO 1 [loggers.py:199] Engine 000: Iteration({i + 1}): "
            f"{ctx} context requests, {p} context tokens, {t - p} generation requests, "
            f"{t - p} generation tokens, iteration elapsed time: {elapsed:.4f} ms, "
            "CPU KV cache usage: 1.0%"
        )
    log = folder / f"server-{seed}.log"
    log.write_text("\n".join(lines) + "\n")
    start = 5000.0 + w.arrival  # the client's perf_counter clock
    result = {
        "completed": len(w),
        "input_lens": w.prompt_tokens.tolist(),
        "output_lens": m.output_tokens.tolist(),
        "ttfts": m.ttft.tolist(),
        "latencies": m.e2e.tolist(),
        "itls": [[0.001] * (int(o) - 1) for o in m.output_tokens],
        "start_times": start.tolist(),
        "errors": [""] * len(w),
    }
    res = folder / f"result-{seed}.json"
    res.write_text(json.dumps(result, indent=1))
    return log, res


def test_calibrate_fits_a_benchmarked_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    log, res = write_run(tmp_path, CONFIG)
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--run", str(log), str(res), "-o", str(out)]) == 0
    cal = Calibration.load(out)
    assert cal.steps > 50  # the warm-up step before the benchmark is left out
    assert cal.cost_model.fixed == pytest.approx(TRUE.fixed, rel=0.02)
    assert cal.held_out is None
    assert "held-out runs: none" in capsys.readouterr().out


def test_calibrate_checks_runs_of_other_configurations(tmp_path: Path) -> None:
    wide = CONFIG.replace(max_num_seqs=32, max_num_batched_tokens=1024)
    a, b = write_run(tmp_path, CONFIG, 0), write_run(tmp_path, wide, 1)
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--run", *map(str, a), "--run", *map(str, b), "-o", str(out)]) == 0
    cal = Calibration.load(out)
    assert cal.held_out is not None and cal.held_out.runs == 2 and cal.usable
    assert cal.held_out.after["e2e.p50"] < 0.05


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda log, res: res.unlink(), r"result-0\.json: cannot read"),
        (lambda log, res: log.unlink(), r"server-0\.log: cannot read"),
        (
            lambda log, res: res.write_text('{\n "ttfts": [1,\n'),
            r"result-0\.json:\d+: not valid JSON",
        ),
        (
            lambda log, res: res.write_text(json.dumps({"ttfts": [0.1]})),
            r"field 'input_lens' is missing .*--save-detailed",
        ),
        (
            lambda log, res: log.write_text(log.read_text().replace(f"{T0 - 30:.6f} ", "")),
            r"server-0\.log:2: a step line without a leading Unix time",
        ),
        (lambda log, res: log.write_text("INFO nothing\n"), r"no engine step lines"),
        (
            lambda log, res: log.write_text("\n".join(log.read_text().splitlines()[:20])),
            r"scheduled \d+ tokens, the benchmark .* needs \d+",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_file_and_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage, message: str
) -> None:
    log, res = write_run(tmp_path, CONFIG)
    damage(log, res)
    assert main(["calibrate", "--run", str(log), str(res), "-o", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "c.json").exists()


@pytest.mark.vllm
def test_calibrate_from_a_real_vllm_bench_run(tiny_model: Path, tmp_path: Path) -> None:
    from tuner.backends import VLLMServerBackend
    from tuner.backends.live._command import trial_run_dir

    starter = VLLMServerBackend(
        tiny_model,
        server_args=["--enforce-eager", "--dtype", "bfloat16"],
        env={"VLLM_CPU_KVCACHE_SPACE": "1"},
        workdir=tmp_path / "server",
        startup_timeout=300,
    )
    log = tmp_path / "server.log"
    config = ServingConfig(max_num_seqs=8, block_size=128, max_model_len=1024)
    run_dir = trial_run_dir(starter.workdir, 0)
    w = Workload.from_arrays([0.0], [64], [8])
    process, url, _ = starter._start(config, log, run_dir, w)
    try:
        vllm = str(Path(sys.executable).with_name("vllm"))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CACHE_ROOT": str(tmp_path / "cache")}
        subprocess.run(
            [
                *[vllm, "bench", "serve", "--backend", "vllm", "--base-url", url],
                *["--model", str(tiny_model), "--tokenizer", str(tiny_model)],
                *["--dataset-name", "random", "--random-input-len", "128"],
                *["--random-output-len", "16", "--num-prompts", "30", "--request-rate", "10"],
                *["--ignore-eos", "--save-result", "--save-detailed"],
                *["--result-dir", str(tmp_path), "--result-filename", "bench.json"],
                "--disable-tqdm",
            ],
            env=env,
            check=True,
            timeout=300,
            capture_output=True,
        )
    finally:
        process.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--run", str(log), str(tmp_path / "bench.json"), "-o", str(out)]) == 0
    cal = Calibration.load(out)
    assert cal.steps >= 30 and cal.cost_model.fixed > 0
    sim = SimulatorBackend(cal.cost_model, request_path=cal.request_path)
    m = sim.evaluate(config, Workload.from_arrays([0.0, 0.1], [128, 128], [16, 16]))
    assert 0 < float(m.e2e.max()) < 5


# --- a live study's own trials (measurements/ in its output folder) ----------------------------

PATH_IN = 0.004  # seconds from a request's send to the engine


def live_trial(number: int, config: ServingConfig, seed: int, **changes: object) -> Trial:
    """A trial as a live server would record it: the client's times (sends, first and last
    tokens) and the engine's steps on one clock, the engine seeing each request 4 ms late."""
    w, _ = simulated(config, seed)
    sim = SimulatorBackend(TRUE, request_path=RequestPath(arrival_fixed=PATH_IN))
    m = sim.evaluate(config, w).replace(client=ClientHealth(), **changes)
    return Trial(number=number, config=config, status=TrialStatus.COMPLETE, measurement=m)


def test_calibrate_fits_a_live_studys_saved_trials(tmp_path: Path, capsys) -> None:
    wide = CONFIG.replace(max_num_seqs=32, max_num_batched_tokens=1024)
    assert save_measurement(tmp_path, live_trial(0, CONFIG, 0)) is not None
    save_measurement(tmp_path, live_trial(1, wide, 1))
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--study", str(tmp_path), "-o", str(out)]) == 0
    cal = Calibration.load(out)
    assert cal.cost_model.fixed == pytest.approx(TRUE.fixed, rel=0.02)
    # tuner's own client and step log share a clock: the way in is told apart from the way out
    assert cal.request_path.arrival_fixed == pytest.approx(PATH_IN, abs=5e-4)
    assert cal.held_out is not None and cal.held_out.runs == 2 and cal.usable
    assert "(trials 0, 1)" in cal.source


def test_a_study_keeps_only_live_measurements_and_calibrate_skips_partial_ones(
    tmp_path: Path, capsys
) -> None:
    simulated_trial = live_trial(0, CONFIG, 0).model_copy(
        update={"measurement": simulated(CONFIG, 0)[1]}
    )
    assert save_measurement(tmp_path, simulated_trial) is None  # no load client: simulated
    assert not (tmp_path / "measurements").exists()
    save_measurement(tmp_path, live_trial(1, CONFIG, 0))
    save_measurement(tmp_path, live_trial(2, CONFIG, 1, aborted="ttft.p99 <= 1s lost"))
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--study", str(tmp_path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "trial-002.json: aborted (ttft.p99 <= 1s lost)" in printed
    assert "(trials 1)" in Calibration.load(out).source


def _saved(folder: Path, text: str) -> None:
    (folder / "measurements").mkdir()
    (folder / "measurements" / "trial-000.json").write_text(text)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: None, r"no measurements/trial-\*\.json; only studies with a live backend"),
        (lambda d: _saved(d, '{\n "format": 1,\n'), r"trial-000\.json:3: not valid JSON"),
        (lambda d: _saved(d, '{"format": "x"}'), r"trial-000\.json: not a measurement tuner"),
    ],
)
def test_a_study_folder_without_usable_measurements_is_refused(
    tmp_path: Path, capsys, damage, message: str
) -> None:
    damage(tmp_path)
    assert main(["calibrate", "--study", str(tmp_path), "-o", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    import re

    assert err.startswith("error: ") and re.search(message, err), err
    assert not (tmp_path / "c.json").exists()


def test_calibrate_needs_something_to_fit_on(tmp_path: Path, capsys) -> None:
    assert main(["calibrate", "-o", str(tmp_path / "c.json")]) == 2
    assert "give --run LOG RESULT" in capsys.readouterr().err
    assert main(["calibrate", "--study", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
