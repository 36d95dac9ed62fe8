"""Capacity tuning on a real trace: gain over vLLM's defaults, probes, searches, auto_tune.sh.

Run: ``.venv/bin/python benchmarks/bench_capacity.py`` (7 to 12 minutes on 2 shared cores,
6 CPU-minutes; tables on stdout, progress on stderr). Options: ``--requests 1000`` (how many
of the trace's 3,000 requests), ``--seeds 10`` (seeds per strategy; 0 = no strategy runs),
``--budget-fraction 0.2`` (each seeded run's ``Loop(max_cost=...)`` as a fraction of the
shortcut grid's cost), ``--quick`` (a small space and 200 requests, 2 seeds, a few seconds: a
smoke test, not the numbers to quote).

The problem (:func:`make_problem`): the first requests of Azure's public LLM inference
conversation trace (``benchmarks/data``: production arrival times, prompt and output lengths)
on the simulator with a seconds ``CostModel`` for Llama-3.1-8B on an H100 (rounded from
``tuner.hardware``'s roofline prior: 7.5 ms a step + 25 us per prefill token + 85 us per
decode token); every valid combination of five scheduler knobs (``max_num_batched_tokens``,
``max_num_seqs``, ``long_prefill_token_threshold``, ``enable_chunked_prefill``,
``num_kv_blocks``; ``SearchSpace(skip_invalid=True)``); SLOs ``ttft.p99 <= 2s`` and
``itl.p99 <= 100ms``; objective ``Objective.capacity(rel_tol=0.02)``: the highest arrival
rate at which both SLOs hold, probed with ``workload.at_rate(rate)`` (the trace's own
requests, arrivals scaled, so bursts stay bursts). ``num_kv_blocks`` stands for the memory
given to the KV cache: vLLM's defaults get all the GPU gives (28,581 blocks of 16 tokens at
``gpu_memory_utilization=0.9``), the space also smaller caches (a GPU shared with something
else), so whatever the tuned configuration gains comes from the scheduler knobs.

What it measures:

1. vLLM's defaults (``ServingConfig()``: 2,048 batched tokens, 128 sequences, chunked
   prefill, no long-prefill threshold: vLLM 0.32's values for a GPU server) against the
   capacity-tuned best: capacity, output tokens/s per GPU and $ per million output tokens at
   the capacity point (at an assumed $2.50 per GPU-hour);
2. the exhaustive grid with the incumbent shortcut (tuner's default: probe each
   configuration first at the best capacity so far, stop after one probe if it fails there)
   and without it (``shortcut=False``: every configuration's capacity in full): probes per
   configuration and whether both give the same answer;
3. trials and probes until a trial within 99 % of the grid's optimum (on a 2 % lattice: the
   optimum's lattice rate itself) for the grid in its order and, 10 seeds each under
   ``max_cost = budget_fraction x`` the shortcut grid's cost, ``RandomSearch``, ``TPESearch``
   and ``SuccessiveHalving`` (capacity on the first third of the trace, then the whole);
4. vLLM's ``benchmarks/auto_tune/auto_tune.sh`` procedure (:func:`auto_tune`) on the same
   space restricted to ``max_num_seqs x max_num_batched_tokens`` (other knobs at vLLM's
   defaults), next to tuner's grid on that sub-space and on the full space. For each pair
   auto_tune runs the benchmark once at ``--request-rate inf``; if the latency limit holds
   there it is done, else it starts at ``int(measured request throughput) + 1`` req/s and
   walks down 1 req/s at a time until it holds; its answer is the pair with the highest
   request throughput at its passing rate. Here every probe replays the same trace (at rate
   inf: every request at once) and checks both SLOs, where auto_tune sends random prompts of
   fixed lengths (Poisson arrivals, 1,000 at inf and 100 per rate) and checks p99 E2E latency
   only: the procedure is auto_tune's, the workload and SLOs are this benchmark's.

Measurements are cached per (configuration, workload fingerprint) -- the workload at a rate is
a different workload, so the key covers the rate and the fidelity -- and every strategy reuses
them; probes and ``Trial.cost`` are still counted as if every probe had been run, so the cache
changes wall time only. The Loop checks the budget before each trial, so a run ends up to one
trial over it.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner import (
    SLO,
    Loop,
    Measurement,
    Objective,
    SearchSpace,
    ServingConfig,
    Trial,
    Workload,
)
from tuner.backends import Backend, CostModel, SimulatorBackend
from tuner.cli._table import format_table
from tuner.objectives import binding_slo, judge
from tuner.search import GridSearch, ListSearch, RandomSearch, Search, SuccessiveHalving, TPESearch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this
from _caching import CachingBackend

#: The trace slice shipped with the benchmark (see ``benchmarks/data/README.md``).
DATA = Path(__file__).resolve().parent / "data" / "azure_conv_slice.csv.gz"
#: A run succeeds once a trial's capacity is within this fraction of the grid's optimum.
TARGET = 0.99
#: Price of one GPU-hour for ``cost_per_million_tokens`` (assumed).
GPU_HOUR_PRICE = 2.5
SLOS = ("ttft.p99 <= 2s", "itl.p99 <= 100ms")
#: Llama-3.1-8B on an H100 (bf16), from tuner.hardware's roofline prior rounded: 7.5 ms a step
#: (reading the 16 GB of weights), 25 us of matmuls per token, and per decode token also the
#: K/V reads of a ~1,200-token context (50 ns per cached token).
COST_MODEL = CostModel(
    fixed=0.0075, per_prefill_token=2.5e-5, per_decode_token=8.5e-5, time_unit="s"
)
#: The KV cache vLLM sizes for that model and GPU at gpu_memory_utilization=0.9 (457,296
#: tokens, ``tuner.hardware.kv_cache_tokens``), in blocks of 16 tokens.
GPU_KV_BLOCKS = 28581


def load_trace(n: int | None = None, path: Path = DATA) -> Workload:
    """The first ``n`` requests of an Azure LLM inference trace CSV (``TIMESTAMP``,
    ``ContextTokens``, ``GeneratedTokens``; gzipped or not), arrivals in seconds from the
    first request."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        want = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
        if reader.fieldnames != want:
            raise SystemExit(f"{path}: expected the columns {want}, got {reader.fieldnames}")
        rows = list(itertools.islice(reader, n))
    stamps = np.array([r["TIMESTAMP"].replace(" ", "T") for r in rows], dtype="datetime64[ns]")
    arrival = (stamps - stamps[0]) / np.timedelta64(1, "s")
    return Workload.from_arrays(
        arrival,
        [int(r["ContextTokens"]) for r in rows],
        [int(r["GeneratedTokens"]) for r in rows],
    )


