"""What a study report says, as a list of blocks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from tuner.core import ServingConfig, Trial
from tuner.objectives import SLO, binding_slo, rank, relative_margin
from tuner.report import _figures
from tuner.report._calibration import calibration_blocks
from tuner.report._capacity import capacity_blocks, capacity_cell, flat_warning
from tuner.report._document import Block, Code, Heading, Image, Para, Table
from tuner.report._noise import noise_blocks, noisy, tie_blocks, value_cell
from tuner.report._units import cost_text, headline, knobs_text, quantity, unit_of, with_unit
from tuner.report._versus import versus_blocks
from tuner.studies import StudyOutcome, StudySpec


def _list(dumper: Any, data: list[object]) -> Any:
    flat = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


#: Block style for mappings (one setting a line), flow style for lists of plain values
#: (``[256, 512, 1024]``): no mapping is folded across lines.
_Dumper: Any = type("_Dumper", (yaml.SafeDumper,), {})
_Dumper.add_representer(list, _list)


def study_yaml(spec: StudySpec) -> str:
    """The study's spec as YAML (defaults filled in)."""
    data = spec.model_dump(mode="json", exclude_none=True)
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=10**6)
    return str(text)


def fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def binding(best: Trial, slos: tuple[SLO, ...]) -> SLO | None:
    """The SLO with the least relative slack at the chosen config (the one that binds)."""
    r = binding_slo(best.slo_results) if slos else None
    return None if r is None else slos[best.slo_results.index(r)]


def blocks(o: StudyOutcome) -> list[Block]:
    spec, best = o.spec, o.best
    out: list[Block] = [Heading(f"Tuning report: {spec.name}", 1)]
    if spec.description:
        out.append(Para(spec.description))
    out.append(
        Para(
            f"Workload: {o.workload_summary.text(o.time_unit)}"
            + (f" ({o.workload_note})" if o.workload_note else "")
            + f"; {o.workload.total_prompt_tokens:,} prompt and "
            f"{o.workload.total_output_tokens:,} output tokens. Space: {len(o.space)} "
            f"configurations ({', '.join(o.space.dimensions)}). Objective: {o.objective.text}. "
            f"SLOs: {', '.join(s.text for s in o.slos) or 'none'}. "
            f"Backend: {cost_text(o.backend)}. {len(o.trials)} trials in {o.wall_time:.1f} s"
            + (f" (stopped: {o.result.stop_reason})." if o.result is not None else ".")
        )
    )

    if o.interrupted:
        of = f" of {o.planned}" if o.planned else ""
        out += [
            Heading(f"INTERRUPTED after {len(o.trials)}{of} trials"),
            Para(
                "The run was stopped before its search ended: no recommendation comes from a "
                "partial run. Rerun the same study to continue where it stopped (finished "
                "trials are never measured again).",
                strong=True,
            ),
        ]
    flat = flat_warning(o.trials, o.objective)
    if flat is not None:
        out += [Heading("Warning: a flat objective"), Para(flat, strong=True)]
    if best is None:
        out += [
            Heading("INFEASIBLE: no configuration meets the SLOs"),
            Para(
                "The tuner refuses to recommend a configuration that violates an SLO.", strong=True
            ),
            Code(str(o.infeasible)),
        ]
    elif not o.interrupted:
        out += _winner(o, best)
    out += capacity_blocks(o)
    out += versus_blocks(o)
    out += _trials(o)
    out += _figures_blocks(o, best)
    if o.two_tier is not None:
        out += _two_tier(o)
    out += [Heading("Study file"), Code(study_yaml(spec))]
    return out


def _words(best: Trial, o: StudyOutcome) -> str:
    """The winner's searched knobs in words: ``max_num_batched_tokens 512, max_num_seqs 64``."""
    return ", ".join(f"{k} {getattr(best.config, k)}" for k in o.space.dimensions) or "the base"


def _winner(o: StudyOutcome, best: Trial) -> list[Block]:
    diff = knobs_text(best.config, ServingConfig())
    out: list[Block] = [
        Heading("The winner"),
        Para(
            headline(
                _words(best, o), o.objective.metric, best.values[o.objective.metric], o.time_unit
            ),
            True,
        ),
        Para(f"As a configuration (the knobs that differ from vLLM's defaults): `{diff}`"),
        *tie_blocks(o.trials, o.objective, best),
        Para(
            f"Paste into `vllm serve` on {o.target.describe()} (only the knobs the study tuned "
            "or set on purpose: vLLM picks the rest for the device), or use `vllm serve <model> "
            "--config best.yaml`:"
        ),
        Code(o.vllm_serve()),
    ]
    if o.estimates() is not None:
        out.append(Para(str(o.estimates())))
    if o.slos:
        bind = binding(best, o.slos)
        repeated = noisy(o.trials)
        rows = []
        for slo, r in zip(o.slos, best.slo_results, strict=True):
            pct = 100 * relative_margin(r)
            runs = [value_cell(best, slo.metric, o.slos, o.objective, best)] if repeated else []
            unit = unit_of(slo.metric, o.time_unit)
            rows.append(
                [
                    slo.text,
                    quantity(r.value, unit),
                    *runs,
                    quantity(r.limit, unit),
                    f"{quantity(r.margin, unit)} ({pct:.1f}%)",
                    "yes" if slo is bind else "",
                ]
            )
        median = [f"median [{100 * o.spec.repeats.confidence:g}% interval]"] if repeated else []
        value = f"value (judged: {o.spec.repeats.rule})" if repeated else "value"
        out += [
            Heading("SLOs at the winner", 3),
            Table(["SLO", value, *median, "limit", "margin", "binds"], rows),
        ]
    return out


