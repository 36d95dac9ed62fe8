"""How well the calibrated simulator predicts live latency on runs it was not fitted on.

On this machine kind: the CPU build of vLLM 0.32 serving tiny random Llamas (built locally) of
two shapes (``small``: width 64, 2 layers; ``wide``: width 256, 12 layers, 8 heads). For each
model, 8 configurations are served at two Poisson rates (a light one and one near saturation):
2 configurations calibrate (both rates), the other 6 are held out (both rates). The simulator
then predicts every held-out run with

* ``prior``: the first-guess cost model of ``examples/two_tier_cpu.yaml`` (uncalibrated);
* ``4-term``: the four count terms fitted to the calibration runs' step log (tuner's previous
  calibration: no attention terms, no request path);
* ``4-term + path``: the same plus the fitted request path;
* ``calibrated``: terms chosen by held-out step error, plus the request path (the new one).

and the table gives the mean absolute % error per metric over the held-out runs, the Kendall
tau of the configurations' order by each latency metric (per rate, averaged), and the noise
floors: the error a perfect predictor of the mean would have against one run, in the
simulator's own metric (the mean over repeated runs of |their mean - run| / run, corrected for
the few runs the mean is taken from) -- one point 3 times on one server at the heavy rate; one
point at both rates on 3 fresh servers; and, given a second whole measurement of the same
model, every held-out point twice (each on a server of its own), with the tau of one
measurement's order against the other's, and beside it the error of a live run measured again
(one run as the prediction of the other).
The verdict judges the error against the last floor measured of those (the widest mixture of
the held-out runs). ``splits`` gives the held-out error for every choice of 2 calibration
configurations among the 8.

Measuring and scoring are separate so that each locked measurement stays short (the commands
and the numbers are in the README, "How well the simulator predicts latency"):
    flock /tmp/tuner-bench.lock <vllm venv>/bin/python benchmarks/bench_latency_fidelity.py \\
        measure --model small --out runs/fidelity-small.pkl
    ... measure --model small --out runs/fidelity-small-2.pkl        (a second measurement)
    ... measure --model small --only noise --out runs/fidelity-small-noise.pkl
    <venv>/bin/python benchmarks/bench_latency_fidelity.py score runs/fidelity-small*.pkl
    <venv>/bin/python benchmarks/bench_latency_fidelity.py splits runs/fidelity-small.pkl
"""

from __future__ import annotations

import argparse
import itertools
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
from tuner.backends.simulator._held_out import METRICS, RANKED, ranking_tau
from tuner.cli._table import format_table
from tuner.objectives import metric_value

SHAPES = {
    "small": {"hidden_size": 64, "num_layers": 2, "num_heads": 4},
    "wide": {"hidden_size": 256, "num_layers": 12, "num_heads": 8},
}
BASE = ServingConfig(max_model_len=1024, block_size=128, max_num_seqs=8)
CALIBRATION = [(128, 8), (512, 16)]  # (max_num_batched_tokens, max_num_seqs)
HELD_OUT = [(64, 4), (64, 16), (256, 4), (256, 16), (1024, 8), (1024, 2)]
NOISE = HELD_OUT[2]  # the point measured again (3 runs on one server, and 3 fresh servers)
WARMUP_REQUESTS = 20
#: The issue's bar: held-out mean error at most this, per metric (and tau(ttft.p99) >= 0.8).
BAR = {"e2e.p50": 0.12, "e2e.p99": 0.12, "ttft.p99": 0.15}
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
        "noise": [NOISE] * 3,  # one point on three fresh servers
    }[args.only]
    if args.quick:
        configs = [CALIBRATION[0], HELD_OUT[0]]
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    backend = VLLMServerBackend(
        model, server_args=SERVER_ARGS, env=ENV, workdir=root / "live", cpu_pinning=args.pinning
    )
    with backend:
        for budget, seqs in configs:
            i = (CALIBRATION + HELD_OUT).index((budget, seqs))
            config = BASE.replace(max_num_batched_tokens=budget, max_num_seqs=seqs)
            role = "calibration" if (budget, seqs) in CALIBRATION else "held-out"
            if args.only == "noise":
                role = "noise"
            with backend.session(config) as run:
                # A fresh server's first loads meet shapes it has not run yet: a short burst,
                # not scored, so that the first scored run is not the one that pays for it.
                warm = run(workload(args.heavy, WARMUP_REQUESTS, seed=args.seed + 99))
                print(
                    f"[{time.monotonic() - t0:5.0f}s] {args.model} {budget}/{seqs} warm-up: "
                    f"ttft.p99 {metric_value(warm, 'ttft.p99'):.3f}s (not scored)",
                    file=sys.stderr,
                    flush=True,
                )
                for load, rate in rates.items():
                    w = workload(rate, args.requests, seed=args.seed + i)
                    repeats = 3 if (role == "held-out" and (budget, seqs) == NOISE) else 1
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
        pickle.dump({"model": args.model, "rates": rates, "runs": runs, "pinning": args.pinning}, f)
    print(f"wrote {out} ({len(runs)} runs, {time.monotonic() - t0:.0f}s)", file=sys.stderr)