@dataclass(frozen=True)
class Problem:
    """One capacity problem: what to search, on what, under which SLOs."""

    space: SearchSpace
    workload: Workload
    slos: tuple[str, ...]
    objective: Objective
    defaults: ServingConfig
    autotune_space: SearchSpace


def make_problem(quick: bool = False, requests: int | None = None) -> Problem:
    """The benchmark's problem (``quick``: a smaller space and workload of the same shape)."""
    if quick:
        dims: dict[str, list[object]] = {
            "max_num_batched_tokens": [512, 2048, 8192],
            "max_num_seqs": [128, 384],
            "long_prefill_token_threshold": [0],
            "enable_chunked_prefill": [True, False],
            "num_kv_blocks": [2048, GPU_KV_BLOCKS],
        }
        n = requests or 200
    else:
        dims = {
            "max_num_batched_tokens": [512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192],
            "max_num_seqs": [32, 64, 128, 192, 256, 384, 512],
            "long_prefill_token_threshold": [0, 512],
            "enable_chunked_prefill": [True, False],
            "num_kv_blocks": [2048, 4096, 8192, GPU_KV_BLOCKS],
        }
        n = requests or 1000
    # vLLM 0.32's defaults for the scheduler knobs; the KV cache the GPU gives.
    base = ServingConfig(max_model_len=8192, num_kv_blocks=GPU_KV_BLOCKS)
    sub = {k: dims[k] for k in ("max_num_seqs", "max_num_batched_tokens")}
    return Problem(
        space=SearchSpace(dims, base=base, skip_invalid=True),
        workload=load_trace(n),
        slos=SLOS,
        objective=Objective.capacity(rel_tol=0.02, gpu_hour_price=GPU_HOUR_PRICE),
        defaults=base,
        autotune_space=SearchSpace(sub, base=base, skip_invalid=True),
    )


