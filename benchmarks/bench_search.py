"""Search efficiency: how much of an exhaustive grid's cost each search strategy needs.

Run: ``.venv/bin/python benchmarks/bench_search.py`` (about 2.5 minutes on 2 busy cores;
progress on stderr). Options: ``--seeds 10`` (seeds per strategy; 0 = the grid only),
``--budget-fraction 0.1`` (each run's ``Loop(max_cost=...)`` as a fraction of the grid's cost),
``--variants`` (also other TPE and successive-halving settings), ``--quick`` (a small space and
workload and 3 seeds, a few seconds: a smoke test, not the numbers to quote).

The problem (:func:`make_problem`): every valid combination of five scheduler knobs
(``max_num_batched_tokens``, ``long_prefill_token_threshold``, ``max_num_seqs``,
``num_kv_blocks``, ``enable_chunked_prefill``; ``SearchSpace(skip_invalid=True)`` drops the
combinations vLLM refuses), 500 chat requests arriving as a Poisson process at 20 req/s
(lognormal prompts, uniform outputs), simulated with a seconds ``CostModel``; SLOs
``ttft.p99 <= 5s`` and ``max_step_tokens <= 640``; objective: maximise ``output_throughput``,
ties to the lower ``ttft.p99``. The offered load is above every configuration's capacity, so
throughput separates them; the largest budgets give the most throughput but break the step SLO.

What it measures:

1. the grid (``GridSearch``, every configuration once): its best feasible value is the
   optimum, the sum of its trials' ``Trial.cost`` (engine steps) is the grid's cost; also how
   many configurations are feasible and within 99 % of the optimum, and the unconstrained
   throughput optimum with the SLO it breaks;
2. for ``RandomSearch``, ``TPESearch`` and ``SuccessiveHalving``, one ``Loop`` per seed with
   ``max_cost = budget_fraction x grid cost``: the evaluations and the cost (as a % of the
   grid's) until the first full-fidelity feasible trial within 99 % of the optimum ("-" when
   not reached), and the gap to the optimum at the end of the budget; per seed, then the
   success rate and the median and worst over seeds;
3. the trajectories: each strategy's median gap after 1, 2, 5 and 10 % of the grid's cost;
4. for successive halving, how well its low-fidelity trials (``workload.head(f)``) predict
   feasibility and throughput on the full workload.

Measurements are cached per (configuration, number of requests), so the strategies reuse the
grid's simulations and each other's low-fidelity ones; cost is still counted as if every trial
had been evaluated (the Loop's ``Trial.cost``), so the cache changes wall time only. The Loop
checks the budget before each trial, so a run ends up to one trial over it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner import (
    InfeasibleError,
    LogNormal,
    Loop,
    Objective,
    SearchSpace,
    ServingConfig,
    Trial,
    Uniform,
    Workload,
)
from tuner.backends import Backend, CostModel, SimulatorBackend
from tuner.cli._table import format_table
from tuner.search import GridSearch, RandomSearch, Search, SuccessiveHalving, TPESearch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this
from _caching import CachingBackend

#: A run succeeds once a trial's value is within this fraction of the grid's optimum.
TARGET = 0.99
#: Shares of the grid's cost at which the trajectory table reads each run's best so far.
CHECKPOINTS = (0.01, 0.02, 0.05, 0.1)


@dataclass(frozen=True)
class Problem:
    """One search problem: what to search, on what, under which SLOs, for which objective."""

    space: SearchSpace
    workload: Workload
    cost_model: CostModel
    slos: tuple[str, ...]
    objective: Objective


def make_problem(quick: bool = False) -> Problem:
    """The benchmark's problem (``quick``: a smaller space and workload of the same shape)."""
    if quick:
        dims: dict[str, list[object]] = {
            "max_num_batched_tokens": [256, 512, 640, 768, 2048],
            "long_prefill_token_threshold": [0, 128],
            "max_num_seqs": [64, 128, 256],
            "num_kv_blocks": [2500, 6000, 14000],
            "enable_chunked_prefill": [True, False],
        }
        n = 200
    else:
        dims = {
            "max_num_batched_tokens": [256, 320, 384, 448, 512, 640, 768, 1024, 1536, 2048],
            "long_prefill_token_threshold": [0, 64, 128, 256],
            "max_num_seqs": [32, 64, 96, 128, 192, 256],
            "num_kv_blocks": [2500, 4000, 6000, 9000, 14000],
            "enable_chunked_prefill": [True, False],
        }
        n = 500
    # Uniform outputs keep the drain after the last arrival short, so throughput measures
    # capacity rather than how fast the last long answer finishes.
    workload = Workload.poisson(
        rate=20,
        n=n,
        prompt_len=LogNormal(mean=640, sigma=0.7, max_len=1700),
        output_len=Uniform(192, 0.5),
        seed=0,
    )
    return Problem(
        space=SearchSpace(dims, base=ServingConfig(max_model_len=2048), skip_invalid=True),
        workload=workload,
        cost_model=CostModel(
            fixed=0.006, per_prefill_token=3e-5, per_decode_token=1.5e-4, time_unit="s"
        ),
        slos=("ttft.p99 <= 5s", "max_step_tokens <= 640"),
        objective=Objective.maximize("output_throughput", tie_break="ttft.p99"),
    )