def _trials(o: StudyOutcome) -> list[Block]:
    knobs = list(o.space.dimensions)
    metrics = list(dict.fromkeys([*o.objective.metrics, *(s.metric for s in o.slos)]))
    # Prompts that share prefixes: how much of them each configuration served from the cache.
    hits = o.workload.hash_ids is not None and "prefix_cache_hit_rate" not in metrics
    best = o.best
    repeated = noisy(o.trials)
    rows = []
    ranked = rank(list(o.trials), o.objective)  # feasible by value, then near misses, failed
    # the chosen first: a tie-break may have picked it from the middle of a tie
    ranked.sort(key=lambda t: best is None or t.number != best.number)
    for t in ranked:
        mark = " (chosen)" if best is not None and t.number == best.number else ""
        rate = t.values.get("prefix_cache_hit_rate", math.nan)
        if repeated:
            cells = [value_cell(t, m, o.slos, o.objective, best) for m in metrics]
            cells.append(str(t.repeats) if t.ok else "-")
        else:
            cells = [
                capacity_cell(t) if m == "capacity" else fmt(t.values.get(m, math.nan))
                for m in metrics
            ]
        rows.append(
            [
                str(t.number) + mark,
                *(str(getattr(t.config, k)) for k in knobs),
                fmt(t.fidelity),
                *cells,
                *([f"{100 * rate:.1f}%" if math.isfinite(rate) else "-"] if hits else []),
                t.verdict(),
            ]
        )
    runs = ["runs"] if repeated else []
    extra = ["prefix cache hit rate"] if hits else []
    return [
        Heading("Trials"),
        Table(
            [
                "#",
                *knobs,
                "fidelity",
                *(with_unit(m, o.time_unit) for m in metrics),
                *runs,
                *extra,
                "feasible",
            ],
            rows,
        ),
        *noise_blocks(o.trials, metrics, o.spec.repeats.confidence),
        *(
            [
                Para(
                    "Each trial's latencies are at its capacity; where no load held, at the "
                    "lowest load that failed ('< x': its capacity is below x)."
                )
            ]
            if o.objective.is_capacity
            else []
        ),
    ]


def _figures_blocks(o: StudyOutcome, best: Trial | None) -> list[Block]:
    out: list[Block] = []
    bind = binding(best, o.slos) if best is not None else (o.slos[0] if o.slos else None)
    if bind is not None:
        png = _figures.tradeoff(
            o.trials, o.objective, bind, o.folder / "tradeoff.png", best, o.time_unit
        )
        if png is not None:
            out += [
                Heading("Objective against the binding SLO"),
                Image(png, "objective vs binding SLO metric"),
            ]
    if o.timelines:
        png = _figures.step_timeline(o.timelines, o.folder / "timeline.png")
        if png is not None:
            out += [
                Heading("Tokens per step: the winner against vLLM's defaults"),
                Image(png, "per-step token timeline"),
            ]
    return out


def _two_tier(o: StudyOutcome) -> list[Block]:
    tt = o.two_tier
    if tt is None:  # pragma: no cover
        return []
    rows = [
        [
            knobs_text(c.config, o.space.base),
            c.metric,
            fmt(c.cheap),
            fmt(c.expensive),
            f"{100 * c.error:+.1f}%",
            fmt(c.calibrated) if c.calibrated is not None else "-",
            f"{100 * c.calibrated_error:+.1f}%" if c.calibrated_error is not None else "-",
        ]
        for c in tt.comparisons
    ]
    out: list[Block] = [
        Heading("Cheap tier against live measurements"),
        Para(
            f"The cheap tier evaluated {len(tt.cheap)} configurations; {len(tt.shortlist)} "
            "were measured by the expensive backend, and the answer comes only from those."
        ),
        Table(
            ["config", "metric", "cheap", "live", "error", "calibrated", "calibrated error"], rows
        ),
    ]
    if tt.calibration is not None:
        c = tt.calibration
        before, after = tt.mean_abs_error(), tt.mean_abs_error(calibrated=True)
        out += [
            Para(
                f"Cost model fitted to {c.steps} live steps (R^2 = {c.r2:.3f}, mean step-time "
                f"error {100 * c.mean_abs_rel_error:.1f}%): {cost_text(repr(c.cost_model))}; "
                "saved as calibration.json."
            ),
            Table(
                ["metric", "mean abs error before", "after calibration"],
                [
                    [m, f"{100 * before[m]:.1f}%", f"{100 * after[m]:.1f}%" if m in after else "-"]
                    for m in before
                ],
            ),
        ]
        out += calibration_blocks(c)
        widest = max((t.config.max_num_seqs for t in tt.cheap), default=0)
        if c.extrapolates(widest):
            out.append(
                Para(
                    f"**Warning:** the fitted steps ran at most {c.max_seqs} sequences, while the "
                    f"space allows up to {widest}: the cost of wider batches is extrapolated. "
                    "Calibrate from configurations that differ in batch width (include a wide one)."
                )
            )
    return out


def relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()
