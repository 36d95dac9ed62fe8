"""``tuner live``: a budget x threshold grid measured on real ``vllm serve`` processes, run as
a study (through :func:`~tuner.studies.run_study`) built from the flags."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tuner.backends.live import ServerSettings, build_tiny_model
from tuner.cli._fields import add_fields, values
from tuner.cli._study import run_and_report
from tuner.core import ServingConfig
from tuner.studies import Arrivals, StudySpec, build_spec
from tuner.tuning import Repeats

METRICS = ["ttft.p99", "itl.p99", "e2e.p99", "output_throughput", "max_step_tokens", "total_steps"]
DEFAULT_SLOS = ["ttft.p99 <= 2s"]
#: This command's defaults where they differ from the models' (a small CPU study).
BASE_DEFAULTS = {"max_num_seqs": 8, "max_model_len": 1024, "block_size": 128}
WORKLOAD_DEFAULTS = {"rate": 10.0, "requests": 30, "prompt_len": 64, "output_len": 16}


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated integers, e.g. 64,256"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one value")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "live",
        help="tune on real vllm serve processes (one server per configuration)",
        description=(
            "Tune max_num_batched_tokens x long_prefill_token_threshold on a live vLLM: for "
            "each configuration start `vllm serve`, replay a Poisson workload open loop over "
            "HTTP streaming, read the engine's step log, stop the server. Maximise output "
            "throughput under the SLOs; print every trial and the chosen flags (or why none "
            "meets the SLOs). Each trial costs one server start (tens of seconds). The flags "
            "build a study (the same one a study file with backend: {live: ...} describes)."
        ),
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR_OR_NAME", help="the model to serve")
    model.add_argument(
        "--tiny-model",
        metavar="DIR",
        help="build (once) a tiny random Llama into DIR and serve it: a real server in seconds",
    )
    p.add_argument(
        "--budgets",
        type=_ints,
        default=[64, 256],
        metavar="N,N",
        help="max_num_batched_tokens values (default: 64,256)",
    )
    p.add_argument(
        "--thresholds",
        type=_ints,
        default=[0, 32],
        metavar="N,N",
        help="long_prefill_token_threshold values (default: 0,32)",
    )
    add_fields(
        p.add_argument_group("the configuration every trial shares"),
        ServingConfig,
        ["max_num_seqs", "max_model_len", "block_size"],
        defaults=BASE_DEFAULTS,
    )
    add_fields(
        p.add_argument_group("workload (Poisson arrivals)"),
        Arrivals,
        ["requests", "rate", "prompt_len", "output_len", "seed"],
        defaults=WORKLOAD_DEFAULTS,
    )
    p.add_argument(
        "--slo",
        action="append",
        metavar="SLO",
        help=f"a hard constraint (repeatable), e.g. 'ttft.p99 <= 2s'; default: {DEFAULT_SLOS}",
    )
    add_fields(
        p.add_argument_group(
            "repeats: live runs are noisy (a configuration is run again while its decision is open)"
        ),
        Repeats,
        prefix="repeats",
    )
    server = p.add_argument_group("the server")
    add_fields(server, ServerSettings)
    server.add_argument(
        "--no-eager",
        action="store_true",
        help="let vLLM compile the model (slower start-up); by default --enforce-eager is added",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="the study's folder: report, trials.jsonl, server logs (default: a new "
        "temporary folder, kept)",
    )
    p.set_defaults(func=run)


def spec_from_args(args: argparse.Namespace, model: str) -> StudySpec:
    """The study these flags describe."""
    server = values(args, ServerSettings)
    server_args = list(server.get("server_args", []))
    if not args.no_eager and "--enforce-eager" not in server_args:
        server_args.append("--enforce-eager")
    env = dict(server.get("env", {}))
    if "VLLM_CPU_KVCACHE_SPACE" not in env and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # GiB of KV cache on CPU; ignored on GPU
    return build_spec(
        {
            "name": "live",
            "workload": {"poisson": values(args, Arrivals, defaults=WORKLOAD_DEFAULTS)},
            "space": {
                "base": values(args, ServingConfig, defaults=BASE_DEFAULTS),
                "knobs": {
                    "max_num_batched_tokens": args.budgets,
                    "long_prefill_token_threshold": args.thresholds,
                },
                "skip_invalid": True,
            },
            "slos": args.slo or DEFAULT_SLOS,
            "repeats": values(args, Repeats, prefix="repeats"),
            "backend": {"live": {**server, "server_args": server_args, "env": env, "model": model}},
        },
        "tuner live",
    )


def run(args: argparse.Namespace) -> int:
    if args.tiny_model:
        t0 = time.perf_counter()
        model = str(build_tiny_model(args.tiny_model))
        print(f"tiny model: {model} ({time.perf_counter() - t0:.1f} s)")
    else:
        model = args.model
    spec = spec_from_args(args, model)
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="tuner-live-study-"))
    print(f"model: {model}; study folder: {folder}")
    print(f"SLOs: {', '.join(spec.slos)}; objective: maximize output_throughput\n")
    _, status = run_and_report(spec, Path.cwd(), folder, metrics=METRICS)
    return status