@dataclass(frozen=True)
class Run:
    """What one search did with one seed."""

    seed: int
    trials: tuple[Trial, ...]
    stop_reason: str
    wall: float
    notes: str = ""

    @property
    def cost(self) -> float:
        return math.fsum(t.cost for t in self.trials)


def run_loop(
    problem: Problem,
    backend: Backend,
    search: Search,
    max_cost: float | None,
    seed: int = 0,
    on_trial: Callable[[Trial], None] | None = None,
) -> Run:
    """One Loop run; an infeasible outcome is a result here (its trials), not an error."""
    loop = Loop(
        backend,
        search,
        objective=problem.objective,
        slos=problem.slos,
        max_cost=max_cost,
        on_trial=on_trial,
    )
    t0 = time.perf_counter()
    try:
        result = loop.run(problem.space, problem.workload)
    except InfeasibleError as e:
        trials, stop = tuple(e.trials), "no feasible full-fidelity trial"
    else:
        trials, stop = result.trials, result.stop_reason
    return Run(seed, trials, stop, time.perf_counter() - t0, search_notes(search))


def search_notes(search: Search) -> str:
    """What the search did besides proposing: TPE's wasted samples, the rungs' sizes."""
    if isinstance(search, TPESearch):
        trials = search.study.trials
        invalid = sum(1 for t in trials if "tuner_invalid" in t.user_attrs)
        repeats = sum(1 for t in trials if "tuner_cached" in t.user_attrs)
        return f"{len(trials)} samples: {invalid} invalid, {repeats} repeats"
    if isinstance(search, SuccessiveHalving):
        sizes = "+".join(str(len(r)) for r in search.rung_trials)
        return f"rungs {sizes} at {', '.join(f'{f:.3g}' for f in search.fidelities)}"
    return ""


def value(objective: Objective, t: Trial) -> float:
    """The trial's objective value."""
    return t.values[objective.metric]


def counts(objective: Objective, t: Trial) -> bool:
    """Whether the trial could be the answer: feasible on the full workload (``best_trial``)."""
    return t.feasible and t.fidelity == 1.0 and not math.isnan(value(objective, t))


def gap(objective: Objective, v: float | None, optimum: float) -> float:
    """Relative distance to the optimum (0 = optimal; inf = no feasible answer yet)."""
    if v is None:
        return math.inf
    if objective.direction == "maximize":
        return (optimum - v) / abs(optimum)
    return (v - optimum) / abs(optimum)


def reached(g: float) -> bool:
    """Whether a gap is within the target."""
    return g <= (1 - TARGET) + 1e-12


@dataclass(frozen=True)
class Outcome:
    """A run measured against the grid's optimum."""

    evals_to_target: int | None
    cost_to_target: float | None
    final_gap: float
    gaps_at: tuple[float, ...]
    feasible: int


