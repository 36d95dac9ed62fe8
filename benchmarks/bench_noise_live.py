"""Decisions that survive noise, live: the CPU vLLM serving the tiny Llama (bench_noise --live).

Four parts, each its own command so that each fits the shared lock's ~12 minutes; the live
ones write JSON into ``--out`` (default ``runs/bench-noise-live``) and the offline ones read it:

- ``truth`` (live): every configuration of the space (``max_num_batched_tokens`` 128/256 x
  ``max_num_seqs`` 4/8/16) is served once and measured ``--runs`` times (default 5) on the
  identical workload: 150 requests at 100 req/s (prompts 192-576 tokens, outputs 12-36), a
  burst no configuration keeps up with, so each one's capacity decides its throughput. Every
  run's full Measurement is saved.
- ``policies`` (offline, from ``truth``): the SLO is ``ttft.p99 <= L`` with L placed between the
  3rd and 4th configuration's median p99 (so that half the space misses it: chosen from the
  data, said in the output); the objective maximises output throughput (ties within 2 % to the
  lower p99 TTFT). The ground truth: a Loop over the saved runs with all of them per
  configuration (median rule); its best and tie band (``tied_with_best``: intervals that overlap
  the best's, or within 2 %). Then ``--sessions`` simulated tuning sessions per policy
  (single = ``Repeats(max=1)``, fixed 3, adaptive ``Repeats(min=1, max=5)``): each session's
  backend answers a run of a configuration with one of that configuration's saved live runs,
  drawn at random with replacement (with 5 live runs per configuration, many sessions resample
  the same few runs: this measures the policies on the live noise, not on fresh live runs).
- ``abort`` (live, needs ``truth`` for L): each configuration served again and measured once
  with the Loop's abort rule for that SLO; the live seconds of the load against the full runs'.
- ``pinning`` (live): one configuration measured ``--runs`` times with ``cpu_pinning=off`` and
  as many with ``on`` (client on one core, server on the other); the spread of p99 TTFT,
  throughput and the client's send lag each way.

Run (needs the vLLM venv; under the shared lock)::

    flock /tmp/tuner-bench.lock $VENV/bin/python benchmarks/bench_noise.py --live truth
    $VENV/bin/python benchmarks/bench_noise.py --live policies
    flock /tmp/tuner-bench.lock $VENV/bin/python benchmarks/bench_noise.py --live abort
    flock /tmp/tuner-bench.lock $VENV/bin/python benchmarks/bench_noise.py --live pinning
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tuner import (
    Exploration,
    Loop,
    Measurement,
    Objective,
    Repeats,
    SearchSpace,
    ServingConfig,
    Trial,
    Uniform,
    Workload,
)
from tuner.backends import Backend
from tuner.backends.live import build_tiny_model
from tuner.backends.live._server import VLLMServerBackend
from tuner.cli._table import format_table
from tuner.objectives import SLO, AbortRule, MetricRef, PartialRun, pooled_log_sd, tied_with_best
from tuner.search import ListSearch
from tuner.tuning._futility import abort_margin

BASE = ServingConfig(max_model_len=1024, block_size=128, max_num_seqs=8)
SPACE = SearchSpace({"max_num_batched_tokens": [128, 256], "max_num_seqs": [4, 8, 16]}, base=BASE)
SERVER_ARGS = ["--dtype", "bfloat16", "--enforce-eager"]
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
OBJECTIVE = Objective.maximize("output_throughput", tie_break="ttft.p99", tie_tolerance=0.02)
SLO_METRIC = "ttft.p99"
PINNING_CONFIG = BASE.replace(max_num_batched_tokens=128, max_num_seqs=8)
POLICIES = {
    "single (max=1)": Repeats(max=1),
    "fixed 3 (min=max=3)": Repeats(min=3, max=3),
    "adaptive (min=1, max=5)": Repeats(min=1, max=5),
}


def workload(quick: bool = False) -> Workload:
    """150 requests at 100 req/s (30 with ``quick``): a burst no configuration keeps up with."""
    n = 30 if quick else 150
    return Workload.poisson(100, n, Uniform(384, 0.5), Uniform(24, 0.5), seed=0)


def configs(quick: bool) -> list[ServingConfig]:
    cs = list(SPACE)
    return cs[:2] if quick else cs


def backend(root: Path, name: str, **changes: Any) -> VLLMServerBackend:
    model = str(build_tiny_model(root / "tiny-model"))
    return VLLMServerBackend(
        model,
        server_args=SERVER_ARGS,
        env=ENV,
        workdir=root / name,
        startup_timeout=600,
        request_timeout=120,
        **changes,
    )


def key(c: ServingConfig) -> str:
    return f"{c.max_num_batched_tokens} x {c.max_num_seqs}"


def value(m: Measurement, metric: str) -> float:
    return float(MetricRef.parse(metric).value(m))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- live: the ground truth ----------------------------------------------------------------------
def part_truth(out: Path, runs: int, quick: bool) -> None:
    work = workload(quick)
    saved: dict[str, Any] = {"workload": len(work), "quick": quick, "configs": {}}
    t_all = time.monotonic()
    with backend(out, "truth") as b:
        for c in configs(quick):
            rows: list[dict[str, Any]] = []
            t0 = time.monotonic()
            with b.session(c) as measure:
                for r in range(runs):
                    t = time.monotonic()
                    m = measure(work)
                    wall = time.monotonic() - t
                    if r == 0:
                        wall = time.monotonic() - t0  # the first run includes the server start
                    rows.append({"wall": wall, "measurement": m.model_dump(mode="json")})
                    log(
                        f"{key(c)} run {r + 1}: {value(m, 'output_throughput'):.0f} tok/s, "
                        f"ttft.p99 {value(m, SLO_METRIC):.3f} s, load {m.duration:.1f} s, "
                        f"wall {wall:.1f} s"
                    )
            saved["configs"][key(c)] = {"config": c.model_dump(mode="json"), "runs": rows}
    saved["wall"] = time.monotonic() - t_all
    (out / "truth.json").write_text(json.dumps(saved))
    _truth_table(saved)


def _truth_table(saved: dict[str, Any]) -> None:
    rows = []
    for name, entry in saved["configs"].items():
        ms = [Measurement.model_validate(r["measurement"]) for r in entry["runs"]]
        tput = [value(m, "output_throughput") for m in ms]
        p99 = [value(m, SLO_METRIC) for m in ms]
        lag = [m.client.send_lag_p99 if m.client else math.nan for m in ms]
        flagged = sum(1 for m in ms if m.client is not None and not m.client.trusted)
        rows.append(
            [
                name,
                " ".join(f"{v:.0f}" for v in tput),
                f"{_spread(tput):.0%}",
                " ".join(f"{v:.2f}" for v in p99),
                f"{_spread(p99):.0%}",
                f"{max(lag) * 1000:.0f}",
                f"{flagged}",
            ]
        )
    print(
        format_table(
            [
                "config",
                "output tok/s (runs)",
                "spread",
                "ttft.p99 s (runs)",
                "spread",
                "send lag p99 max ms",
                "lagged runs",
            ],
            rows,
        )
    )
    print(f"(live wall time {saved.get('wall', 0):.0f} s, {saved['workload']} requests per run)")


def _spread(values: list[float]) -> float:
    """(max - min) / median."""
    return (max(values) - min(values)) / statistics.median(values)


# --- offline: the policies on resampled live runs -------------------------------------------------
class ResampledBackend(Backend):
    """Answers each run of a configuration with one of its saved live runs (``order``: in
    turn; else drawn at random with replacement)."""

    name = "resampled-live"
    deterministic = False

    def __init__(
        self,
        runs: dict[ServingConfig, list[Measurement]],
        seed: int | None = None,
        every_run: bool = False,
    ) -> None:
        if every_run:  # the ground truth takes every run, lagged or not
            runs = {c: [m.model_copy(update={"client": None}) for m in v] for c, v in runs.items()}
        self.runs = runs
        self.rng = np.random.default_rng(seed) if seed is not None else None
        self.used: dict[ServingConfig, int] = {}
        self.calls = 0

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        pool = self.runs[config]
        k = self.used.get(config, 0)
        self.used[config] = k + 1
        self.calls += 1
        i = int(self.rng.integers(len(pool))) if self.rng is not None else k % len(pool)
        return pool[i]


def load_truth(out: Path) -> tuple[dict[ServingConfig, list[Measurement]], dict[str, Any]]:
    saved = json.loads((out / "truth.json").read_text())
    runs = {
        ServingConfig.model_validate(e["config"]): [
            Measurement.model_validate(r["measurement"]) for r in e["runs"]
        ]
        for e in saved["configs"].values()
    }
    return runs, saved


def slo_limit(runs: dict[ServingConfig, list[Measurement]]) -> float:
    """Between the 3rd and 4th configuration's median p99 TTFT (geometric mean, 2 digits)."""
    medians = sorted(statistics.median(value(m, SLO_METRIC) for m in ms) for ms in runs.values())
    k = len(medians) // 2
    limit = math.sqrt(medians[k - 1] * medians[k]) if len(medians) > 1 else medians[0]
    return float(f"{limit:.2g}")


