"""``tuner live``: a budget x threshold grid measured on real ``vllm serve`` processes."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from pathlib import Path
from types import FrameType

from tuner.backends.live import VLLMServerBackend, build_tiny_model
from tuner.cli._table import trial_table
from tuner.core import (
    ConfigError,
    InfeasibleError,
    SearchSpace,
    ServingConfig,
    Trial,
    TunerError,
    Workload,
)
from tuner.objectives import metric_value
from tuner.search import GridSearch
from tuner.tuning import Loop

METRICS = ["ttft.p99", "itl.p99", "e2e.p99", "output_throughput", "max_step_tokens",
           "total_steps"]  # fmt: skip
DEFAULT_SLOS = ["ttft.p99 <= 2s"]


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


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "live",
        help="tune on real vllm serve processes (one server per configuration)",
        description=(
            "Tune max_num_batched_tokens x long_prefill_token_threshold on a live vLLM: for "
            "each configuration start `vllm serve`, replay a Poisson workload open loop over "
            "HTTP streaming, read the engine's step log, stop the server. Maximise output "
            "throughput under the SLOs; print every trial and the chosen flags (or why none "
            "meets the SLOs). Each trial costs one server start (tens of seconds)."
        ),
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", metavar="DIR_OR_NAME", help="the model to serve")
    model.add_argument(
        "--tiny-model", metavar="DIR",
        help="build (once) a tiny random Llama into DIR and serve it: a real server in seconds",
    )  # fmt: skip
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
    p.add_argument("--max-num-seqs", type=int, default=8, help="default: 8")
    p.add_argument("--max-model-len", type=int, default=1024, help="default: 1024")
    p.add_argument(
        "--block-size", type=int, default=128,
        help="KV block size (default: 128, vLLM's CPU default; the CPU attention needs a "
        "multiple of 32; vLLM's GPU default is 16)",
    )  # fmt: skip
    p.add_argument("--requests", type=int, default=30, help="number of requests (default: 30)")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second (default: 10)")
    p.add_argument("--prompt-len", type=int, default=64, help="prompt tokens (default: 64)")
    p.add_argument("--output-len", type=int, default=16, help="output tokens (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default: 0)")
    p.add_argument(
        "--slo", action="append", metavar="SLO",
        help=f"a hard constraint (repeatable), e.g. 'ttft.p99 <= 2s'; default: {DEFAULT_SLOS}",
    )  # fmt: skip
    p.add_argument(
        "--server-arg", action="append", default=[], metavar="ARG",
        help="an extra `vllm serve` argument (repeatable; use the = form, e.g. "
        "--server-arg=--dtype=bfloat16)",
    )  # fmt: skip
    p.add_argument(
        "--no-eager", action="store_true",
        help="let vLLM compile the model (slower start-up); by default --enforce-eager is added",
    )  # fmt: skip
    p.add_argument(
        "--env", action="append", default=[], type=_env_pair, metavar="KEY=VALUE",
        help="environment for the server (repeatable); VLLM_CPU_KVCACHE_SPACE defaults to 1 "
        "(GiB of KV cache on CPU; ignored on GPU)",
    )  # fmt: skip
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="keep logs, caches and trials.jsonl here (default: a temporary folder)",
    )
    p.add_argument("--vllm", metavar="PATH", help="the vllm command (default: next to python, "
                   "else on PATH)")  # fmt: skip
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for a server to be healthy (default: 600)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=120.0,
        help="seconds a request may take (default: 120)",
    )
    p.set_defaults(func=run)


def _workload(args: argparse.Namespace) -> Workload:
    if hasattr(Workload, "poisson"):
        return Workload.poisson(
            args.rate, args.requests, prompt_len=args.prompt_len, output_len=args.output_len,
            seed=args.seed,
        )  # fmt: skip
    # Fallback for a tuner without generators: evenly spaced arrivals at the same rate.
    n = args.requests
    return Workload.from_arrays(
        [i / args.rate for i in range(n)], [args.prompt_len] * n, [args.output_len] * n
    )


def _with_metrics(trials: list[Trial] | tuple[Trial, ...]) -> list[Trial]:
    """The trials with every table metric filled in from their measurements."""
    out = []
    for t in trials:
        values = dict(t.values)
        if t.measurement is not None:
            for name in METRICS:
                if name not in values:
                    with contextlib.suppress(TunerError):
                        values[name] = metric_value(t.measurement, name)
        out.append(t.model_copy(update={"values": values}))
    return out


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    if args.requests < 1 or args.rate <= 0 or args.prompt_len < 1 or args.output_len < 1:
        raise ConfigError(
            "tuner live: --requests, --prompt-len and --output-len must be >= 1 and --rate > 0"
        )
    # SIGTERM stops the study like Ctrl-C does: every server is stopped on the way out.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    slos = args.slo or DEFAULT_SLOS
    if args.tiny_model:
        t0 = time.perf_counter()
        model_dir = build_tiny_model(args.tiny_model)
        print(f"tiny model: {model_dir} ({time.perf_counter() - t0:.1f} s)")
        model = str(model_dir)
    else:
        model = args.model
    server_args = list(args.server_arg)
    if not args.no_eager and "--enforce-eager" not in server_args:
        server_args.append("--enforce-eager")
    env = dict(args.env)
    if "VLLM_CPU_KVCACHE_SPACE" not in env and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
    base = ServingConfig(
        max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
        block_size=args.block_size,
    )  # fmt: skip
    space = SearchSpace(
        {"max_num_batched_tokens": args.budgets, "long_prefill_token_threshold": args.thresholds},
        base=base,
        skip_invalid=True,
    )
    for changes, why in space.excluded:
        print(f"skipped {changes}: {why}")
    workload = _workload(args)
    backend = VLLMServerBackend(
        model, server_args=server_args, vllm_executable=args.vllm, workdir=args.workdir,
        startup_timeout=args.startup_timeout, request_timeout=args.request_timeout, env=env,
    )  # fmt: skip
    trial_log = Path(args.workdir) / "trials.jsonl" if args.workdir else None
    print(f"model: {model}")
    print(f"workload: {workload!r}")
    print(f"space: {space} ({len(space)} trials, one server start each)")
    print(f"SLOs: {', '.join(slos)}; objective: maximize output_throughput\n")

    trials_seen: list[Trial] = []

    def progress(trial: Trial) -> None:
        trials_seen.append(trial)
        live = backend.last_trial
        if trial.ok and live is not None:
            startup = f"{live.startup_seconds:.1f} s" if live.startup_seconds else "-"
            print(f"trial {trial.number}: {trial.config.describe(base)}: "
                  f"{trial.wall_time:.1f} s (server start {startup}), "
                  f"ttft.p99 {trial.values.get('ttft.p99', float('nan')):.4g} s, "
                  f"output {trial.values.get('output_throughput', float('nan')):.4g} tok/s",
                  flush=True)  # fmt: skip
        else:
            first = (trial.error or "").splitlines()[0][:200]
            print(f"trial {trial.number}: {trial.config.describe(base)}: FAILED after "
                  f"{trial.wall_time:.1f} s: {first}", flush=True)  # fmt: skip

    loop = Loop(backend, GridSearch(), slos=slos, trial_log=trial_log, on_trial=progress)
    try:
        result = loop.run(space, workload)
    except InfeasibleError as e:
        print("\n" + trial_table(_with_metrics(trials_seen), space, METRICS))
        print(f"\nINFEASIBLE: {e}")
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\n" + trial_table(_with_metrics(result.trials), space, METRICS))
    best = result.best
    print(f"\nchosen: {best.config.describe(base)}"
          + (f" (stopped: {result.stop_reason})" if result.stop_reason != "search exhausted"
             else ""))  # fmt: skip
    (shown,) = _with_metrics([best])
    print("  " + ", ".join(f"{m} = {shown.values[m]:.4g}" for m in METRICS if m in shown.values))
    print("  vllm serve flags: " + " ".join(best.config.to_vllm_args()))
    if args.workdir:
        print(f"  server logs and trials.jsonl in {args.workdir}")
    return 0