# --- runs and what they reached ------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one Loop did: its trials (evaluation order), why it stopped, how long it took."""

    trials: tuple[Trial, ...]
    best: Trial | None
    stop_reason: str
    wall: float

    @property
    def probes(self) -> int:
        return probes(self.trials)

    @property
    def cost(self) -> float:
        return math.fsum(t.cost for t in self.trials)


def run_loop(
    problem: Problem,
    backend: Backend,
    search: Search,
    *,
    objective: Objective | None = None,
    space: SearchSpace | None = None,
    max_cost: float | None = None,
    on_trial: Callable[[Trial], None] | None = None,
) -> Run:
    """One Loop run; an infeasible outcome is a result here, not an error."""
    loop = Loop(
        backend,
        search,
        objective or problem.objective,
        problem.slos,
        max_cost=max_cost,
        on_trial=on_trial,
    )
    t0 = time.perf_counter()
    ex = loop.explore(space or problem.space, problem.workload)
    return Run(ex.trials, ex.best, ex.stop_reason, time.perf_counter() - t0)


def probes(trials: Iterable[Trial]) -> int:
    """Load points measured (every probe of every trial)."""
    return sum(len(t.load_points) for t in trials)


def capacity(t: Trial | None) -> float:
    """A full-fidelity feasible trial's capacity; NaN otherwise."""
    if t is None or not t.feasible or t.fidelity != 1.0:
        return math.nan
    return t.values["capacity"]


@dataclass(frozen=True)
class Outcome:
    """A run measured against the grid's optimum."""

    evals_to_target: int | None
    probes_to_target: int | None
    cost_to_target: float | None
    final_gap: float


def measure(run: Run, optimum: float) -> Outcome:
    """Trials, probes and cost until the first trial within ``TARGET`` of the optimum, and the
    gap of the run's answer."""
    best = capacity(run.best)
    final = 1 - best / optimum if math.isfinite(best) else math.inf
    n_probes, cost = 0, 0.0
    for i, t in enumerate(run.trials, start=1):
        n_probes += len(t.load_points)
        cost += t.cost
        if capacity(t) >= TARGET * optimum:
            return Outcome(i, n_probes, cost, final)
    return Outcome(None, None, None, final)


def median_worst(xs: Sequence[float | None]) -> tuple[float, float]:
    """Median and worst (largest) over seeds; ``None`` (not reached) counts as inf."""
    vals = sorted(math.inf if x is None else x for x in xs)
    return statistics.median(vals), vals[-1]


def num(x: float) -> object:
    """A count for a table: an int when whole, ``-`` for inf."""
    if math.isinf(x):
        return "-"
    return int(x) if float(x).is_integer() else round(x, 1)


def pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage; ``-`` for None or inf."""
    if x is None or math.isinf(x):
        return "-"
    return f"{100 * x:.{digits}f}%"


def short(config: ServingConfig, base: ServingConfig) -> str:
    """The knobs that differ from ``base`` (``defaults`` when none)."""
    d = config.describe(base)
    return d.removeprefix("ServingConfig(").removesuffix(")") or "defaults"


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- vLLM's auto_tune.sh -------------------------------------------------------------------


@dataclass(frozen=True)
class AutoTunePair:
    """What auto_tune's procedure found for one (max_num_seqs, max_num_batched_tokens)."""

    config: ServingConfig
    probes: int
    rate: float | None  # the request rate at which the SLOs held (None: none did)
    throughput: float  # request throughput measured there (auto_tune ranks pairs by it)


