"""How well the calibrated simulator predicts live latency on runs it was not fitted on.

On this machine kind: the CPU build of vLLM 0.32 serving tiny random Llamas (built locally) of
two shapes (``small``: width 64, 2 layers; ``wide``: width 256, 12 layers, 8 heads). For each
model, 8 configurations are served at two Poisson rates (a light one and one near saturation):
2 configurations calibrate (both rates), the other 6 are held out (both rates). One held-out
point is measured 3 times (the live noise floor). The simulator then predicts every held-out
run with

* ``prior``: the first-guess cost model of ``examples/two_tier_cpu.yaml`` (uncalibrated);
* ``4-term``: the four count terms fitted to the calibration runs' step log (tuner's previous
  calibration: no attention terms, no request path);
* ``4-term + path``: the same plus the fitted request path;
* ``calibrated``: terms chosen by held-out step error, plus the request path (the new one).

and the table gives the mean absolute % error per metric over the held-out runs, the Kendall
tau of the configurations' order by each latency metric (per rate, averaged), and the noise
floor: the mean absolute % deviation of the three repeats from their mean.

Measuring and scoring are separate so that each locked measurement stays short:
    flock /tmp/tuner-bench.lock <vllm venv>/bin/python benchmarks/bench_latency_fidelity.py \\
        measure --model small --out runs/fidelity-small.pkl
    ... measure --model wide --out runs/fidelity-wide.pkl
    <venv>/bin/python benchmarks/bench_latency_fidelity.py score runs/fidelity-*.pkl
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tuner import ServingConfig, Uniform, Workload
from tuner.backends import CostModel
from tuner.backends.simulator import (
    CalibrationRun,
    HeldOut,
    calibrate,
    check_held_out,
    fit_cost_model,
)
from tuner.backends.simulator._calibration import TERMS
from tuner.backends.simulator._held_out import METRICS, RANKED
from tuner.cli._table import format_table
from tuner.objectives import metric_value

SHAPES = {
    "small": {"hidden_size": 64, "num_layers": 2, "num_heads": 4},
    "wide": {"hidden_size": 256, "num_layers": 12, "num_heads": 8},
}
BASE = ServingConfig(max_model_len=1024, block_size=128, max_num_seqs=8)
CALIBRATION = [(128, 8), (512, 16)]  # (max_num_batched_tokens, max_num_seqs)
HELD_OUT = [(64, 4), (64, 16), (256, 4), (256, 16), (1024, 8), (1024, 2)]
PRIOR = CostModel(fixed=0.005, per_prefill_token=2.0e-5, per_decode_token=5.0e-5, time_unit="s")
SERVER_ARGS = ["--dtype", "bfloat16", "--enforce-eager"]
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def workload(rate: float, n: int, seed: int) -> Workload:
    return Workload.poisson(rate, n, Uniform(256, 0.5), Uniform(64, 0.5), seed=seed)


def measure(args: argparse.Namespace) -> None:
    from tuner.backends.live._server import VLLMServerBackend
    from tuner.backends.live._tiny_model import build_tiny_model

    root = Path(args.workdir or tempfile.mkdtemp(prefix="tuner-fidelity-"))
    model = str(build_tiny_model(root / f"tiny-{args.model}", **SHAPES[args.model]))
    rates = {"light": args.light, "heavy": args.heavy}
    configs = {
        "all": CALIBRATION + HELD_OUT,
        "calibration": CALIBRATION,
        "held-out": HELD_OUT,
        "noise": [HELD_OUT[2]] * 3,  # one point on three fresh servers
    }[args.only]
    if args.quick:
        configs = [CALIBRATION[0], HELD_OUT[0]]
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    backend = VLLMServerBackend(model, server_args=SERVER_ARGS, env=ENV, workdir=root / "live")
    with backend:
        for budget, seqs in configs:
            i = (CALIBRATION + HELD_OUT).index((budget, seqs))
            config = BASE.replace(max_num_batched_tokens=budget, max_num_seqs=seqs)
            role = "calibration" if (budget, seqs) in CALIBRATION else "held-out"
            if args.only == "noise":
                role = "noise"
            with backend.session(config) as run:
                for load, rate in rates.items():
                    w = workload(rate, args.requests, seed=i)
                    repeats = 3 if (role == "held-out" and i == len(CALIBRATION) + 2) else 1
                    for rep in range(repeats if load == "heavy" else 1):
                        m = run(w)
                        runs.append(
                            {
                                "config": config,
                                "workload": w,
                                "measurement": m,
                                "role": role,
                                "load": load,
                                "repeat": rep,
                            }
                        )
                        ttft, e2e = metric_value(m, "ttft.p99"), metric_value(m, "e2e.p50")
                        out = metric_value(m, "output_throughput")
                        print(
                            f"[{time.monotonic() - t0:5.0f}s] {args.model} {role} {budget}/{seqs} "
                            f"{load} {rate}/s rep {rep}: ttft.p99 {ttft:.3f}s "
                            f"e2e.p50 {e2e:.3f}s out {out:.0f} tok/s",
                            file=sys.stderr,
                            flush=True,
                        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        pickle.dump({"model": args.model, "rates": rates, "runs": runs}, f)
    print(f"wrote {out} ({len(runs)} runs, {time.monotonic() - t0:.0f}s)", file=sys.stderr)


def _as_run(r: dict[str, Any]) -> CalibrationRun:
    return CalibrationRun(r["config"], r["workload"], r["measurement"], group=r["load"])


def noise_floor(runs: list[dict[str, Any]], role: str, load: str) -> dict[str, float]:
    """Mean absolute % deviation of one point's repeated runs from their mean, per metric (the
    mean over both loads when ``load`` is "all")."""
    loads = ["light", "heavy"] if load == "all" else [load]
    out: dict[str, list[float]] = {}
    for ld in loads:
        by_config: dict[ServingConfig, list[Any]] = {}
        for r in runs:
            if r["role"] == role and r["load"] == ld:
                by_config.setdefault(r["config"], []).append(r["measurement"])
        for ms in by_config.values():
            if len(ms) < 2:
                continue
            for metric in METRICS:
                v = np.array([metric_value(m, metric) for m in ms])
                if v.mean() > 0:
                    dev = float(np.mean(np.abs(v - v.mean()) / v.mean()))
                    out.setdefault(metric, []).append(dev)
    return {k: float(np.mean(v)) for k, v in out.items()}


def score(paths: list[str]) -> None:
    by_model: dict[str, dict[str, Any]] = {}
    for path in paths:
        with open(path, "rb") as f:
            part = pickle.load(f)
        data = by_model.setdefault(part["model"], {**part, "runs": []})
        data["runs"] += part["runs"]
    for data in by_model.values():
        runs = data["runs"]
        cal = [_as_run(r) for r in runs if r["role"] == "calibration"]
        held = [_as_run(r) for r in runs if r["role"] == "held-out" and r["repeat"] == 0]
        four = fit_cost_model([r.measurement for r in cal], candidates=(TERMS,))
        new = calibrate(cal, held, baseline=four.cost_model)
        checks: dict[str, HeldOut] = {
            "prior": check_held_out(new, held, PRIOR),
            "4-term": check_held_out(new, held, four.cost_model),
            "4-term + path": check_held_out(
                four.replace(request_path=new.request_path), held, PRIOR
            ),
        }
        assert new.held_out is not None
        noise = noise_floor(runs, "held-out", "heavy")
        servers = noise_floor(runs, "noise", "all")
        columns = {
            "noise (1 server)": noise,
            "noise (3 servers)": servers,
            "prior": checks["prior"].before,
            "4-term": checks["4-term"].before,
            "4-term + path": checks["4-term + path"].after,
            "calibrated": new.held_out.after,
        }
        print(
            f"\n## {data['model']}: {len(cal)} calibration runs, {len(held)} held-out runs "
            f"(rates {data['rates']})"
        )
        print(
            f"calibrated: terms {', '.join(new.terms)}; {new.cost_model!r}; "
            f"{new.request_path!r}; "
            f"held-out step error {100 * (new.held_out_step_error or 0):.1f}% "
            f"(by term set: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in new.candidate_errors.items())
            + f"); in-sample R^2 {new.r2:.2f}"
        )
        rows = [[m, *(_pct(col.get(m)) for col in columns.values())] for m in METRICS]
        taus = {
            "prior": checks["prior"].tau_before,
            "4-term": checks["4-term"].tau_before,
            "4-term + path": checks["4-term + path"].tau_after,
            "calibrated": new.held_out.tau_after,
        }
        rows += [[f"tau {m}", "", "", *(_num(t.get(m)) for t in taus.values())] for m in RANKED]
        print(format_table(["metric (mean abs error)", *columns], rows))
        bar = {"e2e.p50": 0.12, "e2e.p99": 0.12, "ttft.p99": 0.15}
        for m, limit in bar.items():
            got = new.held_out.after.get(m, math.nan)
            floor = max(noise.get(m, 0.0), servers.get(m, 0.0))
            verdict = (
                "meets"
                if got <= limit
                else ("within the noise floor" if got <= floor else "misses")
            )
            print(
                f"bar {m} <= {100 * limit:.0f}%: {100 * got:.1f}% "
                f"({verdict}; noise {100 * floor:.1f}%)"
            )
        tau = new.held_out.tau_after.get("ttft.p99", math.nan)
        print(f"bar tau(ttft.p99) >= 0.8: {tau:.2f} ({'meets' if tau >= 0.8 else 'misses'})")


def _pct(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}%"


def _num(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="measure one model's runs on the live CPU vLLM")
    m.add_argument("--model", choices=sorted(SHAPES), required=True)
    m.add_argument("--out", required=True, help="where to pickle the runs")
    m.add_argument("--light", type=float, default=4.0, help="light rate (req/s)")
    m.add_argument("--heavy", type=float, default=16.0, help="near-saturation rate (req/s)")
    m.add_argument("--requests", type=int, default=40, help="requests per run")
    m.add_argument("--quick", action="store_true", help="2 configurations (a smoke run)")
    m.add_argument(
        "--only",
        choices=["all", "calibration", "held-out", "noise"],
        default="all",
        help="measure only these configurations (to keep each locked run short)",
    )
    m.add_argument("--workdir", default=None, help="keep server logs and models here")
    s = sub.add_parser("score", help="fit, predict and print the table from measured runs")
    s.add_argument("paths", nargs="+")
    args = ap.parse_args()
    if args.cmd == "measure":
        measure(args)
    else:
        score(args.paths)


if __name__ == "__main__":
    main()
