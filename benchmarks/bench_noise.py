"""Decisions that survive noise: how often each repeat policy picks the right configuration on a
noisy backend, and how many runs it spends.

Run: ``.venv/bin/python benchmarks/bench_noise.py`` (100 seeds; a few minutes on 2 busy cores;
progress on stderr). Options: ``--seeds N``, ``--seed-offset K`` (seeds K..K+N-1: the
README's tables use seeds never looked at while the stopping rule was developed on 0..99),
``--policy NAME`` (only these policies, repeatable; single-shot always runs, as the
baseline), ``--sigma 0.15`` (the run-level noise),
``--jitter 0.05`` (per-request noise), ``--quick`` (a small space, 4 seeds, seconds: a smoke
test, not the numbers to quote), ``--live PART`` (the live CPU-vLLM part, in
``bench_noise_live.py``: see :func:`live_part`).

The simulated part. :class:`NoisyBackend` wraps the noiseless simulator (``deterministic =
False``): each run multiplies every request's latencies (TTFT, end-to-end, hence TPOT) by a
run-level factor ``exp(N(0, sigma))`` (about 15 %) times a per-request one ``exp(N(0,
jitter))``, and ITL samples by the run-level factor; the duration (so the throughput) follows
from the perturbed finish times. Seeded: one seed gives one sequence of runs.

The problem (:func:`make_problem`): 300 chat requests arriving faster than any configuration
serves them (Poisson, 40 req/s), a seconds CostModel; ``max_num_batched_tokens`` x
``max_num_seqs``; maximise ``output_throughput`` (ties within 3 % to the lower ``ttft.p99``) under
``tpot.p90 <= 29ms`` and ``ttft.p99 <= 20s`` (``--space dense``: 26 ms and 14 s). More running
sequences give more throughput and a slower decode, so the TPOT SLO binds. The truth comes
from the noiseless simulator (a deterministic backend: each configuration measured once): its
best feasible configuration and its tie band (``tied_with_best``: within the tie tolerance).
A seed's decision is right when the Loop's pick on the noisy backend lies inside that band;
wrong when it violates an SLO in truth, or is feasible but outside the band; refused when
nothing was confidently feasible.

Policies: single (``Repeats(max=1)``), fixed 3 (``Repeats(min=3, max=3)``), adaptive
(``Repeats(min=1, max=5)``: repeat while the decision is open and ``max`` runs could still
settle it), and for comparison the
adaptive policy with the median rule (``rule="median"``) and at 90 % confidence. Runs: every
run the backend made, summed over the grid (the single-shot policy makes one per
configuration).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from tuner import (
    LogNormal,
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
from tuner.backends import Backend, CostModel, SimulatorBackend
from tuner.cli._table import format_table
from tuner.objectives import tied_with_best
from tuner.search import GridSearch


@dataclass(frozen=True)
class Problem:
    """What to search, on what, under which SLOs, for which objective."""

    space: SearchSpace
    workload: Workload
    cost_model: CostModel
    slos: tuple[str, ...]
    objective: Objective


#: The spaces: ``coarse`` -- powers of two, the grid people usually try; ``dense`` -- finer
#: steps of ``max_num_seqs``, so that several configurations sit within noise of a limit.
SPACES = ("coarse", "dense")


def make_problem(space: str = "coarse", quick: bool = False) -> Problem:
    """The benchmark's problem (``quick``: fewer configurations and requests, same shape)."""
    if quick:
        seqs, budgets, n = [32, 64, 128], [512, 2048], 120
    elif space == "dense":
        seqs, budgets, n = [16, 24, 32, 48, 64, 96, 128], [256, 512, 1024, 2048], 300
    else:
        seqs, budgets, n = [16, 32, 64, 128, 256], [256, 512, 1024, 2048], 300
    workload = Workload.poisson(
        rate=40,
        n=n,
        prompt_len=LogNormal(mean=640, sigma=0.7, max_len=1700),
        output_len=Uniform(192, 0.5),
        seed=0,
    )
    if space == "dense":
        slos = ("tpot.p90 <= 26ms", "ttft.p99 <= 14s")
    else:  # the quick problem's 120 requests decode faster: a tighter TPOT limit
        slos = ("tpot.p90 <= 25ms" if quick else "tpot.p90 <= 29ms", "ttft.p99 <= 20s")
    return Problem(
        space=SearchSpace(
            {"max_num_batched_tokens": budgets, "max_num_seqs": seqs},
            base=ServingConfig(max_model_len=2048),
        ),
        workload=workload,
        cost_model=CostModel(
            fixed=0.006, per_prefill_token=3e-5, per_decode_token=1.5e-4, time_unit="s"
        ),
        slos=slos,
        objective=Objective.maximize("output_throughput", tie_break="ttft.p99", tie_tolerance=0.03),
    )


