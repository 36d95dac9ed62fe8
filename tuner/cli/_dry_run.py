"""``tuner run --dry-run``: what a study would do, without running it -- the space, the
combinations vLLM refuses, the commands a live backend would start, an estimate of the cost."""

from __future__ import annotations

import time
from pathlib import Path

from tuner.backends import SimulatorBackend, VLLMServerBackend
from tuner.studies import StudySpec, build_backend, build_space, build_workload, planned_trials

#: What one live trial costs beyond its load: a server start on a warm machine (measured here:
#: 20-40 s for the tiny CPU model; a GPU model loads in about as long or longer).
SERVER_START_S = 30.0
#: Probes a capacity search spends per configuration in practice (bench_capacity: ~7).
PROBES_PER_CAPACITY_TRIAL = 7


def dry_run(spec: StudySpec, root: Path) -> int:
    """Print the plan; return 0 (2 on a study error, raised as TunerError before this)."""
    space = build_space(spec)
    workload = build_workload(spec.workload, root)
    planned = planned_trials(spec, len(space)) or len(space)
    print(f"study {spec.name!r}: {len(space)} configurations over {', '.join(space.dimensions)}")
    for changes, why in space.excluded[:10]:
        print(f"  refused by vLLM: {changes}: {why}")
    if len(space.excluded) > 10:
        print(f"  ... and {len(space.excluded) - 10} more refused combinations")
    span = float(workload.arrival.max() - workload.arrival.min())
    print(f"workload: {len(workload)} requests over {span:.4g} time units")
    print(f"search: {spec.search.kind}, about {planned} trials")
    evals = planned * (PROBES_PER_CAPACITY_TRIAL if spec.objective.metric == "capacity" else 1)
    if spec.backend is None:
        print("two-tier: a cheap search, then the shortlist on the expensive backend")
        return 0
    backend = build_backend(spec.backend, root, Path("/nonexistent-dry-run"))
    if isinstance(backend, VLLMServerBackend):
        for config in space.configs()[:3]:
            print("  would run: " + " ".join(backend.server_command(config, 0, workload)))
        est = planned * SERVER_START_S + evals * span
        print(
            f"estimated cost: {planned} server starts and {evals} loads of ~{span:.0f} s: "
            f"about {est / 60:.0f} minutes"
        )
    elif isinstance(backend, SimulatorBackend):
        t0 = time.perf_counter()
        backend.evaluate(space.configs()[0], workload)
        one = time.perf_counter() - t0
        total = evals * one
        print(f"estimated cost: up to {evals} simulations of ~{one:.2g} s: {total:.0f} s at most")
    else:
        print(f"estimated cost: {evals} evaluations on {backend.describe()}")
    return 0
