"""Writing a study's report files (report.md, report.html and their PNGs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from tuner.report._content import blocks, study_yaml
from tuner.report._document import to_html, to_markdown
from tuner.report._interop import write_interop
from tuner.studies import StudyOutcome

__all__ = ["study_yaml", "write_recommendation", "write_report"]


def write_report(outcome: StudyOutcome) -> tuple[Path, Path]:
    """Write report.md, report.html and their PNGs into the study's folder."""
    doc = blocks(outcome)
    md = outcome.folder / "report.md"
    md.write_text(to_markdown(doc, outcome.folder), encoding="utf-8")
    page = outcome.folder / "report.html"
    page.write_text(to_html(doc, f"tuner: {outcome.spec.name}"), encoding="utf-8")
    write_recommendation(outcome)
    write_interop(outcome)
    return md, page


def write_recommendation(outcome: StudyOutcome) -> tuple[Path, Path] | None:
    """The winner as ``best.yaml`` (loadable by ``vllm serve --config best.yaml``: vLLM 0.32's
    flat config file) and ``best.json`` (the same knobs, the figures, the target); nothing
    when there is no recommendation (infeasible or interrupted)."""
    best = outcome.best
    if best is None or outcome.interrupted:
        return None
    knobs = outcome.recommended_knobs()
    config = best.config.to_vllm_config(knobs)
    yml = outcome.folder / "best.yaml"
    head = (
        f"# vllm serve <model> --config best.yaml   (tuner study {outcome.spec.name!r}, "
        f"for {outcome.target.describe()})\n"
    )
    yml.write_text(head + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    record = {
        "study": outcome.spec.name,
        "target": outcome.target.describe(),
        "vllm_serve": outcome.vllm_serve(),
        "vllm_config": config,
        "config": best.config.model_dump(mode="json"),
        "tuned_knobs": list(outcome.space.dimensions),
        "values": {k: v for k, v in best.values.items() if math.isfinite(v)},
        "slos": [r.model_dump(mode="json") for r in best.slo_results],
        "estimates": outcome.estimates(),
    }
    js = outcome.folder / "best.json"
    js.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return yml, js
