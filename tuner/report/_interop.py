"""Output other tools read: each trial's measurement as a ``vllm bench serve`` result JSON (its
field names and units), and one ``summary.csv`` row per trial for spreadsheets and
``vllm bench sweep plot``-style scripts."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tuner.core import Measurement, Trial
from tuner.studies import StudyOutcome

#: The percentiles ``vllm bench serve`` reports by default (``--metric-percentiles 99``), and
#: the ones tuner's SLOs use most.
PERCENTILES = (50, 90, 95, 99)


def bench_result(m: Measurement, trial: Trial, model: str = "") -> dict[str, Any]:
    """One measurement as ``vllm bench serve --save-result`` writes it: durations in seconds,
    latencies in milliseconds (``mean_ttft_ms``, ``p99_itl_ms``, ...), throughputs per second;
    plus ``tuner_*`` keys naming the trial and its configuration."""
    scale = 1000.0 if m.time_unit == "s" else 1.0  # ms, or steps on the unit clock
    out: dict[str, Any] = {
        "duration": m.duration,
        "completed": int(m.num_requests - m.failed_requests),
        "failed": int(m.failed_requests),
        "total_input_tokens": int(m.prompt_tokens.sum()),
        "total_output_tokens": int(m.output_tokens.sum()),
        "request_throughput": m.request_throughput,
        "output_throughput": m.output_throughput,
        "total_token_throughput": m.total_token_throughput,
        "input_lens": m.prompt_tokens.tolist(),
        "output_lens": m.output_tokens.tolist(),
        "ttfts": m.ttft.tolist(),
        "latencies": m.e2e.tolist(),
        "model_id": model,
        "tuner_trial": trial.number,
        "tuner_config": trial.config.model_dump(mode="json"),
        "tuner_time_unit": m.time_unit,
        "tuner_source": m.source,
    }
    series = {
        "ttft": m.ttft,
        "tpot": m.tpot[np.isfinite(m.tpot)],
        "itl": np.repeat(m.itl_values, m.itl_counts),
        "e2el": m.e2e,
    }
    for name, values in series.items():
        v = np.asarray(values, dtype=np.float64) * scale
        if not len(v):
            continue
        out[f"mean_{name}_ms"] = float(v.mean())
        out[f"median_{name}_ms"] = float(np.median(v))
        out[f"std_{name}_ms"] = float(v.std())
        for p in PERCENTILES:
            out[f"p{p}_{name}_ms"] = float(np.percentile(v, p))
    return out


def write_interop(outcome: StudyOutcome) -> list[Path]:
    """``bench/trial-NNN.json`` for each measured trial (the capacity point's, for a capacity
    objective) and ``summary.csv``; returns the paths written."""
    folder = outcome.folder
    written: list[Path] = []
    bench = folder / "bench"
    for t in outcome.trials:
        if t.measurement is None:
            continue
        bench.mkdir(exist_ok=True)
        path = bench / f"trial-{t.number:03d}.json"
        path.write_text(json.dumps(bench_result(t.measurement, t)) + "\n", encoding="utf-8")
        written.append(path)
    knobs = list(outcome.space.dimensions)
    metrics = sorted({k for t in outcome.trials for k in t.values})
    summary = folder / "summary.csv"
    with summary.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["trial", *knobs, "fidelity", "status", "feasible", *metrics, "error"])
        for t in sorted(outcome.trials, key=lambda t: t.number):
            values = [_cell(t.values.get(m)) for m in metrics]
            w.writerow(
                [
                    t.number,
                    *(getattr(t.config, k) for k in knobs),
                    t.fidelity,
                    t.status.value,
                    t.feasible,
                    *values,
                    (t.error or "").splitlines()[0] if t.error else "",
                ]
            )
    written.append(summary)
    return written


def _cell(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return repr(float(v))