def auto_tune_pair(
    backend: Backend, config: ServingConfig, workload: Workload, slos: Sequence[SLO]
) -> AutoTunePair:
    """auto_tune.sh's ``run_benchmark`` for one pair: one run at ``--request-rate inf`` (every
    request at once); if the SLOs hold there, done; else start at ``int(throughput) + 1``
    req/s and walk down 1 req/s at a time until they hold (or the rate reaches 0)."""

    def holds(m: Measurement) -> bool:
        return all(r.ok for r in judge(slos, m))

    burst = Workload.from_arrays(
        np.zeros(len(workload)), workload.prompt_tokens, workload.output_tokens
    )
    m = backend.evaluate(config, burst)
    n = 1
    if holds(m):
        return AutoTunePair(config, n, math.inf, m.request_throughput)
    rate = int(m.request_throughput) + 1
    while rate > 0:
        m = backend.evaluate(config, workload.at_rate(float(rate)))
        n += 1
        if holds(m):
            return AutoTunePair(config, n, float(rate), m.request_throughput)
        rate -= 1
    return AutoTunePair(config, n, None, 0.0)


def auto_tune(problem: Problem, backend: Backend) -> list[AutoTunePair]:
    """auto_tune.sh over the sub-space, in its order (``max_num_seqs`` outer,
    ``max_num_batched_tokens`` inner)."""
    slos = [SLO.parse(s) for s in problem.slos]
    dims = problem.autotune_space.dimensions
    out = []
    for seqs in dims["max_num_seqs"]:
        for budget in dims["max_num_batched_tokens"]:
            config = problem.defaults.replace(max_num_seqs=seqs, max_num_batched_tokens=budget)
            if config in problem.autotune_space:
                out.append(auto_tune_pair(backend, config, problem.workload, slos))
    return out


# --- strategies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """A named search, built afresh for each seed."""

    name: str
    settings: str
    make: Callable[[int], Search]


def strategies(n: int, budget_probes: float) -> list[Strategy]:
    """The seeded strategies; ``budget_probes`` is the budget in mean probes of the grid.

    Successive halving runs brackets of ``k = 0.4 x budget_probes`` candidates until the
    budget is spent (``bench_search.py``'s best random-candidate setting): with the shortcut
    most trials are one probe, and a probe on a third of the trace costs about a third.
    """
    k = max(9, round(0.4 * budget_probes))
    return [
        Strategy("random", "RandomSearch, no repeats", lambda s: RandomSearch(seed=s)),
        Strategy(
            "tpe",
            "TPESearch, n_startup_trials=10",
            lambda s: TPESearch(seed=s, n_trials=n, n_startup_trials=10),
        ),
        Strategy(
            "halving",
            f"SuccessiveHalving, n_configs={k}, min_fidelity=1/3, eta=3, brackets until the "
            "budget is spent",
            lambda s: SuccessiveHalving(
                n_configs=k, min_fidelity=1 / 3, eta=3, seed=s, brackets=None
            ),
        ),
    ]


# --- the report ----------------------------------------------------------------------------


def describe_problem(problem: Problem) -> None:
    w, space = problem.workload, problem.space
    span = float(w.arrival.max())
    print(
        f"trace: Azure LLM inference 2023, conversation, first {len(w)} requests "
        f"({span / 60:.1f} min, {w.rate:.2f} req/s as recorded); prompts "
        f"{w.total_prompt_tokens / len(w):.0f} (median {np.median(w.prompt_tokens):.0f}, "
        f"max {w.prompt_tokens.max()}), outputs {w.total_output_tokens / len(w):.0f} "
        f"(max {w.output_tokens.max()}) tokens on average"
    )
    print(f"cost model: {COST_MODEL!r}")
    print(f"SLOs: {', '.join(problem.slos)}; objective: {problem.objective.text}")
    print(f"space: {space!r}")
    print(
        f"{len(space)} valid configurations ({len(space.excluded)} combinations vLLM refuses "
        "skipped)"
    )