def explore_truth(
    runs: dict[ServingConfig, list[Measurement]], slos: list[str], work: Workload, rule: Any
) -> Exploration:
    """The ground truth: a Loop that gives each configuration all of its saved runs (every
    one, lagged or not), judged by ``rule``."""
    n = min(len(v) for v in runs.values())
    loop = Loop(
        ResampledBackend(runs, every_run=True),
        ListSearch(list(runs)),
        OBJECTIVE,
        slos,
        repeats=Repeats(min=n, max=n, rule=rule),
    )
    return loop.explore(SPACE, work)


def part_policies(out: Path, sessions: int) -> None:
    runs, saved = load_truth(out)
    limit = slo_limit(runs)
    slos = [f"{SLO_METRIC} <= {limit:g}s"]
    work = workload(bool(saved.get("quick")))
    n = min(len(v) for v in runs.values())
    truth = explore_truth(runs, slos, work, "median")
    band = {t.config for t in tied_with_best(truth.trials, OBJECTIVE)}
    feasible = {t.config for t in truth.trials if t.feasible}
    best = truth.best
    print(
        f"SLO {slos[0]} (placed between the 3rd and 4th configuration's median p99 TTFT, so "
        f"that half the space misses it); ground truth = all {n} live runs per configuration, "
        "median rule"
    )
    print(
        format_table(
            ["config", "output tok/s median [interval]", "ttft.p99 s median", "truth"],
            [
                [
                    key(t.config),
                    _iv(t, "output_throughput", "{:.0f}"),
                    f"{t.values[SLO_METRIC]:.2f}",
                    "best"
                    if best is not None and t.config == best.config
                    else ("band" if t.config in band else ("yes" if t.feasible else "no")),
                ]
                for t in truth.trials
            ],
        )
    )
    rows = []
    for (name, repeats), hygiene in itertools.product(POLICIES.items(), (False, True)):
        right = violating = outside = refused = 0
        spent: list[int] = []
        for s in range(sessions):
            b = ResampledBackend(runs, seed=1000 + s, every_run=not hygiene)
            pick = Loop(b, ListSearch(list(runs)), OBJECTIVE, slos, repeats=repeats).explore(
                SPACE, work
            )
            spent.append(b.calls)
            if pick.best is None:
                refused += 1
            elif pick.best.config in band:
                right += 1
            elif pick.best.config not in feasible:
                violating += 1
            else:
                outside += 1
        mean = statistics.mean(spent)
        rows.append(
            [
                name,
                "redo lagged runs" if hygiene else "every run",
                f"{right / sessions:.0%}",
                f"{violating / sessions:.0%}",
                f"{outside / sessions:.0%}",
                f"{refused / sessions:.0%}",
                f"{mean:.1f}",
            ]
        )
        log(f"{name}, hygiene {hygiene}: done")
    single = float(rows[0][6])
    for r in rows:
        r.append(f"{float(r[6]) / single:.2f}x")
    print(
        format_table(
            [
                "policy",
                "client-lagged runs",
                "in tie band",
                "violating pick",
                "outside band",
                "refused",
                "live runs",
                "vs single",
            ],
            rows,
        )
    )
    print(
        f"({sessions} simulated sessions per policy, each run answered by one of the "
        f"{n} saved live runs of its configuration, drawn with replacement)"
    )