def measure(run: Run, objective: Objective, optimum: float, grid_cost: float) -> Outcome:
    """Evaluations and cost until the first answer within ``TARGET`` of the optimum, the final
    gap and the gap at each checkpoint (best full-fidelity feasible value so far)."""
    best: float | None = None
    cost = 0.0
    evals_to: int | None = None
    cost_to: float | None = None
    trajectory: list[tuple[float, float]] = []  # (cumulative cost, gap after that trial)
    for i, t in enumerate(run.trials, start=1):
        cost += t.cost
        if counts(objective, t) and (best is None or gap(objective, value(objective, t), best) < 0):
            best = value(objective, t)
        g = gap(objective, best, optimum)
        trajectory.append((cost, g))
        if evals_to is None and reached(g):
            evals_to, cost_to = i, cost
    gaps_at = []
    for share in CHECKPOINTS:
        seen = [g for c, g in trajectory if c <= share * grid_cost]
        gaps_at.append(seen[-1] if seen else math.inf)
    feasible = sum(1 for t in run.trials if counts(objective, t))
    return Outcome(evals_to, cost_to, gap(objective, best, optimum), tuple(gaps_at), feasible)


def pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage; ``-`` for None or inf."""
    if x is None or math.isinf(x):
        return "-"
    return f"{100 * x:.{digits}f}%"


def median_worst(xs: Sequence[float | None]) -> tuple[float, float]:
    """Median and worst (largest) over seeds; ``None`` (not reached) counts as inf, so the
    median is inf when half the seeds or more did not get there."""
    vals = sorted(math.inf if x is None else x for x in xs)
    if not vals:
        return math.inf, math.inf
    return statistics.median(vals), vals[-1]


def num(x: float) -> object:
    """A count for a table: an int when whole, ``-`` for inf."""
    if math.isinf(x):
        return "-"
    return int(x) if float(x).is_integer() else round(x, 1)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (ties ranked by position; NaN for fewer than 3 points)."""
    if len(a) < 3:
        return math.nan
    ra = np.argsort(np.argsort(np.asarray(a)))
    rb = np.argsort(np.argsort(np.asarray(b)))
    return float(np.corrcoef(ra, rb)[0, 1])


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Strategy:
    """A named search with its settings, built afresh for each seed."""

    name: str
    settings: str
    make: Callable[[int], Search]


def halving(
    budget_evals: float,
    min_fidelity: float,
    eta: int,
    per_budget: float,
    margin: float = 0.0,
    brackets: int | None = 1,
) -> Strategy:
    """Successive-halving brackets of ``per_budget x budget_evals`` candidates each (one
    bracket, or as many as the budget allows with ``brackets=None``)."""
    k = max(eta * eta, round(per_budget * budget_evals))
    label = f"1/{round(1 / min_fidelity)}"
    name = f"halving {label} eta={eta}" + (f" margin={margin:g}" if margin else "")
    settings = f"n_configs={k}, min_fidelity={label}, eta={eta}, inner RandomSearch" + (
        f", promote_margin={margin:g}" if margin else ""
    )
    if brackets != 1:
        name += " brackets"
        settings += f", brackets={brackets} (repeat until the budget is spent)"
    return Strategy(
        name,
        settings,
        lambda s: SuccessiveHalving(
            n_configs=k,
            min_fidelity=min_fidelity,
            eta=eta,
            seed=s,
            promote_margin=margin,
            brackets=brackets,
        ),
    )