def _as_run(r: dict[str, Any]) -> CalibrationRun:
    return CalibrationRun(r["config"], r["workload"], r["measurement"], group=r["load"])


def noise_floor(runs: list[dict[str, Any]], role: str, load: str) -> dict[str, float]:
    """Mean absolute % deviation of one point's repeated runs from their mean, per metric (the
    mean over both loads when ``load`` is "all"), corrected for the few runs it is taken from."""
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
                dev = _deviation([metric_value(m, metric) for m in ms])
                if dev is not None:
                    out.setdefault(metric, []).append(dev)
    return {k: float(np.mean(v)) for k, v in out.items()}


def _deviation(values: list[float]) -> float | None:
    """The error a perfect predictor of the mean would have against one run, in the metric the
    simulator is scored by (|prediction - run| / run): the mean over the runs of
    |mean - run| / run, corrected for the few runs -- deviations from a mean of n runs
    understate a run's deviation from the true mean by sqrt((n - 1) / n). (Relative to each
    run, not to the mean: on a skewed metric, a latency tail that sometimes builds and
    sometimes does not, the two differ, and only this one is the simulator's yardstick.)
    None when a run's value is 0 (its relative error is undefined)."""
    v = np.asarray(values, dtype=np.float64)
    if not (v > 0).all():
        return None
    dev = float(np.mean(np.abs(v - v.mean()) / v))
    return dev * math.sqrt(len(v) / (len(v) - 1))


def _remeasured(a: float, b: float) -> float | None:
    """The error of one live run taken as the prediction of another of the same point (both
    ways, averaged): what measuring again on a new server would have told (None: a 0)."""
    if not (a > 0 and b > 0):
        return None
    return (abs(a - b) / a + abs(a - b) / b) / 2


