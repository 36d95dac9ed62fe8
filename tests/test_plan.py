"""Planning a GPU deployment without a GPU: the simulator on a model and a GPU (KV cache from
vLLM's memory arithmetic, the roofline prior as its clock), studies that name them, and
``tuner plan``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tuner import ConfigError, ConfigRefused, Request, ServingConfig, Workload
from tuner.backends import CostModel
from tuner.backends.simulator import Deployment, SimulatorBackend
from tuner.cli import main
from tuner.hardware import GPU, ModelSpec, RooflineModel, kv_cache_tokens, memory_breakdown
from tuner.studies import build_spec, run_study
from tuner.studies._run import build_backend

LLAMA8 = ModelSpec.named("meta-llama/Llama-3.1-8B-Instruct")
LLAMA70 = ModelSpec.named("meta-llama/Llama-3.1-70B-Instruct")
H100 = GPU.named("h100")
H100_8B = Deployment(LLAMA8, H100)
CFG = ServingConfig(max_num_batched_tokens=8192, max_num_seqs=256, async_scheduling=True)
WORK = Workload(
    [Request(arrival=0.01 * i, prompt_tokens=300 + 7 * i, output_tokens=20 + i) for i in range(40)]
)


def test_the_kv_cache_is_what_vllm_would_allocate_for_the_config() -> None:
    sized = H100_8B.sized(CFG)
    mem = memory_breakdown(
        LLAMA8, H100, max_num_batched_tokens=8192, max_num_seqs=256, max_model_len=8192
    )
    assert sized.num_kv_blocks == mem.kv_cache_tokens // 16 == mem.num_blocks
    more = H100_8B.sized(CFG.replace(gpu_memory_utilization=0.95)).num_kv_blocks
    fp8 = H100_8B.sized(CFG.replace(kv_cache_dtype="fp8")).num_kv_blocks
    tp2 = H100_8B.sized(CFG.replace(tensor_parallel_size=2)).num_kv_blocks
    assert sized.num_kv_blocks is not None and more is not None and fp8 is not None
    assert more > sized.num_kv_blocks and 1.9 < fp8 / sized.num_kv_blocks < 2.1
    assert tp2 is not None and tp2 > 2 * sized.num_kv_blocks  # half the KV heads, half weights
    kv = kv_cache_tokens(LLAMA8, H100, gpu_memory_utilization=0.9, max_model_len=8192)
    assert abs(kv - 444_336) / 444_336 < 0.05  # docs/hardware.md's example
    assert H100_8B.sized(CFG.replace(num_kv_blocks=1000)).num_kv_blocks == 1000


@pytest.mark.parametrize(
    ("deployment", "config", "words"),
    [
        (H100_8B, CFG.replace(tensor_parallel_size=3), "must be divisible by tensor parallel"),
        (Deployment(LLAMA70, H100), CFG, "weights need 131.42 GiB per GPU"),
        (H100_8B, CFG.replace(gpu_memory_utilization=0.15), "No available memory for the cache"),
        (
            Deployment(LLAMA70, H100),
            CFG.replace(tensor_parallel_size=2, max_model_len=131072),
            "To serve at least one request with the model's max seq len (131072)",
        ),
    ],
)
def test_configs_vllm_refuses_at_start_up_fail_the_trial_in_vllms_words(
    deployment: Deployment, config: ServingConfig, words: str
) -> None:
    with pytest.raises(ConfigRefused, match=re.escape(words)):
        SimulatorBackend(deployment=deployment).evaluate(config, WORK)


def test_without_a_deployment_the_deployment_knobs_change_nothing() -> None:
    sim = SimulatorBackend()
    plain = sim.evaluate(ServingConfig(max_num_batched_tokens=256), WORK)
    knobs = ServingConfig(max_num_batched_tokens=256, gpu_memory_utilization=0.5)
    assert sim.evaluate(knobs, WORK).ttft.tolist() == plain.ttft.tolist()
    # A deployment with a given cost model and KV cache: the same schedule, to the bit.
    cost = CostModel(fixed=0.004, per_prefill_token=2e-5, time_unit="s")
    cfg = ServingConfig(max_num_batched_tokens=256, num_kv_blocks=900)
    a = SimulatorBackend(cost).evaluate(cfg, WORK)
    b = SimulatorBackend(cost, deployment=H100_8B).evaluate(cfg, WORK)
    assert a.e2e.tolist() == b.e2e.tolist() and a.step_tokens.tolist() == b.step_tokens.tolist()


def test_the_roofline_prior_times_steps_with_the_context_folded_in() -> None:
    cost = H100_8B.cost_model(CFG, WORK)
    c = RooflineModel(model=LLAMA8, gpu=H100).linear_coefficients()
    mean_ctx = sum((r.output_tokens - 1) * (r.prompt_tokens + r.output_tokens / 2) for r in WORK)
    mean_ctx /= sum(r.output_tokens - 1 for r in WORK)
    assert cost.time_unit == "s" and cost.fixed == c.fixed
    assert cost.per_decode_token == pytest.approx(
        c.per_decode_token + c.per_context_token * mean_ctx
    )
    assert H100_8B.cost_model(CFG.replace(enforce_eager=True), WORK).fixed > cost.fixed
    m = SimulatorBackend(deployment=H100_8B).evaluate(CFG, WORK)
    assert (
        m.time_unit == "s" and 0.005 < float(m.itl_values.min()) < 0.05
    )  # an 8B decode step on H100


def study(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "p",
        "workload": {"poisson": {"rate": 4, "requests": 60, "prompt_len": 256, "output_len": 32}},
        "space": {"knobs": {"gpu_memory_utilization": [0.9, 0.95]}},
        "objective": {"maximize": "throughput_per_gpu", "rel_tol": 0.1},
        "slos": ["ttft.p99 <= 1s"],
        "backend": {"simulator": {}},
        "target": {"gpu": "h100", "model": "llama-3.2-1b"},
    }
    return {**base, **overrides}


def test_deployment_knobs_without_a_model_are_refused_with_what_to_add() -> None:
    with pytest.raises(ConfigError, match=r"need a model and a GPU.*target: \{gpu: h100, model"):
        build_spec(study(target={"gpu": "h100"}))
    with pytest.raises(ConfigError, match="needs a gpu"):
        build_spec(study(target={"model": "llama-3.2-1b"}))
    with pytest.raises(ConfigError, match="replay backend does not size"):
        build_spec(study(backend={"replay": {}}))
    build_spec(study(target=None, backend={"live": {"model": "m"}}))  # a live server sizes itself


def test_a_step_cost_or_calibration_replaces_the_roofline_prior(tmp_path: Path) -> None:
    spec = build_spec(study(backend={"simulator": {"step_cost": {"fixed": 0.01}}}))
    sim = build_backend(spec.backend, tmp_path, tmp_path, H100_8B)  # type: ignore[arg-type]
    assert isinstance(sim, SimulatorBackend) and not sim.roofline and sim.cost_model.fixed == 0.01
    prior = build_backend(build_spec(study()).backend, tmp_path, tmp_path, H100_8B)  # type: ignore[arg-type]
    assert isinstance(prior, SimulatorBackend) and prior.roofline


def test_a_model_may_be_a_path_to_a_hugging_face_config(tmp_path: Path) -> None:
    config = {
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 1000,
        "max_position_embeddings": 16384,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    spec = build_spec(study(target={"gpu": "l4", "model": "./config.json"}, output=str(tmp_path)))
    outcome = run_study(spec, tmp_path)
    assert outcome.best is not None and outcome.best.ok
    assert "roofline prior" in outcome.backend
    assert outcome.estimates() is not None and "roofline prior" in str(outcome.estimates())


@pytest.mark.parametrize(
    ("gpu", "tokens", "seqs"),
    [("b200", 16384, 1024), ("h100", 8192, 1024), ("l4", 2048, 256)],  # one per memory class
)
def test_the_baseline_is_vllms_defaults_on_the_named_gpu(
    gpu: str, tokens: int, seqs: int, tmp_path: Path
) -> None:
    knobs = {"max_num_batched_tokens": [512, 1024], "max_num_seqs": [64]}
    spec = build_spec(
        study(space={"knobs": knobs}, target={"gpu": gpu, "model": "llama-3.2-1b"})
        | {"output": str(tmp_path)}
    )
    outcome = run_study(spec, tmp_path)
    assert outcome.baseline is not None
    b = outcome.baseline.config
    assert (b.max_num_batched_tokens, b.max_num_seqs, b.async_scheduling) == (tokens, seqs, True)
    assert b.gpu_memory_utilization == 0.92  # vLLM 0.32's default


PLAN_8B = [
    "plan",
    "--model",
    "meta-llama/Llama-3.1-8B-Instruct",
    "--gpu",
    "h100",
    "--slo",
    "ttft.p99 <= 500ms",
    "--slo",
    "itl.p99 <= 50ms",
    "--gpu-hour-price",
    "2.5",
    "--requests",
    "150",
    "--trials",
    "5",
]


def test_plan_recommends_llama_8b_on_one_h100(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([*PLAN_8B, "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "one replica = 1 GPU (tensor_parallel_size=1): capacity" in out
    assert re.search(r"output tokens/s per GPU, \$\d+\.\d+ per 1M output tokens", out)
    assert "KV cache:" in out and "vLLM's defaults on this GPU" in out
    serve = re.search(r"paste: (vllm serve meta-llama/Llama-3.1-8B-Instruct .*)", out)
    assert serve is not None and "--gpu-memory-utilization" in serve.group(1)
    assert "--tensor-parallel-size" not in serve.group(1)  # 1, vLLM's default
    assert "Estimates:" in out and "roofline prior" in out
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["estimates"] and best["target"].startswith("meta-llama/Llama-3.1-8B-Instruct on")


def test_plan_recommends_a_70b_on_four_h100s_per_gpu(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = [
        "plan",
        "--model",
        "meta-llama/Llama-3.1-70B-Instruct",
        "--gpu",
        "h100",
        "--gpus",
        "4",
        "--slo",
        "ttft.p99 <= 1s",
        "--slo",
        "itl.p99 <= 100ms",
        "--gpu-hour-price",
        "2.5",
        "--requests",
        "100",
        "--trials",
        "6",
        "--output",
        str(tmp_path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "left out tensor_parallel_size=1: weights need 131.4 GiB per GPU" in out
    tp = re.search(r"one replica = (\d) GPUs \(tensor_parallel_size=(\d)\)", out)
    assert tp is not None and tp.group(1) == tp.group(2) and tp.group(1) in "24"
    assert re.search(r"\$\d+\.\d+ per 1M output tokens", out)
    assert f"--tensor-parallel-size {tp.group(1)}" in out
    assert "--max-model-len 32768" in out  # capped: the model's 131072 refuses TP=2


def test_plan_refuses_a_gpu_count_that_does_not_divide_the_heads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*PLAN_8B[:5], "--gpus", "3", "--slo", "ttft.p99 <= 1s"]) == 2
    assert "must be divisible by tensor parallel size (3)" in capsys.readouterr().err


def test_a_roofline_simulator_measures_in_seconds_and_says_so() -> None:
    # the workload line of `tuner run` reads the unit from the backend: with a model and a GPU
    # (no cost model typed in) the clock is the roofline prior's, in seconds, not steps
    assert SimulatorBackend(deployment=H100_8B).time_unit == "s"
    assert SimulatorBackend().time_unit == "step"
    assert SimulatorBackend(CostModel(fixed=0.01, time_unit="s")).time_unit == "s"


def test_the_first_study_example_reads_its_millisecond_trace_in_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).parent.parent / "examples" / "first_study.yaml"
    text = example.read_text().replace("traces/", str(example.parent / "traces") + "/")
    text = text.replace(
        "max_num_batched_tokens: [512, 1024, 2048, 4096, 8192]", "max_num_batched_tokens: [1024]"
    )
    text = text.replace("max_num_seqs: [64, 128, 256, 512]", "max_num_seqs: [256]")
    text = text.replace("output: runs/first-study", f"output: {tmp_path / 'out'}")
    study = tmp_path / "first.yaml"
    study.write_text(text)
    assert main(["run", str(study)]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    # 800 requests over ~182 s (the trace's timestamps are milliseconds), not 182,000 s
    assert "800 requests over 181.9 s (mean 4.398 req/s" in out
    assert "capacity (req/s)  ttft.p99 (s)  itl.p99 (s)" in out  # the table's units
    assert "vllm serve meta-llama/Llama-3.1-8B-Instruct --max-num-batched-tokens 1024" in out


def test_a_trace_misread_as_seconds_is_warned_about_in_one_plain_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).parent.parent / "examples" / "first_study.yaml"
    text = example.read_text().replace("traces/", str(example.parent / "traces") + "/")
    study = tmp_path / "misread.yaml"
    study.write_text(text.replace("time_unit: ms", "time_unit: s"))
    assert main(["run", str(study), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "time_unit='ms'" in err
    assert "UserWarning" not in err and "w = read(" not in err  # no Python source line


def test_the_dry_run_of_a_roofline_study_gives_its_workload_in_seconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).parent.parent / "examples" / "first_study.yaml"
    assert main(["run", str(example), "--dry-run"]) == 0
    assert "workload: 800 requests over 181.9 s (mean 4.398 req/s" in capsys.readouterr().out
