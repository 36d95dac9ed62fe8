"""``tuner plan``: plan a GPU deployment without a GPU. A capacity study (through
:func:`~tuner.studies.run_study`) on the step simulator with the model and GPU as its target:
vLLM 0.32's memory arithmetic sizes each configuration's KV cache, the roofline prior times its
steps, and the search ranks tensor parallelism, memory and scheduler knobs per GPU."""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

from tuner.backends.simulator import Deployment
from tuner.cli._fields import add_fields, values
from tuner.cli._study import run_and_report
from tuner.core import ConfigError, ConfigRefused, ServingConfig, Trial
from tuner.hardware import GPU, ModelSpec, Target, weight_bytes_per_gpu
from tuner.objectives import CapacitySettings
from tuner.report import capacity_text, limiting_slo
from tuner.studies import Arrivals, StudyOutcome, build_spec

WORKLOAD_DEFAULTS = {
    "rate": 8.0,
    "requests": 400,
    "prompt_len": "uniform:1024:0.5",
    "output_len": "uniform:256:0.5",
}
#: The space searched besides tensor parallelism: memory and vLLM's two scheduler limits,
#: around vLLM's defaults on 80 GB-class GPUs (8192 tokens, 1024 sequences).
DEFAULT_SPACE: dict[str, list[Any]] = {
    "gpu_memory_utilization": [0.9, 0.92, 0.95],
    "max_num_batched_tokens": [512, 1024, 2048, 4096, 8192, 16384],
    "max_num_seqs": [128, 256, 512, 1024],
}
DEFAULT_TRIALS = 24
GiB = 1 << 30
#: The longest max_model_len a plan assumes unless told (vLLM's default is the model's own,
#: often 128k, whose one-request check can refuse a TP size that serves shorter requests well).
MAX_MODEL_LEN_CAP = 32768


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "plan",
        help="plan a GPU deployment without a GPU: TP, memory and scheduler knobs per GPU",
        description=(
            "Search tensor_parallel_size (powers of two up to --gpus that divide the heads), "
            "gpu_memory_utilization, max_num_batched_tokens and max_num_seqs for --model on "
            "--gpu, on the step simulator: each configuration's KV cache is what vLLM 0.32 "
            "would allocate, its step times the roofline prior, its capacity the highest "
            "request rate at which every --slo holds. The objective is per GPU (tokens/s per "
            "GPU, or $ per 1M output tokens with --gpu-hour-price) so that a TP=4 replica, "
            "which costs four GPUs, is judged fairly against four TP=1 replicas. Prints the "
            "recommendation with the flags to paste and says which numbers are estimates."
        ),
    )
    target = p.add_argument_group("the deployment")
    add_fields(target, Target, ["model", "gpu"])
    target.add_argument(
        "--gpus",
        type=int,
        default=1,
        metavar="N",
        help="the most GPUs one replica may use: tensor_parallel_size is searched over the "
        "powers of two up to N (and N) that divide the attention heads (default: 1)",
    )
    add_fields(
        target,
        ServingConfig,
        ["max_model_len", "kv_cache_dtype", "quantization"],
        defaults={"max_model_len": f"the model's own, at most {MAX_MODEL_LEN_CAP}"},
    )
    p.add_argument(
        "--slo",
        action="append",
        required=True,
        metavar="SLO",
        help="e.g. 'ttft.p99 <= 500ms' (repeatable)",
    )
    add_fields(p.add_argument_group("cost"), CapacitySettings, ["gpu_hour_price", "rel_tol"])
    w = p.add_argument_group("workload (a trace, or Poisson arrivals regenerated at each rate)")
    w.add_argument("--trace", metavar="PATH", help="a timed_trace JSONL or CSV file")
    add_fields(
        w,
        Arrivals,
        ["rate", "requests", "prompt_len", "output_len", "burstiness", "seed"],
        defaults=WORKLOAD_DEFAULTS,
    )
    s = p.add_argument_group("search")
    s.add_argument(
        "--search",
        choices=["tpe", "grid"],
        default="tpe",
        help=f"tpe (--trials configurations, default {DEFAULT_TRIALS}) or the whole grid",
    )
    s.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        metavar="N",
        help=f"configurations TPE measures (default: {DEFAULT_TRIALS})",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="the study's folder: report, best.yaml, trials.jsonl (default: a new temporary "
        "folder, kept)",
    )
    p.set_defaults(func=run)


def tp_sizes(
    model: ModelSpec, gpu: GPU, gpus: int, quantization: str | None = None
) -> tuple[list[int], list[str]]:
    """Tensor-parallel sizes worth searching: powers of two up to ``gpus`` (and ``gpus``
    itself) that divide the attention heads, as vLLM requires, and whose weight shard fits
    the GPU; with the reason each other size was left out."""
    if gpus < 1:
        raise ConfigError(f"--gpus {gpus}: must be >= 1")
    sizes = sorted({1 << i for i in range(gpus.bit_length()) if 1 << i <= gpus} | {gpus})
    if model.num_attention_heads % gpus:
        raise ConfigError(
            f"--gpus {gpus}: Total number of attention heads ({model.num_attention_heads}) "
            f"must be divisible by tensor parallel size ({gpus}); choose a divisor"
        )
    ok, left_out = [], []
    top = gpu.usable_memory_bytes * max(DEFAULT_SPACE["gpu_memory_utilization"])
    for t in sizes:
        weights = weight_bytes_per_gpu(model, t, quantization)  # type: ignore[arg-type]
        if model.num_attention_heads % t:
            left_out.append(f"tensor_parallel_size={t}: does not divide the attention heads")
        elif weights > top:
            left_out.append(
                f"tensor_parallel_size={t}: weights need {weights / GiB:.1f} GiB per GPU, "
                f"more than {top / GiB:.1f} GiB of one {gpu.name}"
            )
        else:
            ok.append(t)
    if not ok:
        raise ConfigError(
            f"{model.name} does not fit {gpus} x {gpu.name}: "
            + "; ".join(left_out)
            + ". Raise --gpus or quantize (--quantization)."
        )
    return ok, left_out