def _paired(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(load, measurement in ``a``, measurement in ``b``) for every held-out point both
    measured (first runs only)."""
    first = {
        (r["config"], r["load"]): r["measurement"]
        for r in a
        if r["role"] == "held-out" and r["repeat"] == 0
    }
    return [
        (r["load"], first[(r["config"], r["load"])], r["measurement"])
        for r in b
        if r["repeat"] == 0 and (r["config"], r["load"]) in first
    ]


def setup_of(runs: list[dict[str, Any]]) -> str:
    """How the live runs were placed on the cores (from what the client recorded)."""
    cpus = [r["measurement"].client.cpus or "" for r in runs if r["measurement"].client]
    return "worker pinned alone" if any("alone" in c for c in cpus) else "not pinned"


def _per_pair(a: list[dict[str, Any]], b: list[dict[str, Any]], of_pair: Any) -> dict[str, float]:
    """Per metric, the mean over the held-out points measured in both ``a`` and ``b`` of
    ``of_pair(value in a, value in b)`` (pairs where it is None left out)."""
    out: dict[str, list[float]] = {}
    for _, m0, m1 in _paired(a, b):
        for metric in METRICS:
            v = of_pair(metric_value(m0, metric), metric_value(m1, metric))
            if v is not None:
                out.setdefault(metric, []).append(v)
    return {k: float(np.mean(v)) for k, v in out.items()}


def pair_noise(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, float]:
    """The noise floor over every held-out point measured twice (each time on a server of its
    own): per metric, the mean over the pairs of :func:`_deviation` (for two runs x and y,
    sqrt 2 |x - y| (1/x + 1/y) / 4)."""
    return _per_pair(a, b, lambda x, y: _deviation([x, y]))


def pair_remeasured(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, float]:
    """Per metric, the mean over the held-out points measured twice of :func:`_remeasured`:
    the error of predicting a live run by measuring it again on a new server."""
    return _per_pair(a, b, _remeasured)


def pair_tau(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, float]:
    """Kendall's tau between the two measurements' own orders of the held-out configurations
    (per rate, averaged): how far the live ranking itself reproduces on new servers."""
    pairs = _paired(a, b)
    out = {}
    for metric in RANKED:
        x = [metric_value(m0, metric) for _, m0, _ in pairs]
        y = [metric_value(m1, metric) for _, _, m1 in pairs]
        t = ranking_tau([g for g, _, _ in pairs], y, x)
        if t is not None:
            out[metric] = t
    return out


def score(paths: list[str]) -> None:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for path in paths:
        with open(path, "rb") as f:
            part = pickle.load(f)
        key = (part["model"], setup_of(part["runs"]))
        group = groups.setdefault(key, {"rates": part["rates"], "sets": [], "noise": []})
        measured = [r for r in part["runs"] if r["role"] != "noise"]
        if measured:
            group["sets"].append(measured)
        group["noise"] += [r for r in part["runs"] if r["role"] == "noise"]
    for (model, setup), group in groups.items():
        if not group["sets"]:
            continue
        runs = group["sets"][0] + group["noise"]
        new, checks, held = _score_set(group["sets"][0])
        again = _score_set(group["sets"][1])[0] if len(group["sets"]) > 1 else None
        noise = noise_floor(runs, "held-out", "heavy")
        servers = noise_floor(runs, "noise", "all")
        pairs = pair_noise(group["sets"][0], group["sets"][1]) if again is not None else {}
        again_live = (
            pair_remeasured(group["sets"][0], group["sets"][1]) if again is not None else {}
        )
        assert new.held_out is not None
        # each prediction column: its name, its held-out check, and which side of it
        models = [
            ("prior", checks["prior"], "before"),
            ("4-term", checks["4-term"], "before"),
            ("4-term + path", checks["4-term + path"], "after"),
            ("calibrated", new.held_out, "after"),
        ]
        if again is not None and again.held_out is not None:
            models.append(("calibrated (again)", again.held_out, "after"))
        floors = {"noise (1 server, heavy)": noise, "noise (3 servers)": servers}
        if pairs:
            floors["noise (every point x2)"] = pairs
            floors["measured again"] = again_live
        columns = floors | {name: getattr(h, side) for name, h, side in models}
        print(
            f"\n## {model}, {setup}: {len(held)} held-out runs (rates {group['rates']})"
            + (" -- and the whole measurement again, on new servers" if again else "")
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
        taus = {name: getattr(h, f"tau_{side}") for name, h, side in models}
        again_tau = pair_tau(group["sets"][0], group["sets"][1]) if pairs else {}
        rows += [
            [
                f"tau {m}",
                "",
                "",
                *([_num(again_tau.get(m)), ""] if pairs else []),
                *(_num(t.get(m)) for t in taus.values()),
            ]
            for m in RANKED
        ]
        print(format_table(["metric (mean abs error)", *columns], rows))
        # With the whole measurement taken twice, each calibrated on its own calibration runs,
        # the verdict is on the mean of the two held-out errors (one measurement's error is
        # itself as noisy as the floor), each shown.
        checked = [new.held_out] + ([again.held_out] if again and again.held_out else [])
        for m, limit in BAR.items():
            each = [h.after.get(m, math.nan) for h in checked]
            got = float(np.mean(each))
            # the floor the held-out error is judged against: every held-out point measured
            # twice if it was, else one point on fresh servers at both loads (the mixture the
            # held-out runs are), else one server at the heavy load
            floor = pairs.get(m, servers.get(m, noise.get(m, 0.0)))
            verdict = judge(got, limit, floor)
            shown = " and ".join(f"{100 * e:.1f}%" for e in each)
            mean = f", mean {100 * got:.1f}%" if len(each) > 1 else ""
            floor_text = f"noise {100 * floor:.1f}%"
            if m in again_live:
                floor_text += f"; a live run measured again: {100 * again_live[m]:.1f}%"
            print(f"bar {m} <= {100 * limit:.0f}%: {shown}{mean} ({verdict}; {floor_text})")
        each = [h.tau_after.get("ttft.p99", math.nan) for h in checked]
        tau = float(np.mean(each))
        live = again_tau.get("ttft.p99")
        verdict = judge_tau(tau, live)
        if live is not None:
            verdict += f"; the live order itself reproduced on new servers with tau {live:.2f}"
        shown = " and ".join(f"{t:.2f}" for t in each)
        mean = f", mean {tau:.2f}" if len(each) > 1 else ""
        print(f"bar tau(ttft.p99) >= 0.8: {shown}{mean} ({verdict})")


#: How close to the noise floor (relative, either way) an error counts as "at" it: the floor is
#: itself estimated from a dozen pairs of runs, so closer than this tells nothing either way.
AT_FLOOR = 0.05


def judge(error: float, limit: float, floor: float) -> str:
    """The verdict on a held-out error: it meets the bar, or (where the noise floor is above
    the bar) is within the floor, at it (within :data:`AT_FLOOR` of it), or misses."""
    if error <= limit:
        return "meets"
    if error <= floor * (1 - AT_FLOOR):
        return "within the noise floor"
    if error <= floor * (1 + AT_FLOOR):
        return "at the noise floor"
    return "misses"


def judge_tau(tau: float, live: float | None, bar: float = 0.8) -> str:
    """The verdict on a held-out ranking's tau: it meets the bar, or (where the live ranking
    itself reproduces on new servers with a tau below the bar, ``live``) agrees with the live
    order at least as well as the live order agrees with itself (within the noise floor), or
    within 0.05 of that (at it), or misses."""
    if tau >= bar:
        return "meets"
    if live is not None and live < bar:
        if tau >= live:
            return "within the noise floor"
        if tau >= live - 0.05:
            return "at the noise floor"
    return "misses"


def _score_set(
    runs: list[dict[str, Any]],
) -> tuple[Any, dict[str, HeldOut], list[CalibrationRun]]:
    """Calibrate on one measurement's calibration runs and check it on its held-out runs."""
    cal = [_as_run(r) for r in runs if r["role"] == "calibration"]
    held = [_as_run(r) for r in runs if r["role"] == "held-out" and r["repeat"] == 0]
    four = fit_cost_model([r.measurement for r in cal], candidates=(TERMS,))
    new = calibrate(cal, held, baseline=four.cost_model)
    checks: dict[str, HeldOut] = {
        "prior": check_held_out(new, held, PRIOR),
        "4-term": check_held_out(new, held, four.cost_model),
        "4-term + path": check_held_out(four.replace(request_path=new.request_path), held, PRIOR),
    }
    return new, checks, held