def report_defaults(problem: Problem, defaults: Trial, best: Trial) -> None:
    """The capacity-tuned best against vLLM's defaults."""
    base = problem.defaults
    rows = []
    for name, t in (("vLLM defaults", defaults), ("capacity-tuned", best)):
        b = binding_slo(t.slo_results)
        rows.append(
            [
                name,
                short(t.config, base),
                f"{capacity(t):.2f}",
                f"{t.values['throughput_per_gpu']:.0f}",
                f"{t.values['cost_per_million_tokens']:.3f}",
                "-" if b is None else f"{b.slo} ({b.value:.3g})",
            ]
        )
    print(
        f"\nvLLM's defaults against the capacity-tuned best (at the capacity point; "
        f"${GPU_HOUR_PRICE:.2f} per GPU-hour):"
    )
    headers = [
        "",
        "configuration",
        "capacity req/s",
        "output tok/s per GPU",
        "$ per 1M output tokens",
        "closest SLO (its value)",
    ]
    print(format_table(headers, rows))
    gain = capacity(best) / capacity(defaults) - 1
    saving = 1 - best.values["cost_per_million_tokens"] / defaults.values["cost_per_million_tokens"]
    print(
        f"gain: {100 * gain:+.1f}% capacity, {100 * saving:.1f}% lower cost per output token "
        f"(defaults = vLLM 0.32's 2048 batched tokens, 128 sequences, chunked prefill, no "
        "long-prefill threshold)"
    )


def report_shortcut(full: Run, short_: Run, base: ServingConfig) -> None:
    """The exhaustive grid with and without the incumbent shortcut."""
    rows = []
    for name, run in (("with (default)", short_), ("without (shortcut=False)", full)):
        n = len(run.trials)
        rows.append(
            [
                name,
                n,
                run.probes,
                f"{run.probes / n:.2f}",
                f"{capacity(run.best):.2f}",
                short(run.best.config, base) if run.best else "-",
            ]
        )
    print("\nthe exhaustive grid, with and without the incumbent shortcut:")
    headers = [
        "shortcut",
        "trials",
        "probes",
        "probes per config",
        "best capacity",
        "best configuration",
    ]
    print(format_table(headers, rows))
    same_cap = capacity(full.best) == capacity(short_.best)
    same_cfg = full.best is not None and short_.best is not None
    same_cfg = same_cfg and full.best.config == short_.best.config  # type: ignore[union-attr]
    verdict = (
        "yes, the same capacity and configuration"
        if same_cap and same_cfg
        else "the same capacity, another configuration of it"
        if same_cap
        else "NO: the answers differ"
    )
    stopped = sum(1 for t in short_.trials if (t.capacity_note or "").startswith("below the"))
    print(
        f"same answer: {verdict}; {stopped} configurations stopped after one probe (they fail "
        f"at the incumbent's capacity); the shortcut saves "
        f"{100 * (1 - short_.probes / full.probes):.0f}% of the probes"
    )