def plan_study(args: argparse.Namespace) -> dict[str, Any]:
    """The study ``tuner plan`` runs, as a study file's mapping."""
    target = values(args, Target)
    if "model" not in target or "gpu" not in target:
        raise ConfigError("tuner plan: give --model (a shipped name or config.json) and --gpu")
    spec_target = Target(**target)
    model = spec_target.model_spec(Path.cwd())
    if model is None:  # pragma: no cover - checked above
        raise ConfigError("tuner plan: give --model")
    base = values(args, ServingConfig)
    base.setdefault("max_model_len", min(model.max_position_embeddings, MAX_MODEL_LEN_CAP))
    knobs: dict[str, list[Any]] = {**DEFAULT_SPACE}
    sizes, left_out = tp_sizes(model, spec_target_gpu(target), args.gpus, base.get("quantization"))
    for why in left_out:
        print(f"left out {why}")
    if len(sizes) > 1:
        knobs = {"tensor_parallel_size": sizes, **knobs}
    else:
        base["tensor_parallel_size"] = sizes[0]
    load = values(args, CapacitySettings)
    metric = (
        {"minimize": "cost_per_million_tokens"}
        if "gpu_hour_price" in load
        else {"maximize": "throughput_per_gpu"}
    )
    workload: dict[str, Any]
    if args.trace:
        workload = {"trace": args.trace}
    else:
        workload = {"poisson": values(args, Arrivals, defaults=WORKLOAD_DEFAULTS)}
    tpe = {"n_trials": args.trials, "seed": args.seed if hasattr(args, "Arrivals__seed") else 0}
    search = {"grid": {}} if args.search == "grid" else {"tpe": tpe}
    return {
        "name": "plan",
        "description": f"tuner plan: {model.name} on {GPU.named(target['gpu']).name}",
        "workload": workload,
        "space": {"base": base, "knobs": knobs, "skip_invalid": True},
        "objective": {**metric, "rel_tol": 0.05, **load},
        "slos": args.slo,
        "backend": {"simulator": {}},
        "search": search,
        "target": target,
    }


def spec_target_gpu(target: dict[str, Any]) -> GPU:
    """The GPU the flags name."""
    return GPU.named(str(target["gpu"]))


def run(args: argparse.Namespace) -> int:
    spec = build_spec(plan_study(args), "tuner plan")
    folder = args.output or Path(tempfile.mkdtemp(prefix="tuner-plan-"))
    outcome, status = run_and_report(spec, Path.cwd(), folder)
    if outcome.best is not None and not outcome.interrupted:
        print()
        print(plan_summary(outcome))
    return status


def plan_summary(outcome: StudyOutcome) -> str:
    """The recommendation in a deployment's terms: GPUs per replica, capacity, tokens/s per GPU,
    $ per 1M output tokens, the KV cache, against vLLM's defaults; then the flags and which
    numbers are estimates."""
    best = outcome.best
    if best is None:
        return ""
    target = outcome.spec.target or Target()
    model = target.model_spec(Path.cwd())
    cfg = best.config
    tp = cfg.tensor_parallel_size
    lines = [f"plan: {target.describe()}"]
    lines.append(
        f"  one replica = {tp} GPU{'s' if tp > 1 else ''} (tensor_parallel_size={tp}): "
        f"capacity {capacity_text(best)} req/s under the SLOs"
        + (f" (binding above it: {limiting_slo(best)})" if limiting_slo(best) else "")
    )
    lines.append("  " + _per_gpu(best, with_capacity=False))
    if model is not None:
        device = target.device_spec()
        if device != "cpu":
            mem = Deployment(model, device, target.usage_context).memory(cfg)
            lines.append(
                f"  KV cache: {mem.kv_cache_tokens:,} tokens per replica ({mem.num_blocks:,} "
                f"blocks of {mem.block_size}; {mem.available_kv / 2**30:.1f} GiB per GPU after "
                f"{mem.weights / 2**30:.1f} GiB of weights), at most "
                f"{mem.max_concurrency:.1f} requests of max_model_len {mem.max_model_len:,}"
            )
    base = outcome.baseline
    if base is not None and base.ok:
        lines.append(
            "  vLLM's defaults on this GPU (same TP): " + _per_gpu(base, with_capacity=True)
        )
    elif model is not None and (device := target.device_spec()) != "cpu":
        try:
            Deployment(model, device, target.usage_context).memory(outcome.baseline_config())
        except ConfigRefused as e:
            why = str(e).split(". ")[0]
            lines.append(f"  vLLM's defaults on this GPU (same TP) would not start: {why}")
    lines.append("  paste: " + outcome.vllm_serve())
    note = outcome.estimates()
    if note:
        lines.append("  " + note)
    return "\n".join(lines)


def _per_gpu(t: Trial, *, with_capacity: bool) -> str:
    tput = t.values.get("throughput_per_gpu", math.nan)
    cost = t.values.get("cost_per_million_tokens", math.nan)
    out = f"{tput:,.0f} output tokens/s per GPU"
    if with_capacity:
        out = f"capacity {capacity_text(t)} req/s, " + out
    if math.isfinite(cost):
        out += f", ${cost:.3f} per 1M output tokens"
    return out