def _iv(t: Trial, metric: str, fmt: str) -> str:
    lo, hi = t.intervals.get(metric, (math.nan, math.nan))
    return f"{fmt.format(t.values[metric])} [{fmt.format(lo)}, {fmt.format(hi)}]"


# --- live: early abort ---------------------------------------------------------------------------
def long_workload() -> Workload:
    """300 requests at 50 req/s (a 6 s schedule): about half the space keeps up."""
    return Workload.poisson(50, 300, Uniform(384, 0.5), Uniform(24, 0.5), seed=1)


class _Switch(AbortRule):
    """An abort rule that can be turned off (to run the same session's load in full)."""

    enabled = True

    def lost(self, run: PartialRun) -> str | None:
        return super().lost(run) if self.enabled else None


def part_abort_long(out: Path) -> None:
    """Each configuration on one server: the long workload in full, then again with the abort
    rule (paired: same server, same workload)."""
    runs, _ = load_truth(out)
    limit = slo_limit(runs)
    rule = _Switch([f"{SLO_METRIC} <= {limit:g}s"])
    work = long_workload()
    rows = []
    full_total = cut_total = 0.0
    with backend(out, "abort-long") as b:
        for c in runs:
            with b.session(c, abort=rule) as measure:
                rule.enabled = False
                full = measure(work)
                rule.enabled = True
                cut = measure(work)
            p99 = value(full, SLO_METRIC)
            full_total += full.duration
            cut_total += cut.duration
            rows.append(
                [
                    key(c),
                    f"{p99:.2f}",
                    "miss" if p99 > limit else "meets",
                    f"{full.duration:.1f}",
                    f"{cut.duration:.1f}",
                    (cut.aborted or "ran in full")[:90],
                ]
            )
            log(f"{key(c)}: full {full.duration:.1f} s, p99 {p99:.2f}; {cut.aborted or 'in full'}")
    _abort_table(f"{len(work)} requests at 50 req/s (a 6 s schedule)", limit, rows)
    _abort_total(full_total, cut_total)


