"""``tuner calibrate``: a calibration for the simulator from measured runs -- a server tuner did
not start (its iteration log plus a ``vllm bench serve`` detailed result), or a live study's
saved measurements -- with its held-out errors."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuner.backends.live import load_bench_run
from tuner.backends.simulator import Calibration, CalibrationRun, calibrate
from tuner.cli._args import as_argument_type, knob_values
from tuner.cli._table import format_table
from tuner.core import ConfigError
from tuner.studies import load_measurements


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "calibrate",
        help="fit the simulator's cost model and request path to a benchmarked server",
        description=(
            "Fit a calibration (step cost model with terms chosen by held-out error, and the "
            "request path) from measured runs: benchmark runs of a server tuner did not start "
            "(the server's log, written with --enable-logging-iteration-details and lines "
            "starting with a Unix time, and the result of `vllm bench serve --save-result "
            "--save-detailed` against it), or the trials of a study tuner ran on a live server "
            "(its output folder's measurements/). With runs of two or more configurations, "
            "each one is predicted by a fit of the others (the held-out check). Writes the "
            "JSON a study uses as `simulator: {calibration: PATH}`."
        ),
    )
    p.add_argument(
        "--run",
        nargs=2,
        action="append",
        default=[],
        metavar=("LOG", "RESULT"),
        help="a server log and the vllm bench result measured on it (repeat for more runs)",
    )
    p.add_argument(
        "--study",
        action="append",
        default=[],
        type=Path,
        metavar="FOLDER",
        help="a live study's output folder: every trial it measured (repeat for more studies)",
    )
    p.add_argument(
        "--config",
        type=as_argument_type(knob_values),
        default={},
        metavar="KNOBS",
        help="scheduler settings missing from (or to override) the logs' non-default args, "
        "e.g. max_num_batched_tokens=8192 (vLLM's defaults otherwise)",
    )
    p.add_argument(
        "-o", "--output", type=Path, default=Path("calibration.json"), help="where to write it"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.run and not args.study:
        raise ConfigError(
            "tuner calibrate: nothing to fit on; give --run LOG RESULT (a vllm bench run) or "
            "--study FOLDER (a live study's output)"
        )
    runs, sources = [], []
    for log, result in args.run:
        r = load_bench_run(log, result, args.config)
        runs.append(CalibrationRun(r.config, r.workload, r.measurement))
        sources.append(f"{log} + {result}")
    for folder in args.study:
        used = []
        for saved in load_measurements(folder):
            if saved.unusable is not None:
                print(f"skipped {saved.path}: {saved.unusable}")
                continue
            config = saved.config.replace(**args.config) if args.config else saved.config
            runs.append(CalibrationRun(config, saved.workload, saved.measurement))
            used.append(saved.trial)
            if (
                saved.measurement.cached_tokens is not None
                and saved.measurement.cached_tokens.any()
            ):
                print(
                    f"warning: {saved.path}: its requests hit the prefix cache; the saved runs "
                    "keep the requests' lengths, not their prefixes, so the held-out check "
                    "predicts no hits for them"
                )
        if not used:
            raise ConfigError(f"study folder {folder}: no complete live trial to fit on")
        sources.append(f"{folder} (trials {', '.join(map(str, used))})")
    cal = calibrate(runs, source=", ".join(sources))
    out = cal.save(args.output)
    print(summary(cal))
    print(f"wrote {out}")
    return 0


def summary(cal: Calibration) -> str:
    """What a calibration found and how well it predicts what it was not fitted on."""
    p = cal.request_path
    lines = [
        f"fitted on {cal.steps} steps; terms {', '.join(cal.terms)}",
        f"cost model: {cal.cost_model!r}",
        "held-out step-time error by term set: "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in cal.candidate_errors.items()),
        f"request path: {1000 * p.arrival_fixed:.2f} ms + {1e6 * p.arrival_per_prompt_token:.2f} "
        f"us/prompt token in; {1000 * p.first_delivery:.2f} ms (first token), "
        f"{1000 * p.delivery:.2f} ms (others) out",
    ]
    h = cal.held_out
    if h is None:
        lines.append("held-out runs: none (one configuration; measure another to check it)")
        return "\n".join(lines)
    rows = [
        [m, f"{100 * h.before[m]:.1f}%" if m in h.before else "-", f"{100 * h.after[m]:.1f}%"]
        for m in h.after
    ]
    rows += [
        [f"tau {m}", f"{h.tau_before.get(m, float('nan')):.2f}", f"{v:.2f}"]
        for m, v in h.tau_after.items()
    ]
    lines.append(f"held-out check on {h.runs} runs against {h.baseline}:")
    lines.append(format_table(["metric", "uncalibrated", "calibrated"], rows))
    if h.worse:
        lines.append(
            "WARNING: the calibration predicts held-out runs worse than the uncalibrated model; "
            "a study using it will warn"
        )
    return "\n".join(lines)