def report_auto_tune(
    pairs: list[AutoTunePair],
    sub: Run,
    full_space: Run,
    capacities: dict[ServingConfig, float],
    base: ServingConfig,
) -> None:
    """auto_tune.sh's procedure next to tuner on the same sub-space and on the full space."""
    held = [p for p in pairs if p.rate is not None]
    best = max(held, key=lambda p: p.throughput) if held else None
    n_pairs = len(pairs)
    rows: list[list[object]] = [
        [
            "auto_tune.sh procedure",
            f"{n_pairs} (seqs x tokens)",
            sum(p.probes for p in pairs),
            f"{best.rate:g} (integer steps)" if best and best.rate is not None else "-",
            short(best.config, base) if best else "-",
            f"{capacities.get(best.config, math.nan):.2f}" if best else "-",
        ]
    ]
    for name, run in (("tuner grid, same sub-space", sub), ("tuner grid, full space", full_space)):
        rows.append(
            [
                name,
                len(run.trials),
                run.probes,
                f"{capacity(run.best):.2f}",
                short(run.best.config, base) if run.best else "-",
                f"{capacity(run.best):.2f}",
            ]
        )
    print(
        "\nvLLM's auto_tune.sh procedure (per pair: one run at rate inf, then from "
        "int(throughput)+1 down 1 req/s at a time until the SLOs hold; best = highest "
        "throughput) against tuner:"
    )
    headers = ["method", "configs", "probes", "capacity found", "answer", "its lattice capacity"]
    print(format_table(headers, rows))
    walk = [p.probes for p in pairs]
    print(
        f"auto_tune probes per pair: mean {statistics.mean(walk):.1f}, max {max(walk)}; "
        f"{n_pairs - len(held)} pairs never held; tuner's grid on the sub-space: "
        f"{sub.probes / len(sub.trials):.2f} per configuration"
    )