def strategies(problem: Problem, budget_evals: float, variants: bool) -> list[Strategy]:
    """The strategies compared; ``budget_evals`` is the budget in mean full evaluations.

    Successive halving runs one bracket sized to the budget. A trial on the first third of
    the workload costs about half a full one here, not a third (engine steps do not shrink
    in proportion to the requests: the decode-bound tail of every run stays), so ``k``
    candidates at 1/3 plus ``k / 3`` at 1 cost about ``0.83 k`` mean full evaluations;
    ``k = budget_evals`` fills about three quarters of the budget, so the Loop's budget does
    not cut the last rung. Fidelity 1/3 rather than 1/9: a ninth of the workload (56
    requests) barely queues, its throughput ranks configurations poorly and its trials still
    cost about 30 % of a full one (``--variants`` and the low-fidelity table show both).
    ``RandomSearch(seed=s)`` and the bracket's inner ``RandomSearch(seed=s)`` draw the same
    permutation: the bracket's candidates are random search's first ``k`` proposals.
    """
    n = len(problem.space)
    out = [
        Strategy("random", "RandomSearch, no repeats", lambda s: RandomSearch(seed=s)),
        Strategy(
            "tpe",
            "TPESearch, n_startup_trials=10 (Optuna's default)",
            lambda s: TPESearch(seed=s, n_trials=n, n_startup_trials=10),
        ),
        halving(budget_evals, 1 / 3, 3, 1.0),
        halving(budget_evals, 1 / 3, 3, 0.4, brackets=None),
        Strategy(
            "halving over tpe",
            f"SuccessiveHalving(inner=TPESearch), n_configs={round(0.4 * budget_evals)}, "
            "min_fidelity=1/3, eta=3, brackets until the budget is spent",
            lambda s: SuccessiveHalving(
                inner=TPESearch(seed=s, n_trials=n, n_startup_trials=10),
                n_configs=round(0.4 * budget_evals),
                min_fidelity=1 / 3,
                eta=3,
                seed=s,
                brackets=None,
            ),
        ),
    ]
    if variants:
        out += [
            Strategy(
                "tpe startup=5",
                "TPESearch, n_startup_trials=5",
                lambda s: TPESearch(seed=s, n_trials=n, n_startup_trials=5),
            ),
            Strategy(
                "tpe startup=30",
                "TPESearch, n_startup_trials=30",
                lambda s: TPESearch(seed=s, n_trials=n, n_startup_trials=30),
            ),
            halving(budget_evals, 1 / 9, 3, 2.0),
            halving(budget_evals, 1 / 4, 2, 0.8),
            halving(budget_evals, 1 / 3, 3, 1.0, margin=0.5),
        ]
    return out


def report_grid(problem: Problem, grid: Run, optimum_trial: Trial, n_within: int) -> None:
    """Print what the exhaustive grid found."""
    space, objective, w = problem.space, problem.objective, problem.workload
    n = len(space)
    feasible = sum(1 for t in grid.trials if counts(objective, t))
    measured = [t for t in grid.trials if t.ok]
    unconstrained = min(measured, key=lambda t: (objective.score(t.values), t.number))
    print(
        f"workload: {len(w)} requests, Poisson at {len(w) / float(w.arrival.max()):g} req/s, "
        f"prompts {w.total_prompt_tokens / len(w):.0f} and outputs "
        f"{w.total_output_tokens / len(w):.0f} tokens on average"
    )
    print(f"cost model: {problem.cost_model!r}")
    print(f"SLOs: {', '.join(problem.slos)}; objective: {objective.text}")
    print(f"space: {space!r}")
    print(
        f"grid: {n} valid configurations ({len(space.excluded)} combinations vLLM refuses "
        f"skipped), {feasible} feasible ({100 * feasible / n:.1f}%), {n_within} within "
        f"{100 * TARGET:g}% of the optimum ({100 * n_within / n:.1f}%)"
    )
    met = ", ".join(
        f"{slo} met by {sum(1 for t in measured if t.slo_results[i].ok)}"
        for i, slo in enumerate(problem.slos)
    )
    ties = sum(1 for t in grid.trials if counts(objective, t) and t.values == optimum_trial.values)
    print(f"SLOs alone: {met}; {ties} configurations tie at the optimum (same measurement)")
    print(
        f"grid cost: {grid.cost:.0f} engine steps (mean {grid.cost / n:.0f} per "
        f"configuration); wall {grid.wall:.1f} s"
    )
    where = ", ".join(
        f"{k}={getattr(optimum_trial.config, k)} "
        f"({list(v).index(getattr(optimum_trial.config, k)) + 1}/{len(v)})"
        for k, v in space.dimensions.items()
    )
    print(
        f"optimum: {objective.metric} = {value(objective, optimum_trial):.1f} (ttft.p99 "
        f"{optimum_trial.values['ttft.p99']:.2f} s, max_step_tokens "
        f"{optimum_trial.values['max_step_tokens']:.0f}) at {where} (position in its list)"
    )
    broken = ", ".join(r.slo for r in unconstrained.violations) or "none"
    print(
        f"unconstrained optimum: {value(objective, unconstrained):.1f} at "
        f"{unconstrained.config.describe(space.base)}; breaks {broken}"
    )


