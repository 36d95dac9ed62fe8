"""``tuner run --dry-run``: what a study would do, without running it -- the space, the
combinations vLLM refuses, the commands a live backend would start, an estimate of the cost."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tuner.backends import AttachedServerBackend, Backend, SimulatorBackend, VLLMServerBackend
from tuner.core import BackendError, SearchSpace, Workload, summarize
from tuner.studies import (
    StudySpec,
    build_backend,
    build_deployment,
    build_space,
    build_workload,
    planned_trials,
)

#: What one live trial costs beyond its load: a server start on a warm machine (measured here:
#: 20-40 s for the tiny CPU model; a GPU model loads in about as long or longer).
SERVER_START_S = 30.0
#: Probes a capacity search spends per configuration in practice (bench_capacity: ~7).
PROBES_PER_CAPACITY_TRIAL = 7
#: How many of the commands a live backend would run are printed.
SHOWN_COMMANDS = 3
#: A dry run's backends never write: their work folder.
NOWHERE = Path("/nonexistent-dry-run")
#: An executable that stands for ``vllm`` where vLLM is not installed (never run).
PLACEHOLDER = sys.executable


def dry_run(spec: StudySpec, root: Path) -> int:
    """Print the plan; return 0 (2 on a study error, raised as TunerError before this)."""
    space = build_space(spec)
    workload = build_workload(spec.workload, root)
    planned = planned_trials(spec, len(space)) or len(space)
    refused = f" ({len(space.excluded)} more refused)" if space.excluded else ""
    print(
        f"study {spec.name!r}: {len(space)} configurations{refused} over "
        f"{', '.join(space.dimensions)}"
    )
    if not space.excluded:
        print("  refused by vLLM: none of the combinations")
    for changes, why in space.excluded[:10]:
        knobs = ", ".join(f"{k}={v}" for k, v in changes.items())
        print(f"  refused by vLLM: {knobs}: {why.removeprefix('ServingConfig: ')}")
    if len(space.excluded) > 10:
        print(f"  ... and {len(space.excluded) - 10} more refused combinations")
    probes = PROBES_PER_CAPACITY_TRIAL if spec.objective.metric == "capacity" else 1
    each = f" (a capacity search: ~{probes} loads each)" if probes > 1 else ""
    backends = _backends(spec, root)
    summary = summarize(workload.arrival, workload.prompt_tokens, workload.output_tokens)
    print(f"workload: {summary.text(backends[-1].time_unit)}")
    tt = spec.two_tier
    if tt is None:
        backend = backends[0]
        print(f"search: {spec.search.kind}, about {planned} trials{each}")
        for line in _plan(backend, space, workload, planned, planned * probes):
            print(line)
        return 0
    cheap, expensive = backends
    print(f"search: {spec.search.kind} on the cheap tier, about {planned} trials{each}")
    print("cheap tier:")
    for line in _plan(cheap, space, workload, planned, planned * probes):
        print("  " + line)
    short = min(2 * tt.top_k, len(space))
    print(
        f"expensive tier: the shortlist, at most {short} configurations (the best {tt.top_k} "
        f"and up to {tt.top_k} near misses within {100 * tt.margin:g}% of an SLO):"
    )
    for line in _plan(expensive, space, workload, short, short * probes):
        print("  " + line)
    return 0


def _backends(spec: StudySpec, root: Path) -> list[Backend]:
    """The study's backend, or its cheap and expensive tiers, built without side effects (a
    tiny model is not built) and without vLLM installed here (the plan names ``vllm``)."""
    tt = spec.two_tier
    specs = [spec.backend] if spec.backend is not None else [tt.cheap, tt.expensive] if tt else []
    out: list[Backend] = []
    deployment = build_deployment(spec.target, root)
    for b in specs:
        live = b.live
        if live is None or live.attach_url is not None:
            out.append(build_backend(b, root, Path("/nonexistent-dry-run"), deployment))
            continue
        model = live.model or ""
        if live.tiny_model is not None:
            tiny = Path(live.tiny_model).expanduser()
            model = os.path.normpath(tiny if tiny.is_absolute() else root / tiny)
        settings = live.server_settings()
        try:
            server = VLLMServerBackend(model, settings, workdir=NOWHERE)
        except BackendError:
            if settings.vllm_executable is not None:
                raise  # the study names a vllm that is not there: say so before anything runs
            print("note: vLLM is not installed here; the commands below name it 'vllm'")
            server = VLLMServerBackend(
                model, settings, workdir=NOWHERE, vllm_executable=PLACEHOLDER
            )
            server.vllm_executable = "vllm"
        out.append(server)
    return out


def _plan(
    backend: Backend, space: SearchSpace, workload: Workload, trials: int, runs: int
) -> list[str]:
    """What running ``trials`` configurations (``runs`` loads of the workload) on ``backend``
    would do and cost."""
    span = float(workload.arrival.max() - workload.arrival.min())
    if isinstance(backend, VLLMServerBackend):
        configs = space.configs()
        out = ["would run: one vllm serve per configuration it measures, e.g."]
        out += [
            "  " + " ".join(_port(backend.server_command(c, 0, workload)))
            for c in configs[:SHOWN_COMMANDS]
        ]
        if len(configs) > SHOWN_COMMANDS:
            out.append(f"  ({SHOWN_COMMANDS} of the {len(configs)} configurations in the space)")
        est = trials * SERVER_START_S + runs * span
        out.append(
            f"estimated cost: {trials} server starts (~{SERVER_START_S:.0f} s each) and {runs} "
            f"loads of ~{span:.0f} s: about {est / 60:.0f} minutes"
        )
        return out
    if isinstance(backend, AttachedServerBackend):
        return [
            f"would run: the workload against the running server at {backend.url} "
            "(no server is started; each configuration must be set on it by hand)",
            f"estimated cost: {runs} loads of ~{span:.0f} s: about {runs * span / 60:.0f} minutes",
        ]
    if isinstance(backend, SimulatorBackend):
        t0 = time.perf_counter()
        backend.evaluate(space.configs()[0], workload)
        one = time.perf_counter() - t0
        total = f"{runs * one:.2g} s" if runs * one < 10 else f"{runs * one:.0f} s"
        return [
            f"would run: simulations of vLLM {backend.vllm_version}'s scheduler in this process "
            "(no server, no GPU)",
            f"estimated cost: up to {runs} simulations of ~{one:.2g} s: {total} at most",
        ]
    return [
        f"would run: {backend.describe()} in this process",
        f"estimated cost: {runs} evaluations of the workload",
    ]


def _port(argv: list[str]) -> list[str]:
    """A server command with its port as ``<port>`` (a free one is picked at each start)."""
    return ["<port>" if i and argv[i - 1] == "--port" else a for i, a in enumerate(argv)]