def _abort_table(what: str, limit: float, rows: list[list[str]]) -> None:
    print(f"early abort on ttft.p99 <= {limit:g}s, {what}")
    print(
        format_table(
            ["config", "p99 s", "SLO", "full load s", "with abort s", "abort"],
            rows,
        )
    )


def _abort_total(full_total: float, cut_total: float) -> None:
    print(
        f"load seconds: {full_total:.1f} without abort, {cut_total:.1f} with "
        f"({1 - cut_total / full_total:.0%} saved; server starts, ~1 min each, not included)"
    )


def part_abort(out: Path, quick: bool) -> None:
    runs, _ = load_truth(out)
    limit = slo_limit(runs)
    rule = AbortRule([f"{SLO_METRIC} <= {limit:g}s"])
    work = workload(quick)
    rows = []
    full_total = cut_total = 0.0
    with backend(out, "abort") as b:
        for c in runs:
            full = statistics.median(m.duration for m in runs[c])
            p99 = statistics.median(value(m, SLO_METRIC) for m in runs[c])
            with b.session(c, abort=rule) as measure:
                m = measure(work)
            full_total += full
            cut_total += m.duration
            rows.append(
                [
                    key(c),
                    f"{p99:.2f}",
                    "miss" if p99 > limit else "meets",
                    f"{full:.1f}",
                    f"{m.duration:.1f}",
                    (m.aborted or "ran in full")[:90],
                ]
            )
            log(f"{key(c)}: {m.aborted or 'ran in full'}")
    print(f"early abort on ttft.p99 <= {limit:g}s")
    print(
        format_table(
            [
                "config",
                "truth p99 s",
                "truth",
                "full load s (median)",
                "with abort s",
                "abort",
            ],
            rows,
        )
    )
    print(
        f"load seconds: {full_total:.1f} without abort, {cut_total:.1f} with "
        f"({1 - cut_total / full_total:.0%} saved; server starts, ~1 min each, not included)"
    )