class NoisyBackend(Backend):
    """A deterministic backend's measurements with seeded run-to-run noise.

    Args:
        inner: The noiseless backend (its measurements are cached per configuration and
            workload size: valid for one workload, as here).
        sigma: Log-sd of the run-level factor on every latency.
        jitter: Log-sd of the per-request factor.
        seed: Seeds the sequence of runs.
        cache: A cache shared between instances (the noiseless measurements).
    """

    name = "noisy"
    deterministic = False

    def __init__(
        self,
        inner: Backend,
        sigma: float = 0.15,
        jitter: float = 0.05,
        seed: int = 0,
        cache: dict[tuple[ServingConfig, int], Measurement] | None = None,
    ) -> None:
        self.inner = inner
        self.sigma = sigma
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)
        self.cache = cache if cache is not None else {}
        self.runs = 0

    def describe(self) -> str:
        return f"noisy({self.inner.describe()}, sigma {self.sigma}, jitter {self.jitter})"

    def evaluate(self, config: ServingConfig, workload: Workload) -> Measurement:
        key = (config, len(workload))
        if key not in self.cache:
            self.cache[key] = self.inner.evaluate(config, workload)
        m = self.cache[key]
        self.runs += 1
        f = float(np.exp(self.rng.normal(0.0, self.sigma)))
        g = f * np.exp(self.rng.normal(0.0, self.jitter, size=m.num_requests))
        ttft = m.ttft * g
        e2e = m.e2e * g
        finish = m.arrival + e2e
        duration = float(np.nanmax(finish) - np.min(m.arrival))
        return m.model_copy(
            update={
                "source": f"noisy {m.source}",
                "ttft": _frozen(ttft),
                "e2e": _frozen(e2e),
                "itl_values": _frozen(m.itl_values * f),
                "duration": duration,
                "step_start": None,
                "step_end": None,
            }
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def truth(problem: Problem) -> tuple[list[Trial], set[ServingConfig], Trial]:
    """The noiseless trials, the true best's tie band and the true best."""
    loop = Loop(SimulatorBackend(problem.cost_model), GridSearch(), problem.objective, problem.slos)
    result = loop.explore(problem.space, problem.workload)
    if result.best is None:
        raise SystemExit("the benchmark's problem has no feasible configuration")
    band = {t.config for t in tied_with_best(result.trials, problem.objective)}
    return list(result.trials), band, result.best


POLICIES: dict[str, Repeats] = {
    "single": Repeats(max=1),
    "fixed 3": Repeats(min=3, max=3),
    "adaptive": Repeats(min=1, max=5),
    "adaptive, median rule": Repeats(min=1, max=5, rule="median"),
    "adaptive, 90% confidence": Repeats(min=1, max=5, confidence=0.9),
}


@dataclass
class Outcome:
    right: int = 0
    violating: int = 0
    outside: int = 0
    refused: int = 0
    runs: list[int] | None = None


def run_seeds(
    problem: Problem,
    seeds: int,
    sigma: float,
    jitter: float,
    band: set[ServingConfig],
    feasible: set[ServingConfig],
    offset: int = 0,
    policies: dict[str, Repeats] | None = None,
) -> dict[str, Outcome]:
    """Each policy at each seed (``offset`` .. ``offset + seeds - 1``): what it picked and how
    many runs it spent."""
    policies = POLICIES if policies is None else policies
    cache: dict[tuple[ServingConfig, int], Measurement] = {}
    out = {name: Outcome(runs=[]) for name in policies}
    t0 = time.monotonic()
    for i, seed in enumerate(range(offset, offset + seeds)):
        for name, repeats in policies.items():
            backend = NoisyBackend(
                SimulatorBackend(problem.cost_model), sigma, jitter, seed, cache=cache
            )
            loop = Loop(backend, GridSearch(), problem.objective, problem.slos, repeats=repeats)
            best = loop.explore(problem.space, problem.workload).best
            o = out[name]
            assert o.runs is not None
            o.runs.append(backend.runs)
            if best is None:
                o.refused += 1
            elif best.config in band:
                o.right += 1
            elif best.config not in feasible:
                o.violating += 1
            else:
                o.outside += 1
        if i % 10 == 9 or i == seeds - 1:
            print(f"  {i + 1}/{seeds} seeds, {time.monotonic() - t0:.0f}s", file=sys.stderr)
    return out


def live_part(part: str, seeds: int | None, extra: list[str]) -> int:
    """The live part (CPU vLLM serving the tiny Llama): ``benchmarks/bench_noise_live.py``,
    one ``part`` per command (``truth``, ``policies``, ``abort``, ``pinning``); ``seeds`` is the
    number of simulated tuning sessions of ``policies``."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("bench_noise_live.py")
    spec = importlib.util.spec_from_file_location("bench_noise_live", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = [part, *extra, *(["--sessions", str(seeds)] if seeds is not None else [])]
    code: int = module.main(args)
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--seeds", type=int, default=None, help="seeds (default 100, 4 with --quick)")
    ap.add_argument(
        "--seed-offset", type=int, default=0, help="first seed (0): seeds offset..offset+N-1"
    )
    ap.add_argument(
        "--policy",
        action="append",
        choices=list(POLICIES),
        help="run only this policy (repeatable; default all; 'single' is always run)",
    )
    ap.add_argument("--sigma", type=float, default=0.15, help="run-level log-sd (0.15)")
    ap.add_argument("--jitter", type=float, default=0.05, help="per-request log-sd (0.05)")
    ap.add_argument("--space", choices=SPACES, default="coarse", help="the space (coarse)")
    ap.add_argument("--quick", action="store_true", help="a small problem (smoke test)")
    ap.add_argument(
        "--live",
        choices=("truth", "policies", "abort", "abort-long", "abort-replay", "pinning"),
        help="a part of the live CPU-vLLM benchmark (bench_noise_live.py; needs vLLM)",
    )
    ap.add_argument("--out", default=None, help="--live: where its JSON goes")
    ap.add_argument("--runs", type=int, default=None, help="--live: live runs per config (5)")
    args = ap.parse_args(argv)
    if args.live:
        extra = [*(["--out", args.out] if args.out else []), *(["--quick"] if args.quick else [])]
        extra += ["--runs", str(args.runs)] if args.runs is not None else []
        return live_part(args.live, args.seeds, extra)
    seeds = args.seeds if args.seeds is not None else (4 if args.quick else 100)
    problem = make_problem(args.space, args.quick)
    trials, band, best = truth(problem)
    feasible = {t.config for t in trials if t.feasible}
    obj = problem.objective
    print(
        f"{len(trials)} configurations, {len(feasible)} feasible in truth; true best "
        f"{best.config.describe(problem.space.base)} ({obj.metric} "
        f"{best.values[obj.metric]:.4g}); tie band ({obj.tie_tolerance:.0%}): {len(band)} "
        f"configurations; noise: run-level {args.sigma:.0%}, per-request {args.jitter:.0%}"
    )
    rows = []
    for t in trials:
        rows.append(
            [
                t.config.describe(problem.space.base),
                f"{t.values[obj.metric]:.4g}",
                *(f"{r.value / r.limit:.2f}" for r in t.slo_results),
                "band" if t.config in band else ("yes" if t.feasible else "no"),
            ]
        )
    print(
        format_table(
            ["config", obj.metric, *(f"{s} (x limit)" for s in problem.slos), "truth"], rows
        )
    )
    print()
    names = ["single", *(p for p in args.policy or POLICIES if p != "single")]
    policies = {name: POLICIES[name] for name in names}
    out = run_seeds(
        problem, seeds, args.sigma, args.jitter, band, feasible, args.seed_offset, policies
    )
    single = statistics.mean(out["single"].runs or [1])
    table = []
    for name, o in out.items():
        runs = statistics.mean(o.runs or [0])
        table.append(
            [
                name,
                f"{100 * o.right / seeds:.0f}%",
                f"{100 * o.violating / seeds:.0f}%",
                f"{100 * o.outside / seeds:.0f}%",
                f"{100 * o.refused / seeds:.0f}%",
                f"{runs:.1f}",
                f"{runs / single:.2f}x",
            ]
        )
    print(
        format_table(
            ["policy", "right", "violating pick", "outside band", "refused", "runs", "vs single"],
            table,
        )
    )
    print(f"({seeds} seeds: {args.seed_offset}..{args.seed_offset + seeds - 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