def report_low_fidelity(runs: Sequence[Run], grid: Run, objective: Objective) -> None:
    """Print how low-fidelity trials compare with the same configurations at full fidelity."""
    full = {t.config: t for t in grid.trials}
    rows: list[list[object]] = []
    for f in sorted({t.fidelity for r in runs for t in r.trials if t.fidelity < 1}):
        low = {t.config: t for r in runs for t in r.trials if t.fidelity == f}
        pairs = [(lo, full[c]) for c, lo in low.items() if lo.ok and full[c].ok]
        rho = spearman(
            [value(objective, lo) for lo, _ in pairs], [value(objective, hi) for _, hi in pairs]
        )
        costs = [lo.cost / hi.cost for lo, hi in pairs if hi.cost > 0]
        rows.append(
            [
                f"{f:.3g}",
                len(pairs),
                sum(1 for lo, _ in pairs if lo.feasible),
                sum(1 for _, hi in pairs if hi.feasible),
                sum(1 for lo, hi in pairs if lo.feasible and not hi.feasible),
                sum(1 for lo, hi in pairs if not lo.feasible and hi.feasible),
                round(rho, 2),
                f"{100 * statistics.mean(costs):.0f}%" if costs else "-",
            ]
        )
    print(
        "\nsuccessive halving: its low-fidelity trials against the same configurations on the "
        "full workload (every seed and setting):"
    )
    headers = [
        "fidelity",
        "configs",
        "feasible at f",
        "feasible at 1",
        "feasible only at f",
        "feasible only at 1",
        "rank corr. of throughput",
        "cost vs full",
    ]
    print(format_table(headers, rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per strategy (default 10, 3 with --quick; 0 = the grid only)",
    )
    ap.add_argument(
        "--budget-fraction",
        type=float,
        default=0.1,
        help="each run's max_cost as a fraction of the grid's cost (default 0.1)",
    )
    ap.add_argument(
        "--variants", action="store_true", help="also other TPE and successive-halving settings"
    )
    ap.add_argument("--quick", action="store_true", help="a small space and workload (smoke)")
    args = ap.parse_args()
    seeds = args.seeds if args.seeds is not None else (3 if args.quick else 10)
    if seeds < 0 or not 0 < args.budget_fraction <= 1:
        ap.error("--seeds must be >= 0 and --budget-fraction in (0, 1]")
    t_start = time.perf_counter()
    problem = make_problem(args.quick)
    space, objective = problem.space, problem.objective
    backend = CachingBackend(SimulatorBackend(problem.cost_model))

    # 1. The grid: the optimum and the cost every strategy is measured against.
    n = len(space)
    done = 0

    def grid_progress(_: Trial) -> None:
        nonlocal done
        done += 1
        if done % 100 == 0 or done == n:
            progress(f"grid: {done}/{n} configurations ({time.perf_counter() - t_start:.0f} s)")

    grid = run_loop(problem, backend, GridSearch(), None, on_trial=grid_progress)
    feasible = [t for t in grid.trials if counts(objective, t)]
    if not feasible:
        raise SystemExit("no feasible configuration in the grid: the benchmark needs one")
    best = min(feasible, key=lambda t: (objective.score(t.values), objective.tie_score(t.values)))
    optimum = value(objective, best)
    n_within = sum(1 for t in feasible if reached(gap(objective, value(objective, t), optimum)))
    report_grid(problem, grid, best, n_within)
    if seeds == 0:
        print(f"\nwall time: {time.perf_counter() - t_start:.0f} s")
        return

    # 2. The strategies, each seed under the same budget.
    grid_cost = grid.cost
    budget = args.budget_fraction * grid_cost
    budget_evals = budget / (grid_cost / n)
    print(
        f"\nbudget per run: max_cost = {budget:.0f} engine steps ({100 * args.budget_fraction:g}% "
        f"of the grid's cost, {budget_evals:.0f} mean full evaluations); success = a "
        f"full-fidelity feasible trial within {100 * TARGET:g}% of the optimum"
    )
    summary: list[list[object]] = []
    trajectories: list[list[object]] = []
    halving_runs: list[Run] = []
    for strat in strategies(problem, budget_evals, args.variants):
        runs: list[Run] = []
        outs: list[Outcome] = []
        for seed in range(seeds):
            run = run_loop(problem, backend, strat.make(seed), budget, seed)
            out = measure(run, objective, optimum, grid_cost)
            runs.append(run)
            outs.append(out)
            to = None if out.cost_to_target is None else out.cost_to_target / grid_cost
            progress(
                f"{strat.name} seed {seed}: {len(run.trials)} trials, {pct(to)} of the grid's "
                f"cost to target, final gap {pct(out.final_gap, 2)} "
                f"({time.perf_counter() - t_start:.0f} s)"
            )
        if strat.name.startswith("halving"):
            halving_runs += runs
        rows: list[list[object]] = []
        for run, out in zip(runs, outs, strict=True):
            rows.append(
                [
                    run.seed,
                    len(run.trials),
                    sum(1 for t in run.trials if t.fidelity == 1.0),
                    out.feasible,
                    pct(run.cost / grid_cost),
                    "-" if out.evals_to_target is None else out.evals_to_target,
                    pct(None if out.cost_to_target is None else out.cost_to_target / grid_cost),
                    pct(out.final_gap, 2),
                    run.stop_reason.split(":")[0],
                    run.notes,
                ]
            )
        print(f"\n{strat.name}: {strat.settings}; {seeds} seeds")
        headers = [
            "seed",
            "trials",
            "full fidelity",
            "feasible",
            "cost",
            "evals to 99%",
            "cost to 99%",
            "final gap",
            "stopped",
            "notes",
        ]
        print(format_table(headers, rows))
        ev_med, ev_worst = median_worst([o.evals_to_target for o in outs])
        c_med, c_worst = median_worst(
            [None if o.cost_to_target is None else o.cost_to_target / grid_cost for o in outs]
        )
        g_med, g_worst = median_worst([o.final_gap for o in outs])
        ok = sum(1 for o in outs if o.evals_to_target is not None)
        summary.append(
            [
                strat.name,
                f"{ok}/{seeds}",
                num(ev_med),
                num(ev_worst),
                pct(c_med),
                pct(c_worst),
                pct(g_med, 2),
                pct(g_worst, 2),
                round(sum(r.wall for r in runs), 1),
            ]
        )
        gaps = [
            pct(median_worst([o.gaps_at[i] for o in outs])[0], 2) for i in range(len(CHECKPOINTS))
        ]
        trajectories.append([strat.name, *gaps])

    # 3. Side by side.
    print(f"\nsummary over {seeds} seeds (median and worst; '-' = not reached):")
    headers = [
        "strategy",
        "success",
        "evals to 99%",
        "worst",
        "cost to 99%",
        "worst",
        "final gap",
        "worst",
        "wall s",
    ]
    print(format_table(headers, summary))
    print(
        "\nmedian gap to the optimum after a share of the grid's cost ('-' = no feasible "
        "full-fidelity trial yet in half the seeds or more):"
    )
    print(format_table(["strategy", *(f"{100 * c:g}%" for c in CHECKPOINTS)], trajectories))

    # 4. Successive halving: do low-fidelity trials predict the full workload?
    if halving_runs:
        report_low_fidelity(halving_runs, grid, objective)
    print(
        f"\nsimulations run: {backend.misses} (cache hits: {backend.hits}); "
        f"wall time: {time.perf_counter() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