def report_strategies(
    problem: Problem,
    backend: Backend,
    grid: Run,
    optimum: float,
    seeds: int,
    fraction: float,
    t_start: float,
) -> None:
    """Trials and probes to ``TARGET`` of the optimum: the grid in its order, then each seeded
    strategy under ``max_cost = fraction x`` the grid's cost."""
    g = measure(grid, optimum)
    rows: list[list[object]] = [
        [
            "grid (its order)",
            "1/1" if g.evals_to_target else "0/1",
            f"{len(grid.trials)} / {grid.probes}",
            num(g.evals_to_target or math.inf),
            "",
            num(g.probes_to_target or math.inf),
            "",
            pct(g.final_gap, 2),
            "",
        ]
    ]
    budget = fraction * grid.cost
    budget_probes = budget / (grid.cost / grid.probes)
    if seeds:
        print(
            f"\nbudget per seeded run: max_cost = {budget:.0f} engine steps "
            f"({100 * fraction:g}% of the shortcut grid's cost, about {budget_probes:.0f} of "
            f"its probes); success = a full-fidelity trial within {100 * TARGET:g}% of the "
            f"optimum ({optimum:.2f} req/s)"
        )
    for strat in strategies(len(problem.space), budget_probes) if seeds else []:
        runs, outs = [], []
        for seed in range(seeds):
            run = run_loop(problem, backend, strat.make(seed), max_cost=budget)
            out = measure(run, optimum)
            runs.append((len(run.trials), run.probes))
            outs.append(out)
            progress(
                f"{strat.name} seed {seed}: {len(run.trials)} trials, {run.probes} probes, "
                f"{out.evals_to_target or '-'} trials to target, final gap "
                f"{pct(out.final_gap, 2)} ({time.perf_counter() - t_start:.0f} s)"
            )
        ev_med, ev_worst = median_worst([o.evals_to_target for o in outs])
        pr_med, pr_worst = median_worst([o.probes_to_target for o in outs])
        g_med, g_worst = median_worst([o.final_gap for o in outs])
        ok = sum(1 for o in outs if o.evals_to_target is not None)
        per_run = (
            f"{num(statistics.median(t for t, _ in runs))} / "
            f"{num(statistics.median(p for _, p in runs))}"
        )
        rows.append(
            [
                strat.name,
                f"{ok}/{seeds}",
                per_run,
                num(ev_med),
                num(ev_worst),
                num(pr_med),
                num(pr_worst),
                pct(g_med, 2),
                pct(g_worst, 2),
            ]
        )
        print(f"{strat.name}: {strat.settings}")
    print(
        f"\ntrials and probes to {100 * TARGET:g}% of the optimum (median and worst over "
        f"{seeds} seeds; '-' = not reached; the grid runs once, unbudgeted):"
    )
    headers = [
        "strategy",
        "success",
        "trials / probes run",
        "trials to 99%",
        "worst",
        "probes to 99%",
        "worst",
        "final gap",
        "worst",
    ]
    print(format_table(headers, rows))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument(
        "--requests", type=int, default=None, help="requests of the trace (default 1000)"
    )
    ap.add_argument(
        "--seeds", type=int, default=None, help="seeds per strategy (default 10, 2 with --quick)"
    )
    ap.add_argument(
        "--budget-fraction",
        type=float,
        default=0.2,
        help="each seeded run's max_cost as a fraction of the shortcut grid's cost (0.2)",
    )
    ap.add_argument("--quick", action="store_true", help="a small space and workload (smoke)")
    args = ap.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 10)
    if seeds < 0 or not 0 < args.budget_fraction <= 1:
        ap.error("--seeds must be >= 0 and --budget-fraction in (0, 1]")
    if args.requests is not None and not 10 <= args.requests <= 3000:
        ap.error("--requests must be between 10 and 3000 (the shipped slice)")
    t_start = time.perf_counter()
    problem = make_problem(args.quick, args.requests)
    space, base = problem.space, problem.defaults
    backend = CachingBackend(SimulatorBackend(COST_MODEL), slim_measurements=True)
    describe_problem(problem)
    n = len(space)

    def grid_progress(label: str) -> Callable[[Trial], None]:
        done = 0

        def tick(_: Trial) -> None:
            nonlocal done
            done += 1
            if done % 100 == 0 or done == n:
                progress(f"{label}: {done}/{n} ({time.perf_counter() - t_start:.0f} s)")

        return tick

    # 1. The exhaustive grid: every configuration's capacity in full, then tuner's default.
    no_shortcut = Objective.capacity(rel_tol=0.02, gpu_hour_price=GPU_HOUR_PRICE, shortcut=False)
    full = run_loop(
        problem,
        backend,
        GridSearch(),
        objective=no_shortcut,
        on_trial=grid_progress("grid, shortcut=False"),
    )
    grid = run_loop(problem, backend, GridSearch(), on_trial=grid_progress("grid"))
    if full.best is None or grid.best is None:
        raise SystemExit("no configuration sustains any load under the SLOs: nothing to tune")
    capacities = {t.config: capacity(t) for t in full.trials}
    optimum = capacity(full.best)
    within = sum(1 for c in capacities.values() if c >= TARGET * optimum)
    feasible = sum(1 for c in capacities.values() if math.isfinite(c))
    spread = sorted(c for c in capacities.values() if math.isfinite(c))
    print(
        f"capacities: {feasible} configurations sustain some load, from {spread[0]:.2f} to "
        f"{optimum:.2f} req/s (median {statistics.median(spread):.2f}); {within} "
        f"({100 * within / n:.1f}%) within {100 * TARGET:g}% of the optimum"
    )
    if within <= 8:
        for c, cap in capacities.items():
            if cap >= TARGET * optimum:
                print(f"  {cap:.2f} req/s: {short(c, base)}")

    # 2. vLLM's defaults.
    defaults = run_loop(problem, backend, ListSearch([base]), objective=no_shortcut)
    report_defaults(problem, defaults.trials[0], full.best)
    report_shortcut(full, grid, base)

    # 3. Strategies: trials and probes to 99 % of the optimum.
    report_strategies(problem, backend, grid, optimum, seeds, args.budget_fraction, t_start)

    # 4. auto_tune.sh's procedure against tuner.
    pairs = auto_tune(problem, backend)
    sub = run_loop(problem, backend, GridSearch(), space=problem.autotune_space)
    report_auto_tune(pairs, sub, grid, capacities, base)
    print(
        f"\nsimulations run: {backend.misses} (cache hits: {backend.hits}); "
        f"wall time: {time.perf_counter() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