# --- offline: early abort replayed on the live runs, with and without the noise margin ----------
REPLAY_STEP = 0.05  # seconds between two looks at a replayed run (the live client looks as often)


def abort_time(m: Measurement, rule: AbortRule) -> float | None:
    """When ``rule`` would have stopped this saved live run (None: it would have run in full):
    the first look, every ``REPLAY_STEP`` s, at which what had been observed -- the first
    tokens that had come, the time each other sent request had waited -- proves the SLO lost.
    The run up to that moment is the run that was measured, so the replay is exact but for the
    client's own timing of its looks."""
    arrival = np.asarray(m.arrival, dtype=np.float64)
    first = arrival + np.asarray(m.ttft, dtype=np.float64)
    t0 = float(arrival.min())
    for now in np.arange(t0 + REPLAY_STEP, t0 + m.duration, REPLAY_STEP):
        seen = first <= now
        run = PartialRun(
            now=float(now),
            arrival=arrival,
            output_tokens=np.asarray(m.output_tokens, dtype=np.float64),
            first_token=np.where(seen, first, np.nan),
        )
        if rule.lost(run) is not None:
            return float(now - t0)
    return None


def part_abort_replay(out: Path, max_runs: int) -> None:
    """Every saved live run replayed under three abort rules on ``ttft.p99 <= L``: the plain
    rule (what the Loop did before: an abort is final), and the Loop's noise margins for
    ``Repeats(max=max_runs)`` under the ``confident`` and the ``median`` rule. Each
    configuration's margin comes from the noise of the *other* configurations' runs (pooled
    with the Loop's prior), as a study that had measured them would have it. A stopped run
    of a configuration that its rule finds feasible on all its runs is a winner thrown away."""
    runs, saved = load_truth(out)
    limit = slo_limit(runs)
    slo = SLO.parse(f"{SLO_METRIC} <= {limit:g}s")
    work = workload(bool(saved.get("quick")))
    truth = {  # the configurations each rule finds feasible on all their runs
        r: {t.config for t in explore_truth(runs, [slo.text], work, r).trials if t.feasible}
        for r in ("median", "confident")
    }
    rules: dict[str, tuple[Any, Any]] = {"plain (final)": (lambda c: AbortRule([slo]), None)}
    for r in ("confident", "median"):

        def margin_rule(c: ServingConfig, r: Any = r) -> AbortRule:
            others = [[value(m, SLO_METRIC) for m in v] for k, v in runs.items() if k != c]
            s, df = pooled_log_sd(others)
            m = abort_margin(slo, s, df, 0.95, max_runs, r)
            return AbortRule([slo], margins={slo.text: m})

        rules[f"margin, {r}"] = (margin_rule, r)
    rows: list[list[str]] = []
    cut: dict[str, dict[ServingConfig, int]] = {name: {} for name in rules}
    load_s = dict.fromkeys(rules, 0.0)
    full_total = 0.0
    for c, ms in runs.items():
        p99s = [value(m, SLO_METRIC) for m in ms]
        full_total += sum(m.duration for m in ms)
        row = [key(c), f"{statistics.median(p99s):.2f}", f"{sum(p > limit for p in p99s)}"]
        row += ["yes" if c in truth[r] else "no" for r in ("median", "confident")]
        for name, (make, _) in rules.items():
            rule = make(c)
            times = [abort_time(m, rule) for m in ms]
            cut[name][c] = sum(t is not None for t in times)
            load_s[name] += sum(
                t if t is not None else m.duration for t, m in zip(times, ms, strict=True)
            )
            row.append(f"{cut[name][c]} (x{rule.margins.get(slo.text, 1.0):.2f})")
        rows.append(row)
    n = len(next(iter(runs.values())))
    print(
        f"early abort replayed on {len(runs)} configurations x {n} saved live runs, "
        f"{slo.text}, margins for Repeats(max={max_runs}); each abort column: the runs it "
        "would have stopped (the margin)"
    )
    heads = ["config", "p99 s", "runs over L", "feasible: median", "confident", *rules]
    print(format_table(heads, rows))
    for name, (_, own) in rules.items():
        judged = [own] if own is not None else ["median", "confident"]
        thrown = "; ".join(
            f"{sum(cut[name][c] for c in truth[r])} of {n * len(truth[r])} runs of the "
            f"configurations feasible by {r}"
            for r in judged
        )
        losers = [c for c in runs if c not in truth["median"]]
        kept = load_s[name] / full_total
        print(
            f"{name}: stops {thrown}; {sum(cut[name][c] for c in losers)} of "
            f"{n * len(losers)} of those the median finds infeasible; load "
            f"{load_s[name]:.0f} s of {full_total:.0f} s ({1 - kept:.0%} saved)"
        )