def splits(paths: list[str]) -> None:
    """The held-out error for every choice of 2 calibration configurations among the 8 (the
    other 6 held out): how much the answer depends on which configurations calibrate."""
    for path in paths:
        with open(path, "rb") as f:
            part = pickle.load(f)
        runs = [r for r in part["runs"] if r["role"] != "noise" and r["repeat"] == 0]
        configs = sorted({r["config"] for r in runs}, key=_knobs)
        rows, results = [], []
        for pair in itertools.combinations(configs, 2):
            cal = [_as_run(r) for r in runs if r["config"] in pair]
            held = [_as_run(r) for r in runs if r["config"] not in pair]
            c = calibrate(cal, held)
            assert c.held_out is not None
            got = {m: c.held_out.after.get(m, math.nan) for m in BAR}
            tau = c.held_out.tau_after.get("ttft.p99", math.nan)
            results.append((got, tau))
            name = " + ".join("{}/{}".format(*_knobs(x)) for x in pair)
            rows.append([name, *(_pct(got[m]) for m in BAR), _num(tau)])
        print(f"\n## {part['model']}, {setup_of(part['runs'])} ({path})")
        print(format_table(["calibrated on", *BAR, "tau ttft.p99"], rows))
        for label, pick in (("median", np.median), ("best", np.min), ("worst", np.max)):
            cells = [_pct(float(pick([g[m] for g, _ in results]))) for m in BAR]
            taus = [t for _, t in results]
            tau = np.max(taus) if label == "best" else np.min(taus) if label == "worst" else None
            print(
                f"{label:6}: "
                + "  ".join(f"{m} {c}" for m, c in zip(BAR, cells, strict=True))
                + f"  tau {_num(float(np.median(taus)) if tau is None else float(tau))}"
            )


def _knobs(c: ServingConfig) -> tuple[int, int]:
    return (c.max_num_batched_tokens or 0, c.max_num_seqs or 0)


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
    m.add_argument("--requests", type=int, default=100, help="requests per run")
    m.add_argument(
        "--seed", type=int, default=100, help="workload seeds: this plus the configuration's index"
    )
    m.add_argument("--quick", action="store_true", help="2 configurations (a smoke run)")
    m.add_argument(
        "--only",
        choices=["all", "calibration", "held-out", "noise"],
        default="all",
        help="measure only these configurations (to keep each locked run short)",
    )
    m.add_argument("--workdir", default=None, help="keep server logs and models here")
    m.add_argument(
        "--pinning", choices=["auto", "on", "off"], default="auto", help="the live cpu_pinning"
    )
    s = sub.add_parser("score", help="fit, predict and print the table from measured runs")
    s.add_argument("paths", nargs="+")
    p = sub.add_parser("splits", help="the held-out error for every pair of calibration configs")
    p.add_argument("paths", nargs="+", help="measurements of all 8 configurations")
    args = ap.parse_args()
    if args.cmd == "measure":
        measure(args)
    elif args.cmd == "splits":
        splits(args.paths)
    else:
        score(args.paths)


if __name__ == "__main__":
    main()