# --- live: CPU pinning ---------------------------------------------------------------------------
def part_pinning(out: Path, runs: int, quick: bool) -> None:
    work = workload(quick)
    rows = []
    for mode in ("off", "on"):
        with (
            backend(out, f"pin-{mode}", cpu_pinning=mode) as b,
            b.session(PINNING_CONFIG) as measure,
        ):
            ms = [measure(work) for _ in range(runs)]
        tput = [value(m, "output_throughput") for m in ms]
        p99 = [value(m, SLO_METRIC) for m in ms]
        lag = [m.client.send_lag_p99 * 1000 if m.client else math.nan for m in ms]
        cpus = ms[0].client.cpus if ms[0].client else "?"
        rows.append(
            [
                mode,
                cpus or "?",
                " ".join(f"{v:.0f}" for v in tput),
                f"{_cv(tput):.1%}",
                " ".join(f"{v:.3f}" for v in p99),
                f"{_cv(p99):.1%}",
                " ".join(f"{v:.0f}" for v in lag),
            ]
        )
        log(f"pinning {mode}: done")
    print(f"CPU pinning, {key(PINNING_CONFIG)}, {runs} runs each way on one server")
    print(
        format_table(
            [
                "pinning",
                "split",
                "output tok/s",
                "cv",
                "ttft.p99 s",
                "cv",
                "send lag p99 ms",
            ],
            rows,
        )
    )


def _cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0


PARTS = ("truth", "policies", "abort", "abort-long", "abort-replay", "pinning")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("part", choices=PARTS)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-noise-live"))
    ap.add_argument("--runs", type=int, default=5, help="live runs per configuration (5)")
    ap.add_argument("--sessions", type=int, default=100, help="simulated sessions (100)")
    ap.add_argument("--quick", action="store_true", help="2 configurations, short runs")
    ap.add_argument("--repeats-max", type=int, default=5, help="abort-replay: Repeats.max (5)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "truth":
        part_truth(args.out, args.runs, args.quick)
    elif args.part == "policies":
        part_policies(args.out, args.sessions)
    elif args.part == "abort":
        part_abort(args.out, args.quick)
    elif args.part == "abort-long":
        part_abort_long(args.out)
    elif args.part == "abort-replay":
        part_abort_replay(args.out, args.repeats_max)
    else:
        part_pinning(args.out, args.runs, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
